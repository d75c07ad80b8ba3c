"""Samplers that make a run independent of the number of processes.

Training: one permutation per epoch from (seed, epoch); global batch s is a contiguous slice of it and process r
takes the r-th contiguous part of that slice. One process with batch B and W processes with B / W each therefore see
the same global batches, and a resumed run can start at any batch of the epoch.
Evaluation: contiguous shards, no padding, no duplicates; callers gather by index.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """A permutation of range(n) determined by (seed, epoch) only."""
    entropy = np.random.SeedSequence([seed, epoch]).generate_state(2)
    generator = torch.Generator().manual_seed(int(entropy[0]) << 32 | int(entropy[1]))
    return torch.randperm(n, generator=generator)


class GlobalBatchSampler:
    """Batch sampler of this process's part of every global micro-batch.

    Args:
        n: dataset size.
        global_batch: samples per optimiser step over all processes.
        accumulation: micro-batches per optimiser step (the global batch is split in this many).
        world_size, rank: process layout.
        seed: run seed.
    The incomplete last global batch is dropped (as published).
    """

    def __init__(self, n: int, global_batch: int, accumulation: int, world_size: int, rank: int, seed: int):
        if global_batch % (accumulation * world_size):
            raise ValueError(f"batch size {global_batch} is not divisible by {accumulation} accumulation steps x "
                             f"{world_size} processes")
        self.n, self.global_batch, self.accumulation = n, global_batch, accumulation
        self.world_size, self.rank, self.seed = world_size, rank, seed
        self.micro = global_batch // accumulation // world_size
        self.epoch, self.start_step = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps per epoch."""
        return self.n // self.global_batch

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Iterate epoch ``epoch`` from optimiser step ``start_step`` (for resuming inside an epoch)."""
        self.epoch, self.start_step = epoch, start_step

    def __iter__(self) -> Iterator[list[int]]:
        order = epoch_permutation(self.n, self.seed, self.epoch)
        for step in range(self.start_step, self.steps_per_epoch):
            for micro in range(self.accumulation):
                start = step * self.global_batch + (micro * self.world_size + self.rank) * self.micro
                yield order[start:start + self.micro].tolist()

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accumulation


class ShardSampler(torch.utils.data.Sampler):
    """Contiguous shard ``rank`` of ``range(n)`` split in ``world_size`` near-equal parts, in order."""

    def __init__(self, n: int, world_size: int, rank: int):
        bounds = np.linspace(0, n, world_size + 1).round().astype(int)
        self.indices = list(range(bounds[rank], bounds[rank + 1]))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def noise_seeds(seed: int, epoch: int, index: torch.Tensor) -> torch.Tensor:
    """Per-sample seeds for patch-selection noise from (run seed, epoch, dataset index): SplitMix64 finaliser.

    The noise a sample gets is then independent of batch composition, process count and resumption.
    """
    mask = (1 << 64) - 1
    out = []
    for i in index.tolist():
        z = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + i * 0x94D049BB133111EB) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        out.append((z ^ (z >> 31)) >> 1)  # non-negative int63 for torch.Generator.manual_seed
    return torch.tensor(out, dtype=torch.long)
