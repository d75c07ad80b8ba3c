"""Benchmark: SK-norm scoring of a caption bank against a test gallery, as ``eval_t2v`` runs it.

    python scripts/bench_eval.py                              # CPU: 20,000 bank captions x 1,000 test videos
    python scripts/bench_eval.py --bank 180000 --device cuda  # the MSR-VTT 9k training captions, on a GPU

Random features of ViT-B/32's shapes (D = 512, L = 32 words, F = 12 frames, K = 3): bank captions are scored against
every test video on all three levels in bank chunks (features never stored beyond a chunk), the per-level SK biases are
computed (4 Sinkhorn-Knopp iterations) and added to a 1,000 x 1,000 test matrix. Prints the seconds of each stage and
the peak memory (CUDA allocator, or the process's resident memory on the CPU). On a GPU the random features are
drawn there and every bank similarity stays there until Sinkhorn-Knopp has run (the figures name the bank's device).
``--json PATH`` writes every figure.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
from benchlib import device_name, peak_memory_mib, run_benchmark, write_json

from modules.evaluation.encoding import combine, sk_biases
from modules.evaluation.sinkhorn import SK_ITERS
from modules.model.clip import ARCHITECTURES, CLIP
from modules.model.features import TextFeatures, VideoFeatures
from modules.model.similarity import LEVELS
from modules.model.ucofia import ModelConfig, UCoFiA


def random_text(n: int, words: int, dim: int, device, generator) -> TextFeatures:
    """Random caption features, drawn on the generator's device and moved to ``device``."""
    at = generator.device
    lengths = torch.randint(6, words + 1, (n, 1), generator=generator, device=at).to(device)
    mask = torch.arange(words, device=device)[None] < lengths                          # [n, L]
    return TextFeatures(torch.randn(n, dim, generator=generator, device=at).to(device),
                        torch.randn(n, words, dim, generator=generator, device=at).to(device), mask)


def random_video(n: int, frames: int, tokens: int, dim: int, device, generator) -> VideoFeatures:
    at = generator.device
    f = torch.randn(n, frames, dim, generator=generator, device=at).to(device)
    return VideoFeatures(f, f + 0.1 * torch.randn(n, frames, dim, generator=generator, device=at).to(device),
                         torch.ones(n, frames, dtype=torch.bool, device=device),
                         torch.randn(n, frames * tokens, dim, generator=generator, device=at).to(device))


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank", type=int, default=20000, help="bank captions")
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--texts", type=int, default=1000, help="test captions")
    parser.add_argument("--chunk", type=int, default=2000, help="bank captions per chunk (as encoded batches)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="write every figure to this file")
    args = parser.parse_args(argv)
    return run_benchmark(args, lambda a: run(a, argv), counts=("bank", "videos", "texts", "chunk"))


def run(args: argparse.Namespace, argv) -> int | None:
    """The benchmark behind ``main``, on checked flags."""
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_flush_denormal(True)
    cfg = ModelConfig()
    with torch.device("meta"):
        clip = CLIP(ARCHITECTURES["ViT-B/32"])
    clip = clip.to_empty(device="cpu")
    clip.logit_scale.data.fill_(torch.log(torch.tensor(100.0)))
    model = UCoFiA(clip, cfg).to(device).eval()
    gen = torch.Generator(device=device).manual_seed(0)  # on a GPU: no bank-sized draws on the CPU
    dim, tokens = clip.config.embed_dim, 1 + cfg.topk
    videos = random_video(args.videos, cfg.max_frames, tokens, dim, device, gen)
    test = random_text(args.texts, cfg.max_words, dim, device, gen)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    with torch.no_grad():
        parts = {k: [] for k in LEVELS}
        gallery = model.prepare_video(videos)  # as modules.evaluation.bank_scores: the gallery's work done once
        for start in range(0, args.bank, args.chunk):
            chunk = random_text(min(args.chunk, args.bank - start), cfg.max_words, dim, device, gen)
            sims = model.similarity_levels(chunk, gallery)
            for k in LEVELS:
                parts[k].append(sims[k])
        bank = {k: torch.cat(v) for k, v in parts.items()}
        bank_devices = sorted({str(v.device) for v in bank.values()})
        sync(device)
        t_bank = time.perf_counter()
        bias = sk_biases(bank, SK_ITERS)
        sync(device)
        t_sk = time.perf_counter()
        levels = model.similarity_levels(test, videos)
        final = combine(levels, bias, "t2v")
        sync(device)
        t_test = time.perf_counter()
    assert torch.isfinite(final).all()
    peak = peak_memory_mib(device) / 2 ** 10
    name = device_name(device)
    write_json(args.json, {"device": name, "bank": args.bank, "videos": args.videos, "texts": args.texts,
                           "chunk": args.chunk, "bank_device": bank_devices, "seconds_bank": t_bank - started,
                           "seconds_sinkhorn": t_sk - t_bank, "seconds_test": t_test - t_sk,
                           "seconds_total": t_test - started, "peak_gib": peak})
    print(f"SK-norm scoring, {name}: bank {args.bank} captions x {args.videos} videos, test {args.texts} x "
          f"{args.videos}, L={cfg.max_words} F={cfg.max_frames} K={cfg.topk} D={dim}")
    rate = args.bank * args.videos / (t_bank - started)
    print(f"  bank x gallery, 3 levels : {t_bank - started:8.1f} s  ({rate:,.0f} pairs/s)")
    print(f"  Sinkhorn-Knopp, 3 levels : {t_sk - t_bank:8.2f} s")
    print(f"  test matrix + bias       : {t_test - t_sk:8.2f} s")
    print(f"  total                    : {t_test - started:8.1f} s, peak memory {peak:.1f} GiB, bank similarities "
          f"on {', '.join(bank_devices)}")


if __name__ == "__main__":
    sys.exit(main())
