"""MSVD in the CLIP4Clip layout: ``raw-captions.pkl`` and ``{train,val,test}_list.txt`` in --data_path.

``raw-captions.pkl`` maps each video id to its captions, each a list of word tokens (joined with spaces here, as
published). About 40 captions per video; every caption is a training item and a test query.
"""
from __future__ import annotations

import os

from modules.data.annotations import VideoIndex, check_caption, read_lines, read_pickle, require_path, unique_ids
from modules.data.base import RetrievalSplit, split_from_lists
from modules.data.config import DataConfig
from modules.errors import DataError

NAME = "msvd"


def build(cfg: DataConfig, split: str) -> RetrievalSplit:
    """train / val / test split of MSVD."""
    root = require_path(cfg.data_path, "data_path", NAME)
    list_path = os.path.join(root, f"{split}_list.txt")
    video_ids = unique_ids(read_lines(list_path), list_path)
    pkl_path = os.path.join(root, "raw-captions.pkl")
    raw = read_pickle(pkl_path)
    if not isinstance(raw, dict):
        raise DataError(f"{pkl_path}: expected a dict of video id -> captions, got {type(raw).__name__}")
    missing = [v for v in video_ids if v not in raw]
    if missing:
        raise DataError(f"{pkl_path}: {len(missing)} videos of {list_path} have no captions "
                        f"(first: {', '.join(missing[:5])})")
    captions = []
    for vid in video_ids:
        caps = raw[vid]
        if not isinstance(caps, (list, tuple)) or not caps:
            raise DataError(f"{pkl_path}: captions of {vid} are not a non-empty list")
        joined = []
        for j, cap in enumerate(caps):
            if isinstance(cap, (list, tuple)):
                if not all(isinstance(w, str) for w in cap):
                    raise DataError(f"{pkl_path}: caption {j} of {vid} has a token that is not text")
                cap = " ".join(cap)
            joined.append(check_caption(cap, pkl_path, f"caption {j} of {vid}"))
        captions.append(joined)
    return split_from_lists(cfg, NAME, split, VideoIndex(cfg.features_path), video_ids, captions)
