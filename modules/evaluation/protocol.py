"""The evaluation protocol of ``eval_t2v`` / ``eval_v2t``: raw, SK-norm and DSL side by side, overall and per level.

Writes ``<output_dir>/results_<direction>.json`` (design.md format) and prints a table. ``--save_sims`` adds the
per-level test and bank similarity matrices as ``.npy``; ``--feature_cache DIR`` keeps the encoded test features and
bank similarities so that a second run only scores.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time

import cv2
import numpy as np

from modules.common.errors import ConfigError
from modules.common.io import atomic_write, prepare_output_dir, write_json
from modules.common.lock import output_lock
from modules.common.runtime import Runtime, rank_from_env, run_entry, setup, setup_logging
from modules.data import build_split
from modules.evaluation.config import EvalConfig, parse_args
from modules.evaluation.encoding import (
    LEVELS,
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
from modules.model.build import build_model_from_checkpoint, trained_settings

logger = logging.getLogger("ucofia")
NAMES = {"t2v": "text-to-video", "v2t": "video-to-text"}
BANK_SOURCE = {"t2v": "every caption of the training split", "v2t": "every video of the training split, once"}


def skipped_videos(split, feats: TestFeatures) -> int:
    """Videos the annotation lists that are not in ``feats``: missing or empty when the split was built, undecodable
    when encoded. Features of another split (a bug) stop here instead of giving a negative count."""
    usable, encoded = len(split.video_ids), feats.video_index.numel()
    in_range = encoded == 0 or (int(feats.video_index.min()) >= 0 and int(feats.video_index.max()) < usable)
    if encoded > usable or not in_range:
        raise RuntimeError(f"{encoded} encoded videos (indices up to {int(feats.video_index.max())}) for a split of "
                           f"{usable} usable videos: the features belong to another split")
    return len(split.skipped) + usable - encoded


def format_table(title: str, rows: dict[str, dict]) -> str:
    lines = [title, f"{'':34s}{'R@1':>7s}{'R@5':>7s}{'R@10':>7s}{'MdR':>7s}{'MnR':>8s}"]
    for name, m in rows.items():
        lines.append(f"{name:34s}{m['R1']:7.1f}{m['R5']:7.1f}{m['R10']:7.1f}{m['MdR']:7.1f}{m['MnR']:8.1f}")
    return "\n".join(lines)


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
    """Evaluate ``--init_model`` on the test split in one direction; returns the results dict (also written)."""
    if not cfg.init_model:
        raise ConfigError("--init_model is required: the checkpoint to evaluate (set CKPT in the eval script)")
    started = time.time()
    settings_from_checkpoint(cfg)
    model, _ = build_model_from_checkpoint(cfg.init_model, cfg.model, cfg.precision, rt.device)
    opts = EvalOptions(batch_size=max(1, cfg.batch_size_val // rt.world_size), workers=cfg.num_thread_reader,
                       precision=cfg.precision, sk_iters=cfg.sk_iters, sk_bank_size=cfg.sk_bank_size, seed=cfg.seed)
    test_split = build_split(cfg.data, "test")
    train_split = build_split(cfg.data, "train")
    cache = FeatureCache(cfg.feature_cache, test_key(cfg, rt, test_split) if cfg.feature_cache else "", rt)

    feats = test_features(model, test_split, rt, opts, cache)
    t_encoded = time.time()
    levels = score_test(model, feats, rt)
    key = bank_key(cache.key, train_split, direction, opts) if cfg.feature_cache else ""
    name = f"bank_{direction}_{key[:12]}.pt"
    bank = cache.load(name, key)
    if bank is None:
        bank = bank_scores(model, train_split, feats, direction, rt, opts)
        cache.save(name, key, bank)
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
                   for k in LEVELS},
        "sk_bank": {"source": BANK_SOURCE[direction], "size": int(bank[LEVELS[0]].shape[0]),
                    "iterations": cfg.sk_iters},
        "notes": {"dsl": "normalised over the test queries: uses test-set statistics, not comparable to raw/SK-norm",
                  "decoder": f"OpenCV {cv2.__version__}"},
        "skipped_videos": skipped_videos(test_split, feats),
        "checkpoint": cfg.init_model,
        "seconds": {"encode": round(t_encoded - started, 2), "total": round(time.time() - started, 2)},
    }
    if rt.is_main:
        os.makedirs(cfg.output_dir, exist_ok=True)
        write_json(results, os.path.join(cfg.output_dir, f"results_{direction}.json"))
        if cfg.save_sims:
            for k in LEVELS:
                for part, sims in (("test", levels[k]), ("bank", bank[k])):
                    array = sims.cpu().numpy()
                    atomic_write(os.path.join(cfg.output_dir, f"sims_{direction}_{part}_{k}.npy"),
                                 lambda f, array=array: np.save(f, array))
        rows = {"raw": results["metrics"]["raw"], "SK-norm (paper protocol)": results["metrics"]["sk_norm"],
                "DSL* (test-query statistics)": results["metrics"]["dsl"]}
        rows.update({f"  {k} raw": results["levels"][k]["raw"] for k in LEVELS})
        title = (f"{cfg.data.datatype} test, {NAMES[direction]}: {results['num_texts']} captions x "
                 f"{results['num_videos']} videos; SK bank {results['sk_bank']['size']} "
                 f"({results['sk_bank']['source']})")
        print(format_table(title, rows), flush=True)
    return results


def eval_main(argv, direction: str) -> int:
    """Entry point body of ``eval_t2v`` / ``eval_v2t``; the two differ in ``direction`` only."""
    def run() -> int:
        cfg = parse_args(argv, direction)
        prepare_output_dir(cfg.output_dir)
        with output_lock(cfg.output_dir, f"eval_{direction}.main", enabled=rank_from_env() == 0) as lock:
            rt = setup(cfg.device, cfg.seed, cfg.deterministic)
            setup_logging(rt.rank, os.path.join(cfg.output_dir, f"log_eval_{direction}.txt"))
            if lock.note:
                logger.warning("%s", lock.note)
            run_evaluation(cfg, rt, direction)
            return 0

    return run_entry(run)
