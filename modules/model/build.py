"""Building UCoFiA for a run: from a CLIP name (training) or from a checkpoint alone (evaluation, tools).

Evaluation never needs OpenAI's weights file: the backbone's architecture is read from the checkpoint itself.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Iterable

import torch
from torch import nn

from modules.common.cli import flag_name
from modules.common.errors import CheckpointError, ConfigError
from modules.common.io import EXPORT_FORMAT, read_checkpoint
from modules.common.state_dicts import check_compatible
from modules.model.clip import CLIP, Attention, build_clip, resolve_clip
from modules.model.published import is_published_state_dict, published_clip_state_dict
from modules.model.ucofia import TRAINED, ModelConfig, UCoFiA
from modules.model.zero_shot import ZeroShotCLIP

logger = logging.getLogger("ucofia")
FLAG_NAMES = {f.name: flag_name(f) for f in dataclasses.fields(ModelConfig)}  # e.g. --cross_num_hidden_layers


def convert_clip_to_fp16(clip: CLIP) -> None:
    """The published recipe's ``convert_weights``: linear, convolution and attention weights and the two projections
    in fp16; embeddings, LayerNorms and the logit scale stay fp32."""
    for module in clip.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.weight.data = module.weight.data.half()
            if module.bias is not None:
                module.bias.data = module.bias.data.half()
        elif isinstance(module, Attention):
            module.in_proj_weight.data = module.in_proj_weight.data.half()
            module.in_proj_bias.data = module.in_proj_bias.data.half()
    clip.text_projection.data = clip.text_projection.data.half()
    clip.visual.proj.data = clip.visual.proj.data.half()


def prepare(model: nn.Module, precision: str, grad_checkpointing: bool, device: torch.device) -> nn.Module:
    """Gradient checkpointing and the legacy fp16 weights on ``model.clip``, then ``model`` on ``device``."""
    if grad_checkpointing:
        model.clip.set_grad_checkpointing(True, True)
    if precision == "legacy_fp16":
        convert_clip_to_fp16(model.clip)
    return model.to(device)


def build_model(clip_name: str, model_cfg: ModelConfig, precision: str = "fp32", grad_checkpointing: bool = False,
                device: torch.device | str = "cpu") -> UCoFiA:
    """UCoFiA on a CLIP given by ``--pretrained_clip_name`` (OpenAI name, weights file or ``random:<arch>``)."""
    return prepare(UCoFiA(resolve_clip(clip_name), model_cfg), precision, grad_checkpointing, device)


def build_zero_shot(clip_name: str, max_words: int, max_frames: int, precision: str = "fp32",
                    device: torch.device | str = "cpu") -> ZeroShotCLIP:
    """Plain CLIP from ``--pretrained_clip_name`` as the zero-shot baseline, in eval mode (no checkpoint)."""
    return prepare(ZeroShotCLIP(resolve_clip(clip_name), max_words, max_frames), precision, False, device).eval()


def build_model_from_checkpoint(path: str, model_cfg: ModelConfig, precision: str = "fp32",
                                device: torch.device | str = "cpu") -> tuple[UCoFiA, dict]:
    """UCoFiA whose backbone architecture and weights come from a checkpoint (ours or the published code's).

    Returns (model in eval mode, the checkpoint's contents). Loading is strict.
    """
    obj = read_checkpoint(path)
    raw = obj["model"] if obj.get("format") in FORMATS else obj
    if is_published_state_dict(raw):
        clip_state = published_clip_state_dict(raw)
    else:
        clip_state = {k[len("clip."):]: v for k, v in raw.items() if k.startswith("clip.")}
    if not clip_state:
        raise CheckpointError(f"{path}: holds no CLIP backbone weights (no 'clip.*' keys)")
    model = UCoFiA(build_clip(clip_state, source=path), model_cfg)
    state = model_state_from(obj, model, path)
    check_compatible(model.state_dict(), state, path, "the model the flags describe",
                     "check --max_words, --max_frames, --topk, --patch_scorer, --sim_header, --shift_layers")
    model.load_state_dict(state, strict=True)
    saved = obj.get("config", {}).get("model") if isinstance(obj.get("config"), dict) else None
    if saved:
        differing = {k: (saved[k], v) for k, v in vars(model_cfg).items()
                     if k in saved and _norm(saved[k]) != _norm(v)}
        if differing:
            logger.warning("model settings differ from the checkpoint's training run (checkpoint, now): %s", differing)
    return prepare(model, precision, False, device).eval(), obj


def _norm(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def saved_config(path: str) -> dict:
    """The resolved configuration saved in a checkpoint of ours or an exported folder ({} for a bare or published
    state dict), read without loading a checkpoint file's weights into memory."""
    try:  # a folder is no file: read_checkpoint below reads its config.json (and its safetensors)
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # tensors stay on disk
    except Exception:
        obj = read_checkpoint(path)  # raises the one-line CheckpointError for whatever is wrong
    config = obj.get("config") if isinstance(obj, dict) else None
    return config if isinstance(config, dict) else {}


def trained_settings(path: str, given: ModelConfig, explicit: Iterable[str]) -> ModelConfig:
    """``given`` with every trained setting (``TRAINED``) replaced by the checkpoint's.

    Args:
        path: the checkpoint; one without a saved configuration keeps ``given``.
        given: defaults and command-line values.
        explicit: names of the fields given on the command line: one that contradicts the checkpoint is an error.
    Returns:
        the ModelConfig to build.
    """
    saved = saved_config(path).get("model") or {}
    explicit = set(explicit)
    taken = {}
    for name in TRAINED:
        if name not in saved:
            continue
        if name in explicit and _norm(getattr(given, name)) != _norm(saved[name]):
            flag = "--" + FLAG_NAMES.get(name, name)
            raise ConfigError(f"{flag} {_show(getattr(given, name))} does not match the checkpoint {path}, trained "
                              f"with {flag} {_show(saved[name])}; leave the flag out to use the checkpoint's")
        taken[name] = tuple(saved[name]) if isinstance(saved[name], list) else saved[name]
    return dataclasses.replace(given, **taken)


def _show(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(int(value)) if isinstance(value, bool) else str(value)


FORMAT = "ucofia-checkpoint-v1"
FORMATS = (FORMAT, EXPORT_FORMAT)  # files whose "model" entry is our state dict: training checkpoints, exports


def model_state_from(obj: dict, model: nn.Module, path: str) -> dict:
    """The model state dict inside a checkpoint of ours, a bare state dict of ours, or a published-code one."""
    from modules.model.published import import_published_state_dict, is_published_state_dict

    if obj.get("format") in FORMATS:
        state = obj["model"]
    elif not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: neither a checkpoint of this project nor a state dict of tensors")
    elif is_published_state_dict(obj):
        logger.info("%s: importing a checkpoint of the published UCoFiA code", path)
        state = import_published_state_dict(obj, model)
    else:
        state = obj
    check_finite(state, path)
    return state


def check_finite(state: dict, path: str) -> None:
    """Refuse weights holding NaN or inf: they would only surface later as a non-finite loss or NaN scores."""
    bad = sorted(k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
                 and not bool(torch.isfinite(v).all()))
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise CheckpointError(f"{path}: {len(bad)} tensor(s) hold NaN or inf values ({shown}); the file is corrupt "
                              "or comes from a diverged run")


def load_model_weights(model: nn.Module, path: str) -> dict:
    """Strictly load weights from ``path`` into ``model``; returns the file's contents."""
    obj = read_checkpoint(path)
    state = model_state_from(obj, model, path)
    check_compatible(model.state_dict(), state, path, "this model's architecture")
    model.load_state_dict(state, strict=True)
    return obj
