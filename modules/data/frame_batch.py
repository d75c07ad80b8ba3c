"""A batch's uint8 video copied once, straight from the frame cache, by the process that feeds the model.

With ``--frame_cache`` and uint8 items (``RetrievalSplit.uint8_video``, the CUDA feed), a DataLoader worker does not
copy a cached clip's frames: its item carries a ``CachedClip`` (where the frames lie in their shard) and its batch a
``FrameBatch``, a few hundred bytes. The frames are copied where the batch is used, once, from the shard's memory map
into the batch tensor: in the DataLoader's pin-memory thread on CUDA (``FrameBatch.pin_memory``: straight into
pinned memory), otherwise by ``batch_video`` (which ``modules.data.transforms.video_to_device`` calls). Handing the
frames over from the workers instead costs a new shared-memory segment per batch, faulted in page by page, and two
more copies: several times the copy itself (``scripts/bench_loader.py`` measures the loader).

Workers ask the kernel to read each clip's pages ahead (``posix_fadvise``), so a cache larger than the page cache is
read from disk in parallel, before the batch reaches the process that copies it. Clips decoded live (not in the cache,
or changed) travel as uint8 tensors [F, R, R, 3] in the same ``FrameBatch``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch

from modules.common.errors import DataError

# Shards opened so far in this process: path -> (stamp, memory map), and (stamp, file descriptor) for read-ahead.
_SHARDS: dict[str, tuple[tuple[int, ...], np.ndarray]] = {}
_FDS: dict[str, tuple[tuple[int, ...], int]] = {}


def shard_stamp(path: str) -> tuple[int, ...]:
    """Which file a shard path names: device, inode, size and modification time."""
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def shard_array(path: str, stamp: tuple[int, ...]) -> np.ndarray:
    """The uint8 frames [N, R, R, 3] of the shard ``.npy`` file ``stamp`` names, memory-mapped read-only once per
    process. A builder never rewrites a shard; a cache deleted and built again in the same place has new files under
    the old names, so the map is reopened for a new stamp.

    Raises:
        DataError: the file at ``path`` is no longer the one ``stamp`` names (replaced while a run read it).
    """
    held = _SHARDS.get(path)
    if held is None or held[0] != stamp:
        if shard_stamp(path) != stamp:
            raise DataError(f"frame cache shard {path} was replaced while this run read it (the cache was deleted "
                            "or built again): start the run again")
        held = _SHARDS[path] = (stamp, np.load(path, mmap_mode="r"))
    return held[1]


def read_ahead(path: str, stamp: tuple[int, ...], first: int, frames: int) -> None:
    """Start reading frames ``first .. first + frames - 1`` of a shard into the page cache (no wait; no-op where
    ``posix_fadvise`` does not exist)."""
    if not hasattr(os, "posix_fadvise"):
        return
    shard = shard_array(path, stamp)  # checks that ``path`` is still the file ``stamp`` names
    held = _FDS.get(path)
    if held is None or held[0] != stamp:
        if held is not None:
            os.close(held[1])
        held = _FDS[path] = (stamp, os.open(path, os.O_RDONLY))
    fd = held[1]
    frame_bytes = shard.itemsize * int(np.prod(shard.shape[1:]))
    os.posix_fadvise(fd, shard.offset + first * frame_bytes, frames * frame_bytes, os.POSIX_FADV_WILLNEED)


@dataclass(frozen=True)
class CachedClip:
    """One clip's frames in a frame-cache shard, as a uint8 item [F, R, R, 3] would hold them.

    Attributes:
        path, stamp: the shard's ``.npy`` and which file it is (``shard_stamp``).
        offset, frames: first frame in the shard and n, the clip's sampled frames (n <= F).
        max_frames: F; frames n .. F-1 are padding (zeros).
        order: the frame order's permutation of the n frames, None for the sampled order.
    """
    path: str
    stamp: tuple[int, ...]
    offset: int
    frames: int
    max_frames: int
    order: Optional[tuple[int, ...]] = None

    def write_into(self, out: np.ndarray) -> None:
        """The frames into ``out`` uint8 [F, R, R, 3], padding frames zero."""
        frames = shard_array(self.path, self.stamp)[self.offset:self.offset + self.frames]  # [n, R, R, 3], a view
        out[:self.frames] = frames if self.order is None else frames[np.asarray(self.order)]
        out[self.frames:] = 0

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(F, R, R, 3), as a uint8 item's tensor."""
        resolution = shard_array(self.path, self.stamp).shape[1]
        return self.max_frames, resolution, resolution, 3

    def tensor(self) -> torch.Tensor:
        """uint8 [F, R, R, 3], equal to ``modules.data.transforms.pad_uint8`` of the frames."""
        out = torch.empty(self.shape, dtype=torch.uint8)
        self.write_into(out.numpy())
        return out


class FrameBatch:
    """The uint8 video [B, F, R, R, 3] of a batch, as references into the frame cache (and tensors of clips decoded
    live), copied into one tensor by ``tensor``."""

    def __init__(self, clips: Sequence[Union[CachedClip, torch.Tensor]]):
        self.clips = list(clips)

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def shape(self) -> tuple[int, ...]:
        """(B, F, R, R, 3), as the batch's tensor."""
        return (len(self.clips), *self.clips[0].shape)

    def tensor(self, pin: bool = False, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """uint8 [B, F, R, R, 3] (in pinned memory with ``pin``, or written into ``out``), each clip copied once."""
        if out is None:
            out = torch.empty(self.shape, dtype=torch.uint8, pin_memory=pin)
        elif tuple(out.shape) != self.shape or out.dtype != torch.uint8:
            raise ValueError(f"out: uint8 {list(self.shape)} expected, got {out.dtype} {list(out.shape)}")
        frames = out.numpy()
        for i, clip in enumerate(self.clips):
            if isinstance(clip, CachedClip):
                clip.write_into(frames[i])
            else:
                out[i] = clip
        return out

    def pin_memory(self) -> torch.Tensor:
        """Called by the DataLoader's pin-memory thread (``pin_memory=True``): the batch tensor, pinned."""
        return self.tensor(pin=True)


def batch_video(video: Union[torch.Tensor, FrameBatch], out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """A batch's video as a tensor: a ``FrameBatch`` copied out of the cache, a tensor as it is; with ``out`` (a
    buffer used again and again, as the pinned memory of a CUDA run), either copied into ``out``."""
    if isinstance(video, FrameBatch):
        return video.tensor(out=out)
    return video if out is None else out.copy_(video)
