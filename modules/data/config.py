"""The data pipeline's own configuration: what to read, how to sample frames and captions.

Field names are the published command-line flags, so a parsed ``argparse.Namespace`` converts with
``DataConfig.from_args(args)`` and existing shell scripts keep their meaning.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from modules.common.cli import option, setting
from modules.common.errors import ConfigError


@dataclass
class DataConfig:
    """What to read and how to sample frames and captions; field names are the published flags."""
    datatype: str = option("msrvtt", "dataset reader: msrvtt, msvd, activity, didemo or vatex")
    data_path: str = option("", "MSR-VTT: the MSRVTT_data.json file (or its folder); other datasets: the annotation "
                            "folder")
    features_path: str = option("", "folder of video files, searched recursively; the file name without extension is "
                                "the video id")
    train_csv: str = option("", "MSR-VTT only: the training video list (MSRVTT_train.9k.csv or .7k.csv)")
    val_csv: str = option("", "MSR-VTT only: the JSFusion 1k-A test csv (the published scripts pass it as validation)")
    max_words: int = option(32, "caption length in tokens including start and end token; longer captions are cut")
    max_frames: int = option(12, "frames per video after sampling; shorter videos are zero-padded and masked")
    feature_framerate: float = option(1.0, "frames sampled per second of video (the paper: 1 from 3 fps files); an "
                                      "integer or 1/k")
    slice_framepos: int = option(2, "when a video yields more than --max_frames: 0 keeps the head, 1 the tail, 2 a "
                                 "uniform subset (the paper)", choices=(0, 1, 2))
    train_frame_order: int = option(0, "frame order in training: 0 normal, 1 reversed, 2 shuffled (deterministic per "
                                    "seed, epoch and item)", choices=(0, 1, 2), modes=("train",))
    eval_frame_order: int = option(0, "frame order at evaluation: 0 normal, 1 reversed, 2 shuffled",
                                   choices=(0, 1, 2))
    expand_msrvtt_sentences: bool = option(False, "MSR-VTT training: one item per caption (180k) instead of one per "
                                           "video with a caption drawn each epoch (9k)", modes=("train",))
    skip_bad_videos: bool = option(False, "drop missing, empty or undecodable videos (logged and counted) instead of "
                                   "stopping with an error")
    frame_cache: str = option("", "folder of frames decoded once by scripts/cache_frames.py: clips are read from it "
                              "instead of decoded; one not in it, or whose video file changed, is decoded (and "
                              "counted)")
    frame_cache_strict: bool = option(False, "with --frame_cache: stop with an error naming a clip the cache cannot "
                                      "serve (not in it, or its video file changed) instead of decoding it")
    image_resolution: int = setting(224, "CLIP's input side: shorter side resized to it, then centre-cropped")
    seed: int = setting(42, "with epoch and index, seeds every data-side random choice; set from --seed")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the flag whose value cannot work."""
        if self.max_words < 2:
            raise ConfigError(f"--max_words must be at least 2 (start and end token), got {self.max_words}")
        if self.max_frames < 1:
            raise ConfigError(f"--max_frames must be at least 1, got {self.max_frames}")
        if self.image_resolution < 1:
            raise ConfigError(f"--image_resolution must be positive, got {self.image_resolution}")
        for flag in ("slice_framepos", "train_frame_order", "eval_frame_order"):
            if getattr(self, flag) not in (0, 1, 2):
                raise ConfigError(f"--{flag} must be 0, 1 or 2, got {getattr(self, flag)}")
        frames_per_second_or_step(self.feature_framerate)
        if self.frame_cache_strict and not self.frame_cache:
            raise ConfigError("--frame_cache_strict needs --frame_cache DIR")

    @classmethod
    def from_args(cls, args: Any, **overrides: Any) -> "DataConfig":
        """Build from any object with the published flag names as attributes (e.g. an argparse Namespace).

        Args:
            args: object whose attributes named like this dataclass's fields are read; missing ones keep defaults.
            overrides: explicit field values that win over ``args``.
        Returns:
            DataConfig.
        """
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
        values.update(overrides)
        return cls(**values)


def frames_per_second_or_step(feature_framerate: float) -> tuple[int, int]:
    """Split ``feature_framerate`` into (frames per second, seconds between sampled seconds).

    The published rule takes an integer rate (frames within each second); a rate 1/k samples every k-th second.

    Args:
        feature_framerate: e.g. 1 (the paper), 2, or 0.5 (one frame every two seconds).
    Returns:
        (per_second, step_seconds), one of them 1.
    """
    f = float(feature_framerate)
    if f >= 1 and f == int(f):
        return int(f), 1
    if 0 < f < 1 and abs(1 / f - round(1 / f)) < 1e-6:
        return 1, int(round(1 / f))
    raise ConfigError(f"--feature_framerate must be a positive integer or 1/k for an integer k, "
                      f"got {feature_framerate}")
