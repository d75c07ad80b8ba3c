"""Re-encode a folder of videos as the paper does before training: 3 fps, shorter side 224, no audio.

    python scripts/compress_video.py --input_root raw_videos --output_root videos_3fps [--workers 8]

Subfolders are mirrored and every output is ``<name>.mp4`` (H.264). Each output is written to a hidden temporary
file and renamed when ffmpeg succeeds, so an interrupted run leaves no half-written video and a rerun skips every
finished one. Uses ``ffmpeg`` from PATH, else the binary shipped by the ``imageio-ffmpeg`` package.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed

from tqdm import tqdm

from modules.data.annotations import VIDEO_EXTENSIONS


def find_ffmpeg(explicit: str | None = None) -> str:
    """The ffmpeg executable: ``explicit``, then PATH, then imageio-ffmpeg's."""
    if explicit:
        return explicit
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        sys.exit("error: no ffmpeg on PATH and imageio-ffmpeg is not installed (pip install imageio-ffmpeg)")


def plan(input_root: str, output_root: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(input, output) pairs for every video under ``input_root``, and the inputs whose output name is taken."""
    pairs, clashes, taken = [], [], set()
    for folder, dirs, files in os.walk(input_root):
        dirs.sort()
        for name in sorted(files):
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in VIDEO_EXTENSIONS:
                continue
            rel = os.path.relpath(os.path.join(folder, name), input_root)
            out = os.path.join(output_root, os.path.splitext(rel)[0] + ".mp4")
            if out in taken:
                clashes.append(os.path.join(folder, name))
                continue
            taken.add(out)
            pairs.append((os.path.join(folder, name), out))
    return pairs, clashes


def ffmpeg_command(ffmpeg: str, src: str, dst: str, fps: float, size: int, threads: int) -> list[str]:
    """Shorter side to ``size`` (even sizes for yuv420p), constant ``fps``, video stream only.

    The frame rate is set with the output option ``-r`` as in the published script (CLIP4Clip
    ``preprocess/compress_video.py``), so frame counts match the files the released models were trained on; ``-r``
    may repeat the last frame to fill the final interval.
    """
    scale = f"scale='if(gt(iw,ih),-2,{size})':'if(gt(iw,ih),{size},-2)'"
    return [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", src, "-map", "0:v:0",
            "-vf", scale, "-r", str(fps), "-c:v", "libx264", "-preset", "fast", "-crf", "23", "-pix_fmt", "yuv420p",
            "-threads", str(threads), "-an", "-f", "mp4", dst]


def compress_one(ffmpeg: str, src: str, dst: str, fps: float, size: int, threads: int) -> str | None:
    """Encode one video atomically; None on success, else ffmpeg's last error line."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = os.path.join(os.path.dirname(dst), f".{os.path.basename(dst)}.part")
    try:
        result = subprocess.run(ffmpeg_command(ffmpeg, src, tmp, fps, size, threads), capture_output=True, text=True)
        if result.returncode != 0 or not os.path.isfile(tmp) or os.path.getsize(tmp) == 0:
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            return lines[-1] if lines else f"ffmpeg exited with status {result.returncode}"
        os.replace(tmp, dst)
        return None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input_root", required=True, help="folder of original videos (searched recursively)")
    parser.add_argument("--output_root", required=True, help="folder for the re-encoded videos")
    parser.add_argument("--fps", type=float, default=3.0, help="output frame rate (the paper: 3)")
    parser.add_argument("--size", type=int, default=224, help="output shorter side in pixels (the paper: 224)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="videos encoded at once")
    parser.add_argument("--ffmpeg", default=None, help="ffmpeg executable (default: PATH, then imageio-ffmpeg)")
    args = parser.parse_args(argv)
    if os.path.abspath(args.input_root) == os.path.abspath(args.output_root):
        parser.error("--output_root must differ from --input_root")
    if not os.path.isdir(args.input_root):
        parser.error(f"--input_root {args.input_root} is not a folder")
    ffmpeg = find_ffmpeg(args.ffmpeg)
    pairs, clashes = plan(args.input_root, args.output_root)
    for src in clashes:
        print(f"warning: {src} skipped: another file of the same name already maps to its .mp4 output",
              file=sys.stderr)
    todo = [(s, d) for s, d in pairs if not os.path.isfile(d)]
    print(f"{len(pairs)} videos, {len(pairs) - len(todo)} already done, {len(todo)} to encode with {ffmpeg}")
    workers = max(1, min(args.workers, len(todo) or 1))
    threads = max(1, (os.cpu_count() or 1) // workers)
    failures = []
    with ThreadPoolExecutor(workers) as pool:
        jobs = {pool.submit(compress_one, ffmpeg, s, d, args.fps, args.size, threads): s for s, d in todo}
        for job in tqdm(as_completed(jobs), total=len(jobs), unit="video"):
            error = job.result()
            if error is not None:
                failures.append((jobs[job], error))
    for src, error in sorted(failures):
        print(f"failed: {src}: {error}", file=sys.stderr)
    print(f"encoded {len(todo) - len(failures)}, failed {len(failures)}, skipped {len(clashes)} name clashes")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
