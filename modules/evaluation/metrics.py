"""Retrieval metrics: R@1/5/10, median rank (MdR) and mean rank (MnR), recalls in percent.

A query's rank is the number of gallery items scored above its correct item plus the number tied with it (ties count
against the model: a constant score matrix gets the worst ranks, never R@1 = 100). Several captions per video follow
the published protocol: text-to-video ranks each caption's video among all videos; video-to-text scores each video's
caption set by its best caption and ranks the query's own set among all sets.
"""
from __future__ import annotations

import numpy as np
import torch

from modules.common.errors import UCoFiAError

RECALLS = (1, 5, 10)


def ranks_of(sim: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0-based rank of each query's correct item.

    Args:
        sim: [Nq, Ng] scores, higher is better.
        target: [Nq] index of the correct gallery item per query.
    Returns:
        LongTensor [Nq].
    """
    if not torch.isfinite(sim).all():
        raise UCoFiAError(f"similarity matrix has {int((~torch.isfinite(sim)).sum())} non-finite entries")
    target = torch.as_tensor(target, device=sim.device, dtype=torch.long)
    correct = sim.gather(1, target[:, None])                                   # [Nq, 1]
    return (sim >= correct).sum(dim=1) - 1                                      # [Nq]


def summarize(ranks: torch.Tensor) -> dict[str, float]:
    """R@K in percent, MdR and MnR (1-based) from 0-based ranks."""
    r = ranks.detach().cpu().double().numpy()
    out = {f"R{k}": float((r < k).mean() * 100) for k in RECALLS}
    out["MdR"] = float(np.median(r) + 1)
    out["MnR"] = float(r.mean() + 1)
    return out


def group_max(sim: torch.Tensor, caption_to_video: torch.Tensor, n_videos: int) -> torch.Tensor:
    """Per video, its captions' best score against every video.

    Args:
        sim: [Nt, Nv] text-video scores.
        caption_to_video: [Nt] video index of each caption.
    Returns:
        [Nv (video query), Nv (caption set)].
    """
    index = torch.as_tensor(caption_to_video, device=sim.device, dtype=torch.long)
    if index.numel() != sim.shape[0]:
        raise ValueError(f"caption_to_video has {index.numel()} entries for {sim.shape[0]} captions")
    out = torch.full((n_videos, sim.shape[1]), -torch.inf, dtype=sim.dtype, device=sim.device)  # [set, Nv]
    out = out.scatter_reduce(0, index[:, None].expand_as(sim), sim, reduce="amax")
    return out.t()                                                                  # [Nv, set]


def t2v_metrics(sim: torch.Tensor, caption_to_video) -> dict[str, float]:
    """Text-to-video: each caption ranks its own video among all videos of ``sim`` [Nt, Nv]."""
    return summarize(ranks_of(sim, torch.as_tensor(caption_to_video)))


def v2t_metrics(sim: torch.Tensor, caption_to_video) -> dict[str, float]:
    """Video-to-text from ``sim`` [Nt, Nv]: each video ranks its own caption set among all sets, a set scored by its
    best caption (published protocol; with one caption per video this is plain caption ranking)."""
    n_videos = sim.shape[1]
    grouped = group_max(sim, torch.as_tensor(caption_to_video), n_videos)          # [Nv, Nv]
    if torch.isinf(grouped).any():
        raise UCoFiAError("video-to-text: some videos have no caption")
    return summarize(ranks_of(grouped, torch.arange(n_videos, device=sim.device)))
