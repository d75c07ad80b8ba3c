"""``--feature_cache DIR``: encoded test features and SK-norm bank similarities kept on disk, so that a second
evaluation only scores.

    DIR/<test key>/test_features.pt             text and video features of the test split
    DIR/<test key>/bank_<direction>_<key>.pt    bank x gallery logits per level

An entry's key covers everything its content depends on (``modules.common.cache_keys``): the checkpoint file, the
model, sampling and precision settings, the device type, the project's code and the libraries' versions, and the
split's own contents, i.e. every caption, the video of each, every video file (path, size, times) and clip window, so
an edited annotation file or a replaced video is never served stale features. A bank adds the training split's
captions (text-to-video) or videos (video-to-text), ``--sk_bank_size`` and, for a subsample, ``--seed``. Each file
also stores its key and is only used when that key matches.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Optional

import torch

from modules.common.cache_keys import cache_key, code_version, file_identity, file_stamp, software_versions
from modules.common.io import atomic_save, read_checkpoint, weights_file
from modules.common.runtime import Runtime
from modules.data.base import RetrievalSplit
from modules.evaluation.config import EvalConfig
from modules.evaluation.encoding import EvalOptions, TestFeatures, encode_test_set
from modules.model.features import TextFeatures, VideoFeatures

logger = logging.getLogger("ucofia")
FORMAT = "ucofia-feature-cache-v2"
# Data settings left out of the test key, with the reason: the split's contents are keyed instead of the files they
# were read from, the seed only where it changes frames (``split_identity``), and training-only settings.
NOT_KEYED = {
    "datatype": "the split's contents are keyed",
    "data_path": "the split's contents are keyed",
    "features_path": "the split's contents are keyed",
    "train_csv": "the split's contents are keyed",
    "val_csv": "the split's contents are keyed",
    "seed": "keyed by the split where frames are shuffled",
    "train_frame_order": "training only",
    "expand_msrvtt_sentences": "training only",
    "frame_cache": "cached frames are the decoded frames bit for bit",
    "frame_cache_strict": "cached frames are the decoded frames bit for bit",
}


def split_identity(split: RetrievalSplit, texts: bool = True, videos: bool = True) -> dict:
    """What features encoded from ``split`` depend on: its captions (and the video of each) if ``texts``, its video
    files, clip windows and frame order (with the seed when frames are shuffled) if ``videos``."""
    out: dict = {"name": split.name, "split": split.split, "listed_videos": len(split.video_ids) + len(split.skipped)}
    if texts:
        out["captions"] = cache_key([split.captions, [int(v) for v in split.caption_to_video]])
    if videos:
        files = [[vid, os.path.realpath(p), file_stamp(p)] for vid, p in zip(split.video_ids, split.video_paths)]
        out["videos"] = cache_key([files, split.windows])
        order = split.cfg.eval_frame_order
        out["frame_order"] = [order, split.cfg.seed] if order == 2 else order
    return out


def weights_identity(cfg: EvalConfig) -> dict:
    """The weights evaluated: the checkpoint (its weights file for an exported folder), or zero-shot CLIP's weights
    file; a random zero-shot backbone is named by its architecture and seed."""
    source = cfg.pretrained_clip_name if cfg.zero_shot else cfg.init_model
    if cfg.zero_shot and not os.path.exists(source):
        return {"zero_shot": source, "seed": cfg.seed}
    return {"zero_shot" if cfg.zero_shot else "checkpoint": file_identity(weights_file(source))}


def test_key(cfg: EvalConfig, rt: Runtime, split: RetrievalSplit) -> str:
    """Key of the test features of ``split`` encoded by ``cfg.init_model`` with ``cfg``'s settings."""
    data = {k: v for k, v in dataclasses.asdict(cfg.data).items() if k not in NOT_KEYED}
    return cache_key({"format": FORMAT, "code": code_version(), "software": software_versions(),
                      "weights": weights_identity(cfg), "model": dataclasses.asdict(cfg.model),
                      "data": data, "precision": cfg.precision, "device": rt.device.type,
                      "split": split_identity(split)})


def bank_key(test: str, train_split: RetrievalSplit, direction: str, opts: EvalOptions) -> str:
    """Key of the SK-norm bank logits against the test features keyed ``test``."""
    bank = split_identity(train_split, texts=direction == "t2v", videos=direction == "v2t")
    return cache_key({"test": test, "bank": bank, "direction": direction, "size": opts.sk_bank_size,
                      "seed": opts.seed if opts.sk_bank_size else None})


class FeatureCache:
    """The entries of one test key under ``folder``; with ``folder`` None nothing is read or written."""

    def __init__(self, folder: Optional[str], key: str, rt: Runtime):
        self.folder = os.path.join(folder, key) if folder else None
        self.key, self.rt = key, rt

    def path(self, name: str) -> Optional[str]:
        return os.path.join(self.folder, name) if self.folder else None

    def load(self, name: str, key: str) -> Optional[dict]:
        """The entry ``name`` if present and made for ``key``, tensors on this process's device; else None."""
        path = self.path(name)
        if not path or not os.path.isfile(path):
            return None
        obj = read_checkpoint(path)
        if obj.get("format") != FORMAT or obj.get("key") != key:
            logger.info("%s was made for other inputs: computing it again", path)
            return None
        logger.info("features read from cache %s", path)
        return {k: (v.to(self.rt.device) if isinstance(v, torch.Tensor) else v) for k, v in obj["content"].items()}

    def save(self, name: str, key: str, content: dict) -> None:
        path = self.path(name)
        if path and self.rt.is_main:
            atomic_save({"format": FORMAT, "key": key,
                         "content": {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in content.items()}},
                        path)


def test_features(model, split: RetrievalSplit, rt: Runtime, opts: EvalOptions, cache: FeatureCache) -> TestFeatures:
    """The test features of ``split``: from the cache, else encoded (and cached)."""
    cached = cache.load("test_features.pt", cache.key)
    if cached is not None:
        text = TextFeatures(**{k[5:]: v for k, v in cached.items() if k.startswith("text.")})
        video = VideoFeatures(**{k[6:]: v for k, v in cached.items() if k.startswith("video.")})
        return TestFeatures(text, video, cached["caption_to_video"].cpu(), cached["text_index"].cpu(),
                            cached["video_index"].cpu())
    feats = encode_test_set(model, split, rt, opts)
    content = {f"text.{k}": v for k, v in feats.text.to_dict().items()}
    content.update({f"video.{k}": v for k, v in feats.video.to_dict().items()})
    content.update(caption_to_video=feats.caption_to_video, text_index=feats.text_index,
                   video_index=feats.video_index)
    cache.save("test_features.pt", cache.key, content)
    return feats
