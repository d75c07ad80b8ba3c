"""Retrieval on your own videos with a trained checkpoint (``scripts/retrieve.py``, ``scripts/visualize.py``).

    load_tool(checkpoint)       the model with the settings it was trained with (``config`` saved in the checkpoint)
    update_index(tool, files)   features of every video in a folder, cached in one file; only new or changed files
                                (path, size, modification and status-change times) are encoded, and only with the
                                same checkpoint file, settings, device type, code and library versions
    score(tool, text, videos)   per-level logits and their mean, exactly as the evaluation's raw scores

SK-norm needs a bank of training captions or videos, which a folder of your own videos does not have: scores here are
the raw ones (the ``raw`` row of ``eval_t2v`` / ``eval_v2t``).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from modules.common.cache_keys import cache_key, code_version, file_identity, file_stamp, software_versions
from modules.common.cli import add_options
from modules.common.errors import CheckpointError, ConfigError, DataError
from modules.common.io import atomic_save, read_checkpoint, weights_file
from modules.common.options import DEVICES
from modules.common.runtime import Runtime, autocast_context
from modules.data import DataConfig, VideoFiles
from modules.evaluation.encoding import EvalOptions, combine, gather_all, iter_video_features
from modules.model.build import build_model_from_checkpoint, saved_config, trained_settings
from modules.model.features import TextFeatures, VideoFeatures
from modules.model.similarity import LEVELS
from modules.model.tokenizer import text_mask, tokenize
from modules.model.ucofia import ModelConfig, UCoFiA

logger = logging.getLogger("ucofia")
INDEX_FORMAT = "ucofia-video-index-v2"  # v2: keys from modules.common.cache_keys, files stamped with ctime too
# Model settings a tool may override (e.g. for a published checkpoint, which saves none); the rest must match.
MODEL_FLAGS = ("max_words", "max_frames", "topk", "sim_header", "patch_scorer", "mask_padding", "eval_topk",
               "shift_layers", "temporal_layers")
# Frame sampling settings read from the checkpoint's data config, overridable too.
SAMPLING_FLAGS = ("feature_framerate", "slice_framepos")
# Data settings a tool's video features depend on (the index key holds them).
INDEX_DATA_FIELDS = ("max_words", "max_frames", "feature_framerate", "slice_framepos", "eval_frame_order",
                     "image_resolution")


@dataclass
class Tool:
    """A model ready for tools, with the sampling settings its videos need and a key naming both."""
    model: UCoFiA
    data: DataConfig
    rt: Runtime
    precision: str
    key: str  # what every video feature depends on: checkpoint file, settings, device type, code and libraries


def add_tool_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by the tools: checkpoint, device, precision and the model/sampling settings."""
    parser.add_argument("--checkpoint", required=True,
                        help="a checkpoint of train.main, an exported model folder, or the published checkpoint")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    add_setting_arguments(parser)


def add_setting_arguments(parser: argparse.ArgumentParser) -> None:
    """The model and frame-sampling settings, generated from the config dataclasses; one not given comes from the
    checkpoint (see ``tool_overrides``)."""
    add_options(parser, DataConfig, "frame and caption settings (default: the checkpoint's)", "tool",
                only=("max_words", "max_frames") + SAMPLING_FLAGS)
    add_options(parser, ModelConfig, "model settings (default: the checkpoint's)", "tool", only=MODEL_FLAGS)


def tool_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The model/sampling flags given on the command line."""
    return {k: getattr(args, k) for k in MODEL_FLAGS + SAMPLING_FLAGS if hasattr(args, k)}


def tool_settings(checkpoint: str, overrides: dict[str, Any]) -> tuple[ModelConfig, dict[str, Any]]:
    """Model settings and frame sampling a checkpoint was trained with; an override (not None) of a trained model
    setting must agree with the checkpoint, the eval-time ones (``--eval_topk``) and the sampling win.

    Returns:
        (ModelConfig, {"feature_framerate", "slice_framepos"}).
    """
    given = {k: overrides[k] for k in MODEL_FLAGS if overrides.get(k) is not None}
    model = trained_settings(checkpoint, ModelConfig(**given), given)
    sampling = {k: v for k, v in (saved_config(checkpoint).get("data") or {}).items() if k in SAMPLING_FLAGS}
    sampling.update({k: overrides[k] for k in SAMPLING_FLAGS if overrides.get(k) is not None})
    return model, sampling


def load_tool(checkpoint: str, rt: Runtime, overrides: Optional[dict[str, Any]] = None,
              precision: str = "fp32") -> Tool:
    """Build the model of ``checkpoint`` in eval mode with its training settings (see ``tool_settings``)."""
    model_cfg, sampling = tool_settings(checkpoint, overrides or {})
    model, _ = build_model_from_checkpoint(checkpoint, model_cfg, precision, rt.device)
    data = DataConfig(max_words=model_cfg.max_words, max_frames=model_cfg.max_frames,
                      image_resolution=model.clip.config.image_resolution, **sampling)
    key = cache_key({"format": INDEX_FORMAT, "code": code_version(), "software": software_versions(),
                     "checkpoint": file_identity(weights_file(checkpoint)), "model": dataclasses.asdict(model_cfg),
                     "precision": precision, "device": rt.device.type,
                     "data": {k: v for k, v in dataclasses.asdict(data).items() if k in INDEX_DATA_FIELDS}})
    return Tool(model, data, rt, precision, key)


def encode_captions(tool: Tool, captions: Sequence[str], batch_size: int = 64) -> TextFeatures:
    """Captions -> ``TextFeatures`` [N] (cut to ``max_words`` tokens as in training)."""
    empty = [i + 1 for i, c in enumerate(captions) if not c.strip()]
    if not captions or empty:
        raise ConfigError(f"empty caption (number {empty[0]})" if empty else "no caption given")
    parts = []
    for start in range(0, len(captions), batch_size):
        ids = tokenize(list(captions[start:start + batch_size]), tool.data.max_words).to(tool.rt.device)
        with torch.no_grad(), autocast_context(tool.precision, tool.rt.device):
            parts.append(tool.model.encode_text(ids, text_mask(ids)))  # features in fp32 under any precision
    return TextFeatures.cat(parts)


def encode_video_files(tool: Tool, paths: Sequence[str], batch_size: int = 8, workers: int = 0,
                       skip_bad: bool = True) -> tuple[VideoFeatures, list[int]]:
    """Encode video files (a progress bar in a terminal), skipping and logging the undecodable ones if ``skip_bad``.

    Returns:
        features of the decodable videos [n], and their positions in ``paths``.
    Raises:
        DataError: a file cannot be decoded and not ``skip_bad``, or not one can.
    """
    files = VideoFiles(paths, tool.data, skip_bad_videos=skip_bad)
    opts = EvalOptions(batch_size=batch_size, workers=workers, precision=tool.precision)
    parts = list(iter_video_features(tool.model, files, tool.rt, opts, desc="encoding videos"))
    if not parts:
        raise DataError(f"none of the {len(paths)} video files could be decoded (first: {paths[0]})")
    features, index = gather_all(parts, VideoFeatures, len(paths), tool.rt, tool.rt.device)
    return features.to("cpu"), index.tolist()


@dataclass
class VideoIndex:
    """Features of the videos of a folder, in ``paths`` order (absolute paths)."""
    paths: list[str]
    features: VideoFeatures
    encoded: int = 0   # videos encoded by the last update
    reused: int = 0    # videos whose cached features were still valid
    skipped: list[str] = dataclasses.field(default_factory=list)  # undecodable files


def _read_index(path: str, key: str) -> Optional[dict]:
    """The cached index at ``path`` if it was made with the same checkpoint and settings, else None."""
    if not os.path.exists(path):
        return None
    try:
        obj = read_checkpoint(path)
    except CheckpointError as e:
        raise ConfigError(f"--index {path} exists and is not a video index ({e}); delete it or choose another "
                          f"path") from None
    if not str(obj.get("format", "")).startswith(INDEX_FORMAT.rsplit("-", 1)[0]):
        raise ConfigError(f"--index {path} exists and is not a video index; delete it or choose another path")
    if obj.get("format") != INDEX_FORMAT or obj.get("key") != key:
        logger.info("%s was made with another checkpoint, other settings or another version: encoding every video "
                    "again", path)
        return None
    return obj


def update_index(tool: Tool, videos: Sequence[str], index_path: str, batch_size: int = 8,
                 workers: int = 0) -> VideoIndex:
    """Bring the index of the video files ``videos`` (e.g. ``list_videos(folder)``) up to date and return it.

    Cached features are reused for files with the same path, size, modification and status-change times (any
    rewrite of a file changes the last); new or changed files are encoded; files that are gone are dropped. The index
    file is rewritten atomically when anything changed.

    Raises:
        DataError: not one file can be decoded.
    """
    paths = [os.path.abspath(p) for p in videos]
    if not paths:
        raise DataError("no video files to index")
    stamps = {p: file_stamp(p) for p in paths}  # None for e.g. a dangling link: decoding it fails and names it
    cached = _read_index(index_path, tool.key)
    rows: dict[str, tuple[Optional[VideoFeatures], int]] = {}   # path -> (features or None, row in ``cached``)
    if cached is not None:
        for row, (p, stamp) in enumerate(zip(cached["paths"], cached["stamps"])):
            if stamp is not None and stamps.get(p) == stamp:
                rows[p] = (None, row)
    todo = [p for p in paths if p not in rows]
    skipped: list[str] = []
    if todo:
        try:
            features, kept = encode_video_files(tool, todo, batch_size, workers)
        except DataError:
            if not rows:
                raise
            features, kept = None, []
        done = set(kept)
        skipped = [p for i, p in enumerate(todo) if i not in done]
        for j, i in enumerate(kept):
            rows[todo[i]] = (features[j], -1)
    if skipped:
        logger.warning("%d of %d video files could not be decoded and are left out", len(skipped), len(paths))
    order = [p for p in paths if p in rows]                                     # not empty: see the except above
    old = VideoFeatures.from_dict(cached["features"]) if cached is not None else None
    parts = [rows[p][0] if rows[p][0] is not None else old[rows[p][1]] for p in order]
    encoded = len(todo) - len(skipped)
    index = VideoIndex(order, VideoFeatures.cat(parts), encoded=encoded, reused=len(order) - encoded, skipped=skipped)
    if cached is None or index.encoded or len(order) != len(cached["paths"]):
        atomic_save({"format": INDEX_FORMAT, "key": tool.key, "paths": order,
                     "stamps": [stamps[p] for p in order],
                     "features": index.features.to_dict()}, index_path)
    return index


def score(tool: Tool, text: TextFeatures, video: VideoFeatures) -> dict[str, torch.Tensor]:
    """Per-level logits [Nt, Nv] and ``overall``, their mean: the evaluation's raw score (no SK-norm)."""
    device = tool.rt.device
    with torch.no_grad():
        levels = tool.model.similarity_levels(text.to(device), video.to(device))
    out = {k: levels[k].float().cpu() for k in LEVELS}
    out["overall"] = combine(out)
    return out
