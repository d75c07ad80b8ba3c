"""DiDeMo, paragraph-to-video, in the CLIP4Clip layout (--data_path folder).

- ``{train,val,test}_data.json``: a list of moments ``{"video", "description", "times", ...}``.
- optional ``{train,val,test}_list.txt``: the videos to use (otherwise every video in the json); listed videos
  without a moment are left out, logged and counted with the results.

All descriptions of a video, in file order, are joined into one paragraph, matched against the first 31 seconds
(annotators saw at most 30 s; the published loader uses the window 0-31 s for every video).
"""
from __future__ import annotations

import logging
import os

from modules.common.errors import DataError
from modules.data.annotations import (
    VideoIndex,
    check_caption,
    entry_field,
    read_json,
    read_lines,
    require_path,
    shown,
    unique_ids,
)
from modules.data.base import RetrievalSplit, split_from_lists
from modules.data.config import DataConfig

NAME = "didemo"
# Window of every video in seconds, as published (DiDeMo moments are 5 s chunks of the first 30 s).
WINDOW = (0, 31)
LAST_SEGMENT = 5  # moments are given as indices of the six 5-second segments

logger = logging.getLogger(__name__)


def build(cfg: DataConfig, split: str) -> RetrievalSplit:
    """train / val / test split of DiDeMo."""
    root = require_path(cfg.data_path, "data_path", NAME)
    json_path = os.path.join(root, f"{split}_data.json")
    data = read_json(json_path)
    if not isinstance(data, list):
        raise DataError(f"{json_path}: expected a list of moments, got {type(data).__name__}")
    list_path = os.path.join(root, f"{split}_list.txt")
    listed = unique_ids(read_lines(list_path), list_path) if os.path.isfile(list_path) else None
    wanted = set(listed) if listed is not None else None
    by_video: dict[str, list[str]] = {}  # in the json's order, as published
    unlisted: set[str] = set()
    for k, moment in enumerate(data):
        vid = entry_field(moment, "video", json_path, f"moment {k}")
        if not isinstance(vid, str) or not vid:
            raise DataError(f"{json_path}: moment {k}: 'video' is {vid!r}, not a video name")
        if wanted is not None and vid not in wanted:
            unlisted.add(vid)
            continue
        where = f"moment {k} (video {shown(vid)})"
        text = entry_field(moment, "description", json_path, f"moment {k}")
        _check_times(moment.get("times"), json_path, where)
        by_video.setdefault(vid, []).append(check_caption(text, json_path, where))
    video_ids, left_out = list(by_video), []
    if listed is not None:
        unannotated = [v for v in listed if v not in by_video]
        if unannotated:
            left_out.append(f"{list_path}: {len(unannotated)} listed video(s) have no moment in {json_path} "
                            f"(first: {', '.join(map(shown, unannotated[:5]))})")
            logger.warning("%s; they are left out", left_out[-1])
        if unlisted:
            logger.info("%s: %d of the %d videos of %s are not listed and not used", list_path, len(unlisted),
                        len(unlisted) + len(by_video), json_path)
    paragraphs = [[check_caption(" ".join(by_video[v]), json_path, f"video {shown(v)}")] for v in video_ids]
    return split_from_lists(cfg, NAME, split, VideoIndex(cfg.features_path), video_ids, paragraphs,
                            [WINDOW] * len(video_ids), left_out=left_out)


def _check_times(times, path: str, where: str) -> None:
    """Each annotator's [start, end] in 5-second segments, 0 <= start <= end <= 5. Unused (the window is fixed), but
    a malformed entry means a malformed file."""
    if times is None:
        return
    if not isinstance(times, list) or not times:
        raise DataError(f"{path}: {where}: 'times' is {times!r}, not a list of [start, end] segments")
    for j, pair in enumerate(times):
        ok = (isinstance(pair, list) and len(pair) == 2
              and all(isinstance(t, int) and not isinstance(t, bool) for t in pair))
        if not ok or not 0 <= pair[0] <= pair[1] <= LAST_SEGMENT:
            raise DataError(f"{path}: {where}: 'times' entry {j} is {pair!r}; expected [start, end] segment "
                            f"indices with 0 <= start <= end <= {LAST_SEGMENT}")
