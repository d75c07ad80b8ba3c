"""Building a frame cache (``scripts/cache_frames.py``): decode every clip once, in parallel, into atomic shards.

The folder's lock (``modules.common.lock``) admits one builder at a time; readers need no lock (the layout and why
reading during a build is safe: ``modules.data.frame_cache``). A build resumes where a killed one stopped: complete
shards are kept, clips already cached with an unchanged video file are skipped, and what a killed build left half
written (temporaries, a ``.npy`` whose ``.json`` was never written) is removed first.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from modules.common.errors import DataError
from modules.common.io import atomic_write, write_json
from modules.common.lock import acquire
from modules.data.frame_cache import (
    CACHED,
    CHANGED,
    FORMAT,
    SETTINGS_FILE,
    Sampling,
    cache_settings,
    clip_key,
    clip_status,
    read_index,
    settings_folder,
    shard_number,
    video_stamp,
)
from modules.data.video import decode_clip

logger = logging.getLogger(__name__)
# A shard is written once its frames reach this size (a clip of 12 frames of 224x224 is 1.8 MB).
SHARD_MB = 512.0

Clip = tuple[str, Optional[float], Optional[float]]  # video file, window start and end in seconds


@dataclass
class BuildReport:
    """What a build did, for the summary."""
    folder: str
    clips: int = 0            # distinct clips asked for
    reused: int = 0           # already cached, video unchanged
    decoded: int = 0          # decoded now (new or changed)
    changed: int = 0          # of ``decoded``: cached before, but the video file changed
    bad: list[str] = field(default_factory=list)  # undecodable clips (recorded as bad)
    clip_bytes: int = 0       # frame bytes of every good clip asked for
    good: int = 0             # clips with frames
    seconds: float = 0.0

    @property
    def bytes_per_clip(self) -> float:
        return self.clip_bytes / max(1, self.good)


def split_clips(split) -> list[Clip]:
    """The clips (video file, window) a ``RetrievalSplit`` reads."""
    return [(path, *(window or (None, None))) for path, window in zip(split.video_paths, split.windows)]


class ShardWriter:
    """Collects decoded clips and writes them as ``shard-NNNNNN.npy`` then ``.json``, each atomically."""

    def __init__(self, folder: str, shard_mb: float):
        self.folder, self.limit = folder, int(shard_mb * 2 ** 20)
        numbers = [shard_number(n) for n in os.listdir(folder)]
        self.number = max(numbers, default=-1) + 1
        self.frames: list[np.ndarray] = []
        self.clips: list[dict] = []
        self.offset = 0
        self.bytes = 0

    def add(self, key: str, stamp: Optional[list[int]], frames: Optional[np.ndarray], error: str) -> None:
        n = 0 if frames is None else len(frames)
        self.clips.append({"key": key, "stamp": stamp, "offset": self.offset, "frames": n, "error": error})
        if n:
            self.frames.append(frames)
            self.offset += n
            self.bytes += frames.nbytes
        if self.bytes >= self.limit:
            self.flush()

    def flush(self) -> None:
        if not self.clips:
            return
        name = os.path.join(self.folder, f"shard-{self.number:06d}")
        shape = self.frames[0].shape[1:] if self.frames else (0, 0, 3)
        array = np.concatenate(self.frames) if self.frames else np.zeros((0,) + tuple(shape), dtype=np.uint8)
        atomic_write(name + ".npy", lambda f: np.save(f, array))               # frames first ...
        write_json({"format": FORMAT, "clips": self.clips}, name + ".json")   # ... then what makes them visible
        self.number += 1
        self.frames, self.clips, self.offset, self.bytes = [], [], 0, 0


def remove_leftovers(folder: str) -> list[str]:
    """Delete what a killed build left: temporaries of atomic writes and shard ``.npy`` files without ``.json``
    (no reader can refer to them)."""
    names = set(os.listdir(folder))
    stale = [n for n in names if n.startswith(".") and n.endswith(".tmp")]
    stale += [n for n in names if n.startswith("shard-") and n.endswith(".npy") and n[:-4] + ".json" not in names]
    for name in stale:
        os.remove(os.path.join(folder, name))
    if stale:
        logger.warning("removed %d file(s) left by an interrupted build of %s", len(stale), folder)
    return stale


def _decode(task: tuple[int, str, Optional[float], Optional[float], dict]) -> tuple[int, Any, Any, str]:
    """(task index, stamp, frames uint8 [n, R, R, 3] or None, error) of one clip; the stamp is taken before
    decoding, so a file changed meanwhile is found changed at the next read."""
    i, path, start, end, settings = task
    stamp = video_stamp(path)
    try:
        frames, _ = decode_clip(path, Sampling(settings), start, end, settings["image_resolution"])
    except DataError as e:
        return i, stamp, None, str(e)
    return i, stamp, frames, ""


def _init_worker() -> None:
    """A decoding process: the parent decides when to stop (its SIGINT handling), ``Pool.terminate``'s SIGTERM ends
    the worker; one decoding thread."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    cv2.setNumThreads(1)


def _decoded(tasks: list, workers: int) -> Iterator[tuple[int, Any, Any, str]]:
    if workers <= 0:
        yield from map(_decode, tasks)
        return
    # Fresh processes, not forks: a fork of this multi-threaded process (torch's and OpenCV's thread pools) can
    # inherit a lock held by another thread and deadlock in its first OpenCV call.
    pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker)
    try:
        yield from pool.imap(_decode, tasks, chunksize=1)
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def build_frame_cache(root: str, cfg: Any, clips: Sequence[Clip], workers: int = 0, shard_mb: float = SHARD_MB,
                      progress: bool = True) -> BuildReport:
    """Decode every clip of ``clips`` not yet cached (or whose video changed) into ``root``.

    Args:
        root: the --frame_cache folder (created).
        cfg: DataConfig: sampling settings and ``image_resolution``.
        clips: (video file, start, end); repeats are decoded once.
        workers: decoding processes (0: this process).
        shard_mb: shard size in MiB.
        progress: show a progress bar.
    Returns:
        BuildReport.
    Raises:
        ConfigError: another build holds the folder.
    """
    started = time.time()
    os.makedirs(root, exist_ok=True)
    lock = acquire(root, "scripts/cache_frames.py", flag="--frame_cache")
    try:
        if lock.note:
            logger.warning("%s", lock.note)
        settings = cache_settings(cfg)
        folder = settings_folder(root, settings)
        os.makedirs(folder, exist_ok=True)
        if not os.path.exists(os.path.join(folder, SETTINGS_FILE)):
            write_json(settings, os.path.join(folder, SETTINGS_FILE))
        remove_leftovers(folder)
        entries = read_index(folder)
        unique = list({clip_key(*clip): clip for clip in clips}.values())
        report = BuildReport(folder, clips=len(unique))
        tasks = []
        for path, start, end in unique:
            status, entry = clip_status(entries, path, start, end)
            if status == CACHED:
                report.reused += 1
                _count(report, entry["frames"], entry.get("error"), path, settings)
            else:
                report.changed += status == CHANGED
                tasks.append((len(tasks), path, start, end, settings))
        writer = ShardWriter(folder, shard_mb)
        keys = [clip_key(path, start, end) for _, path, start, end, _ in tasks]
        bar = tqdm(total=len(tasks), desc="caching frames", disable=not progress, dynamic_ncols=True)
        for i, stamp, frames, error in _decoded(tasks, workers):
            writer.add(keys[i], stamp, frames, error)
            report.decoded += 1
            _count(report, 0 if frames is None else len(frames), error, tasks[i][1], settings)
            if error:
                logger.warning("bad clip %s: %s", tasks[i][1], error)
            bar.update(1)
        writer.flush()
        bar.close()
    finally:
        lock.release()
    report.seconds = time.time() - started
    return report


def _count(report: BuildReport, frames: int, error: Optional[str], path: str, settings: dict) -> None:
    if error:
        report.bad.append(path)
        return
    report.good += 1
    report.clip_bytes += frames * settings["image_resolution"] ** 2 * 3


def summary(report: BuildReport) -> str:
    """Counts, bytes per clip and total size, on a few lines."""
    total = report.clip_bytes
    lines = [f"frame cache {report.folder}: {report.clips} clips, {report.reused} already cached, {report.decoded} "
             f"decoded ({report.changed} because the video changed), {len(report.bad)} bad, {report.seconds:.1f} s",
             f"  {report.bytes_per_clip / 2 ** 20:.2f} MiB per clip, {total / 2 ** 30:.2f} GiB for these clips"]
    if report.bad:
        lines.append("  bad (recorded; --skip_bad_videos skips them as without the cache): " +
                     ", ".join(report.bad[:10]) + (f" and {len(report.bad) - 10} more" if len(report.bad) > 10 else ""))
    return "\n".join(lines)
