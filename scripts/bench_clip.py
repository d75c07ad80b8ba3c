"""Benchmark: CLIP image encoding with fused attention (SDPA) vs a plain softmax(QK^T)V, in one run.

    python scripts/bench_clip.py [--arch ViT-B/32] [--frames 12] [--repeats 10] [--device cpu]

Prints the median seconds per call of both implementations on the same weights and input, their ratio, and the
largest difference of the outputs.
"""
from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager

import torch

from modules.model.clip import Attention, build_random_clip


def plain_attention(self: Attention, x: torch.Tensor, causal: bool = False, attn_mask=None) -> torch.Tensor:
    """softmax(QK^T / sqrt(d)) V written out, with the same parameters (image tower: no mask)."""
    n, length, width = x.shape                                                   # [N, T, W]
    head = width // self.heads
    qkv = torch.nn.functional.linear(x, self.in_proj_weight, self.in_proj_bias)
    q, k, v = qkv.view(n, length, 3, self.heads, head).permute(2, 0, 3, 1, 4)     # 3 x [N, H, T, W/H]
    scores = q @ k.transpose(-2, -1) / head ** 0.5                               # [N, H, T, T]
    if causal:
        scores = scores.masked_fill(torch.ones(length, length, dtype=torch.bool, device=x.device).triu(1), -torch.inf)
    out = scores.softmax(dim=-1) @ v                                              # [N, H, T, W/H]
    return self.out_proj(out.transpose(1, 2).reshape(n, length, width))


@contextmanager
def attention_impl(fn):
    original = Attention.forward
    Attention.forward = fn
    try:
        yield
    finally:
        Attention.forward = original


def timed(fn, repeats: int, device: torch.device) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B/32")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_random_clip(args.arch).to(device).eval()
    res = model.config.image_resolution
    images = torch.randn(args.frames, 3, res, res, device=device)
    with torch.no_grad():
        fused_s, fused = timed(lambda: model.encode_image(images, return_tokens=True)[1], args.repeats, device)
        with attention_impl(plain_attention):
            plain_s, plain = timed(lambda: model.encode_image(images, return_tokens=True)[1], args.repeats, device)
    print(f"encode_image {args.arch}, {args.frames} frames of {res}x{res}, {device}, threads={torch.get_num_threads()}")
    print(f"  plain softmax(QK^T)V : {plain_s * 1e3:8.1f} ms")
    print(f"  SDPA (ours)          : {fused_s * 1e3:8.1f} ms")
    print(f"  speed-up plain/ours  : {plain_s / fused_s:8.2f}x")
    print(f"  max |difference|     : {(fused - plain).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
