"""VATEX with the TS2-Net / HGR split: ``train_list.txt``, ``test_list.txt`` and ``ref_captions.json`` in --data_path.

``ref_captions.json`` maps each video id to its English captions (10 per video). There is no validation list: the
published loader uses the test list for validation, so "val" falls back to test (see the registry).
"""
from __future__ import annotations

import os

from modules.data.annotations import VideoIndex, check_caption, read_json, read_lines, require_path, unique_ids
from modules.data.base import RetrievalSplit, split_from_lists
from modules.data.config import DataConfig
from modules.errors import DataError

NAME = "vatex"


def build(cfg: DataConfig, split: str) -> RetrievalSplit:
    """train or test split of VATEX."""
    if split not in ("train", "test"):
        raise ValueError(f"vatex has no {split} split")
    root = require_path(cfg.data_path, "data_path", NAME)
    list_path = os.path.join(root, f"{split}_list.txt")
    video_ids = unique_ids(read_lines(list_path), list_path)
    json_path = os.path.join(root, "ref_captions.json")
    refs = read_json(json_path)
    if not isinstance(refs, dict):
        raise DataError(f"{json_path}: expected an object of video id -> captions, got {type(refs).__name__}")
    missing = [v for v in video_ids if v not in refs]
    if missing:
        raise DataError(f"{json_path}: {len(missing)} videos of {list_path} have no captions "
                        f"(first: {', '.join(missing[:5])})")
    captions = []
    for vid in video_ids:
        caps = refs[vid]
        if not isinstance(caps, list) or not caps:
            raise DataError(f"{json_path}: captions of {vid} are not a non-empty list")
        captions.append([check_caption(c, json_path, f"caption {j} of {vid}") for j, c in enumerate(caps)])
    return split_from_lists(cfg, NAME, split, VideoIndex(cfg.features_path), video_ids, captions)
