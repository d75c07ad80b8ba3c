"""ActivityNet Captions, paragraph-to-video, in the CLIP4Clip layout (--data_path folder).

- ``train.json`` / ``val_1.json``: video id (``v_<youtube id>``) -> ``duration``, ``timestamps``, ``sentences``.
- optional ``train_ids.json`` / ``val_ids.json``: the list of ids to use, in order (otherwise the json's order).

Each video's sentences are joined into one paragraph, matched against the whole video (0 to ceil(duration) s). Every
number is checked: the duration is finite and positive, timestamps finite with 0 <= start <= end.
``val_1`` is the test split and there is no separate validation split ("val" falls back to test).
"""
from __future__ import annotations

import logging
import math
import os

from modules.common.errors import DataError
from modules.data.annotations import (
    VideoIndex,
    check_caption,
    entry_field,
    finite_number,
    read_json,
    require_path,
    shown,
    unique_ids,
)
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
    left_out = []
    if os.path.isfile(ids_path):
        listed = read_json(ids_path)
        if not isinstance(listed, list) or not all(isinstance(v, str) for v in listed):
            raise DataError(f"{ids_path}: expected a list of video ids (text)")
        listed = unique_ids(listed, ids_path)
        unannotated = [v for v in listed if v not in data]
        if unannotated:
            # The published loader skips these silently; say so, and count them with the results.
            left_out.append(f"{ids_path}: {len(unannotated)} listed video(s) have no annotation in {json_path} "
                            f"(first: {', '.join(map(shown, unannotated[:5]))})")
            logger.warning("%s; they are left out", left_out[-1])
        video_ids = [v for v in listed if v in data]
        unlisted = len(data) - len(video_ids)
        if unlisted:
            logger.info("%s: %d of the %d videos of %s are not listed and not used", ids_path, unlisted, len(data),
                        json_path)
    paragraphs, windows = [], []
    for vid in video_ids:
        entry = data[vid]
        where = f"video {shown(vid)}"
        sentences = entry_field(entry, "sentences", json_path, where)
        if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
            raise DataError(f"{json_path}: {where}: 'sentences' is not a list of text")
        duration = finite_number(entry_field(entry, "duration", json_path, where), json_path, where, "duration")
        if duration <= 0:
            raise DataError(f"{json_path}: {where}: 'duration' is {entry['duration']!r}; a video lasts more than "
                            "0 seconds")
        _check_timestamps(entry.get("timestamps"), len(sentences), json_path, where)
        paragraphs.append([check_caption(" ".join(sentences), json_path, where)])
        windows.append((0, math.ceil(duration)))
    index = VideoIndex(cfg.features_path)
    # Files are named after the json key (v_<id>); some copies drop the "v_" prefix.
    return split_from_lists(cfg, NAME, split, _PrefixTolerant(index), video_ids, paragraphs, windows,
                            left_out=left_out)


def _check_timestamps(timestamps, n_sentences: int, path: str, where: str) -> None:
    """One [start, end] per sentence, finite seconds with 0 <= start <= end. Unused for paragraph retrieval (the
    window is the whole video), but a malformed list means a misaligned file. An end past the duration is accepted:
    the released files have some (the decoder stops at the video's end anyway)."""
    if timestamps is None:
        return
    if not isinstance(timestamps, list) or len(timestamps) != n_sentences:
        count = len(timestamps) if isinstance(timestamps, list) else type(timestamps).__name__
        raise DataError(f"{path}: {where}: 'timestamps' has {count} entries for {n_sentences} sentences")
    for j, pair in enumerate(timestamps):
        if not isinstance(pair, list) or len(pair) != 2:
            raise DataError(f"{path}: {where}: 'timestamps' entry {j} is {pair!r}, not [start, end]")
        start, end = (finite_number(t, path, where, f"timestamps[{j}]") for t in pair)
        if not 0 <= start <= end:
            raise DataError(f"{path}: {where}: 'timestamps' entry {j} is {pair!r}; expected 0 <= start <= end")


class _PrefixTolerant:
    """Looks a video up by its id, then by the id without ActivityNet's ``v_`` prefix."""

    def __init__(self, index: VideoIndex):
        self.index = index

    def find(self, video_id: str) -> str | None:
        found = self.index.find(video_id)
        if found is None and video_id.startswith("v_"):
            found = self.index.find(video_id[2:])
        return found
