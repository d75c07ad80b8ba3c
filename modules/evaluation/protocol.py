"""The evaluation protocol of ``eval_t2v`` / ``eval_v2t``: raw, SK-norm and DSL side by side, overall and per level.

Writes ``<output_dir>/results_<direction>.json`` (format in the README, "Evaluation") and the resolved configuration
``config_<direction>.json``, and prints a table. ``--save_sims`` adds the per-level test and bank similarity matrices
as ``.npy`` and ``sims_<direction>_items.json``, the captions and videos of the test matrices' rows and columns (what
``scripts/report.py`` reads); ``--feature_cache DIR`` keeps the encoded test features and bank similarities so that a
second run only scores. ``--zero_shot`` evaluates plain CLIP (``modules.model.zero_shot``) the same way.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time

import cv2
import numpy as np
import torch

from modules.common.errors import ConfigError
from modules.common.io import atomic_write, write_json
from modules.common.lock import run_folder
from modules.common.runtime import Runtime, loader_workers, rank_from_env, run_entry, setup, setup_logging
from modules.data import build_split
from modules.data.base import feed_uint8
from modules.evaluation.config import DIRECTION_NAMES, EvalConfig, parse_args
from modules.evaluation.encoding import (
    EvalOptions,
    TestFeatures,
    add_bias,
    bank_scores,
    combine,
    dsl,
    metrics_for,
    score_test,
    sk_biases,
)
from modules.evaluation.feature_cache import FeatureCache, bank_key, test_features, test_key
from modules.model.build import build_model_from_checkpoint, build_zero_shot, trained_settings

logger = logging.getLogger("ucofia")
BANK_SOURCE = {"t2v": "every caption of the training split", "v2t": "every video of the training split, once"}




def format_table(title: str, rows: dict[str, dict]) -> str:
    lines = [title, f"{'':34s}{'R@1':>7s}{'R@5':>7s}{'R@10':>7s}{'MdR':>7s}{'MnR':>8s}"]
    for name, m in rows.items():
        lines.append(f"{name:34s}{m['R1']:7.1f}{m['R5']:7.1f}{m['R10']:7.1f}{m['MdR']:7.1f}{m['MnR']:8.1f}")
    return "\n".join(lines)


def split_counts(split, num_texts: int, video_index: torch.Tensor) -> dict:
    """What was dropped from the annotation's test split, so that the counts add up to what it lists:
    num_texts + skipped_texts = annotation.texts, num_videos + skipped_videos = annotation.videos.

    ``video_index`` holds the split positions of the encoded videos; features of another split (a bug, or a stale
    cache) stop here instead of giving a negative count."""
    usable, encoded = len(split.video_ids), video_index.numel()
    in_range = encoded == 0 or (int(video_index.min()) >= 0 and int(video_index.max()) < usable)
    if encoded > usable or not in_range or num_texts > split.listed_texts:
        raise RuntimeError(f"{num_texts} texts and {encoded} videos encoded for a split of {split.listed_texts} texts "
                           f"and {usable} usable videos: the features belong to another split")
    return {"skipped_videos": split.listed_videos - encoded, "skipped_texts": split.listed_texts - num_texts,
            "annotation": {"texts": split.listed_texts, "videos": split.listed_videos, "left_out": split.left_out}}


def settings_from_checkpoint(cfg: EvalConfig) -> None:
    """Model settings (and caption / frame counts) the checkpoint was trained with, unless given explicitly; an
    explicit flag that contradicts the checkpoint is an error naming both values."""
    explicit = set(cfg.explicit)
    cfg.model = trained_settings(cfg.init_model, cfg.model, explicit)
    if (cfg.model.max_words, cfg.model.max_frames) != (cfg.data.max_words, cfg.data.max_frames):
        logger.info("--max_words %d --max_frames %d, as the checkpoint was trained", cfg.model.max_words,
                    cfg.model.max_frames)
        cfg.data = dataclasses.replace(cfg.data, max_words=cfg.model.max_words, max_frames=cfg.model.max_frames)


def run_evaluation(cfg: EvalConfig, rt: Runtime, direction: str) -> dict:
    """Evaluate ``--init_model`` (or zero-shot CLIP) on the test split in one direction; returns the results dict
    (also written)."""
    if not cfg.init_model and not cfg.zero_shot:
        raise ConfigError("--init_model is required: the checkpoint to evaluate (set CKPT in the eval script), "
                          "or --zero_shot for plain CLIP")
    started = time.time()
    if cfg.zero_shot:
        model = build_zero_shot(cfg.pretrained_clip_name, cfg.model.max_words, cfg.model.max_frames, cfg.precision,
                                rt.device)
    else:
        settings_from_checkpoint(cfg)
        model, _ = build_model_from_checkpoint(cfg.init_model, cfg.model, cfg.precision, rt.device)
    opts = EvalOptions(batch_size=max(1, cfg.batch_size_val // rt.world_size),
                       workers=loader_workers(cfg.num_thread_reader), precision=cfg.precision,
                       sk_iters=cfg.sk_iters, sk_bank_size=cfg.sk_bank_size, seed=cfg.seed)
    test_split = build_split(cfg.data, "test")
    train_split = build_split(cfg.data, "train")
    for split in (test_split, train_split):
        split.uint8_video = feed_uint8(rt.device)
    cache = FeatureCache(cfg.feature_cache, test_key(cfg, rt, test_split) if cfg.feature_cache else "", rt)

    feats = test_features(model, test_split, rt, opts, cache)
    t_encoded = time.time()
    levels = score_test(model, feats, rt)
    key = bank_key(cache.key, train_split, direction, opts) if cfg.feature_cache else ""
    name = f"bank_{direction}_{key[:12]}.pt"
    bank = cache.load(name, key)
    names = list(levels)
    if bank is None:
        bank = bank_scores(model, train_split, feats, direction, rt, opts)
        cache.save(name, key, bank)
    for split in (test_split, train_split):
        split.log_frame_cache_report()
    bias = sk_biases(bank, cfg.sk_iters)
    c2v = feats.caption_to_video
    raw = combine(levels)
    sk = combine(levels, bias, direction)
    results = {
        "direction": direction,
        "datatype": cfg.data.datatype,
        "split": "test",
        "num_texts": int(c2v.numel()),
        "num_videos": int(feats.video.frames.shape[0]),
        "metrics": {"raw": metrics_for(raw, c2v, direction), "sk_norm": metrics_for(sk, c2v, direction),
                    "dsl": metrics_for(dsl(raw, direction), c2v, direction)},
        "levels": {k: {"raw": metrics_for(levels[k], c2v, direction),
                       "sk_norm": metrics_for(add_bias(levels[k], bias[k], direction), c2v, direction)}
                   for k in names},
        "sk_bank": {"source": BANK_SOURCE[direction], "size": int(bank[names[0]].shape[0]),
                    "iterations": cfg.sk_iters},
        "notes": {"dsl": "normalised over the test queries: uses test-set statistics, not comparable to raw/SK-norm",
                  "decoder": f"OpenCV {cv2.__version__}"},
        **split_counts(test_split, int(c2v.numel()), feats.video_index),
        "checkpoint": cfg.init_model,
        "model": f"zero-shot CLIP {cfg.pretrained_clip_name}" if cfg.zero_shot else "UCoFiA",
        "data_version": test_split.fingerprint(),
        "seconds": {"encode": round(t_encoded - started, 2), "total": round(time.time() - started, 2)},
    }
    if rt.is_main:
        os.makedirs(cfg.output_dir, exist_ok=True)
        write_json(results, os.path.join(cfg.output_dir, f"results_{direction}.json"))
        write_json(cfg.to_dict(), os.path.join(cfg.output_dir, f"config_{direction}.json"))
        if cfg.save_sims:
            write_json(matrix_items(test_split, feats), os.path.join(cfg.output_dir, f"sims_{direction}_items.json"))
            for k in names:
                for part, sims in (("test", levels[k]), ("bank", bank[k])):
                    array = sims.cpu().numpy()
                    atomic_write(os.path.join(cfg.output_dir, f"sims_{direction}_{part}_{k}.npy"),
                                 lambda f, array=array: np.save(f, array))
        rows = {"raw": results["metrics"]["raw"], "SK-norm (paper protocol)": results["metrics"]["sk_norm"],
                "DSL* (test-query statistics)": results["metrics"]["dsl"]}
        rows.update({f"  {k} raw": results["levels"][k]["raw"] for k in names})
        skipped = (f" ({results['skipped_videos']} of the annotation's {test_split.listed_videos} videos skipped, "
                   f"with {results['skipped_texts']} captions)" if results["skipped_videos"] else "")
        title = (f"{cfg.data.datatype} test, {DIRECTION_NAMES[direction]}: {results['num_texts']} captions x "
                 f"{results['num_videos']} videos{skipped}; SK bank {results['sk_bank']['size']} "
                 f"({results['sk_bank']['source']})")
        print(format_table(title, rows), flush=True)
    return results


def matrix_items(split, feats: TestFeatures) -> dict:
    """What the rows and columns of the saved test matrices are: each row's caption and the column of its video,
    each column's video id, file and clip window (in seconds, or None)."""
    videos = feats.video_index.tolist()
    return {"captions": [split.captions[i] for i in feats.text_index.tolist()],
            "caption_to_video": feats.caption_to_video.tolist(),
            "video_ids": [split.video_ids[i] for i in videos],
            "video_paths": [os.path.abspath(split.video_paths[i]) for i in videos],
            "windows": [split.windows[i] for i in videos]}


def eval_main(argv, direction: str) -> int:
    """Entry point body of ``eval_t2v`` / ``eval_v2t``; the two differ in ``direction`` only."""
    def run() -> int:
        cfg = parse_args(argv, direction)
        with run_folder(cfg.output_dir, f"eval_{direction}.main", is_main=rank_from_env() == 0) as lock:
            rt = setup(cfg.device, cfg.seed, cfg.deterministic)
            setup_logging(rt.rank, os.path.join(cfg.output_dir, f"log_eval_{direction}.txt"))
            if lock.note:
                logger.warning("%s", lock.note)
            run_evaluation(cfg, rt, direction)
            return 0

    return run_entry(run)
