"""The command line of ``eval_t2v`` / ``eval_v2t``, generated from the config dataclasses; evaluation flags only.

Model settings default to those the checkpoint was trained with (``--max_words``, ``--max_frames``, the model
flags): a flag given explicitly that contradicts the checkpoint is an error naming both values.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Sequence

from modules.common.cli import add_options, new_parser, option, parse, setting, values
from modules.common.errors import ConfigError
from modules.common.options import RunOptions, validate_run
from modules.data.config import DataConfig
from modules.data.registry import dataset_entry
from modules.evaluation.sinkhorn import SK_ITERS
from modules.model.ucofia import ModelConfig

# Each retrieval direction: its short name (eval_t2v, results_t2v.json) and its name in prose.
DIRECTION_NAMES = {"t2v": "text-to-video", "v2t": "video-to-text"}
DIRECTIONS = tuple(DIRECTION_NAMES)


@dataclass
class EvalRunOptions:
    sk_bank_size: int = option(0, "SK-norm query bank: 0 uses the whole training split; N a fixed subsample of N")
    save_sims: bool = option(False, "write the per-level test and bank similarity matrices as .npy")
    feature_cache: Optional[str] = option(None, "folder caching encoded test features and bank similarities, so a "
                                          "second evaluation only scores")
    zero_shot: bool = option(False, "evaluate plain CLIP from --pretrained_clip_name instead of a checkpoint: no "
                             "UCoFiA head, the mean of the frame embeddings against the sentence embedding (the "
                             "CLIP4Clip family's zero-shot baseline), same protocol, SK-norm and results file")
    sk_iters: int = setting(SK_ITERS, "Sinkhorn-Knopp iterations of SK-norm (published)")


@dataclass
class EvalConfig(EvalRunOptions, RunOptions):
    """Everything an evaluation reads. ``explicit`` names the fields given on the command line."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    mode: str = "eval_t2v"
    explicit: tuple = ()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SECTIONS = ((RunOptions, "run"), (EvalRunOptions, "evaluation"), (DataConfig, "data"),
            (ModelConfig, "model (default: the settings the checkpoint was trained with)"))


def build_parser(direction: str):
    mode = "eval_" + direction
    parser = new_parser(f"python -m {mode}.main", f"Evaluate a checkpoint on {DIRECTION_NAMES[direction]} retrieval: "
                        "raw, SK-norm and DSL side by side.")
    for cls, title in SECTIONS:
        add_options(parser, cls, title, mode)
    return parser


def parse_args(argv: Optional[Sequence[str]], direction: str) -> EvalConfig:
    """Parse and validate; configuration errors raise ``ConfigError`` naming the flag."""
    if direction not in DIRECTIONS:
        raise ConfigError(f"unknown direction {direction!r}; valid: {', '.join(DIRECTIONS)}")
    mode = "eval_" + direction
    parsed = parse(build_parser(direction), argv)
    ns = parsed.namespace
    run = {**values(RunOptions, ns, mode), **values(EvalRunOptions, ns, mode)}
    dataset_entry(getattr(ns, "datatype", "msrvtt"))
    data = DataConfig(**values(DataConfig, ns, mode, seed=run.get("seed", 42)))
    model = ModelConfig(**values(ModelConfig, ns, mode, max_words=data.max_words, max_frames=data.max_frames))
    cfg = EvalConfig(**run, model=model, data=data, mode=mode, explicit=tuple(sorted(parsed.explicit)))
    validate_run(cfg)
    if cfg.sk_bank_size < 0:
        raise ConfigError(f"--sk_bank_size must be 0 (whole split) or positive, got {cfg.sk_bank_size}")
    if cfg.zero_shot and cfg.init_model:
        raise ConfigError("--zero_shot evaluates plain CLIP from --pretrained_clip_name; it takes no --init_model")
    return cfg
