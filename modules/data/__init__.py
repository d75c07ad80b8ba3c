"""Video decoding, frame sampling, the five datasets, and a synthetic video-text set.

The engine needs only: ``DataConfig``, ``build_split``, ``has_val_split``, ``DATASETS`` and ``collate_skip_none``;
tools use ``load_video`` / ``load_video_raw`` and ``VideoFiles`` for videos of their own.
"""
from modules.data.base import RetrievalSplit, TextView, VideoView, collate_skip_none
from modules.data.config import DataConfig
from modules.data.files import VideoFiles, list_videos
from modules.data.registry import DATASETS, build_split, has_val_split
from modules.data.video import load_video, load_video_raw, read_frames, sample_frame_indices

__all__ = ["DATASETS", "DataConfig", "RetrievalSplit", "TextView", "VideoFiles", "VideoView", "build_split",
           "collate_skip_none", "has_val_split", "list_videos", "load_video", "load_video_raw", "read_frames",
           "sample_frame_indices"]
