"""Retrieval on your own videos with a trained checkpoint.

    python scripts/retrieve.py index  --checkpoint CKPT --videos DIR [--index FILE]
    python scripts/retrieve.py search --checkpoint CKPT --videos DIR --query "a dog runs on a beach" [--top_k 5]
    python scripts/retrieve.py rank   --checkpoint CKPT --video clip.mp4 --captions captions.txt

``index`` encodes every video under DIR (recursively) once and caches the features in FILE (default
DIR/ucofia_index.pt); a later run, and ``search``, which brings the index up to date first, encode only the files that
are new or changed (path, size, modification and status-change times) and everything again only for another
checkpoint file, other settings or another version of the code or its libraries. Undecodable files (and FIFOs or devices
named like videos, which are never opened) are skipped with a warning and counted. ``rank`` orders the captions of a
text file (one per line, UTF-8) for one video. A query or caption is cut to ``max_words`` tokens, as in training;
tokenizing stops there, so a very long one costs no more than a short one.

Scores are the model's logits per level (video_sentence, frame_sentence, patch_word) and their mean, ``overall``:
the raw score of eval_t2v / eval_v2t. SK-norm, the paper's protocol, needs a bank of training captions or videos, so
it is not applied here; rankings can differ from an SK-normed evaluation.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Optional, Sequence

import torch

# FFmpeg's and OpenCV's own messages about a broken file ("moov atom not found") repeat the one-line warning that
# names the file, less clearly; set before OpenCV loads, and only where the user has not chosen a level.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

from modules.common.cli import add_options
from modules.common.errors import ConfigError, DataError
from modules.common.io import not_a_regular_file
from modules.common.runtime import run_entry, setup, setup_logging
from modules.data import DataConfig, list_videos
from modules.data.annotations import check_caption, read_lines
from modules.data.files import require_video_file
from modules.evaluation.retrieval import (
    Tool,
    VideoIndex,
    add_tool_arguments,
    encode_captions,
    encode_video_files,
    load_tool,
    score,
    tool_overrides,
    update_index,
)
from modules.model.similarity import LEVELS

INDEX_NAME = "ucofia_index.pt"
COLUMNS = ("overall",) + LEVELS
SCORES = ("Scores are raw logits: overall is the mean of the three levels, as in the 'raw' row of eval_t2v/eval_v2t. "
          "SK-norm (the paper's protocol) needs a bank of training captions or videos and is not applied.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python scripts/retrieve.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    help_ = {"index": "encode the videos of a folder into a cached index",
             "search": "update the index, then print the best videos for each --query",
             "rank": "rank the captions of a file for one video"}
    sub = {name: commands.add_parser(name, help=text, description=text, epilog=SCORES) for name, text in help_.items()}
    for name in ("index", "search"):
        sub[name].add_argument("--videos", required=True, help="folder of videos (searched recursively) or one file")
        sub[name].add_argument("--index", default=None, help=f"index file (default: <videos>/{INDEX_NAME})")
        sub[name].add_argument("--batch_size", type=int, default=8, help="videos per encoding batch")
        sub[name].add_argument("--workers", type=int, default=2, help="video decoding processes")
    sub["search"].add_argument("--query", action="append", required=True, help="a caption; repeat for several")
    sub["search"].add_argument("--top_k", type=int, default=5, help="videos to print per query (0: all)")
    sub["rank"].add_argument("--video", required=True, help="one video file")
    sub["rank"].add_argument("--captions", required=True, help="text file, one caption per line")
    sub["rank"].add_argument("--top_k", type=int, default=0, help="captions to print (0: all)")
    for p in sub.values():
        add_tool_arguments(p)
        add_options(p, DataConfig, "frame cache (scripts/cache_frames.py)", "tool",
                    only=("frame_cache", "frame_cache_strict"))
    return parser


def default_index(videos: str) -> str:
    if os.path.isdir(videos):
        return os.path.join(videos, INDEX_NAME)
    return os.path.splitext(videos)[0] + "." + INDEX_NAME


def table(title: str, scores: dict[str, torch.Tensor], names: Sequence[str], what: str, top_k: int) -> str:
    """Rows sorted by the overall score: rank, the four scores [N] each, the ``what`` (video or caption)."""
    order = torch.argsort(scores["overall"], descending=True, stable=True).tolist()
    order = order[:top_k] if top_k > 0 else order
    lines = [title, f"{'rank':>4s}  " + "  ".join(f"{c:>14s}" for c in COLUMNS) + f"  {what}"]
    for rank, i in enumerate(order, 1):
        lines.append(f"{rank:4d}  " + "  ".join(f"{float(scores[c][i]):14.4f}" for c in COLUMNS) + f"  {names[i]}")
    return "\n".join(lines)


def read_captions(path: str) -> list[str]:
    """The non-empty lines of a text file (UTF-8, with or without a byte-order mark), each checked as a caption."""
    if not_a_regular_file(path) == "missing":
        raise DataError(f"{path}: no such captions file")
    captions = read_lines(path)
    if not captions:
        raise DataError(f"{path}: no captions (one per line expected)")
    return [check_caption(c, path, f"line {k + 1} (not counting empty lines)") for k, c in enumerate(captions)]



def run_index(args: argparse.Namespace, tool: Tool, files: list[str]) -> VideoIndex:
    index_path = args.index or default_index(args.videos)
    index = update_index(tool, files, index_path, args.batch_size, args.workers)
    skipped = f", {len(index.skipped)} undecodable skipped" if index.skipped else ""
    print(f"index {index_path}: {len(index.paths)} videos ({index.reused} from the cache, {index.encoded} "
          f"encoded{skipped})", flush=True)
    return index


def run_search(args: argparse.Namespace, tool: Tool, files: list[str]) -> None:
    index = run_index(args, tool, files)
    root = os.path.abspath(args.videos) if os.path.isdir(args.videos) else os.path.dirname(os.path.abspath(args.videos))
    names = [os.path.relpath(p, root) for p in index.paths]
    text = encode_captions(tool, args.query)
    scores = score(tool, text, index.features)                                  # each [Nq, Nv]
    for q, query in enumerate(args.query):
        print(table(f"\nquery: {query!r} ({len(names)} videos in {args.videos})",
                    {k: v[q] for k, v in scores.items()}, names, "video", args.top_k), flush=True)


def run_rank(args: argparse.Namespace, tool: Tool, captions: list[str]) -> None:
    video, _ = encode_video_files(tool, [args.video], skip_bad=False)          # a decoding error names its cause
    scores = score(tool, encode_captions(tool, captions), video)                # each [Nc, 1]
    print(table(f"video: {args.video} ({len(captions)} captions from {args.captions})",
                {k: v[:, 0] for k, v in scores.items()}, captions, "caption", args.top_k), flush=True)


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> int:
        setup_logging(0)
        files: list[str] = []
        captions: list[str] = []
        # Bad paths and flags fail before the model loads.
        if args.command != "rank" and (args.batch_size < 1 or args.workers < 0):
            raise ConfigError("--batch_size must be at least 1 and --workers at least 0")
        if args.command != "index" and args.top_k < 0:
            raise ConfigError(f"--top_k must be at least 0 (0: all), got {args.top_k}")
        if args.command == "rank":
            require_video_file(args.video)
            captions = read_captions(args.captions)
        else:
            files = list_videos(args.videos)
        if args.command == "search" and not all(q.strip() for q in args.query):
            raise ConfigError("--query: empty caption")
        rt = setup(args.device, seed=0)
        tool = load_tool(args.checkpoint, rt, tool_overrides(args), args.precision)
        tool.data = dataclasses.replace(tool.data, frame_cache=getattr(args, "frame_cache", ""),
                                        frame_cache_strict=getattr(args, "frame_cache_strict", False))
        if args.command == "index":
            run_index(args, tool, files)
        elif args.command == "search":
            run_search(args, tool, files)
        else:
            run_rank(args, tool, captions)
        return 0

    return run_entry(run)


if __name__ == "__main__":
    sys.exit(main())
