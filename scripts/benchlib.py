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
