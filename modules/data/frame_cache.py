"""``--frame_cache DIR``: the frames the loader feeds the model, decoded once and read back without decoding.

The published sampling is deterministic (no train-time jitter; a shuffled frame order is applied after sampling), so
the sampled, resized and centre-cropped uint8 frames of a clip never change between epochs. ``scripts/cache_frames.py``
decodes every clip of a dataset's splits once into shard files; training, both evaluations and
``scripts/retrieve.py`` then read them through memory maps.

    DIR/.ucofia.lock                    held by the one builder at work (``modules.common.lock``)
    DIR/<settings key>/settings.json    what the frames depend on: max_frames, feature_framerate, slice_framepos,
                                        image_resolution, decoder (OpenCV, Pillow, numpy versions, decoding code)
    DIR/<settings key>/shard-NNNNNN.npy uint8 [frames, R, R, 3], the clips of the shard one after the other
    DIR/<settings key>/shard-NNNNNN.json  per clip: video file (resolved path), clip window, the file's size and
                                        modification time when decoded, offset and frame count in the .npy, or the
                                        decoding error of a bad clip

Frames are stored in sampled order; the frame order (reversed, shuffled per seed, epoch and item) is applied when
read, exactly as after live decoding. A shard's ``.npy`` is written first and its ``.json`` second, each atomically,
so a reader only ever sees complete shards and a build killed at any point leaves a cache the next build completes.
Readers never write and shards are never rewritten, so any number of DataLoader workers and processes read a cache
at once, also while a builder adds to it. A later shard supersedes an earlier entry of the same clip.

A clip whose video file has another size or modification time than recorded, or that is not in the cache, is decoded
live (and counted) or, with ``--frame_cache_strict``, stops the run with an error naming the file. A clip recorded as
bad raises the decoding error it had, so ``--skip_bad_videos`` behaves as without the cache.
"""
from __future__ import annotations

import functools
import glob
import hashlib
import json
import logging
import os
from typing import Any, Optional

import cv2
import numpy as np
import PIL
import torch

from modules.common.cache_keys import cache_key
from modules.common.errors import ConfigError, DataError, UCoFiAError
from modules.data.frame_batch import CachedClip, read_ahead, shard_array, shard_stamp
from modules.data.transforms import clip_frames, frame_order_permutation, pad_uint8
from modules.data.video import decode_clip

logger = logging.getLogger(__name__)
FORMAT = "ucofia-frame-cache-v1"
SETTINGS_FILE = "settings.json"
# The files whose code computes the cached frames: an edit of either invalidates the cache.
DECODER_FILES = ("video.py", "transforms.py")
# Per process, the first clips decoded live are logged one by one; the rest are only counted.
LOGGED_LIVE = 5
# What ``FrameCache.frames`` reports about where a clip's frames came from.
CACHED, MISSING, CHANGED = "cached", "not in the cache", "changed since it was cached"
DECODED = "decoded"  # no cache in use


class FrameCacheError(UCoFiAError):
    """A clip the cache cannot serve under ``--frame_cache_strict``: never swallowed by ``--skip_bad_videos``."""


@functools.lru_cache(maxsize=None)
def decoder_version() -> dict[str, str]:
    """Versions of what turns a video file into cached frames: OpenCV (FFmpeg), Pillow (the resize), numpy, and a
    digest of the project's decoding code."""
    here = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha256()
    for name in DECODER_FILES:
        with open(os.path.join(here, name), "rb") as f:
            h.update(f.read())
    return {"opencv": cv2.__version__, "pillow": PIL.__version__, "numpy": np.__version__,
            "code": h.hexdigest()[:16]}


def cache_settings(cfg: Any) -> dict[str, Any]:
    """Every setting the cached frames of a clip depend on (besides the video file and the clip window)."""
    return {"format": FORMAT, "max_frames": int(cfg.max_frames), "feature_framerate": float(cfg.feature_framerate),
            "slice_framepos": int(cfg.slice_framepos), "image_resolution": int(getattr(cfg, "image_resolution", 224)),
            "decoder": decoder_version()}


def settings_folder(root: str, settings: dict[str, Any]) -> str:
    return os.path.join(root, cache_key(settings))


def clip_key(path: str, start: Optional[float], end: Optional[float]) -> str:
    """One clip: the resolved video file and its window in seconds (None: the whole video)."""
    window = [None if t is None else float(t) for t in (start, end)]
    return json.dumps([os.path.realpath(path)] + window)


def video_stamp(path: str) -> Optional[list[int]]:
    """[size, mtime_ns] of a video file; None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def shard_number(name: str) -> int:
    """``shard-000012.json`` -> 12; -1 for other names."""
    stem = os.path.splitext(os.path.basename(name))[0]
    return int(stem[6:]) if stem.startswith("shard-") and stem[6:].isdigit() else -1


def read_index(folder: str) -> dict[str, dict]:
    """Clip key -> entry of every complete shard in ``folder`` (later shards win); {} for a missing folder."""
    entries: dict[str, dict] = {}
    for path in sorted(glob.glob(os.path.join(glob.escape(folder), "shard-*.json")), key=shard_number):
        try:
            with open(path, encoding="utf-8") as f:
                shard = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: unreadable frame-cache index ({e}); delete the shard and build again") from None
        npy = os.path.splitext(os.path.basename(path))[0] + ".npy"
        for clip in shard["clips"]:
            entries[clip["key"]] = dict(clip, shard=npy)
    return entries


def clip_status(entries: dict[str, dict], path: str, start: Optional[float] = None,
                end: Optional[float] = None) -> tuple[str, Optional[dict]]:
    """(CACHED, entry), (MISSING, None) or (CHANGED, entry) for a clip of an index (``read_index``), checking the
    video file's size and modification time against the recorded ones."""
    entry = entries.get(clip_key(path, start, end))
    if entry is None:
        return MISSING, None
    return (CACHED, entry) if video_stamp(path) == entry["stamp"] else (CHANGED, entry)


def describe_difference(wanted: dict, found: dict) -> str:
    """The settings that differ, e.g. ``max_frames 12 instead of 4``."""
    diffs = [f"{k} {found.get(k)} instead of {v}" for k, v in wanted.items() if found.get(k) != v]
    return ", ".join(diffs) or "the same settings"


class FrameCache:
    """The read side of a frame cache for one set of sampling settings.

    Args:
        root: the --frame_cache folder.
        cfg: DataConfig (or anything with the sampling fields and ``image_resolution``).
        strict: raise ``FrameCacheError`` instead of decoding a clip the cache cannot serve.
    """

    def __init__(self, root: str, cfg: Any, strict: bool = False):
        if not os.path.isdir(root):
            raise ConfigError(f"--frame_cache {root}: no such folder (build it with scripts/cache_frames.py)")
        self.root, self.strict = root, strict
        self.settings = cache_settings(cfg)
        self.folder = settings_folder(root, self.settings)
        self.entries = read_index(self.folder)
        self._stamps: dict[str, tuple[int, ...]] = {}  # shard name -> shard_stamp, taken at first use
        self._logged = 0
        if not self.entries:
            self._no_entries()
        else:
            logger.info("frame cache %s: %d clips for these settings", root, len(self.entries))

    def _no_entries(self) -> None:
        others = []
        for path in sorted(glob.glob(os.path.join(glob.escape(self.root), "*", SETTINGS_FILE))):
            try:
                with open(path, encoding="utf-8") as f:
                    others.append(describe_difference(self.settings, json.load(f)))
            except (OSError, ValueError):
                continue
        held = f"; it holds frames for other settings ({'; '.join(others)})" if others else ""
        message = f"--frame_cache {self.root} has no frames for these settings{held}"
        if self.strict:
            raise FrameCacheError(f"{message}: build it with scripts/cache_frames.py and the same flags, or leave "
                                  "out --frame_cache_strict")
        logger.warning("%s: every clip is decoded", message)

    def lookup(self, path: str, start: Optional[float] = None, end: Optional[float] = None) -> tuple[str,
                                                                                                    Optional[dict]]:
        return clip_status(self.entries, path, start, end)

    def frames(self, path: str, start: Optional[float] = None,
               end: Optional[float] = None) -> tuple[np.ndarray, str]:
        """The clip's frames uint8 [n, R, R, 3] in sampled order, and where they came from (CACHED, MISSING or
        CHANGED: decoded live).

        Raises:
            DataError: the clip is recorded as bad (its error), or decoding it live failed.
            FrameCacheError: with ``strict``, a clip not in the cache or whose video changed.
        """
        status, entry = self.lookup(path, start, end)
        if status == CACHED:
            if entry.get("error"):
                raise DataError(entry["error"])
            shard = shard_array(*self._shard(entry["shard"]))
            return np.array(shard[entry["offset"]:entry["offset"] + entry["frames"]]), CACHED
        window = "" if start is None and end is None else f" (window {start}-{end} s)"
        why = f"is {status}" if status == MISSING else status
        if self.strict:
            if status == CHANGED:
                why += f" (size and modification time {entry['stamp']} recorded, {video_stamp(path)} now)"
            raise FrameCacheError(f"--frame_cache {self.root}: video {path}{window} {why}; rebuild the cache with "
                                  "scripts/cache_frames.py or leave out --frame_cache_strict")
        if self._logged < LOGGED_LIVE:
            self._logged += 1
            logger.warning("frame cache: %s%s %s: decoding it", path, window, why)
        frames, _ = decode_clip(path, Sampling(self.settings), start, end, self.settings["image_resolution"])
        return frames, status

    def cached_clip(self, path: str, start: Optional[float], end: Optional[float], max_frames: int,
                    frame_order: int = 0, seed: Any = 0) -> Optional[CachedClip]:
        """A clip the cache holds good frames of, as a ``CachedClip`` (frame order as ``frame_order_permutation``)
        whose pages are being read ahead; None for any other clip (``frames`` decodes it, raises its error or refuses
        it)."""
        status, entry = self.lookup(path, start, end)
        if status != CACHED or entry.get("error"):
            return None
        (shard, stamp), n = self._shard(entry["shard"]), entry["frames"]
        read_ahead(shard, stamp, entry["offset"], n)
        order = tuple(int(i) for i in frame_order_permutation(n, frame_order, seed)) if frame_order else None
        return CachedClip(shard, stamp, entry["offset"], n, max_frames, order)

    def _shard(self, name: str) -> tuple[str, tuple[int, ...]]:
        """(path, ``shard_stamp``) of a shard of this cache."""
        path = os.path.join(self.folder, name)
        if name not in self._stamps:
            self._stamps[name] = shard_stamp(path)
        return path, self._stamps[name]


class Sampling:
    """The sampling fields ``decode_clip`` reads, from cache settings."""

    def __init__(self, settings: dict):
        self.max_frames = settings["max_frames"]
        self.feature_framerate = settings["feature_framerate"]
        self.slice_framepos = settings["slice_framepos"]


def open_frame_cache(cfg: Any) -> Optional[FrameCache]:
    """The cache of ``cfg.frame_cache`` (None without one)."""
    root = getattr(cfg, "frame_cache", "")
    return FrameCache(root, cfg, bool(getattr(cfg, "frame_cache_strict", False))) if root else None


def load_clip(cache: Optional[FrameCache], path: str, cfg: Any, start: Optional[float], end: Optional[float],
              frame_order: int, seed: Any, uint8: bool = False) -> tuple[torch.Tensor | CachedClip, torch.Tensor, str]:
    """One clip as the model takes it, from the cache or decoded: the one path of every dataset item.

    Args:
        cache: a ``FrameCache`` or None (decode).
        path, start, end: video file and window.
        cfg: DataConfig (sampling, ``max_frames``, ``image_resolution``).
        frame_order, seed: as ``modules.data.transforms.frame_order_permutation``.
        uint8: return the frames as uint8 for ``normalize_video`` on the device (``pad_uint8``); a clip the cache
            holds comes as a ``CachedClip``, copied only into its batch (``modules.data.frame_batch``).
    Returns:
        video float [F, 3, R, R] (with ``uint8``: uint8 [F, R, R, 3] or a ``CachedClip`` of that shape), video_mask
        BoolTensor [F], and CACHED, MISSING or CHANGED (DECODED without a cache).
    """
    resolution, max_frames = int(getattr(cfg, "image_resolution", 224)), int(cfg.max_frames)
    if cache is None:
        frames, status = decode_clip(path, cfg, start, end, resolution)[0], DECODED
    else:
        if uint8:
            clip = cache.cached_clip(path, start, end, max_frames, frame_order, seed)
            if clip is not None:
                return clip, torch.arange(max_frames) < clip.frames, CACHED
        frames, status = cache.frames(path, start, end)  # [n, R, R, 3]
    if frame_order:
        frames = frames[frame_order_permutation(len(frames), frame_order, seed)]
    video, mask = pad_uint8(frames, max_frames) if uint8 else clip_frames(frames, resolution, max_frames)
    return video, mask, status
