"""MSR-VTT in the CLIP4Clip layout (also the synthetic set).

- ``--train_csv``: ``MSRVTT_train.9k.csv`` or ``MSRVTT_train.7k.csv`` (column ``video_id``).
- ``--val_csv``: ``MSRVTT_JSFUSION_test.csv`` (columns ``key, vid_key, video_id, sentence``), the 1k-A test split,
  one caption per video. The published scripts pass it as the validation csv; there is no separate val split.
- ``--data_path``: ``MSRVTT_data.json`` (``sentences``: ``video_id``, ``caption``), 20 captions per video.

Training items are videos, each drawing one of its captions per epoch, or, with ``--expand_msrvtt_sentences``, every
caption of every training video (180k pairs for 9k). The caption list (for the SK-norm text bank) always holds every
caption of every training video, grouped by video in csv order (each video's captions in json order).
"""
from __future__ import annotations

import os

from modules.common.errors import DataError
from modules.data.annotations import (
    VideoIndex,
    check_caption,
    entry_field,
    read_csv,
    read_json,
    require_path,
    unique_ids,
)
from modules.data.base import RetrievalSplit, split_from_lists
from modules.data.config import DataConfig

NAME = "msrvtt"
# File names tried when --data_path is a folder: the real set, then the synthetic set's.
JSON_NAMES = ("MSRVTT_data.json", "data.json")


def json_path(data_path: str) -> str:
    """The captions json: --data_path itself, or the known file name inside it when it is a folder."""
    path = require_path(data_path, "data_path", NAME)
    if os.path.isdir(path):
        for name in JSON_NAMES:
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        raise DataError(f"{path}: no {' or '.join(JSON_NAMES)} in this folder (--data_path)")
    return path


def read_sentences(path: str, wanted: set[str]) -> dict[str, list[str]]:
    """Captions of the wanted videos, in file order."""
    data = read_json(path)
    sentences = entry_field(data, "sentences", path, "the top level")
    if not isinstance(sentences, list):
        raise DataError(f"{path}: 'sentences' is a {type(sentences).__name__}, expected a list")
    out: dict[str, list[str]] = {v: [] for v in wanted}
    for k, entry in enumerate(sentences):
        vid = str(entry_field(entry, "video_id", path, f"sentence {k}"))
        if vid in out:
            caption = entry_field(entry, "caption", path, f"sentence {k}")
            out[vid].append(check_caption(caption, path, f"sentence {k} (video {vid})"))
    return out


def build(cfg: DataConfig, split: str) -> RetrievalSplit:
    """The training split (csv + json) or the 1k-A test split (csv alone)."""
    index = VideoIndex(cfg.features_path)
    if split == "train":
        csv_path = require_path(cfg.train_csv, "train_csv", NAME)
        video_ids = unique_ids(read_csv(csv_path, ["video_id"])["video_id"], csv_path)
        path = json_path(cfg.data_path)
        by_video = read_sentences(path, set(video_ids))
        bare = [v for v in video_ids if not by_video[v]]
        if bare:
            raise DataError(f"{path}: {len(bare)} videos of {csv_path} have no caption (first: {', '.join(bare[:5])})")
        return split_from_lists(cfg, NAME, split, index, video_ids, [by_video[v] for v in video_ids],
                                one_caption_per_video=not cfg.expand_msrvtt_sentences)
    if split == "test":
        csv_path = require_path(cfg.val_csv, "val_csv", NAME)
        rows = read_csv(csv_path, ["video_id", "sentence"])
        by_video: dict[str, list[str]] = {}
        for k, (vid, sentence) in enumerate(zip(rows["video_id"], rows["sentence"])):
            by_video.setdefault(vid, []).append(check_caption(sentence, csv_path, f"row {k + 2} (video {vid})"))
        return split_from_lists(cfg, NAME, split, index, list(by_video), list(by_video.values()))
    raise ValueError(f"msrvtt has no {split} split")
