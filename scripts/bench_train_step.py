"""Benchmark: one UCoFiA training step (forward, backward, clipping, BertAdam) per precision, side by side.

    python scripts/bench_train_step.py                                   # CPU, random:tiny, 12 frames, 8 clips
    python scripts/bench_train_step.py --arch ViT-B/32 --clips 32 --device cuda   # the paper's per-GPU batch

Each precision runs in a fresh process so its peak memory is its own: CUDA reports the allocator's peak, the CPU the
process's peak resident memory. Prints clips/s, seconds per step, peak memory and the ratios to fp32.
"""
from __future__ import annotations

import argparse
import statistics
import time

from benchlib import peak_rss_mb, run_roles, save_role

MODES = ("fp32", "bf16", "legacy_fp16")


def child(args) -> None:
    import torch

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
    optimizer = build_optimizer(model, OptimConfig(), t_total=1000)
    res = model.clip.config.image_resolution
    ids = torch.randint(1, 49000, (args.clips, args.words), device=device)
    ids[:, 0], ids[:, -1] = 49406, 49407
    mask = torch.ones(args.clips, args.words, dtype=torch.bool, device=device)
    video = torch.randn(args.clips, args.frames, 3, res, res, device=device)
    video_mask = torch.ones(args.clips, args.frames, dtype=torch.bool, device=device)
    seeds = torch.arange(args.clips)
    params = [p for p in model.parameters() if p.requires_grad]

    def step():
        with autocast_context(args.role, device):
            loss = model(ids, mask, video, video_mask, seeds)
        loss.float().backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up: allocator, kernels, optimiser state
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2 ** 20 if device.type == "cuda" else peak_rss_mb()
    seconds = statistics.median(times)
    save_role(args.out, args.role, {"precision": args.role, "seconds": seconds, "clips_per_s": args.clips / seconds,
                                    "peak_mib": peak, "threads": torch.get_num_threads(),
                                    "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tiny", help="CLIP architecture (random weights): tiny, ViT-B/32, ...")
    parser.add_argument("--clips", type=int, default=8, help="clips per step (per GPU)")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--words", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--grad_checkpointing", action="store_true")
    parser.add_argument("--role", choices=MODES, help=argparse.SUPPRESS)  # the precision a child process runs
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role:
        return child(args)
    stats, _ = run_roles(__file__, argv, args.modes.split(","), load_tensors=False, keep_going=True)
    rows = list(stats.values())
    if not rows:
        return
    print(f"training step, {args.arch}, {args.clips} clips x {args.frames} frames x {args.words} words, "
          f"{rows[0]['device']} ({rows[0]['threads']} threads)"
          + (", gradient checkpointing" if args.grad_checkpointing else ""))
    base = next((r for r in rows if r["precision"] == "fp32"), rows[0])
    print(f"{'precision':12s}{'s/step':>9s}{'clips/s':>9s}{'peak MiB':>10s}{'speed vs fp32':>15s}{'mem vs fp32':>13s}")
    for r in rows:
        print(f"{r['precision']:12s}{r['seconds']:9.3f}{r['clips_per_s']:9.1f}{r['peak_mib']:10.0f}"
              f"{base['seconds'] / r['seconds']:14.2f}x{r['peak_mib'] / base['peak_mib']:12.2f}x")


if __name__ == "__main__":
    main()
