"""MSVD in the CLIP4Clip layout: ``raw-captions.pkl`` and ``{train,val,test}_list.txt`` in --data_path.

``raw-captions.pkl`` maps each video id to its captions, each a list of word tokens (joined with spaces here, as
published). About 40 captions per video; every caption is a training item and a test query.
"""
from __future__ import annotations

import os

from modules.data.annotations import VideoIndex, captions_by_video, read_lines, read_pickle, require_path, unique_ids
from modules.data.base import RetrievalSplit, split_from_lists
from modules.data.config import DataConfig

NAME = "msvd"


def build(cfg: DataConfig, split: str) -> RetrievalSplit:
    """train / val / test split of MSVD."""
    root = require_path(cfg.data_path, "data_path", NAME)
    list_path = os.path.join(root, f"{split}_list.txt")
    video_ids = unique_ids(read_lines(list_path), list_path)
    pkl_path = os.path.join(root, "raw-captions.pkl")
    captions = captions_by_video(read_pickle(pkl_path), video_ids, pkl_path, list_path, token_lists=True)
    return split_from_lists(cfg, NAME, split, VideoIndex(cfg.features_path), video_ids, captions)
