"""The training loss: symmetric InfoNCE on the mean of the three levels over the global batch.

    L = 1/2 [ -1/N sum_i log softmax_row(S)_ii  -  1/N sum_i log softmax_col(S)_ii ],   S = mean of the levels

With W ranks, rank r owns pairs [o_r, o_r + n_r) of the global batch of N. It gathers every rank's features (with
gradient) and computes only its own rows S[own texts, all videos] and columns S[all texts, own videos], i.e. its terms
of both sums. The local loss l_r sums to L over ranks, and the gather's backward hands each rank dL/d(its features),
so backward on W l_r followed by DDP's gradient averaging (divide by W) gives exactly the single-process gradient of L,
with 2 n_r N instead of N^2 scores per rank. The mean of W l_r over ranks is L, the value to log.
The published code has every rank compute all of L instead (docs/architecture.md, "Every process computes the
global loss").
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from modules.common.distributed import all_gather_with_grad, gather_sizes, get_rank, get_world_size
from modules.model.features import TextFeatures, VideoFeatures

LevelScorer = Callable[[TextFeatures, VideoFeatures], dict[str, torch.Tensor]]


def combine_levels(levels: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean of the level logits, S = (S_vs + S_fs + S_pw) / 3 for the full model."""
    return torch.stack(list(levels.values())).mean(dim=0)


def symmetric_infonce(similarity_levels: LevelScorer, text: TextFeatures, video: VideoFeatures) -> torch.Tensor:
    """This rank's share of the global-batch loss (text i matches video i).

    Args:
        similarity_levels: (text, video) -> {level: [Nt, Nv] logits}, e.g. ``UCoFiA.similarity_levels``.
        text, video: this rank's features, paired row by row.
    Returns:
        Scalar W l_r: backward on it, then DDP's averaging, gives the gradient of the global loss; its mean over
        ranks is the global loss (on one process it is the global loss).
    """
    n = len(text)
    if len(video) != n:
        raise ValueError(f"the loss pairs text i with video i: got {n} texts and {len(video)} videos")
    world = get_world_size()
    if world == 1:
        sim = combine_levels(similarity_levels(text, video))                # [N, N]
        loss = (F.cross_entropy(sim, torch.arange(n, device=sim.device))
                + F.cross_entropy(sim.t(), torch.arange(n, device=sim.device))) / 2
        return loss
    sizes = gather_sizes(n, text.sentence.device)
    total, offset = sum(sizes), sum(sizes[:get_rank()])
    text_all = text.map(lambda t: all_gather_with_grad(t, sizes))
    video_all = video.map(lambda t: all_gather_with_grad(t, sizes))
    own = torch.arange(n, device=text.sentence.device)
    rows = combine_levels(similarity_levels(text, video_all))              # [n, N]
    cols = combine_levels(similarity_levels(text_all, video))              # [N, n]
    text_to_video = -F.log_softmax(rows, dim=1)[own, offset + own]               # [n]
    video_to_text = -F.log_softmax(cols, dim=0)[offset + own, own]               # [n]
    local = (text_to_video.sum() + video_to_text.sum()) / (2 * total)
    return local * world
