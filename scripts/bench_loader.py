"""Training-loader throughput: decoding every clip against reading the frame cache, and whether the frames agree.

    python scripts/bench_loader.py [--clips 120] [--batch_size 16] [--workers 2]

Clips like the paper's compressed videos (3 fps, shorter side 224; H.264 from the imageio-ffmpeg binary, or OpenCV's
MPEG-4 part 2 without it), up to 12 frames of 224x224 each at 1 frame/s. The loader is the training loader
(``RetrievalSplit`` items through the global batch sampler) as a CUDA run uses it: uint8 frames, normalised on the
device, so the figures are what reaches the GPU. Each batch is timed until its frames lie in one buffer per batch
size, used again and again as a CUDA run's pinned memory is (PyTorch's caching host allocator): for decoded batches
the pin-memory copy out of the workers' shared memory, for cached ones the one copy out of the cache
(``modules.data.frame_batch``). Each side runs with 0 and ``--workers`` workers; clips/s count the clips after the
first batch (worker start-up left out: training keeps its workers across epochs), the cache over ``CACHE_REPEATS``
epochs in a row (one lasts a fraction of a second). Every batch of the two sides is compared. Also printed: the
cache's bytes per clip and the projected size for MSR-VTT (10,000 clips, 12 frames) and ActivityNet (20,000 clips,
64 frames). The last line:

    loader: decode X clips/s, cache Y clips/s, Zx, frames identical: True
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time

import cv2
import torch
from bench_video import make_video, optional_ffmpeg
from benchlib import run_benchmark

from modules.data import DataConfig, build_split, collate_skip_none
from modules.data.frame_batch import batch_video
from modules.data.frame_cache import read_index
from modules.data.frame_cache_build import build_frame_cache, split_clips
from modules.data.samplers import GlobalBatchSampler
from modules.data.synthetic import generate

# Distinct source clips (seconds); the set repeats them under every video name (the decoder's work is per file).
LENGTHS = (10, 13, 16, 19)
PROJECTIONS = (("MSR-VTT", 10_000, 12), ("ActivityNet", 20_000, 64))


# The cache side reads its epoch this many times: one epoch of it lasts a fraction of a second, too short to time.
CACHE_REPEATS = 5


def make_set(folder: str, clips: int, ffmpeg) -> str:
    """A synthetic MSR-VTT layout whose videos are replaced by 3-fps clips of 398x224; returns the codec."""
    generate(folder, clips, 1, seed=0)
    sources, codec = [], ""
    for seconds in LENGTHS:
        path = os.path.join(folder, f"source{seconds}.mp4")
        codec = make_video(ffmpeg, path, seconds, 3, 398, 224)
        sources.append(path)
    videos = os.path.join(folder, "videos")
    for k, name in enumerate(sorted(os.listdir(videos))):
        shutil.copyfile(sources[k % len(sources)], os.path.join(videos, name))
    return codec


def passes(split, workers: int, batch_size: int, repeats: int = 1) -> tuple[float, list[torch.Tensor]]:
    """(clips/s after the first batch, the first epoch's videos) of ``repeats`` epochs of the training loader."""
    epoch = list(GlobalBatchSampler(len(split), batch_size, 1, 1, 0, seed=0))
    loader = torch.utils.data.DataLoader(split, batch_sampler=epoch * repeats, num_workers=workers,
                                         collate_fn=collate_skip_none)
    videos, clips, start, untimed, buffers = [], 0, None, 0.0, {}
    for i, batch in enumerate(loader):
        shape = tuple(batch["video"].shape)  # a buffer per batch size, used again and again like the pinned memory
        if shape not in buffers:  # of a CUDA run (PyTorch's caching host allocator)
            buffers[shape] = torch.empty(shape, dtype=torch.uint8)
        video = batch_video(batch["video"], out=buffers[shape])  # the copy into that memory, timed
        if start is None:
            start = time.perf_counter()
        else:
            clips += len(batch["index"])
        if i < len(epoch):
            t0 = time.perf_counter()
            videos.append(video.clone())
            untimed += time.perf_counter() - t0
    return clips / (time.perf_counter() - start - untimed), videos


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=120, help="training clips (videos) in the set")
    parser.add_argument("--batch_size", type=int, default=16, help="clips per batch")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the second measurement")
    args = parser.parse_args(argv)
    return run_benchmark(args, run, counts=("clips", "batch_size", "workers"))


def run(args: argparse.Namespace) -> int:
    ffmpeg = optional_ffmpeg()
    torch.set_num_threads(1)
    print(f"OpenCV {cv2.__version__}, torch {torch.__version__}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "set")
        codec = make_set(data, args.clips, ffmpeg)
        cfg = DataConfig(datatype="msrvtt", data_path=os.path.join(data, "data.json"),
                         features_path=os.path.join(data, "videos"), train_csv=os.path.join(data, "train.csv"),
                         val_csv=os.path.join(data, "test.csv"), max_frames=12, feature_framerate=1,
                         slice_framepos=2)
        print(f"{args.clips} clips of {min(LENGTHS)}-{max(LENGTHS)} s, 3 fps, 398x224, {codec}; up to 12 frames of "
              f"224x224 per clip, batch {args.batch_size}")
        root = os.path.join(tmp, "frames")
        live = build_split(cfg, "train")
        report = build_frame_cache(root, cfg, split_clips(live), workers=args.workers, progress=False)
        on_disk = sum(os.path.getsize(os.path.join(report.folder, n)) for n in os.listdir(report.folder))
        frames = sum(entry["frames"] for entry in read_index(report.folder).values())
        per_clip, per_frame = on_disk / report.clips, on_disk / frames
        print(f"cache build: {report.clips / report.seconds:.1f} clips/s with {args.workers} workers; "
              f"{per_clip / 2 ** 20:.2f} MiB per clip on disk ({per_clip:.0f} bytes, {frames / report.clips:.1f} "
              f"frames of {per_frame:.0f} bytes, shard index included)")
        print("projected cache size: " + "; ".join(
            f"{name} ({clips:,} clips, {n} frames) {clips * n * per_frame / 2 ** 30:.0f} GiB"
            for name, clips, n in PROJECTIONS))
        cached = build_split(dataclasses.replace(cfg, frame_cache=root, frame_cache_strict=True), "train")
        for split in (live, cached):
            split.uint8_video = True
        rates, identical = {}, True
        for workers in (0, args.workers):
            decode, a = passes(live, workers, args.batch_size)
            cache, b = passes(cached, workers, args.batch_size, CACHE_REPEATS)
            identical &= len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))
            rates[workers] = (decode, cache)
            print(f"loader, {workers} workers: decode {decode:.1f} clips/s, cache {cache:.1f} clips/s, "
                  f"{cache / decode:.1f}x")
    decode, cache = rates[args.workers]
    print(f"loader: decode {decode:.1f} clips/s, cache {cache:.1f} clips/s, {cache / decode:.1f}x, "
          f"frames identical: {identical}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
