"""What the benchmarks share: memory readings and running each compared side in a fresh process.

A fresh process per side keeps one side's allocations, caches and peak memory out of the other's figures.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from typing import Optional, Sequence

import torch


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

