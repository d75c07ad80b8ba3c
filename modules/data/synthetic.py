"""A small synthetic video-text set in the MSR-VTT layout, for the demo and the tests.

Each video shows one coloured shape moving in one direction over a background; its captions name the colour, the
shape, the direction and the background in several phrasings. Videos come in pairs that differ only in the direction
of motion (left/right or up/down), so retrieval cannot be solved from single frames: it needs appearance and motion.
Test videos have distinct (colour, shape, background, direction) combinations where the vocabulary allows.

Layout (read with ``--datatype msrvtt``): ``train.csv`` (plays MSRVTT_train.9k.csv), ``test.csv`` (plays
MSRVTT_JSFUSION_test.csv, one caption per video), ``data.json`` (plays MSRVTT_data.json, every caption of every
video) and ``videos/<video_id>.mp4`` (MPEG-4 part 2, 3 fps like the paper's compressed videos, 8-12 s, 128x96).
The same seed gives byte-identical annotation files and identical decoded frames.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import random
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from modules.common.errors import DataError

logger = logging.getLogger(__name__)

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 70, 230), "yellow": (240, 220, 30),
           "purple": (140, 50, 190), "orange": (250, 140, 20), "pink": (250, 120, 190), "cyan": (40, 210, 220)}
SHAPES = ("circle", "square", "triangle", "diamond")
BACKGROUNDS = ("black", "white", "gray", "striped")
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
DIRECTION_WORDS = {"left": ("to the left", "left", "leftward"), "right": ("to the right", "right", "rightward"),
                   "up": ("up", "upward", "toward the top"), "down": ("down", "downward", "toward the bottom")}
TEMPLATES = ("{a_c} {s} moves {d} on a {b} background",
             "{a_c} {s} moving {d} over a {b} background",
             "on a {b} background, {a_c} {s} slides {d}",
             "the {c} {s} travels {d} across a {b} screen",
             "{b} backdrop with a {c} {s} going {d}",
             "a {s} that is {c} drifts {d} in front of a {b} background")
# Frame size (width, height): 4:3 so the loader's resize and centre crop are exercised; motion stays in the crop.
SIZE = (128, 96)
# The paper's compressed videos are 3 fps; at 1 frame/s sampling a 8-12 s clip yields 8-12 frames.
FPS = 3
SECONDS = (8, 12)
# Shape radius in pixels: about 40% of the frame height, so that a small ViT trained from scratch on the CPU sees
# colour and shape within a few hundred steps (with smaller shapes the demo's tiny CLIP stalls on the background).
RADIUS = (18, 24)


@dataclass
class VideoSpec:
    """What one synthetic video shows."""
    video_id: str
    split: str
    colour: str
    shape: str
    direction: str
    background: str
    seconds: int
    size: int      # shape radius in pixels
    offset: float  # position across the motion, as a fraction of the frame


def _paired_specs(rng: random.Random, n: int, split: str, first_id: int, distinct: bool) -> list[VideoSpec]:
    """n specs in pairs of opposite directions; ``distinct`` draws (colour, shape, background, axis) without repeats."""
    combos = [(c, s, b, axis) for c in COLOURS for s in SHAPES for b in BACKGROUNDS for axis in ("left", "up")]
    rng.shuffle(combos)
    specs = []
    for k in range(n):
        if k % 2 == 0:
            colour, shape, background, axis = combos[(k // 2) % len(combos)] if distinct else rng.choice(combos)
            direction = axis if rng.random() < 0.5 else OPPOSITE[axis]
        else:
            direction = OPPOSITE[specs[-1].direction]
        specs.append(VideoSpec(f"video{first_id + k}", split, colour, shape, direction, background,
                               rng.randint(*SECONDS), rng.randint(*RADIUS), rng.uniform(0.4, 0.6)))
    if distinct and n > 2 * len(combos):
        logger.warning("synthetic test set: %d videos but only %d distinct combinations", n, 2 * len(combos))
    return specs


def captions_for(spec: VideoSpec, rng: random.Random, n: int) -> list[str]:
    """n different phrasings of what the video shows."""
    templates = rng.sample(TEMPLATES, n)
    a_c = f"{'an' if spec.colour[0] in 'aeiou' else 'a'} {spec.colour}"
    return [t.format(a_c=a_c, c=spec.colour, s=spec.shape, b=spec.background,
                     d=rng.choice(DIRECTION_WORDS[spec.direction])) for t in templates]


def _background(name: str, w: int, h: int) -> np.ndarray:
    if name == "striped":
        img = np.full((h, w, 3), 70, dtype=np.uint8)
        for y in range(0, h, 12):
            img[y:y + 6] = 170
        return img
    level = {"black": 10, "white": 245, "gray": 128}[name]
    return np.full((h, w, 3), level, dtype=np.uint8)


def _draw(img: np.ndarray, shape: str, cx: int, cy: int, r: int, rgb: tuple[int, int, int]) -> None:
    colour = tuple(int(v) for v in rgb[::-1])  # OpenCV draws in BGR
    if shape == "circle":
        cv2.circle(img, (cx, cy), r, colour, -1, cv2.LINE_8)
    elif shape == "square":
        cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), colour, -1, cv2.LINE_8)
    else:
        pts = [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)] if shape == "triangle" else \
            [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
        cv2.fillPoly(img, [np.array(pts, dtype=np.int32)], colour, cv2.LINE_8)


def render(spec: VideoSpec) -> np.ndarray:
    """Frames of a video, uint8 [T, H, W, 3] BGR (T = seconds * FPS)."""
    w, h = SIZE
    n = spec.seconds * FPS
    base = _background(spec.background, w, h)
    dx, dy = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[spec.direction]
    frames = np.empty((n, h, w, 3), dtype=np.uint8)
    for t in range(n):
        # Travel from 30% to 70% of the frame (inside the centre crop) along the direction of motion.
        along = 0.3 + 0.4 * t / max(1, n - 1)
        x = spec.offset if dx == 0 else (along if dx > 0 else 1 - along)
        y = spec.offset if dy == 0 else (along if dy > 0 else 1 - along)
        frames[t] = base
        _draw(frames[t], spec.shape, int(round(x * w)), int(round(y * h)), spec.size, COLOURS[spec.colour])
    return frames


def write_video(path: str, frames: np.ndarray, fps: float = FPS) -> None:
    """Write BGR frames [T, H, W, 3] as an MPEG-4 part 2 mp4 (OpenCV's own encoder: no external tool needed)."""
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise DataError(f"{path}: OpenCV cannot write mp4v video (build without FFmpeg?)")
    for frame in frames:
        writer.write(frame)
    writer.release()


def generate(out: str, n_train: int, n_test: int, seed: int = 0) -> list[VideoSpec]:
    """Write the synthetic set to ``out``.

    Args:
        out: output folder (created; existing files of the same names are replaced).
        n_train, n_test: number of training and test videos.
        seed: everything (attributes, captions, motion) follows from it.
    Returns:
        The spec of every video, training videos first.
    """
    if n_train < 1 or n_test < 1:
        raise ValueError("the synthetic set needs at least one training and one test video")
    rng = random.Random(seed)
    specs = _paired_specs(rng, n_train, "train", 0, distinct=False) + \
        _paired_specs(rng, n_test, "test", n_train, distinct=True)
    # Training videos get 3-5 captions; test videos 3, of which test.csv uses the first.
    captions = {s.video_id: captions_for(s, rng, rng.randint(3, 5) if s.split == "train" else 3) for s in specs}
    video_dir = os.path.join(out, "videos")
    os.makedirs(video_dir, exist_ok=True)
    for spec in specs:
        write_video(os.path.join(video_dir, f"{spec.video_id}.mp4"), render(spec))
    with open(os.path.join(out, "train.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["video_id"])
        writer.writerows([s.video_id] for s in specs if s.split == "train")
    with open(os.path.join(out, "test.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["key", "vid_key", "video_id", "sentence"])
        test = [s for s in specs if s.split == "test"]
        writer.writerows([f"ret{k}", f"msr{s.video_id[5:]}", s.video_id, captions[s.video_id][0]]
                         for k, s in enumerate(test))
    data = {"info": {"description": "synthetic video-text set (modules/data/synthetic.py)", "seed": seed},
            "videos": [{"video_id": s.video_id, "id": i, "split": s.split, **_attributes(s)}
                       for i, s in enumerate(specs)],
            "sentences": [{"video_id": s.video_id, "caption": c, "sen_id": 0} for s in specs
                          for c in captions[s.video_id]]}
    for k, sentence in enumerate(data["sentences"]):
        sentence["sen_id"] = k
    with open(os.path.join(out, "data.json"), "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    logger.info("wrote %d training and %d test videos to %s", n_train, n_test, out)
    return specs


def _attributes(spec: VideoSpec) -> dict:
    keep = ("colour", "shape", "direction", "background", "seconds")
    return {k: v for k, v in asdict(spec).items() if k in keep}
