"""One split of a video-text dataset: training pairs, plus text-only and video-only views for evaluation.

Every dataset reader turns its files into the same four lists (captions, the video of each caption, video ids and
video paths) and hands them to ``RetrievalSplit``, which does everything else the same way for all datasets:
checking that the videos exist, tokenising, decoding, the per-epoch random choices and skipping bad videos.

Random choices (the caption drawn for a video each epoch, shuffled frame order) are functions of
(seed, epoch, index) only, so a run is reproducible, can be resumed mid-way and does not depend on the number of
DataLoader workers or GPUs. The epoch and the set of videos that failed to decode live in shared memory, so
``set_epoch`` reaches persistent DataLoader workers and failures seen in a worker show in ``undecodable``.
"""
from __future__ import annotations

import hashlib
import logging
import os
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torch.utils.data._utils.collate import default_collate

from modules.common.errors import DataError
from modules.common.io import not_a_regular_file
from modules.data.annotations import shown
from modules.data.config import DataConfig
from modules.data.frame_batch import CachedClip, FrameBatch
from modules.data.frame_cache import CHANGED, MISSING, load_clip, open_frame_cache
from modules.data.transforms import seed_entropy
from modules.model.tokenizer import get_tokenizer, text_mask, tokenize

logger = logging.getLogger(__name__)

# How many missing videos an error message names before it only counts the rest.
MAX_NAMED = 20
# Separate random streams drawn from the same (seed, epoch, index).
_CAPTION_STREAM, _FRAME_STREAM = 0, 1
# Codes in ``RetrievalSplit._live``: why a video was decoded although a frame cache is in use.
_LIVE = {MISSING: 1, CHANGED: 2}


class RetrievalSplit(Dataset):
    """Training pairs of one split; items are dicts of text ids/mask, video/mask and the item index.

    Attributes:
        name, split: the datatype and "train" / "val" / "test".
        captions: list[str], one per caption (paragraph datasets: the joined paragraph).
        caption_to_video: int64 [len(captions)], index into ``video_ids`` of each caption's video.
        video_ids, video_paths: one entry per video, each video once.
        windows: per video None or a (start, end) window in seconds.
        is_test_fallback: True when "val" was asked for and this dataset has no validation split.
        uint8_video: items carry uint8 frames, normalised on the device (``modules.data.transforms.video_to_device``);
            set for CUDA runs, where a quarter of the bytes cross from the workers and over the bus.
        frame_cache: the ``FrameCache`` of --frame_cache, or None (decode every clip).
        skipped: paths of videos dropped from the split when building (missing or empty; reasons are logged).
        undecodable: paths of videos that failed to decode later, seen from any worker (see the property).
        listed_texts, listed_videos: what the annotation gives for the split before anything is dropped; every
            count reported adds up to these (kept + skipped).
        left_out: one line per kind of entry the reader left out of the split, and why (already logged), e.g. ids of
            an id list that the annotation file does not annotate.
    """

    def __init__(self, cfg: DataConfig, name: str, split: str, captions: Sequence[str],
                 caption_to_video: Sequence[int], video_ids: Sequence[str], video_paths: Sequence[str | None],
                 windows: Sequence[tuple[float, float] | None] | None = None, one_caption_per_video: bool = False,
                 left_out: Sequence[str] = ()):
        """
        Args:
            cfg: data configuration.
            name, split: for messages and results.
            captions, caption_to_video, video_ids: as the attributes.
            video_paths: resolved file per video, None where the reader found no file.
            windows: optional clip window per video.
            one_caption_per_video: items are videos and each draws one of its captions per epoch (MSR-VTT training
                without --expand_msrvtt_sentences); otherwise items are captions.
            left_out: as the attribute.
        """
        self.cfg, self.name, self.split = cfg, name, split
        self.is_test_fallback = False
        self.uint8_video = False
        self.one_caption_per_video = one_caption_per_video
        self.frame_order = cfg.train_frame_order if split == "train" else cfg.eval_frame_order
        windows = list(windows) if windows is not None else [None] * len(video_ids)
        c2v = np.asarray(caption_to_video, dtype=np.int64)
        self.listed_texts, self.listed_videos = len(captions), len(video_ids)
        self.left_out = list(left_out)
        self.skipped: list[str] = []  # paths dropped when building (missing or empty files)
        keep = self._check_files(list(video_ids), list(video_paths))
        if not keep.all():
            new_index = np.cumsum(keep) - 1
            kept_caps = keep[c2v]
            logger.warning("%s %s: %d caption(s) dropped with the %d skipped video(s)", name, split,
                           int((~kept_caps).sum()), int((~keep).sum()))
            captions = [c for c, k in zip(captions, kept_caps) if k]
            c2v = new_index[c2v[kept_caps]]
            video_ids = [v for v, k in zip(video_ids, keep) if k]
            video_paths = [p for p, k in zip(video_paths, keep) if k]
            windows = [w for w, k in zip(windows, keep) if k]
        if len(video_ids) == 0:
            raise DataError(f"{name} {split}: no usable video (the annotation files list none, or all were skipped)")
        self.captions: list[str] = list(captions)
        self.caption_to_video: np.ndarray = c2v
        self.video_ids: list[str] = list(video_ids)
        self.video_paths: list[str] = list(video_paths)  # type: ignore[arg-type]
        self.windows = windows
        order = np.argsort(c2v, kind="stable")
        bounds = np.searchsorted(c2v[order], np.arange(len(self.video_ids) + 1))
        self.video_captions = [order[bounds[v]:bounds[v + 1]] for v in range(len(self.video_ids))]
        if one_caption_per_video:
            bare = [self.video_ids[v] for v, caps in enumerate(self.video_captions) if len(caps) == 0]
            if bare:
                raise DataError(f"{name} {split}: {len(bare)} video(s) have no caption: {', '.join(bare[:MAX_NAMED])}")
        # Built once here (half a second) so that forked DataLoader workers inherit it instead of each building it.
        get_tokenizer()
        # Shared with DataLoader workers (see the module docstring).
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._bad = torch.zeros(max(1, len(self.video_ids)), dtype=torch.uint8).share_memory_()
        self._live = torch.zeros(max(1, len(self.video_ids)), dtype=torch.uint8).share_memory_()
        self.frame_cache = open_frame_cache(cfg)
        logger.info("%s", self)

    def __repr__(self) -> str:
        return (f"{self.name} {self.split}: {len(self.captions)} captions, {len(self.video_ids)} videos, "
                f"{len(self)} items, {len(self.skipped)} bad videos skipped (the annotation lists "
                f"{self.listed_texts} captions of {self.listed_videos} videos)")

    def _check_files(self, video_ids: list[str], video_paths: list[str | None]) -> np.ndarray:
        """Keep-mask of videos whose file exists and is non-empty; raise or log the others."""
        bad = []
        for vid, path in zip(video_ids, video_paths):
            kind = not_a_regular_file(path) if path is not None else "missing"
            if kind:  # a FIFO or device named like a video would block or never end when decoded
                bad.append((vid, path, kind if kind == "missing" else f"not a regular file: {kind}"))
            elif os.path.getsize(path) == 0:
                bad.append((vid, path, "empty file"))
        if bad and not self.cfg.skip_bad_videos:
            named = ", ".join(f"{shown(vid)} ({why})" for vid, _, why in bad[:MAX_NAMED])
            more = f" and {len(bad) - MAX_NAMED} more" if len(bad) > MAX_NAMED else ""
            raise DataError(f"{len(bad)} of {len(video_ids)} videos of {self.name} {self.split} are missing or empty "
                            f"under {self.cfg.features_path}: {named}{more} (--skip_bad_videos drops them)")
        for vid, path, why in bad:
            logger.warning("skipping video %s of %s %s: %s (%s)", shown(vid), self.name, self.split, why, path)
            self.skipped.append(path or os.path.join(self.cfg.features_path, vid))
        if bad:
            logger.warning("%s %s: skipped %d bad videos of %d", self.name, self.split, len(bad), len(video_ids))
        bad_ids = {vid for vid, _, _ in bad}
        return np.array([vid not in bad_ids for vid in video_ids], dtype=bool)

    def fingerprint(self) -> dict[str, Any]:
        """The split's identity for results and exported models: counts, and a sha256 over its sorted
        (video id, caption) pairs and video ids (row order and file layout do not change it; any edited caption,
        added or dropped video does)."""
        lines = sorted(f"{self.video_ids[v]}\t{c}" for c, v in zip(self.captions, self.caption_to_video))
        digest = hashlib.sha256("\n".join(lines + sorted(self.video_ids)).encode("utf-8")).hexdigest()
        return {"datatype": self.name, "split": self.split, "videos": len(self.video_ids),
                "captions": len(self.captions), "sha256": digest}

    @property
    def undecodable(self) -> list[str]:
        """Videos of this split that failed to decode so far (in any DataLoader worker); they stay in
        ``video_ids`` (a training item is replaced, a ``video_view`` item is None)."""
        failed = torch.nonzero(self._bad[:len(self.video_ids)]).flatten().tolist()
        return [self.video_paths[v] for v in failed]

    def undecodable_flags(self) -> torch.Tensor:
        """uint8 [len(video_ids)], 1 for each video that failed to decode so far (in any DataLoader worker)."""
        return self._bad[:len(self.video_ids)].clone()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's random choices (call before iterating, as with DistributedSampler.set_epoch)."""
        self._epoch[0] = int(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def __len__(self) -> int:
        return len(self.video_ids) if self.one_caption_per_video else len(self.captions)

    def pair(self, index: int, epoch: int | None = None) -> tuple[int, int]:
        """(caption index, video index) of a training item in an epoch."""
        if not self.one_caption_per_video:
            return index, int(self.caption_to_video[index])
        epoch = self.epoch if epoch is None else epoch
        caps = self.video_captions[index]
        pick = np.random.default_rng(seed_entropy((self.cfg.seed, epoch, index, _CAPTION_STREAM))).integers(len(caps))
        return int(caps[pick]), index

    def encode_text(self, caption_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids LongTensor [L] and mask BoolTensor [L] of one caption (L = max_words)."""
        ids = tokenize([self.captions[caption_index]], self.cfg.max_words)  # [1, L]
        return ids[0], text_mask(ids)[0]

    def load_video(self, video_index: int, frame_order: int, seed: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Video float [F, 3, R, R] (uint8 [F, R, R, 3] with ``uint8_video``) and mask BoolTensor [F] of one video,
        from the frame cache or decoded; DataError naming the file."""
        start, end = self.windows[video_index] or (None, None)
        video, mask, status = load_clip(self.frame_cache, self.video_paths[video_index], self.cfg, start, end,
                                        frame_order, seed, self.uint8_video)
        if status in _LIVE:
            self._live[video_index] = _LIVE[status]
        return video, mask

    def frame_cache_report(self) -> str:
        """With a frame cache, how many videos so far were decoded instead of read, and why ("" when none)."""
        live = self._live[:len(self.video_ids)]
        missing, changed = int((live == _LIVE[MISSING]).sum()), int((live == _LIVE[CHANGED]).sum())
        if self.frame_cache is None or not missing + changed:
            return ""
        return (f"{self.name} {self.split}: {missing + changed} of {len(self.video_ids)} videos decoded instead of "
                f"read from the frame cache ({changed} changed since it was built, {missing} not in it)")

    def log_frame_cache_report(self) -> None:
        """Log ``frame_cache_report`` as a warning when it says anything."""
        report = self.frame_cache_report()
        if report:
            logger.warning("%s", report)

    def mark_bad(self, video_index: int, error: Exception) -> None:
        """Remember a video that failed to decode (visible to all workers) and log why."""
        self._bad[video_index] = 1
        logger.warning("skipping undecodable video %s: %s", self.video_paths[video_index], error)

    def is_bad(self, video_index: int) -> bool:
        return bool(self._bad[video_index])

    def __getitem__(self, index: int) -> dict[str, Any]:
        """A training pair; with --skip_bad_videos an undecodable video's item is replaced by the next good one."""
        epoch = self.epoch
        n = len(self)
        for step in range(n):
            item = (index + step) % n
            cap, vid = self.pair(item, epoch)
            if self.is_bad(vid):
                continue
            try:
                video, video_mask = self.load_video(vid, self.frame_order, (self.cfg.seed, epoch, item, _FRAME_STREAM))
            except DataError as e:
                if not self.cfg.skip_bad_videos:
                    raise
                self.mark_bad(vid, e)
                continue
            if step:
                logger.warning("%s %s: item %d replaced by item %d (bad video)", self.name, self.split, index, item)
            text_ids, mask = self.encode_text(cap)
            return {"text_ids": text_ids, "text_mask": mask, "video": video, "video_mask": video_mask,
                    "index": item}
        raise DataError(f"{self.name} {self.split}: no decodable video left ({len(self.undecodable)} undecodable)")

    def text_view(self) -> "TextView":
        """Every caption once, text only (no decoding): test queries and the SK-norm text bank."""
        return TextView(self)

    def video_view(self) -> "VideoView":
        """Every video once, video only, in the evaluation frame order: test gallery and the SK-norm video bank."""
        return VideoView(self)


class TextView(Dataset):
    """Items ``{"text_ids": [L], "text_mask": [L], "index"}`` over ``split.captions``."""

    def __init__(self, split: RetrievalSplit):
        self.split = split

    def __len__(self) -> int:
        return len(self.split.captions)

    def __getitem__(self, index: int) -> dict[str, Any]:
        text_ids, mask = self.split.encode_text(index)
        return {"text_ids": text_ids, "text_mask": mask, "index": index}


class VideoView(Dataset):
    """Items ``{"video": [F, 3, R, R], "video_mask": [F], "index"}`` over ``split.video_ids``.

    With --skip_bad_videos an undecodable video gives None; batch with ``collate_skip_none``.
    """

    def __init__(self, split: RetrievalSplit):
        self.split = split

    def __len__(self) -> int:
        return len(self.split.video_ids)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        split = self.split
        if split.is_bad(index):
            return None
        try:
            video, mask = split.load_video(index, split.cfg.eval_frame_order, (split.cfg.seed, 0, index, _FRAME_STREAM))
        except DataError as e:
            if not split.cfg.skip_bad_videos:
                raise
            split.mark_bad(index, e)
            return None
        return {"video": video, "video_mask": mask, "index": index}


# Batches each DataLoader worker keeps ready on CUDA (PyTorch's default is 2).
CUDA_PREFETCH = 4


def feed_uint8(device: torch.device) -> bool:
    """Whether items for ``device`` carry uint8 frames (``RetrievalSplit.uint8_video``): on CUDA, normalised on the
    device, so a quarter of the bytes cross from the workers and over the bus."""
    return device.type == "cuda"


def loader_settings(device: torch.device, workers: int, persistent: bool = False) -> dict[str, Any]:
    """DataLoader keyword arguments for feeding ``device``: on CUDA pinned memory (asynchronous copies), deeper
    prefetch and, for a loader iterated again and again (``persistent``: the training loader), workers that live
    across epochs; on the CPU PyTorch's defaults."""
    if device.type != "cuda":
        return {}
    out: dict[str, Any] = {"pin_memory": True}
    if workers > 0:
        out.update(prefetch_factor=CUDA_PREFETCH, persistent_workers=persistent)
    return out


def collate_skip_none(batch: list[Any]) -> Any:
    """``default_collate`` without the None items of ``VideoView``; None when the whole batch was bad.

    The surviving items' ``index`` field tells which videos are present. Videos that are ``CachedClip`` references
    (uint8 items read from the frame cache) become one ``FrameBatch``, copied where the batch is used.
    """
    batch = [item for item in batch if item is not None]
    if not batch:
        return None
    if not any(isinstance(item.get("video"), CachedClip) for item in batch):
        return default_collate(batch)
    out = default_collate([{k: v for k, v in item.items() if k != "video"} for item in batch])
    out["video"] = FrameBatch([item["video"] for item in batch])
    return out


def split_from_lists(cfg: DataConfig, name: str, split: str, index: Any, video_ids: Sequence[str],
                     captions_per_video: Sequence[Sequence[str]],
                     windows: Sequence[tuple[float, float] | None] | None = None,
                     one_caption_per_video: bool = False, left_out: Sequence[str] = ()) -> RetrievalSplit:
    """Build a split from each video's (already checked) captions, resolving files with a ``VideoIndex``.

    Args:
        cfg, name, split, windows, one_caption_per_video, left_out: as ``RetrievalSplit``.
        index: ``modules.data.annotations.VideoIndex`` of --features_path.
        video_ids: each video once, in the order of the dataset's list.
        captions_per_video: the captions of each video, in file order.
    Returns:
        RetrievalSplit with captions grouped by video.
    """
    captions = [c for caps in captions_per_video for c in caps]
    caption_to_video = np.repeat(np.arange(len(video_ids)), [len(caps) for caps in captions_per_video])
    paths = [index.find(v) for v in video_ids]
    return RetrievalSplit(cfg, name, split, captions, caption_to_video, video_ids, paths, windows,
                          one_caption_per_video, left_out)
