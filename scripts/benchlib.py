"""What the benchmarks share: memory readings and running each compared side in a fresh process.

A fresh process per side keeps one side's allocations, caches and peak memory out of the other's figures.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
from typing import Any, Callable, Optional, Sequence

import torch

from modules.common.errors import ConfigError
from modules.common.runtime import run_entry

# Dense peak TFLOPS per GPU model, from the vendors' data sheets: 16-bit tensor cores (bf16 and fp16, what bf16
# autocast and the legacy fp16 weights run on) and plain fp32 (PyTorch's default fp32 matmuls use no TF32). Matched
# in order against the CUDA device name; an unlisted GPU gets no utilisation figure rather than a guessed one.
PEAK_TFLOPS = (
    ("H200", {"bf16": 989.0, "legacy_fp16": 989.0, "fp32": 67.0}),
    ("H100 PCIe", {"bf16": 756.0, "legacy_fp16": 756.0, "fp32": 51.0}),
    ("H100 NVL", {"bf16": 835.0, "legacy_fp16": 835.0, "fp32": 60.0}),
    ("H100", {"bf16": 989.0, "legacy_fp16": 989.0, "fp32": 67.0}),       # SXM (H100 80GB HBM3)
    ("A100", {"bf16": 312.0, "legacy_fp16": 312.0, "fp32": 19.5}),
)


def peak_tflops(device_name: str, precision: str) -> Optional[float]:
    """The GPU's dense peak for ``precision`` (``PEAK_TFLOPS``), or None for the CPU and unlisted GPUs."""
    for key, peaks in PEAK_TFLOPS:
        if key in device_name:
            return peaks.get(precision)
    return None


def device_name(device: torch.device) -> str:
    """The CUDA device's name, or ``cpu, N threads``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu, {torch.get_num_threads()} threads"


def peak_memory_mib(device: torch.device) -> float:
    """Peak memory so far: the CUDA allocator's peak, or the process's peak resident memory on the CPU."""
    return torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else peak_rss_mb()


def write_json(path: Optional[str], obj: object) -> None:
    """``--json PATH``: the benchmark's figures for another program (nothing without a path)."""
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(obj, f, indent=1)


def rss_mb() -> float:
    """Resident memory of this process now, in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_roles(script: str, argv: Optional[Sequence[str]], roles: Sequence[str], load_tensors: bool = True,
              keep_going: bool = False) -> tuple[dict[str, dict], dict[str, object]]:
    """Run ``script --role R --out DIR`` once per role (with the caller's own arguments) and collect the results.

    The child writes ``DIR/R.json`` (figures) and, if ``load_tensors``, ``DIR/R.pt`` (outputs to compare) through
    ``save_role``. With ``keep_going`` a failing role is reported and left out instead of stopping the benchmark.
    Returns (figures by role, outputs by role).
    """
    args = list(argv if argv is not None else sys.argv[1:])
    stats, outputs = {}, {}
    with tempfile.TemporaryDirectory() as out:
        for role in roles:
            run = subprocess.run([sys.executable, os.path.abspath(script), *args, "--role", role, "--out", out],
                                 check=not keep_going)
            if run.returncode:
                print(f"{role}: failed with exit status {run.returncode}", file=sys.stderr)
                continue
            with open(os.path.join(out, f"{role}.json")) as f:
                stats[role] = json.load(f)
            if load_tensors:
                outputs[role] = torch.load(os.path.join(out, f"{role}.pt"), weights_only=True)
    return stats, outputs


def save_role(out: str, role: str, stats: dict, tensors: object = None) -> None:
    """The child's side of ``run_roles``."""
    if tensors is not None:
        torch.save(tensors, os.path.join(out, f"{role}.pt"))
    with open(os.path.join(out, f"{role}.json"), "w") as f:
        json.dump(stats, f)


def run_benchmark(args: argparse.Namespace, body: Callable[[argparse.Namespace], Any], counts: Sequence[str] = (),
                  positive: Sequence[str] = ()) -> int:
    """Run a benchmark as the entry points run: its flags checked first, a user error one line with exit status 2.

    Args:
        args: the parsed flags; ``args.device``, when present, must name a device this machine has.
        body: the benchmark.
        counts: flags that count something (at least 1).
        positive: flags that must be finite and above 0.
    """
    def run() -> int:
        for name in counts:
            if getattr(args, name) < 1:
                raise ConfigError(f"--{name} must be at least 1, got {getattr(args, name)}")
        for name in positive:
            value = getattr(args, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"--{name} must be a positive number, got {value}")
        if getattr(args, "device", None) is not None:
            try:
                device = torch.device(args.device)
            except RuntimeError:
                raise ConfigError(f"--device {args.device!r} is not a device name (cpu, cuda, cuda:1)") from None
            if device.type == "cuda" and not torch.cuda.is_available():
                raise ConfigError(f"--device {args.device} requested but no CUDA device is available")
        return body(args) or 0

    return run_entry(run)
