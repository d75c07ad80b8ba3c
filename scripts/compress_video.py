"""Re-encode a folder of videos as the paper does before training: 3 fps, shorter side 224, no audio.

    python scripts/compress_video.py --input_root raw_videos --output_root videos_3fps [--workers 8]

Subfolders are mirrored and every output is ``<name>.mp4`` (H.264). Each output is written to a hidden temporary
file and renamed when ffmpeg succeeds, so an interrupted run leaves no half-written video and a rerun skips every
finished one. The output folder may lie inside the input folder (it is not searched for inputs). Uses ``ffmpeg``
from PATH, else the binary shipped by the ``imageio-ffmpeg`` package. Bad flags and folders are one ``error:`` line
with exit status 2; videos ffmpeg cannot encode are listed and the exit status is 1.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed

from tqdm import tqdm

from modules.common.errors import ConfigError
from modules.common.io import not_a_regular_file, prepare_output_dir
from modules.common.runtime import run_entry
from modules.data.annotations import VIDEO_EXTENSIONS


def find_ffmpeg(explicit: str | None = None) -> str:
    """The ffmpeg executable: ``explicit``, then PATH, then imageio-ffmpeg's."""
    if explicit:
        found = shutil.which(explicit)
        if found is None:
            raise ConfigError(f"--ffmpeg {explicit}: no such executable")
        return found
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        raise ConfigError("no ffmpeg on PATH and imageio-ffmpeg (a requirement of this project) is not installed: "
                          "pip install imageio-ffmpeg, or give --ffmpeg") \
            from None


def plan(input_root: str, output_root: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(input, output) pairs for every video under ``input_root``, and the inputs whose output name is taken.

    An ``output_root`` inside ``input_root`` is not searched (its files are this script's outputs, not inputs), and
    entries that are not regular files (a FIFO named ``x.mp4`` would keep ffmpeg waiting forever) are skipped with a
    warning.
    """
    pairs, clashes, taken = [], [], set()
    output_abs = os.path.abspath(output_root)
    for folder, dirs, files in os.walk(input_root):
        dirs[:] = sorted(d for d in dirs if os.path.abspath(os.path.join(folder, d)) != output_abs)
        for name in sorted(files):
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in VIDEO_EXTENSIONS:
                continue
            src = os.path.join(folder, name)
            kind = not_a_regular_file(src)
            if kind:
                print(f"warning: {src} skipped: not a regular file ({kind})", file=sys.stderr)
                continue
            rel = os.path.relpath(src, input_root)
            out = os.path.join(output_root, os.path.splitext(rel)[0] + ".mp4")
            if out in taken:
                clashes.append(src)
                continue
            taken.add(out)
            pairs.append((src, out))
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
    """Encode one video atomically; None on success, else ffmpeg's last error line (or the file error)."""
    tmp = os.path.join(os.path.dirname(dst), f".{os.path.basename(dst)}.part")
    try:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        result = subprocess.run(ffmpeg_command(ffmpeg, src, tmp, fps, size, threads), capture_output=True, text=True)
        if result.returncode != 0 or not os.path.isfile(tmp) or os.path.getsize(tmp) == 0:
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            return lines[-1] if lines else f"ffmpeg exited with status {result.returncode}"
        os.replace(tmp, dst)
        return None
    except OSError as e:  # a full disk or a folder that cannot be made: this video fails, the others go on
        return f"{e.filename or dst}: {e.strerror or e}"
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input_root", required=True, help="folder of original videos (searched recursively)")
    parser.add_argument("--output_root", required=True, help="folder for the re-encoded videos (may be inside "
                                                             "--input_root: it is then not searched)")
    parser.add_argument("--fps", type=float, default=3.0, help="output frame rate (the paper: 3)")
    parser.add_argument("--size", type=int, default=224, help="output shorter side in pixels (the paper: 224)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="videos encoded at once")
    parser.add_argument("--ffmpeg", default=None, help="ffmpeg executable (default: PATH, then imageio-ffmpeg)")
    args = parser.parse_args(argv)
    return run_entry(lambda: compress_folder(args))


def compress_folder(args: argparse.Namespace) -> int:
    """The run behind ``main``; a bad flag or folder is a ``ConfigError`` (one line, exit status 2)."""
    if not (math.isfinite(args.fps) and args.fps > 0):
        raise ConfigError(f"--fps must be a positive number, got {args.fps}")
    if args.size < 2 or args.workers < 1:
        raise ConfigError(f"--size must be at least 2 and --workers at least 1 (got {args.size}, {args.workers})")
    if not os.path.isdir(args.input_root):
        raise ConfigError(f"--input_root {args.input_root} is not a folder")
    if os.path.abspath(args.input_root) == os.path.abspath(args.output_root):
        raise ConfigError("--output_root must differ from --input_root")
    prepare_output_dir(args.output_root, "--output_root")
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
