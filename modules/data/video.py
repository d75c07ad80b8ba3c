"""Video decoding that reads only the frames the published sampling rule picks.

The published loader (CLIP4Clip ``rawvideo_util.py``, copied by UCoFiA) seeks once for every second of the video,
converts and resizes every one of those frames, and only then keeps ``max_frames`` of them. Here the indices are
computed first (``sample_frame_indices``, a pure function of the frame count and rate), and the decoder reaches just
those frames, each by whichever is cheaper: decoding forward (``grab`` without the colour conversion of ``retrieve``)
or seeking, which in OpenCV restarts at a keyframe. Keyframe positions come from a demux-only pass over the packets,
which costs milliseconds even for long files. Seeking is frame-exact for constant-frame-rate files (what
``scripts/compress_video.py`` writes); tests compare against decoding every frame.

Variable frame rate: indices are positions in decode order (the rule applied to the frame count and the container's
average rate); timestamps are not used. OpenCV seeks by timestamp (position / average rate), which lands on other
frames in such a file, so the same demux pass checks the packet timestamps and a file without a constant rate is only
ever decoded forward. The published loader seeks there too, so for variable-rate files its frames differ from ours.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch

from modules.common.errors import DataError
from modules.common.io import not_a_regular_file
from modules.data.config import frames_per_second_or_step
from modules.data.transforms import clip_frames, frame_order_permutation, resize_center_crop_frame

# OpenCV seeks to the keyframe before (target - 16) and decodes forward (CvCapture_FFMPEG::seek).
OPENCV_SEEK_BACKOFF = 16
# Fixed cost of a seek (demuxer seek, decoder flush) in units of decoded frames: about 4 measured on 360p H.264,
# doubled for containers that seek more slowly; when in doubt, decoding forward is the safe choice.
SEEK_OVERHEAD_FRAMES = 8
# Below this many frames to walk, decoding forward is always cheap enough that the keyframe scan is not worth it.
KEYFRAME_SCAN_MIN_FRAMES = 64
# A stream may end this many seconds before the frame count in its header (containers that estimate the count
# from the duration); a larger shortfall means a truncated file.
HEADER_COUNT_SLACK_SECONDS = 1.0
# Packet timestamps are whole milliseconds or ticks of the container's time base: spacings within this many
# milliseconds (or this fraction of the median spacing, whichever is larger) count as a constant frame rate.
CONSTANT_RATE_TOLERANCE_MS = 1.5
CONSTANT_RATE_TOLERANCE_FRACTION = 0.02
# Frames above this many pixels are refused (8K UHD, 7680x4320, fits): one decoded frame of a 16384x16384 stream
# takes 0.8 GB before any resizing.
MAX_FRAME_PIXELS = 1 << 25


@dataclass
class VideoInfo:
    """What the container says about the video stream."""
    n_frames: int
    fps: float
    width: int
    height: int


class FrameReadError(DataError):
    """A frame the header promises could not be decoded; ``frame_index`` is the first missing one."""

    def __init__(self, message: str, frame_index: int = -1):  # default: DataLoader re-raises with the message only
        super().__init__(message)
        self.frame_index = frame_index


def sample_frame_indices(n_frames_total: int, fps: float, max_frames: int, feature_framerate: float = 1.0,
                         slice_framepos: int = 2, start: float | None = None, end: float | None = None) -> list[int]:
    """Frame indices the published loader keeps for a video (before its frame-order step).

    The rule: with the integer frame rate ``int(fps)`` and ``d = ceil(n / int(fps))`` seconds, take frame
    ``sec * int(fps) + offset`` for every second ``sec`` from 0 (or ``start``) to ``d`` (or ``min(end, d)``) inclusive
    and ``feature_framerate`` offsets ``0, step, 2 step, ...`` (step = ``int(fps) // feature_framerate``), as long as
    the frame exists; then, when more than ``max_frames``, keep the head (0), the tail (1) or ``linspace`` (2).

    Args:
        n_frames_total: decodable frames in the file.
        fps: the container's frame rate (its integer part is used, as published; below 1 counts as 1).
        max_frames: F.
        feature_framerate: frames per second of video, an integer or 1/k (every k-th second).
        slice_framepos: 0 head, 1 tail, 2 uniform.
        start, end: clip window in seconds (ActivityNet/DiDeMo style); cut to whole seconds, swapped when reversed
            and widened by one second when empty, as the published dataset readers do.
    Returns:
        Sorted frame indices, at most ``max_frames``; empty when the window holds no frame.
    """
    fps_int = max(1, int(fps))
    per_second, step_seconds = frames_per_second_or_step(feature_framerate)
    duration = (n_frames_total + fps_int - 1) // fps_int
    first, last = 0, duration
    if start is not None or end is not None:
        first = max(0, int(start)) if start is not None else 0
        last = max(0, int(end)) if end is not None else duration
        if first > last:
            first, last = last, first
        elif first == last:
            last += 1
        last = min(last, duration)
    interval = max(1, fps_int // per_second)
    offsets = list(range(0, fps_int, interval))[:per_second]
    indices = [sec * fps_int + off for sec in range(first, last + 1, step_seconds) for off in offsets]
    indices = [i for i in indices if i < n_frames_total]
    if len(indices) > max_frames:
        if slice_framepos == 0:
            indices = indices[:max_frames]
        elif slice_framepos == 1:
            indices = indices[-max_frames:]
        else:
            keep = np.linspace(0, len(indices) - 1, num=max_frames, dtype=int)
            indices = [indices[k] for k in keep]
    return indices


def _in_worker() -> bool:
    return torch.utils.data.get_worker_info() is not None


class VideoReader:
    """An open video file that returns chosen frames; use as a context manager.

    Inside a DataLoader worker the decoder runs single-threaded: the workers already use the cores.
    """

    def __init__(self, path: str):
        self.path = path
        kind = not_a_regular_file(path)
        if kind and kind != "missing":  # opening a FIFO or a device would wait for a writer or never end
            raise DataError(f"{path}: not a regular file ({kind})")
        self.params = [cv2.CAP_PROP_N_THREADS, 1] if _in_worker() else []
        try:
            self.cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG, self.params)
        except cv2.error as e:
            raise DataError(f"{path}: cannot open video ({e})") from None
        if not self.cap.isOpened():
            raise DataError(f"{path}: cannot open video (missing, empty, truncated or not a video)")
        self.pos = 0  # index of the frame the next grab() decodes
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        n = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if n <= 0:
            # No count in the header: count by decoding (rare; streams without an index).
            n = count_frames(path)
        width, height = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        problem = None
        if not math.isfinite(fps) or fps <= 0:
            problem = f"{path}: the video has no valid frame rate ({fps})"
        elif n <= 0:
            problem = f"{path}: the video has no decodable frames"
        elif width * height > MAX_FRAME_PIXELS:
            problem = (f"{path}: frames of {width}x{height} ({width * height / 1e6:.0f} megapixels) are above the "
                       f"{MAX_FRAME_PIXELS / 1e6:.1f} this loader decodes; downscale the video "
                       "(scripts/compress_video.py)")
        if problem:
            self.cap.release()
            raise DataError(problem)
        self.info = VideoInfo(n, fps, width, height)
        self._keyframes: list[int] | None = None

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.cap.release()

    def keyframes(self) -> list[int]:
        """Indices of keyframe packets (decode order) to seek to, from a demux-only pass; [] when unavailable or when
        the frame rate is not constant (seeks would land on other frames: see the module docstring)."""
        if self._keyframes is None:
            keys, constant = scan_packets(self.path)
            self._keyframes = keys if constant else []
        return self._keyframes

    def _seek_is_cheaper(self, target: int) -> bool:
        keys = self.keyframes()
        if not keys:
            return False
        landing = keys[max(0, bisect.bisect_right(keys, max(0, target - OPENCV_SEEK_BACKOFF)) - 1)]
        return SEEK_OVERHEAD_FRAMES + (target - landing) < target - self.pos

    def read(self, indices: Sequence[int], transform: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        """Decode the frames at ``indices`` (any order, repeats allowed).

        Args:
            indices: frame positions.
            transform: applied to each RGB frame as soon as it is decoded (e.g. the resize to the model's input), so
                that memory holds the kept frames in their final size, not every decoded frame.
        Returns:
            uint8 [len(indices), H, W, 3] RGB, or what ``transform`` makes of each frame.
        Raises:
            FrameReadError: a requested frame is past the real end of the stream.
        """
        if len(indices) == 0:
            return np.zeros((0, self.info.height, self.info.width, 3), dtype=np.uint8)
        targets = sorted(set(int(i) for i in indices))
        if targets[0] < 0:
            raise ValueError(f"negative frame index {targets[0]}")
        try:
            frames = self._read_sorted(targets, transform)
        except cv2.error as e:
            raise DataError(f"{self.path}: decoding failed ({str(e).strip().splitlines()[-1]})") from None
        return np.stack([frames[int(i)] for i in indices])

    def _read_sorted(self, targets: list[int], transform) -> dict[int, np.ndarray]:
        scan = targets[-1] - self.pos > KEYFRAME_SCAN_MIN_FRAMES
        frames = {}
        for t in targets:
            if t < self.pos or (scan and self._seek_is_cheaper(t)):
                self._seek(t)
            while self.pos < t:
                if not self.cap.grab():
                    raise FrameReadError(f"{self.path}: frame {self.pos} of {self.info.n_frames} is not decodable "
                                         "(truncated or corrupt file)", self.pos)
                self.pos += 1
            ok, frame = self.cap.read()
            if not ok or frame is None:
                raise FrameReadError(f"{self.path}: frame {t} of {self.info.n_frames} is not decodable "
                                     "(truncated or corrupt file)", t)
            self.pos += 1
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            frames[t] = transform(rgb) if transform is not None else rgb
        return frames

    def _seek(self, target: int) -> None:
        if not self.cap.set(cv2.CAP_PROP_POS_FRAMES, target):
            # The demuxer cannot seek: restart from the beginning and decode forward.
            self.cap.release()
            self.cap = cv2.VideoCapture(self.path, cv2.CAP_FFMPEG, self.params)
            self.pos = 0
            return
        self.pos = target


def keyframe_indices(path: str) -> list[int]:
    """Positions of keyframe packets, reading packets without decoding them (OpenCV's raw stream mode).

    Args:
        path: video file.
    Returns:
        Sorted packet indices flagged as keyframes; [] when the OpenCV build cannot tell.
    """
    return scan_packets(path)[0]


def scan_packets(path: str) -> tuple[list[int], bool]:
    """One demux-only pass: keyframe packet positions and whether the packets have a constant frame rate.

    Returns:
        (sorted packet indices flagged as keyframes, [] when the OpenCV build cannot tell; True when the sorted
        presentation timestamps are evenly spaced)
    """
    flag = getattr(cv2, "CAP_PROP_LRF_HAS_KEY_FRAME", None)
    if flag is None:
        return [], False
    try:
        cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_FORMAT, -1])
    except cv2.error:
        return [], False
    keys: list[int] = []
    stamps: list[float] = []
    try:
        i = 0
        while cap.isOpened() and cap.grab():
            if cap.get(flag):
                keys.append(i)
            stamps.append(cap.get(cv2.CAP_PROP_POS_MSEC))  # in raw mode: the packet's presentation time
            i += 1
    finally:
        cap.release()
    return keys, constant_rate(stamps)


def constant_rate(stamps_ms: Sequence[float]) -> bool:
    """Whether presentation timestamps (any order, milliseconds) are evenly spaced, within rounding."""
    if len(stamps_ms) < 3:
        return True
    gaps = np.diff(np.sort(np.asarray(stamps_ms, dtype=np.float64)))
    typical = float(np.median(gaps))
    if not typical > 0:
        return False  # no usable timestamps: do not trust seeks
    tolerance = max(CONSTANT_RATE_TOLERANCE_MS, CONSTANT_RATE_TOLERANCE_FRACTION * typical)
    return bool(np.abs(gaps - typical).max() <= tolerance)


def count_frames(path: str) -> int:
    """Number of frames a sequential decode yields (the reference count; slow for long files)."""
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    n = 0
    try:
        while cap.isOpened() and cap.grab():
            n += 1
    finally:
        cap.release()
    return n


def probe_video(path: str) -> VideoInfo:
    """Frame count, frame rate and size from the container; DataError when the file cannot be opened."""
    with VideoReader(path) as reader:
        return reader.info


def read_frames(path: str, indices: Sequence[int]) -> np.ndarray:
    """Decode the frames at ``indices`` from a video file.

    Args:
        path: video file.
        indices: frame indices (decode order of a sequential read), any order.
    Returns:
        uint8 [len(indices), H, W, 3] RGB, exactly the frames a sequential decode has at those positions.
    """
    with VideoReader(path) as reader:
        return reader.read(indices)


def _sampling(cfg: Any) -> tuple[int, float, int]:
    return int(cfg.max_frames), float(cfg.feature_framerate), int(cfg.slice_framepos)


def decode_clip(path: str, cfg: Any, start: float | None = None, end: float | None = None,
                resolution: int | None = None) -> tuple[np.ndarray, list[int]]:
    """The frames the sampling rule picks from one video file, in sampled order (before any frame-order step).

    Args:
        path: any video file OpenCV/FFmpeg can read.
        cfg: DataConfig, argparse Namespace or anything with ``max_frames``, ``feature_framerate``, ``slice_framepos``.
        start, end: optional clip window in seconds.
        resolution: resize and centre-crop each frame to R x R as it is decoded (``resize_center_crop``).
    Returns:
        frames uint8 [n, H, W, 3] RGB (1 <= n <= max_frames; [n, R, R, 3] with ``resolution``), their frame indices.
    Raises:
        DataError: the file cannot be opened, has no frames in the window, or is truncated.
    """
    max_frames, rate, slice_framepos = _sampling(cfg)
    transform = None if resolution is None else (lambda frame: resize_center_crop_frame(frame, resolution))
    with VideoReader(path) as reader:
        info = reader.info
        indices = sample_frame_indices(info.n_frames, info.fps, max_frames, rate, slice_framepos, start, end)
        try:
            frames = reader.read(indices, transform)
        except FrameReadError as e:
            # The header may over-count by up to about a second (duration-based counts); beyond that the file is
            # truncated. Within the slack, the published loader simply stops at the last frame: do the same.
            real = count_frames(path)
            if info.n_frames - real > max(1.0, HEADER_COUNT_SLACK_SECONDS * info.fps) or real == 0:
                raise DataError(f"{path}: truncated or corrupt video: the header promises {info.n_frames} frames, "
                                f"{real} are decodable") from e
            indices = sample_frame_indices(real, info.fps, max_frames, rate, slice_framepos, start, end)
            with VideoReader(path) as again:
                frames = again.read(indices, transform)
    if not indices:
        raise DataError(f"{path}: no frames in the window [{start}, {end}] s of a {info.n_frames}-frame video")
    return frames, indices


def load_video_raw(path: str, cfg: Any, start: float | None = None, end: float | None = None,
                   frame_order: int = 0, seed: int | Sequence[int] = 0,
                   resolution: int | None = None) -> tuple[np.ndarray, list[int]]:
    """Sampled frames of one video file as uint8, for tools (retrieval on your own videos, pictures).

    Args:
        path, cfg, start, end, resolution: as ``decode_clip``.
        frame_order: 0 normal, 1 reverse, 2 shuffled with ``seed``.
        seed: entropy for the shuffle.
    Returns:
        frames uint8 [n, H, W, 3] RGB (n <= max_frames; [n, R, R, 3] with ``resolution``), and their frame indices
        in the returned order.
    Raises:
        DataError: the file cannot be opened, has no frames in the window, or is truncated.
    """
    frames, indices = decode_clip(path, cfg, start, end, resolution)
    order = frame_order_permutation(len(indices), frame_order, seed)
    return frames[order], [indices[k] for k in order]


def load_video(path: str, cfg: Any, start: float | None = None, end: float | None = None,
               frame_order: int = 0, seed: int | Sequence[int] = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampled, CLIP-normalised, zero-padded frames of one video file.

    Args:
        path, cfg, start, end, frame_order, seed: as ``load_video_raw``; ``cfg`` also gives ``image_resolution``.
    Returns:
        video FloatTensor [F, 3, R, R] with F = cfg.max_frames, video_mask BoolTensor [F] (real frames first).
    """
    resolution = int(getattr(cfg, "image_resolution", 224))
    frames, _ = load_video_raw(path, cfg, start, end, frame_order, seed, resolution)  # [n, R, R, 3]
    return clip_frames(frames, resolution, int(cfg.max_frames))
