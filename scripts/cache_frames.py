"""Decode the clips of a dataset's splits once into a frame cache, read by --frame_cache DIR.

    python scripts/cache_frames.py --datatype msrvtt --train_csv ... --val_csv ... --data_path ... --features_path ...
        --max_frames 12 --feature_framerate 1 --slice_framepos 2 --frame_cache /fast/disk/frames [--splits train,test]
        [--workers 8]

Same dataset and sampling flags as training (the frame-order flags are accepted and change nothing: frames are cached
in sampled order and reordered when read). Parallel decoding with a progress bar; shards are written atomically and
a killed build resumes where it stopped; clips already cached with unchanged video files are skipped; undecodable
clips are recorded as bad. Ends with bytes per clip and the total size. Layout and guarantees:
``modules/data/frame_cache.py``.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from typing import Optional, Sequence

from modules.common.cli import add_options, cli_fields, new_parser, option, parse, values
from modules.common.errors import ConfigError
from modules.common.runtime import run_entry, setup_logging
from modules.data import DataConfig, build_split
from modules.data.frame_cache_build import SHARD_MB, build_frame_cache, split_clips, summary
from modules.data.registry import SPLITS, dataset_entry

MODE = "train"  # the training flags of DataConfig
NOT_FOR_BUILDING = ("frame_cache_strict",)


@dataclass
class CacheOptions:
    splits: str = option("train,test", "splits to cache, comma-separated: train, val, test (val is the test split for "
                         "datasets without one)")
    workers: int = option(2, "decoding processes (0: decode in this process)")
    image_resolution: int = option(224, "side of the cached frames, CLIP's input (224 for the OpenAI models and tiny)")
    shard_mb: float = option(SHARD_MB, "frames per shard file, in MiB")


def build_parser():
    parser = new_parser("python scripts/cache_frames.py", __doc__.splitlines()[0])
    keep = [f.name for f in cli_fields(DataConfig, MODE) if f.name not in NOT_FOR_BUILDING]
    add_options(parser, DataConfig, "data (the training flags)", MODE, only=keep)
    add_options(parser, CacheOptions, "cache", MODE)
    return parser


def parse_args(argv: Optional[Sequence[str]]) -> tuple[DataConfig, CacheOptions]:
    ns = parse(build_parser(), argv).namespace
    opts = CacheOptions(**values(CacheOptions, ns, MODE))
    dataset_entry(getattr(ns, "datatype", "msrvtt"))
    cfg = DataConfig(**values(DataConfig, ns, MODE, image_resolution=opts.image_resolution))
    if not cfg.frame_cache:
        raise ConfigError("--frame_cache DIR is required: the folder to build the cache in")
    splits = [s.strip() for s in opts.splits.split(",") if s.strip()]
    unknown = [s for s in splits if s not in SPLITS]
    if not splits or unknown:
        raise ConfigError(f"--splits {opts.splits!r}: expected some of {', '.join(SPLITS)}")
    if opts.workers < 0:
        raise ConfigError(f"--workers must be 0 or more, got {opts.workers}")
    if not opts.shard_mb > 0:
        raise ConfigError(f"--shard_mb must be positive, got {opts.shard_mb}")
    if os.path.exists(cfg.frame_cache) and not os.path.isdir(cfg.frame_cache):
        raise ConfigError(f"--frame_cache {cfg.frame_cache} exists and is not a folder")
    return cfg, dataclasses.replace(opts, splits=",".join(splits))


def main(argv: Optional[list[str]] = None) -> int:
    def run() -> int:
        setup_logging(0)
        cfg, opts = parse_args(argv)
        clips = []
        for name in opts.splits.split(","):
            # Reading the splits needs no cache; the build records and checks the video files itself.
            clips += split_clips(build_split(dataclasses.replace(cfg, frame_cache=""), name))
        report = build_frame_cache(cfg.frame_cache, cfg, clips, opts.workers, opts.shard_mb,
                                   progress=sys.stderr.isatty())
        print(summary(report), flush=True)
        return 0

    return run_entry(run)


if __name__ == "__main__":
    sys.exit(main())
