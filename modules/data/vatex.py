"""VATEX with the TS2-Net / HGR split: ``train_list.txt``, ``test_list.txt`` and ``ref_captions.json`` in --data_path.

``ref_captions.json`` maps each video id to its English captions (10 per video). There is no validation list: the
published loader uses the test list for validation, so "val" falls back to test (see the registry).
"""
from __future__ import annotations

import os

from modules.data.annotations import VideoIndex, captions_by_video, read_json, read_lines, require_path, unique_ids
from modules.data.base import RetrievalSplit, split_from_lists
from modules.data.config import DataConfig

NAME = "vatex"


def build(cfg: DataConfig, split: str) -> RetrievalSplit:
    """train or test split of VATEX."""
    if split not in ("train", "test"):
        raise ValueError(f"vatex has no {split} split")
    root = require_path(cfg.data_path, "data_path", NAME)
    list_path = os.path.join(root, f"{split}_list.txt")
    video_ids = unique_ids(read_lines(list_path), list_path)
    json_path = os.path.join(root, "ref_captions.json")
    captions = captions_by_video(read_json(json_path), video_ids, json_path, list_path)
    return split_from_lists(cfg, NAME, split, VideoIndex(cfg.features_path), video_ids, captions)
