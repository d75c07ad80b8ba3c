"""Benchmark: the perturbed top-K at the training shape, ours against the published one-hot formulation.

    python scripts/bench_topk.py                  # 384 rows (32 videos x 12 frames) x 49 patches, K=3, 500 samples
    python scripts/bench_topk.py --rows 96        # quick

Both take the same scores, noise and upstream gradient. Each side runs in its own child process, so that peak
resident memory (above the inputs) is measured separately; the parent checks that the outputs are identical and the
score gradients equal within float rounding, and prints peak memory and forward + backward time of each.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from benchlib import peak_rss_mb, rss_mb, run_roles, save_role

from modules.model.token_selection import perturbed_topk


class OneHotTopK(torch.autograd.Function):
    """The published PerturbedTopKFunction, with the noise passed in instead of drawn inside."""

    @staticmethod
    def forward(ctx, x, noise, k, sigma):
        perturbed_x = x.unsqueeze(1) + noise * sigma                             # [R, S, P]
        indices = torch.sort(torch.topk(perturbed_x, k=k, dim=-1, sorted=False).indices, dim=-1).values
        perturbed_output = F.one_hot(indices, num_classes=x.shape[1]).float()   # [R, S, K, P]
        ctx.save_for_backward(perturbed_output, noise)
        ctx.sigma = sigma
        return perturbed_output.mean(dim=1)                                      # [R, K, P]

    @staticmethod
    def backward(ctx, grad_output):
        perturbed_output, noise = ctx.saved_tensors
        expected = torch.einsum("bnkd,bnd->bkd", perturbed_output, noise) / noise.shape[1] / ctx.sigma
        return torch.einsum("bkd,bkd->bd", grad_output, expected), None, None, None


def child(args) -> None:
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(args.seed)
    scores = torch.randn(args.rows, args.patches, generator=g).tanh().requires_grad_()
    noise = torch.randn(args.rows, args.samples, args.patches, generator=g)
    upstream = torch.randn(args.rows, args.k, args.patches, generator=g)
    topk = (lambda s: perturbed_topk(s, noise, args.k, args.sigma)) if args.role == "ours" else \
        (lambda s: OneHotTopK.apply(s, noise, args.k, args.sigma))
    base = rss_mb()

    def step():
        scores.grad = None
        out = topk(scores)
        (out * upstream).sum().backward()
        return out

    out = step()                                                                 # the peak is reached here
    peak = peak_rss_mb() - base
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    save_role(args.out, args.role, {"peak_mb": peak, "time": min(times), "inputs_mb": noise.numel() * 4 / 2**20},
              {"out": out.detach(), "grad": scores.grad})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=384, help="frames in the batch (videos x max_frames)")
    parser.add_argument("--patches", type=int, default=49)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--sigma", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--role", choices=["ours", "one_hot"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role:
        return child(args)
    stats, results = run_roles(__file__, argv, ("one_hot", "ours"))
    ours, ref = stats["ours"], stats["one_hot"]
    same = torch.equal(results["ours"]["out"], results["one_hot"]["out"])
    grad_diff = (results["ours"]["grad"] - results["one_hot"]["grad"]).abs().max().item()
    grad_scale = results["one_hot"]["grad"].abs().max().item()
    print(f"perturbed top-K: {args.rows} rows x {args.patches} patches, K={args.k}, {args.samples} samples, "
          f"threads={args.threads} (noise input {ref['inputs_mb']:.0f} MB)")
    print(f"one-hot (published): fwd+bwd {ref['time'] * 1e3:.1f} ms, peak {ref['peak_mb']:.0f} MB above inputs")
    print(f"ours:                fwd+bwd {ours['time'] * 1e3:.1f} ms, peak {ours['peak_mb']:.0f} MB above inputs")
    print(f"speed-up {ref['time'] / ours['time']:.1f}x, memory {ref['peak_mb'] / max(ours['peak_mb'], 1e-3):.1f}x less")
    print(f"outputs identical: {same}; score gradients: max abs difference {grad_diff:.1e} (max {grad_scale:.1e})")


if __name__ == "__main__":
    main()
