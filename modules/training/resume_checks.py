"""What ``--resume_model`` may continue, into which folder, and with which settings.

Folder: a checkpoint in ``<output_dir>/checkpoints`` continues that run in place (its checkpoints, configuration,
history and step log are continued). A checkpoint from anywhere else continues as a copy, and only into a folder that
holds no training run (new, empty, or holding other files such as evaluation results): resuming run A into run B's
folder would overwrite B's checkpoints, configuration and history.

Settings: the resumed run's settings are compared with the configuration saved in the checkpoint. A difference that
changes the run (batch size, learning rate, seed, epochs, data, model, precision, ...) breaks exact resume and is
refused, unless ``--resume_allow_changes``: then each difference is logged and takes effect from the resumed step
(the optimiser's learning rates and schedule length are the new ones; a new global batch size re-cuts the rest of the
epoch at the same number of samples). ``HARMLESS`` lists the settings that may differ, each with the reason.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

from modules.common.cli import flag_name
from modules.common.errors import ConfigError
from modules.training.checkpoint import TrainState
from modules.training.config import TrainConfig

logger = logging.getLogger("ucofia")

# Files that make a folder hold a training run.
RUN_FILES = ("checkpoints/last.pth", "checkpoints/best.pth", "config.json", "history.json", "train_steps.jsonl")

# Settings a resumed run may change without changing what it computes, and why.
HARMLESS = {
    "output_dir": "where the run writes; the folder rule decides which folders a checkpoint may continue in",
    "resume_model": "the checkpoint being resumed",
    "resume_allow_changes": "this check's own switch",
    "init_model": "the weights come from the resumed checkpoint",
    "pretrained_clip_name": "the weights come from the resumed checkpoint; another architecture fails its strict load",
    "do_train": "what the entry point does, not how it trains",
    "do_eval": "what the entry point does, not how it trains",
    "num_thread_reader": "every item is a function of (seed, epoch, index), whichever worker loads it",
    "data.frame_cache": "cached frames are the decoded frames bit for bit; a clip the cache cannot serve is decoded",
    "data.frame_cache_strict": "only whether a clip the cache cannot serve stops the run",
    "n_display": "how often the loss is logged",
    "checkpoint_every": "how often the position is saved, not what is computed",
    "max_steps": "where the run stops; the learning-rate schedule follows --epochs",
    "batch_size_val": "validation batching: the same metrics up to floating-point rounding",
    "device": "where the run computes: the same run up to floating-point rounding",
    "deterministic": "kernel choice: the same run up to floating-point rounding (bit-exact resume needs it on)",
    "grad_checkpointing": "activations are recomputed, the gradients are the same",
    "compile": "kernel choice: the same run up to floating-point rounding",
    "optimizer_impl": "the same BertAdam arithmetic and state, computed per parameter or over all at once",
    "loose_type": "accepted for the published scripts; changes nothing",
    "linear_patch": "accepted for the published scripts; changes nothing",
    "command": "how the run was started (recorded for the reader); its settings are compared one by one",
}

# Copies of another setting, compared under that setting's name.
MIRRORED = {"data.seed": "--seed", "model.max_words": "--max_words", "model.max_frames": "--max_frames"}
SECTIONS = ("model", "data", "optim")


def check_output_dir(cfg: TrainConfig) -> None:
    """Refuse to start over a run, or to resume a checkpoint into a folder holding another run (module docstring)."""
    out = cfg.output_dir
    ckpt_dir = os.path.join(out, "checkpoints")
    if not cfg.resume_model:
        if os.path.exists(os.path.join(ckpt_dir, "last.pth")):
            raise ConfigError(f"--output_dir {out} already holds a training run (checkpoints/last.pth); continue it "
                              f"with --resume_model {os.path.join(ckpt_dir, 'last.pth')} or choose another "
                              f"--output_dir")
        return
    source = os.path.dirname(os.path.abspath(cfg.resume_model))
    if os.path.isdir(ckpt_dir) and os.path.isdir(source) and os.path.samefile(source, ckpt_dir):
        return  # in place
    held = [name for name in RUN_FILES if os.path.exists(os.path.join(out, name))]
    if held:
        run_dir = os.path.dirname(source) if os.path.basename(source) == "checkpoints" else source
        raise ConfigError(f"--output_dir {out} holds another training run ({held[0]}) and --resume_model "
                          f"{cfg.resume_model} is not one of its checkpoints: continue that run in place with "
                          f"--output_dir {run_dir}, or continue it as a copy in a new --output_dir")


def _normalised(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))  # tuples and lists alike, as saved


def _labels() -> dict[str, str]:
    """Dotted config path -> how a user names it (``--flag``, or ``section.field`` for a setting)."""
    labels = {}
    for f in dataclasses.fields(TrainConfig):
        if f.name in SECTIONS:
            for g in dataclasses.fields(f.default_factory):
                labels[f"{f.name}.{g.name}"] = "--" + flag_name(g) if "help" in g.metadata else f"{f.name}.{g.name}"
        else:
            labels[f.name] = "--" + flag_name(f) if "help" in f.metadata else f.name
    return labels


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k in SECTIONS and not prefix:
            out.update(_flatten(v, f"{k}."))
        else:
            out[prefix + k] = v
    return out


def _shown(key: str, value: Any) -> Any:
    if key == "data_version" and isinstance(value, dict):  # the training split's fingerprint (RetrievalSplit)
        return f"[{value.get('videos')} videos, {value.get('captions')} captions, {str(value.get('sha256'))[:12]}]"
    return value


def setting_changes(saved: dict, current: dict) -> list[tuple[str, Any, Any]]:
    """(label, saved value, current value) of every setting that differs and is not in ``HARMLESS``. A setting the
    checkpoint does not record (saved by an older version) is not compared.

    Args:
        saved, current: configurations as recorded (``TrainConfig.to_dict()``, plus ``data_version``, the training
            split's fingerprint, and ``command``).
    """
    old, new, labels = _flatten(_normalised(saved)), _flatten(_normalised(current)), _labels()
    labels["data_version"] = "training data"
    changes = []
    for key in sorted(new):
        if key in old and key not in HARMLESS and key not in MIRRORED and old[key] != new[key]:
            changes.append((labels.get(key, key), _shown(key, old[key]), _shown(key, new[key])))
    return changes


def check_settings(cfg: TrainConfig, current: dict, obj: dict, path: str) -> list[tuple[str, Any, Any]]:
    """Refuse a resumed run whose recorded configuration ``current`` differs from the checkpoint's, unless
    ``--resume_allow_changes`` (then log each). Returns the changes."""
    saved = obj.get("config")
    if not isinstance(saved, dict):
        logger.warning("%s records no configuration: the resumed settings cannot be compared with it", path)
        return []
    changes = setting_changes(saved, current)
    if not changes:
        return changes
    listed = ", ".join(f"{label} {old} -> {new}" for label, old, new in changes)
    if not cfg.resume_allow_changes:
        raise ConfigError(f"{path} was trained with other settings ({listed}): resuming with them would not continue "
                          f"that run exactly; give the checkpoint's values, or --resume_allow_changes to continue "
                          f"with the new ones")
    for label, old, new in changes:
        logger.warning("--resume_allow_changes: %s changes from %s to %s at the resumed step", label, old, new)
    return changes


def recut_epoch(state: TrainState, saved_batch: int, batch_size: int, steps_per_epoch: int) -> None:
    """After a global batch size change: continue the epoch after the same number of its samples (rounded down to a
    whole batch of the new size)."""
    if saved_batch == batch_size:
        return
    step = min(state.epoch_step * saved_batch // batch_size, steps_per_epoch)
    logger.warning("global batch %d -> %d: epoch %d continues at step %d of %d (was step %d)", saved_batch,
                   batch_size, state.epoch + 1, step, steps_per_epoch, state.epoch_step)
    state.epoch_step = step
