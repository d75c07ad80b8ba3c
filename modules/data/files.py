"""Videos of your own: a folder or a list of files, decoded like a dataset's test videos (for scripts/retrieve.py)."""
from __future__ import annotations

import logging
import os
from typing import Any, Sequence

from torch.utils.data import Dataset

from modules.common.errors import DataError
from modules.common.io import not_a_regular_file
from modules.data.annotations import VIDEO_EXTENSIONS
from modules.data.frame_cache import load_clip, open_frame_cache

logger = logging.getLogger(__name__)


def list_videos(root: str) -> list[str]:
    """Video files under ``root`` (recursive, sorted), or ``[root]`` when it is a file.

    Entries that are not regular files (a FIFO named ``x.mp4``) are listed too: decoding refuses them without
    opening them, so a tool skips and counts them like any unreadable file instead of waiting on a FIFO forever.

    Raises:
        DataError: the path does not exist or holds no video file.
    """
    kind = not_a_regular_file(root)
    if not kind:
        return [root]
    if kind == "missing":
        raise DataError(f"{root}: no such file or folder")
    if kind != "a folder":
        raise DataError(f"{root}: not a video file or folder ({kind})")
    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        found += [os.path.join(folder, f) for f in sorted(files)
                  if not f.startswith(".") and os.path.splitext(f)[1].lower() in VIDEO_EXTENSIONS]
    if not found:
        raise DataError(f"{root}: no video files ({', '.join(VIDEO_EXTENSIONS)})")
    return found


def require_video_file(path: str) -> None:
    """DataError unless ``path`` is a regular file (a tool's ``--video``): missing, or a FIFO that would block."""
    kind = not_a_regular_file(path)
    if kind:
        raise DataError(f"{path}: no such video file" if kind == "missing" else f"{path}: not a regular file ({kind})")


class VideoFiles(Dataset):
    """Items ``{"video": [F, 3, R, R], "video_mask": [F], "index"}`` for arbitrary video files (read from the frame
    cache of ``cfg.frame_cache`` where it holds them).

    With ``skip_bad_videos`` an unreadable file gives None (batch with ``collate_skip_none``) and is logged;
    otherwise it raises DataError naming the file.
    """

    def __init__(self, paths: Sequence[str], cfg: Any, skip_bad_videos: bool | None = None):
        """
        Args:
            paths: video files (e.g. from ``list_videos``).
            cfg: DataConfig or argparse Namespace with the sampling flags.
            skip_bad_videos: overrides ``cfg.skip_bad_videos`` when given.
        """
        self.cfg = cfg
        self.video_paths = list(paths)
        self.video_ids = [os.path.splitext(os.path.basename(p))[0] for p in self.video_paths]
        self.skip_bad_videos = bool(getattr(cfg, "skip_bad_videos", False) if skip_bad_videos is None
                                    else skip_bad_videos)
        self.frame_cache = open_frame_cache(cfg)

    def __len__(self) -> int:
        return len(self.video_paths)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        try:
            order = int(getattr(self.cfg, "eval_frame_order", 0))
            seed = (int(getattr(self.cfg, "seed", 0)), 0, index)
            video, mask, _ = load_clip(self.frame_cache, self.video_paths[index], self.cfg, None, None, order, seed)
        except DataError as e:
            if not self.skip_bad_videos:
                raise
            logger.warning("skipping unreadable video %s: %s", self.video_paths[index], e)
            return None
        return {"video": video, "video_mask": mask, "index": index}
