"""Evaluation: encode every text and video once, score the three levels in blocks, SK-norm, metrics.

Under several processes each rank encodes a contiguous shard; features are gathered and put back in dataset order by
index, so nothing is encoded twice and no padding duplicate reaches the metrics. Scoring is split by text rows across
ranks. The SK-norm bank is the whole training split (or a fixed subsample), the same for any number of processes:
text-to-video uses every training caption and gives a bias per test video; video-to-text uses every training video
once and gives a bias per test caption (the published bank: docs/architecture.md, "The SK bank depends on the
number of processes").
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, fields
from typing import Optional

import torch
import torch.distributed as dist
from tqdm import tqdm

from modules.common.distributed import all_gather_rows
from modules.common.errors import DataError
from modules.common.interrupts import closing_batches, ignore_in_worker
from modules.common.runtime import Runtime, autocast_context, loader_workers, show_progress
from modules.data import collate_skip_none
from modules.data.base import loader_settings
from modules.data.samplers import ShardSampler, epoch_permutation
from modules.data.transforms import video_to_device
from modules.evaluation.metrics import t2v_metrics, v2t_metrics
from modules.evaluation.sinkhorn import SK_ITERS, sk_bias
from modules.model.features import TextFeatures, VideoFeatures

logger = logging.getLogger("ucofia")
TEXT_BATCH_FACTOR = 8


@dataclass
class EvalOptions:
    batch_size: int = 32        # per process, for encoding
    workers: int = 1
    precision: str = "fp32"
    sk_iters: int = SK_ITERS
    sk_bank_size: int = 0       # 0: whole training split
    seed: int = 42              # picks the bank subsample


def _shard_indices(n: int, rt: Runtime, subset: Optional[torch.Tensor] = None) -> list[int]:
    items = subset.tolist() if subset is not None else list(range(n))
    return [items[i] for i in ShardSampler(len(items), rt.world_size, rt.rank).indices]


def _batches(dataset, indices: list[int], opts: EvalOptions, collate=None, desc: str = "", rt=None):
    device = rt.device if rt is not None else torch.device("cpu")
    loader = torch.utils.data.DataLoader(dataset, batch_size=opts.batch_size, sampler=indices,
                                         num_workers=opts.workers, collate_fn=collate, worker_init_fn=ignore_in_worker,
                                         **loader_settings(device, opts.workers))
    return tqdm(closing_batches(loader), total=len(loader), desc=desc, disable=rt is None or not show_progress(rt),
                leave=False, dynamic_ncols=True)


def _to_float(t: torch.Tensor) -> torch.Tensor:
    """Scores are computed in fp32 whatever precision encoded the features (masks stay bool)."""
    return t.float() if t.is_floating_point() else t


def iter_text_features(model, dataset, rt: Runtime, opts: EvalOptions, subset=None, desc="texts"):
    """Yield (TextFeatures, dataset indices) for this rank's shard, batch by batch (``TEXT_BATCH_FACTOR`` times the
    video batch: a caption costs a fraction of a video to encode, and fewer, larger chunks score faster)."""
    text_opts = dataclasses.replace(opts, batch_size=opts.batch_size * TEXT_BATCH_FACTOR)
    for batch in _batches(dataset, _shard_indices(len(dataset), rt, subset), text_opts, desc=desc, rt=rt):
        with torch.no_grad(), autocast_context(opts.precision, rt.device):
            f = model.encode_text(batch["text_ids"].to(rt.device), batch["text_mask"].to(rt.device))
        yield f.map(_to_float), torch.as_tensor(batch["index"])


def iter_video_features(model, dataset, rt: Runtime, opts: EvalOptions, subset=None, desc="videos"):
    """Yield (VideoFeatures, dataset indices) for this rank's shard; undecodable videos are absent when skipped."""
    for batch in _batches(dataset, _shard_indices(len(dataset), rt, subset), opts, collate_skip_none, desc, rt):
        if batch is None:
            continue
        with torch.no_grad(), autocast_context(opts.precision, rt.device):
            f = model.encode_video(*video_to_device(batch["video"], batch["video_mask"], rt.device))
        yield f.map(_to_float), torch.as_tensor(batch["index"])


def gather_all(parts: list, cls, total: int, rt: Runtime, device: torch.device):
    """Concatenate this rank's (features, index) parts, gather all ranks, order by index.

    Returns (features of every present item in dataset order, LongTensor of their dataset indices).
    """
    names = [f.name for f in fields(cls)]
    if parts:
        local = cls.cat([p[0] for p in parts]).to_dict()
        index = torch.cat([p[1] for p in parts]).to(device)
    else:
        local, index = None, torch.zeros(0, dtype=torch.long, device=device)
    if rt.distributed:  # a rank with an empty shard needs the others' row shapes to take part in the gather
        specs = [None] * rt.world_size
        dist.all_gather_object(specs, None if local is None else
                               {n: (tuple(t.shape[1:]), t.dtype) for n, t in local.items()})
        spec = next((s for s in specs if s is not None), None)
        if spec is None:
            raise DataError("nothing could be encoded: every item of the split was skipped")
        if local is None:
            local = {n: torch.zeros((0,) + shape, dtype=dtype, device=device) for n, (shape, dtype) in spec.items()}
    elif local is None:
        raise DataError("nothing could be encoded: every item of the split was skipped")
    index = all_gather_rows(index)
    order = torch.argsort(index)
    out = {n: all_gather_rows(local[n])[order] for n in names}
    index = index[order]
    if index.numel() != torch.unique(index).numel() or (index.numel() and int(index.max()) >= total):
        raise RuntimeError("gathered evaluation indices are not a set of dataset positions")
    return cls(**out), index


@dataclass
class TestFeatures:
    text: TextFeatures
    video: VideoFeatures
    caption_to_video: torch.Tensor   # [Nt] video position (in ``video``) of each caption
    text_index: torch.Tensor         # dataset indices of the captions kept
    video_index: torch.Tensor        # dataset indices of the videos kept


def encode_test_set(model, split, rt: Runtime, opts: EvalOptions) -> TestFeatures:
    """Encode every caption and video of ``split`` once; captions of videos that could not be decoded are dropped."""
    videos, v_index = gather_all(list(iter_video_features(model, split.video_view(), rt, opts)), VideoFeatures,
                                 len(split.video_ids), rt, rt.device)
    texts, t_index = gather_all(list(iter_text_features(model, split.text_view(), rt, opts)), TextFeatures,
                                len(split.captions), rt, rt.device)
    position = torch.full((len(split.video_ids),), -1, dtype=torch.long)
    position[v_index.cpu()] = torch.arange(v_index.numel())
    c2v = position[torch.as_tensor(split.caption_to_video, dtype=torch.long)[t_index.cpu()]]
    keep = c2v >= 0
    if not keep.all():
        logger.warning("%d captions dropped with their undecodable videos", int((~keep).sum()))
        rows = torch.nonzero(keep).flatten().to(rt.device)
        texts = texts[rows]
        t_index, c2v = t_index[rows], c2v[keep]
    return TestFeatures(texts, videos, c2v, t_index.cpu(), v_index.cpu())


def score_test(model, feats: TestFeatures, rt: Runtime) -> dict[str, torch.Tensor]:
    """Per-level [Nt, Nv] logits (the levels ``model.level_names``); each rank scores a contiguous block of text
    rows, then rows are gathered."""
    rows = torch.tensor(_shard_indices(feats.text.sentence.shape[0], rt), dtype=torch.long, device=rt.device)
    n_videos = feats.video.frames.shape[0]
    if rows.numel() == 0:  # more processes than captions
        sims = {k: torch.zeros(0, n_videos, device=rt.device) for k in model.level_names}
    else:
        text = feats.text[rows]
        with torch.no_grad():
            sims = model.similarity_levels(text, feats.video)
    return {k: all_gather_rows(sims[k].float()) for k in model.level_names}


def bank_subset(n: int, opts: EvalOptions) -> Optional[torch.Tensor]:
    """A fixed, sorted subsample of the bank when ``sk_bank_size`` asks for fewer items than the split has."""
    if not opts.sk_bank_size or opts.sk_bank_size >= n:
        return None
    return torch.sort(epoch_permutation(n, opts.seed, 0)[:opts.sk_bank_size]).values


def bank_scores(model, train_split, feats: TestFeatures, direction: str, rt: Runtime,
                opts: EvalOptions) -> dict[str, torch.Tensor]:
    """Per-level bank x gallery logits: [Nb, Nv] (training captions x test videos) for text-to-video, [Nb, Nt]
    (training videos x test captions) for video-to-text. Bank features are scored batch by batch, never stored."""
    if direction == "t2v":   # bank: training captions (rows) against the test videos
        view, desc, stream_fn = train_split.text_view(), "SK bank: train captions", iter_text_features
        with torch.no_grad():
            videos = model.prepare_video(feats.video)                    # once, not once per bank chunk

        def score(bank):
            return model.similarity_levels(bank, videos)                 # [b, Nv]
    else:                    # bank: training videos (rows) against the test captions
        view, desc, stream_fn = train_split.video_view(), "SK bank: train videos", iter_video_features
        with torch.no_grad():
            texts = model.prepare_text(feats.text)

        def score(bank):
            return {k: v.t() for k, v in model.similarity_levels(texts, bank).items()}  # [b, Nt]
    parts = {k: [] for k in model.level_names}
    for bank, _ in stream_fn(model, view, rt, opts, bank_subset(len(view), opts), desc):
        with torch.no_grad():
            sims = score(bank)                                           # [b, gallery]
        for k in parts:
            parts[k].append(sims[k].float())
    n_cols = feats.video.frames.shape[0] if direction == "t2v" else feats.text.sentence.shape[0]
    out = {}
    for k in parts:
        local = torch.cat(parts[k]) if parts[k] else torch.zeros(0, n_cols, device=rt.device)
        out[k] = all_gather_rows(local)
    if next(iter(out.values())).shape[0] == 0:
        raise DataError("the SK-norm bank is empty: the training split has no usable items")
    return out


def sk_biases(bank: dict[str, torch.Tensor], n_iters: int) -> dict[str, torch.Tensor]:
    return {k: sk_bias(v, n_iters=n_iters) for k, v in bank.items()}


def add_bias(sim: torch.Tensor, bias: torch.Tensor, direction: str) -> torch.Tensor:
    """[Nt, Nv] plus an SK bias per video column (text-to-video) or per caption row (video-to-text)."""
    return sim + (bias[None, :] if direction == "t2v" else bias[:, None])


def combine(levels: dict[str, torch.Tensor], bias: Optional[dict[str, torch.Tensor]] = None,
            direction: str = "t2v") -> torch.Tensor:
    """Mean of the levels [Nt, Nv], each plus its own SK bias when given."""
    total = 0
    for k, sim in levels.items():
        total = total + (sim if bias is None else add_bias(sim, bias[k], direction))
    return total / len(levels)


def dsl(sim: torch.Tensor, direction: str) -> torch.Tensor:
    """Dual softmax (CAMoE) normalised over the *test* queries: it uses test-set statistics."""
    return sim * torch.softmax(sim, dim=0 if direction == "t2v" else 1)


def metrics_for(sim: torch.Tensor, caption_to_video: torch.Tensor, direction: str) -> dict[str, float]:
    c2v = caption_to_video.to(sim.device)
    return t2v_metrics(sim, c2v) if direction == "t2v" else v2t_metrics(sim, c2v)


def evaluate_directions(levels: dict[str, torch.Tensor], c2v: torch.Tensor, directions=("t2v", "v2t")) -> dict:
    """Raw metrics of the mean of the levels, per direction (training-time validation)."""
    raw = combine(levels)
    return {d: metrics_for(raw, c2v, d) for d in directions}


def validate_split(model, split, rt: Runtime, cfg) -> dict[str, dict[str, float]]:
    """Raw (no normalisation) metrics of both directions on ``split``: the training run's per-epoch validation.

    Args:
        model: UCoFiA in eval mode.
        cfg: run options (``batch_size_val`` global, ``num_thread_reader``, ``precision``).
    """
    opts = EvalOptions(batch_size=max(1, cfg.batch_size_val // rt.world_size),
                       workers=loader_workers(cfg.num_thread_reader), precision=cfg.precision)
    feats = encode_test_set(model, split, rt, opts)
    return evaluate_directions(score_test(model, feats, rt), feats.caption_to_video)
