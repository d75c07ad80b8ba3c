"""ActivityNet Captions, paragraph-to-video, in the CLIP4Clip layout (--data_path folder).

- ``train.json`` / ``val_1.json``: video id (``v_<youtube id>``) -> ``duration``, ``timestamps``, ``sentences``.
- optional ``train_ids.json`` / ``val_ids.json``: the list of ids to use, in order (otherwise the json's order).

Each video's sentences are joined into one paragraph, matched against the whole video (0 to ceil(duration) s).
``val_1`` is the test split and there is no separate validation split ("val" falls back to test).
"""
from __future__ import annotations

import logging
import math
import os

from modules.common.errors import DataError
from modules.data.annotations import VideoIndex, check_caption, entry_field, read_json, require_path, unique_ids
from modules.data.base import RetrievalSplit, split_from_lists
from modules.data.config import DataConfig

logger = logging.getLogger(__name__)

NAME = "activity"
FILES = {"train": ("train.json", "train_ids.json"), "test": ("val_1.json", "val_ids.json")}


def build(cfg: DataConfig, split: str) -> RetrievalSplit:
    """train or test (= val_1) split of ActivityNet Captions."""
    if split not in FILES:
        raise ValueError(f"activity has no {split} split")
    root = require_path(cfg.data_path, "data_path", NAME)
    json_path, ids_path = (os.path.join(root, name) for name in FILES[split])
    data = read_json(json_path)
    if not isinstance(data, dict):
        raise DataError(f"{json_path}: expected an object of video id -> annotation, got {type(data).__name__}")
    video_ids = list(data)
    if os.path.isfile(ids_path):
        listed = read_json(ids_path)
        if not isinstance(listed, list):
            raise DataError(f"{ids_path}: expected a list of video ids, got {type(listed).__name__}")
        unannotated = [v for v in listed if v not in data]
        if unannotated:
            # The published loader skips these silently; say so.
            logger.warning("%s: %d listed videos have no annotation in %s and are left out (first: %s)", ids_path,
                           len(unannotated), json_path, ", ".join(map(str, unannotated[:5])))
        video_ids = [v for v in unique_ids(listed, ids_path) if v in data]
    paragraphs, windows = [], []
    for vid in video_ids:
        entry = data[vid]
        sentences = entry_field(entry, "sentences", json_path, f"video {vid}")
        duration = entry_field(entry, "duration", json_path, f"video {vid}")
        if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
            raise DataError(f"{json_path}: 'sentences' of video {vid} is not a list of text")
        try:
            end = math.ceil(float(duration))
        except (TypeError, ValueError):
            raise DataError(f"{json_path}: 'duration' of video {vid} is not a number ({duration!r})") from None
        paragraphs.append([check_caption(" ".join(sentences), json_path, f"video {vid}")])
        windows.append((0, end))
    index = VideoIndex(cfg.features_path)
    # Files are named after the json key (v_<id>); some copies drop the "v_" prefix.
    return split_from_lists(cfg, NAME, split, _PrefixTolerant(index), video_ids, paragraphs, windows)


class _PrefixTolerant:
    """Looks a video up by its id, then by the id without ActivityNet's ``v_`` prefix."""

    def __init__(self, index: VideoIndex):
        self.index = index

    def find(self, video_id: str) -> str | None:
        found = self.index.find(video_id)
        if found is None and video_id.startswith("v_"):
            found = self.index.find(video_id[2:])
        return found
