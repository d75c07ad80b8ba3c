"""DiDeMo, paragraph-to-video, in the CLIP4Clip layout (--data_path folder).

- ``{train,val,test}_data.json``: a list of moments ``{"video", "description", "times", ...}``.
- optional ``{train,val,test}_list.txt``: the videos to use (otherwise every video in the json).

All descriptions of a video, in file order, are joined into one paragraph, matched against the first 31 seconds
(annotators saw at most 30 s; the published loader uses the window 0-31 s for every video).
"""
from __future__ import annotations

import os

from modules.common.errors import DataError
from modules.data.annotations import VideoIndex, check_caption, entry_field, read_json, read_lines, require_path
from modules.data.base import RetrievalSplit, split_from_lists
from modules.data.config import DataConfig

NAME = "didemo"
# Window of every video in seconds, as published (DiDeMo moments are 5 s chunks of the first 30 s).
WINDOW = (0, 31)


def build(cfg: DataConfig, split: str) -> RetrievalSplit:
    """train / val / test split of DiDeMo."""
    root = require_path(cfg.data_path, "data_path", NAME)
    json_path = os.path.join(root, f"{split}_data.json")
    data = read_json(json_path)
    if not isinstance(data, list):
        raise DataError(f"{json_path}: expected a list of moments, got {type(data).__name__}")
    list_path = os.path.join(root, f"{split}_list.txt")
    wanted = set(read_lines(list_path)) if os.path.isfile(list_path) else None
    by_video: dict[str, list[str]] = {}
    for k, moment in enumerate(data):
        vid = entry_field(moment, "video", json_path, f"moment {k}")
        text = entry_field(moment, "description", json_path, f"moment {k}")
        if wanted is None or vid in wanted:
            by_video.setdefault(str(vid), []).append(check_caption(text, json_path, f"moment {k} (video {vid})"))
    video_ids = list(by_video)
    paragraphs = [[check_caption(" ".join(by_video[v]), json_path, f"video {v}")] for v in video_ids]
    return split_from_lists(cfg, NAME, split, VideoIndex(cfg.features_path), video_ids, paragraphs,
                            [WINDOW] * len(video_ids))
