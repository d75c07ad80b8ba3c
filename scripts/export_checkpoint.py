"""Export a checkpoint as a folder that loads without pickles: ``model.safetensors`` and ``config.json``.

    python scripts/export_checkpoint.py runs/msrvtt/checkpoints/best.pth --out exported/msrvtt

``config.json`` holds the model settings, the CLIP architecture, the frame sampling, the training command, the
training split's fingerprint (``data_version``), the validation history and the source file's sha256; the weights
are the checkpoint's model tensors exactly as saved (a published-code checkpoint is first mapped to this project's
names). ``--init_model``, ``eval_t2v`` / ``eval_v2t`` and the retrieval tools (``--checkpoint``) accept the folder;
reading it parses JSON and safetensors only, so it never runs code. The model is built strictly from the checkpoint
before anything is written, so an export that would not load is never made.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.metadata
import os
import sys
from typing import Optional

import torch

from modules.common.errors import ConfigError  # noqa: E402
from modules.common.io import EXPORT_CONFIG, write_exported  # noqa: E402
from modules.common.runtime import run_entry, setup_logging  # noqa: E402
from modules.data import DataConfig  # noqa: E402
from modules.evaluation.retrieval import add_setting_arguments, tool_overrides, tool_settings  # noqa: E402
from modules.model.build import FORMAT, build_model_from_checkpoint  # noqa: E402
from modules.model.published import is_published_state_dict  # noqa: E402

# Data settings a user of the exported model needs to feed it videos and captions as in training.
SAMPLING = ("datatype", "max_words", "max_frames", "feature_framerate", "slice_framepos", "eval_frame_order",
            "image_resolution")


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export(checkpoint: str, out: str, overrides: Optional[dict] = None) -> dict:
    """Write the exported folder ``out`` for ``checkpoint``; returns the config written (without the weights hash).

    Args:
        checkpoint: a training checkpoint, a bare state dict of this project, or a published-code checkpoint.
        out: folder to create (or update); its ``model.safetensors`` and ``config.json`` are replaced atomically.
        overrides: model/sampling settings for a checkpoint that saved none (``tool_overrides``); None entries ignored.
    """
    if os.path.isdir(checkpoint):
        raise ConfigError(f"{checkpoint} is already an exported folder")
    model_cfg, sampling = tool_settings(checkpoint, overrides or {})
    model, obj = build_model_from_checkpoint(checkpoint, model_cfg)      # strict: refuses what would not load
    saved = obj.get("config") if isinstance(obj.get("config"), dict) else {}
    if obj.get("format") == FORMAT:
        kind, state = "training checkpoint", obj["model"]
    elif is_published_state_dict(obj):
        kind, state = "published UCoFiA checkpoint, mapped to this project's names", model.state_dict()
    else:
        kind, state = "state dict of this project", obj
    data = {k: v for k, v in (saved.get("data") or {}).items() if k in SAMPLING}
    data.update(sampling, max_words=model_cfg.max_words, max_frames=model_cfg.max_frames,
                image_resolution=model.clip.config.image_resolution)
    defaults = dataclasses.asdict(DataConfig())
    data = {k: data.get(k, defaults[k]) for k in SAMPLING}
    config = {
        "model": dataclasses.asdict(model_cfg),
        "clip": dict(dataclasses.asdict(model.clip.config), pretrained_clip_name=saved.get("pretrained_clip_name")),
        "data": data,
        "data_version": saved.get("data_version"),
        "training": {"command": saved.get("command"), "precision": saved.get("precision"), "seed": saved.get("seed"),
                     "optim": saved.get("optim"), "epoch": obj.get("epoch"), "global_step": obj.get("global_step"),
                     "history": obj.get("history"), "best": obj.get("best")},
        "source": {"file": os.path.basename(checkpoint), "sha256": sha256_of(checkpoint), "kind": kind},
        "exported_with": {"torch": torch.__version__, "safetensors": importlib.metadata.version("safetensors")},
    }
    write_exported(out, state, config)
    return config


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/export_checkpoint.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint file (training checkpoint, state dict, or published)")
    parser.add_argument("--out", required=True, help="folder to write model.safetensors and config.json into")
    add_setting_arguments(parser)
    args = parser.parse_args(argv)

    def run() -> int:
        setup_logging(0)
        config = export(args.checkpoint, args.out, tool_overrides(args))
        print(f"exported {args.checkpoint} ({config['source']['kind']}) to {args.out}: "
              f"model.safetensors, {EXPORT_CONFIG}", flush=True)
        return 0

    return run_entry(run)


if __name__ == "__main__":
    sys.exit(main())
