"""Video loading throughput: this repo's decoder against the published approach, and the dataloader.

    python scripts/bench_video.py [--repeats 3] [--synthetic 64]

The published approach (CLIP4Clip ``rawvideo_util.py``, used by UCoFiA) seeks to every second of the video, decodes
and preprocesses each of those frames, then keeps ``max_frames`` by linspace. Both sides run here on the same
generated files, in one process, and must return identical tensors. Test videos are H.264 (libx264 from the
imageio-ffmpeg binary, ffmpeg's default keyframe interval of 250 frames) when ffmpeg is available.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np
import torch
from benchlib import run_benchmark
from compress_video import find_ffmpeg
from PIL import Image
from torchvision import transforms as T

from modules.common.errors import ConfigError
from modules.data import DataConfig, build_split, load_video
from modules.data.synthetic import generate
from modules.data.transforms import CLIP_MEAN, CLIP_STD
from modules.data.video import read_frames, sample_frame_indices


def optional_ffmpeg() -> str | None:
    """ffmpeg for H.264 test videos (``compress_video.find_ffmpeg``), or None: ``make_video`` then writes MPEG-4
    part 2 with OpenCV."""
    try:
        return find_ffmpeg()
    except ConfigError:
        return None


def make_video(ffmpeg: str | None, path: str, seconds: int, fps: int, width: int, height: int) -> str:
    """A test-pattern video; returns a description of the codec used."""
    if ffmpeg:
        src = f"testsrc2=size={width}x{height}:rate={fps}"
        subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", src, "-t",
                        str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", path],
                       check=True)
        return "H.264 (libx264, keyframe every 250 frames)"
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    rng = np.random.default_rng(0)
    for k in range(seconds * fps):
        frame = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        cv2.putText(frame, str(k), (10, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
        writer.write(frame)
    writer.release()
    return "MPEG-4 part 2 (OpenCV mp4v; no ffmpeg found)"


PUBLISHED_TRANSFORM = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224),
                                 T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])


def published_load(path: str, max_frames: int, preprocess: bool = True) -> tuple[torch.Tensor | np.ndarray, list]:
    """The published loader's steps: a seek per second, decode (+ preprocess) each frame, then linspace."""
    cap = cv2.VideoCapture(path)
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    fps = int(cap.get(cv2.CAP_PROP_FPS))
    duration = (n + fps - 1) // fps
    frames, indices = [], []
    for sec in range(0, duration + 1):
        cap.set(cv2.CAP_PROP_POS_FRAMES, sec * fps)
        ok, frame = cap.read()
        if not ok:
            break
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        frames.append(PUBLISHED_TRANSFORM(Image.fromarray(rgb)) if preprocess else rgb)
        indices.append(sec * fps)
    cap.release()
    if len(frames) > max_frames:
        keep = np.linspace(0, len(frames) - 1, num=max_frames, dtype=int)
        frames, indices = [frames[k] for k in keep], [indices[k] for k in keep]
    return (torch.stack(frames) if preprocess else np.stack(frames)), indices


def rate(fn, repeats: int) -> float:
    """Clips per second of ``fn`` (best of ``repeats`` timed calls after one warm-up)."""
    fn()
    best = min(_timed(fn) for _ in range(repeats))
    return 1.0 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(path: str, label: str, cfg: DataConfig, repeats: int) -> tuple[float, float]:
    """Check identical output, then time both sides: full clip (decode + CLIP preprocessing) and decode only."""
    ref, ref_idx = published_load(path, cfg.max_frames)
    ours, mask = load_video(path, cfg)
    n = int(mask.sum())
    assert n == len(ref_idx) and torch.equal(ours[:n], ref), f"{label}: frames differ from the published approach"
    cap = cv2.VideoCapture(path)
    idx = sample_frame_indices(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), cap.get(cv2.CAP_PROP_FPS), cfg.max_frames,
                               cfg.feature_framerate, cfg.slice_framepos)
    cap.release()
    assert idx == ref_idx, f"{label}: indices differ: {idx} vs {ref_idx}"
    raw_ref, _ = published_load(path, cfg.max_frames, preprocess=False)
    assert np.array_equal(read_frames(path, idx), raw_ref), f"{label}: raw frames differ"
    full_pub = rate(lambda: published_load(path, cfg.max_frames), repeats)
    full_ours = rate(lambda: load_video(path, cfg), repeats)
    dec_pub = rate(lambda: published_load(path, cfg.max_frames, preprocess=False), repeats)
    dec_ours = rate(lambda: read_frames(path, idx), repeats)
    print(f"{label}: {n} frames {idx}")
    print(f"  decode + preprocess: published {full_pub:7.2f} clips/s   ours {full_ours:7.2f} clips/s   "
          f"x{full_ours / full_pub:.1f}")
    print(f"  decode only:         published {dec_pub:7.2f} clips/s   ours {dec_ours:7.2f} clips/s   "
          f"x{dec_ours / dec_pub:.1f}")
    return full_ours / full_pub, dec_ours / dec_pub


def loader_rate(folder: str, workers: int, batch_size: int) -> float:
    """Training clips/s of a full pass over the synthetic set (worker start-up included)."""
    cfg = DataConfig(datatype="msrvtt", data_path=os.path.join(folder, "data.json"),
                     features_path=os.path.join(folder, "videos"), train_csv=os.path.join(folder, "train.csv"),
                     val_csv=os.path.join(folder, "test.csv"))
    split = build_split(cfg, "train")
    loader = torch.utils.data.DataLoader(split, batch_size=batch_size, num_workers=workers, shuffle=False)
    start = time.perf_counter()
    count = sum(len(batch["index"]) for batch in loader)
    return count / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (best is reported)")
    parser.add_argument("--synthetic", type=int, default=64, help="training videos in the dataloader benchmark")
    args = parser.parse_args(argv)
    return run_benchmark(args, lambda a: run(a, argv), counts=("repeats", "synthetic"))


def run(args: argparse.Namespace, argv) -> int | None:
    """The benchmark behind ``main``, on checked flags."""
    ffmpeg = optional_ffmpeg()
    torch.set_num_threads(1)
    cfg = DataConfig(max_frames=12, feature_framerate=1, slice_framepos=2)
    print(f"OpenCV {cv2.__version__}, torch {torch.__version__}, {os.cpu_count()} CPUs")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        long_path, short_path = os.path.join(tmp, "long.mp4"), os.path.join(tmp, "short.mp4")
        codec = make_video(ffmpeg, long_path, 60, 30, 640, 360)
        make_video(ffmpeg, short_path, 10, 3, 398, 224)
        print(f"codec: {codec}")
        full, _ = compare(long_path, "60 s, 30 fps, 640x360", cfg, args.repeats)
        ok &= full >= 3.0
        full_short, _ = compare(short_path, "10 s, 3 fps, 398x224", cfg, max(args.repeats, 10))
        ok &= full_short >= 1.0
        generate(os.path.join(tmp, "synth"), args.synthetic, 2, seed=0)
        for workers in (0, 2):
            clips = loader_rate(os.path.join(tmp, "synth"), workers, batch_size=8)
            print(f"dataloader, synthetic set ({args.synthetic} clips, mp4v 128x96, 3 fps), {workers} workers: "
                  f"{clips:.1f} clips/s")
    print("targets (>= 3x on the 60 s video, not slower on the 10 s clip):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
