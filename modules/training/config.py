"""The command line of ``train/main.py``, generated from the config dataclasses (``python -m train.main --help``).

Each flag is one dataclass field with its default and help text: run options (``RunOptions``), data
(``DataConfig``), model (``ModelConfig``), optimiser (``OptimConfig``) and the training options below. The resolved
``TrainConfig.to_dict()`` is written beside every run and into every checkpoint.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

from modules.common.cli import add_options, new_parser, option, parse, values
from modules.common.errors import ConfigError
from modules.common.options import RunOptions, validate_run
from modules.data.config import DataConfig
from modules.data.registry import dataset_entry
from modules.model.ucofia import ModelConfig
from modules.training.optim import OPTIMIZERS, OptimConfig

MODE = "train"


@dataclass
class TrainOptions:
    do_train: bool = option(False, "train (the default of train/main.py unless --do_eval is given alone)")
    resume_model: Optional[str] = option(None, "a training checkpoint (checkpoints/last.pth) to continue exactly")
    resume_allow_changes: bool = option(False, "resume with settings that differ from the checkpoint's (each is "
                                        "logged) instead of refusing them")
    epochs: int = option(5, "training epochs")
    batch_size: int = option(128, "global batch over all processes and accumulation steps (published: 128)")
    gradient_accumulation_steps: int = option(1, "micro-batches per optimiser step (same result, less memory)")
    freeze_layer_num: int = option(0, "published: freeze CLIP blocks below this number and the embeddings; -1 none")
    grad_checkpointing: bool = option(False, "recompute CLIP activations in the backward pass: less memory, ~30% "
                                      "slower")
    compile: bool = option(False, "torch.compile the model's training forward (faster steps on a GPU after a minute "
                           "of compiling; fused kernels change results within floating-point rounding)")
    optimizer_impl: str = option("per_param", "BertAdam computed per parameter, or multi_tensor: the same arithmetic "
                                 "over all parameters at once (torch._foreach_*), same results, fewer kernel launches",
                                 choices=tuple(OPTIMIZERS))
    n_display: int = option(100, "log the loss every n optimiser steps")
    skip_nonfinite_loss: bool = option(False, "skip a step whose loss is NaN or inf (counted) instead of stopping")
    checkpoint_every: int = option(0, "also write checkpoints/last.pth every n optimiser steps (0: at epoch ends)")
    max_steps: int = option(0, "stop after this many optimiser steps (0: no limit); for smoke runs")
    loose_type: bool = option(False, "accepted for the published scripts; UCoFiA is always the loose type")
    linear_patch: str = option("2d", "accepted for the published scripts; CLIP's 2d patch embedding",
                               choices=("2d",))


@dataclass
class TrainConfig(TrainOptions, RunOptions):
    """Everything a training run reads; ``model``, ``data`` and ``optim`` go to their consumers."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    mode: str = MODE

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SECTIONS = ((RunOptions, "run"), (TrainOptions, "training"), (DataConfig, "data"), (ModelConfig, "model"),
            (OptimConfig, "optimisation"))


def build_parser():
    parser = new_parser("python -m train.main", "Train UCoFiA (or validate --init_model with --do_eval alone).")
    for cls, title in SECTIONS:
        add_options(parser, cls, title, MODE)
    return parser


def parse_args(argv: Optional[Sequence[str]]) -> TrainConfig:
    """Parse and validate; configuration errors raise ``ConfigError`` naming the flag."""
    ns = parse(build_parser(), argv).namespace
    run = {**values(RunOptions, ns, MODE), **values(TrainOptions, ns, MODE)}
    dataset_entry(getattr(ns, "datatype", "msrvtt"))
    data = DataConfig(**values(DataConfig, ns, MODE, seed=run.get("seed", 42)))
    model = ModelConfig(**values(ModelConfig, ns, MODE, max_words=data.max_words, max_frames=data.max_frames))
    optim = OptimConfig(**values(OptimConfig, ns, MODE))
    cfg = TrainConfig(**run, model=model, data=data, optim=optim)
    cfg.do_train = cfg.do_train or not cfg.do_eval  # train/main.py trains unless only --do_eval
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    """Checks that need no data or model; each names the flag."""
    validate_run(cfg)
    positive = {"--epochs": cfg.epochs, "--batch_size": cfg.batch_size,
                "--gradient_accumulation_steps": cfg.gradient_accumulation_steps, "--topk": cfg.model.topk}
    for flag, value in positive.items():
        if value < 1:
            raise ConfigError(f"{flag} must be at least 1, got {value}")
    if cfg.data.max_words < 3:
        raise ConfigError(f"--max_words must leave room for start, end and one word, got {cfg.data.max_words}")
    if cfg.batch_size % cfg.gradient_accumulation_steps:
        raise ConfigError(f"--batch_size {cfg.batch_size} is not divisible by --gradient_accumulation_steps "
                          f"{cfg.gradient_accumulation_steps}")
    non_negative = {"--max_steps": cfg.max_steps, "--checkpoint_every": cfg.checkpoint_every}
    for flag, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{flag} must be 0 (off) or positive, got {value}")
    if cfg.n_display < 1:
        raise ConfigError(f"--n_display must be at least 1, got {cfg.n_display}")
    if cfg.freeze_layer_num < -1:
        raise ConfigError(f"--freeze_layer_num must be -1 (nothing frozen) or more, got {cfg.freeze_layer_num}")
    o = cfg.optim
    if not (math.isfinite(o.lr) and o.lr > 0):
        raise ConfigError(f"--lr must be a positive finite number, got {o.lr}")
    if not (math.isfinite(o.coef_lr) and o.coef_lr >= 0):
        raise ConfigError(f"--coef_lr must be a finite number, 0 or more, got {o.coef_lr}")
    if not (0 <= o.warmup_proportion < 1):
        raise ConfigError(f"--warmup_proportion must be in [0, 1), got {o.warmup_proportion}")
    if cfg.resume_model and cfg.init_model:
        raise ConfigError("--resume_model and --init_model exclude each other: a resumed run restores its own weights")
