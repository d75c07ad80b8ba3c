"""Benchmark: one UCoFiA training step (forward, backward, clipping, BertAdam) per precision, side by side.

    python scripts/bench_train_step.py                                   # CPU, random:tiny, 12 frames, 8 clips
    python scripts/bench_train_step.py --arch ViT-B/32 --clips 32 --device cuda --find_max_batch   # on a GPU

Each precision runs in a fresh process so its peak memory is its own: CUDA reports the allocator's peak, the CPU the
process's peak resident memory. Prints clips/s, seconds per step, peak memory, the ratios to fp32 and, on a GPU
listed in ``benchlib.PEAK_TFLOPS``, the model FLOP utilisation: the matmul, convolution and attention FLOPs of one
forward and backward pass (counted by ``torch.utils.flop_counter``, before any ``--compile``) per second, over the
GPU's dense peak for that precision. ``--find_max_batch`` also finds the largest batch that fits (doubling from
``--clips``, then halving the gap, each try a full step; an out-of-memory try is caught and its memory released) and
measures it. ``--json PATH`` writes every figure.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time

from benchlib import device_name, peak_memory_mib, peak_tflops, run_benchmark, run_roles, save_role, write_json

from modules.common.errors import ConfigError
from modules.training.optim import OPTIMIZERS

MODES = ("fp32", "bf16", "legacy_fp16")
IMPLS = tuple(OPTIMIZERS)


def child(args) -> None:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from modules.common.runtime import autocast_context
    from modules.model.build import build_model
    from modules.model.ucofia import ModelConfig
    from modules.training.optim import OptimConfig, build_optimizer

    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_flush_denormal(True)
    torch.manual_seed(0)
    cfg = ModelConfig(max_words=args.words, max_frames=args.frames)
    model = build_model(f"random:{args.arch}", cfg, args.role, args.grad_checkpointing, device).train()
    optimizer = build_optimizer(model, OptimConfig(), t_total=1000, impl=args.optimizer_impl)
    res = model.clip.config.image_resolution
    params = [p for p in model.parameters() if p.requires_grad]

    def inputs(clips: int) -> tuple:
        ids = torch.randint(1, 49000, (clips, args.words), device=device)
        ids[:, 0], ids[:, -1] = 49406, 49407
        mask = torch.ones(clips, args.words, dtype=torch.bool, device=device)
        video = torch.randn(clips, args.frames, 3, res, res, device=device)
        video_mask = torch.ones(clips, args.frames, dtype=torch.bool, device=device)
        return ids, mask, video, video_mask, torch.arange(clips)

    def forward_backward(batch) -> None:
        with autocast_context(args.role, device):
            loss = model(*batch)
        loss.float().backward()

    def step(batch) -> None:
        forward_backward(batch)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()

    def count_flops(clips: int) -> int:
        """Matmul, convolution and attention FLOPs of one forward and backward pass (eager)."""
        batch = inputs(clips)
        with FlopCounterMode(display=False) as counter:
            forward_backward(batch)
        optimizer.zero_grad(set_to_none=True)
        return counter.get_total_flops()

    def measure(clips: int, flops: int) -> dict:
        """A warm-up step, then the median of ``--steps`` timed steps."""
        batch = inputs(clips)
        step(batch)                                   # warm-up: allocator, kernels, optimiser state, compilation
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            step(batch)
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        achieved = flops / seconds / 1e12
        peak = peak_tflops(name, args.role)
        return {"clips": clips, "seconds": seconds, "clips_per_s": clips / seconds, "peak_mib": peak_memory_mib(device),
                "flops_per_step": flops, "tflops": achieved, "peak_tflops": peak,
                "mfu": achieved / peak if peak else None}

    def fits(clips: int) -> bool:
        """One full step at ``clips``; an out-of-memory error is caught and its memory given back."""
        try:
            step(inputs(clips))
            return True
        except torch.cuda.OutOfMemoryError:
            pass
        except RuntimeError as e:                     # cuDNN and cuBLAS report their allocation failures this way
            if "out of memory" not in str(e).lower():
                raise
        optimizer.zero_grad(set_to_none=True)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return False

    name = device_name(device)
    flops = count_flops(args.clips)                    # on the eager model: compile afterwards
    if args.compile:
        model.compile()
    stats = {"precision": args.role, "device": name, "threads": torch.get_num_threads(),
             **measure(args.clips, flops)}
    if args.find_max_batch:
        ok, bad, tries = args.clips, None, []
        while bad is None and ok < args.batch_limit:          # double until a try fails or the limit is reached
            size = min(2 * ok, args.batch_limit)
            tries.append(size)
            if fits(size):
                ok = size
            else:
                bad = size
        while bad is not None and bad - ok > max(1, ok // 8):  # then halve the gap down to an eighth of the batch
            size = (ok + bad) // 2
            tries.append(size)
            if fits(size):
                ok = size
            else:
                bad = size
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        stats["max_batch"] = {**measure(ok, count_flops(ok)), "limited": bad is None, "tries": tries}
    save_role(args.out, args.role, stats)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tiny", help="CLIP architecture (random weights): tiny, ViT-B/32, ...")
    parser.add_argument("--clips", type=int, default=8, help="clips per step (per GPU)")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--words", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--grad_checkpointing", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (as training's --compile)")
    parser.add_argument("--optimizer_impl", default="per_param", choices=IMPLS, help="as training's --optimizer_impl")
    parser.add_argument("--find_max_batch", action="store_true", help="also find and measure the largest batch")
    parser.add_argument("--batch_limit", type=int, default=1024, help="largest batch --find_max_batch tries")
    parser.add_argument("--json", help="write every figure to this file")
    parser.add_argument("--role", choices=MODES, help=argparse.SUPPRESS)  # the precision a child process runs
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return run_benchmark(args, lambda a: run(a, argv), counts=("clips", "frames", "words", "steps", "batch_limit"))


def run(args: argparse.Namespace, argv) -> int | None:
    """The benchmark behind ``main``, on checked flags."""
    unknown = sorted(set(args.modes.split(",")) - set(MODES))
    if unknown:
        raise ConfigError(f"--modes: unknown {', '.join(unknown)}; choose from {', '.join(MODES)}")
    if args.find_max_batch and args.compile:
        raise ConfigError("--find_max_batch counts FLOPs on the eager model at each size: leave out --compile")
    if args.find_max_batch and args.batch_limit < args.clips:
        raise ConfigError(f"--batch_limit {args.batch_limit} is below --clips {args.clips}")
    if args.role:
        return child(args)
    modes = args.modes.split(",")
    stats, _ = run_roles(__file__, argv, modes, load_tensors=False, keep_going=True)
    rows = list(stats.values())
    write_json(args.json, {"arch": args.arch, "clips": args.clips, "frames": args.frames, "words": args.words,
                           "compile": args.compile, "optimizer_impl": args.optimizer_impl,
                           "grad_checkpointing": args.grad_checkpointing,
                           "failed": [m for m in modes if m not in stats], "modes": stats})
    if not rows:
        return 1
    print(f"training step, {args.arch}, {args.clips} clips x {args.frames} frames x {args.words} words, "
          f"{rows[0]['device']}, BertAdam {args.optimizer_impl}"
          + (", gradient checkpointing" if args.grad_checkpointing else "") + (", compiled" if args.compile else ""))
    base = next((r for r in rows if r["precision"] == "fp32"), rows[0])
    print(f"{'precision':12s}{'clips':>6s}{'s/step':>9s}{'clips/s':>9s}{'peak MiB':>10s}{'TFLOP/s':>9s}{'MFU':>7s}"
          f"{'speed vs fp32':>15s}{'mem vs fp32':>13s}")
    for r in rows:
        for m in [r] + ([r["max_batch"]] if "max_batch" in r else []):
            mfu = f"{100 * m['mfu']:6.1f}%" if m["mfu"] is not None else f"{'-':>7s}"
            ratios = (f"{base['seconds'] / m['seconds']:14.2f}x{m['peak_mib'] / base['peak_mib']:12.2f}x"
                      if m is r else f"{'(largest batch that fits)' if not m['limited'] else '(--batch_limit)':>28s}")
            print(f"{r['precision']:12s}{m['clips']:6d}{m['seconds']:9.3f}{m['clips_per_s']:9.1f}{m['peak_mib']:10.0f}"
                  f"{m['tflops']:9.2f}{mfu}{ratios}")
    return 1 if len(rows) < len(modes) else None


if __name__ == "__main__":
    sys.exit(main())
