"""Frame preprocessing exactly as CLIP and the published loader do it, and the frame-order codes.

The published loader applies torchvision ``Resize(R, bicubic)`` + ``CenterCrop(R)`` + ``ToTensor`` + ``Normalize``
on PIL images; the same PIL calls are made here (resizing with another library changes the pixels the released
checkpoint was trained on), but only for the frames that are kept.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

from modules.data.frame_batch import FrameBatch, batch_video

# CLIP's image statistics (OpenAI clip/clip.py), used by every CLIP-based retrieval model.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# Beyond this aspect ratio (16:1; real videos stay under 4:1) the published order, resize then crop, would allocate a
# resized frame of aspect * R^2 pixels (4.5 GB for one 16384x2 frame); such frames are cropped inside the resize.
MAX_EXACT_ASPECT = 16


def resize_center_crop(frames: np.ndarray, resolution: int) -> np.ndarray:
    """Shorter side to ``resolution`` (PIL bicubic), then the centred square.

    Args:
        frames: uint8 [N, H, W, 3] RGB.
        resolution: output side R.
    Returns:
        uint8 [N, R, R, 3].
    """
    out = np.empty((len(frames), resolution, resolution, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        out[i] = resize_center_crop_frame(frame, resolution)
    return out


def resize_center_crop_frame(frame: np.ndarray, resolution: int) -> np.ndarray:
    """One frame uint8 [H, W, 3] -> [R, R, 3], as ``resize_center_crop``.

    Up to ``MAX_EXACT_ASPECT`` the pixels are exactly torchvision's Resize + CenterCrop. Beyond, PIL resamples only
    the source box that becomes the centred square (the same filter and scale; rounding may differ by a level), so
    memory stays proportional to the output.
    """
    img = Image.fromarray(frame)
    w, h = img.size
    # torchvision's rule for an int size: the shorter side becomes R, the longer one int(R * long / short).
    if w <= h:
        new_w, new_h = resolution, int(resolution * h / w)
    else:
        new_w, new_h = int(resolution * w / h), resolution
    top = int(round((new_h - resolution) / 2.0))
    left = int(round((new_w - resolution) / 2.0))
    if max(w, h) > MAX_EXACT_ASPECT * min(w, h):
        sx, sy = w / new_w, h / new_h
        box = (left * sx, top * sy, (left + resolution) * sx, (top + resolution) * sy)
        return np.asarray(img.resize((resolution, resolution), Image.BICUBIC, box=box))
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.BICUBIC)
    return np.asarray(img)[top:top + resolution, left:left + resolution]


def normalize(frames: np.ndarray) -> torch.Tensor:
    """uint8 [N, R, R, 3] RGB -> float [N, 3, R, R] with CLIP mean/std."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)  # [N, 3, R, R]
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)


def clip_frames(frames: np.ndarray, resolution: int, max_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Preprocess frames for CLIP and pad them to ``max_frames``.

    Args:
        frames: uint8 [n, H, W, 3] RGB, n <= max_frames.
        resolution: output side R.
        max_frames: F.
    Returns:
        video FloatTensor [F, 3, R, R] (padding frames are zeros), video_mask BoolTensor [F] (True for real frames).
    """
    n = len(frames)
    video = torch.zeros(max_frames, 3, resolution, resolution)
    mask = torch.zeros(max_frames, dtype=torch.bool)
    if n:
        video[:n] = normalize(resize_center_crop(frames, resolution))
        mask[:n] = True
    return video, mask


def pad_uint8(frames: np.ndarray, max_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames already at the model's side, kept as uint8 for ``normalize_video`` to finish on the device.

    Args:
        frames: uint8 [n, R, R, 3] RGB, n <= max_frames.
        max_frames: F.
    Returns:
        video ByteTensor [F, R, R, 3], channels last as decoded (padding frames are zeros), video_mask BoolTensor [F]:
        a quarter of the bytes of ``clip_frames``'s output, and exactly its values once through ``normalize_video``
        (which also moves the channels to where the model takes them, on the device).
    """
    n, resolution = len(frames), frames.shape[1]
    video = torch.empty(max_frames, resolution, resolution, 3, dtype=torch.uint8)
    video[n:] = 0                   # only the padding is cleared: the frames are written once
    mask = torch.zeros(max_frames, dtype=torch.bool)
    if n:
        video.numpy()[:n] = frames  # one copy
        mask[:n] = True
    return video, mask


def normalize_video(video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A batch's video as the model takes it: a uint8 one (``pad_uint8``, channels last) is normalised where it is,
    with the same operations as ``normalize`` and padding frames set to zero, so the values equal ``clip_frames``'s
    bit for bit; a float one is returned as it is.

    Args:
        video: uint8 [..., F, R, R, 3] or float [..., F, 3, R, R].
        mask: bool [..., F], True for real frames.
    Returns:
        float [..., F, 3, R, R].
    """
    if video.dtype != torch.uint8:
        return video
    # Tensor divisors (not Python scalars): CUDA would multiply by the reciprocal of a scalar, which rounds otherwise.
    x = video.float().div_(torch.full((1,), 255.0, device=video.device))
    x = x.sub_(torch.tensor(CLIP_MEAN, device=video.device)).div_(torch.tensor(CLIP_STD, device=video.device))
    x = x.masked_fill_(~mask.to(video.device)[..., None, None, None], 0.0)
    return x.movedim(-1, -3).contiguous()                                                 # [..., F, 3, R, R]


def video_to_device(video: torch.Tensor | FrameBatch, mask: torch.Tensor,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Move a batch's video (float [B, F, 3, R, R], or uint8 [B, F, R, R, 3] as a tensor or a ``FrameBatch``) and
    mask [B, F] to ``device`` (asynchronously from pinned memory) and normalise a uint8 video there
    (``normalize_video``): a quarter of the bytes cross the bus."""
    video, mask = batch_video(video).to(device, non_blocking=True), mask.to(device, non_blocking=True)
    return normalize_video(video, mask), mask


def frame_order_permutation(n: int, frame_order: int, seed: int | Sequence[int] = 0) -> np.ndarray:
    """Positions to reorder n sampled frames: 0 = as sampled, 1 = reversed, 2 = shuffled.

    Args:
        n: number of frames.
        frame_order: the published code (``--train_frame_order`` / ``--eval_frame_order``).
        seed: entropy for the shuffle; the datasets pass (seed, epoch, index) so a run is reproducible.
    Returns:
        int64 [n] permutation.
    """
    if frame_order == 0:
        return np.arange(n)
    if frame_order == 1:
        return np.arange(n)[::-1].copy()
    if frame_order == 2:
        return np.random.default_rng(seed_entropy(seed)).permutation(n)
    raise ValueError(f"frame_order must be 0, 1 or 2, got {frame_order}")


def seed_entropy(seed: int | Sequence[int]) -> list[int]:
    """Non-negative integers for numpy's SeedSequence (a negative --seed is still a valid seed)."""
    parts = [seed] if isinstance(seed, (int, np.integer)) else list(seed)
    return [int(p) % (1 << 63) for p in parts]
