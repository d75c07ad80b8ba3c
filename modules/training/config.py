"""Command line of the entry points: the published flag names and defaults, mapped to typed configs.

Each flag is read by exactly one config field. ``parse_args(argv, mode)`` returns a ``RunConfig`` whose parts go to
their consumers: ``model`` to ``UCoFiA``, ``data`` to the datasets, ``optim`` to the optimiser, the rest to the
engine. ``RunConfig.to_dict()`` is the resolved configuration written beside every run and into checkpoints.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Optional

from modules.common.errors import ConfigError
from modules.data.config import DataConfig
from modules.model.ucofia import ModelConfig
from modules.training.optim import OptimConfig

PRECISIONS = ("fp32", "bf16", "legacy_fp16")
ZERO_SHOT_HELP = ("evaluate plain CLIP from --pretrained_clip_name instead of a checkpoint: no UCoFiA head, the mean "
                  "of the frame embeddings against the sentence embedding (the CLIP4Clip family's zero-shot "
                  "baseline), with the same protocol, SK-norm and results file")


@dataclass
class RunConfig:
    """Everything an entry point needs besides the model, data and optimiser configs."""
    model: ModelConfig
    data: DataConfig
    optim: OptimConfig
    mode: str                               # "train", "eval_t2v" or "eval_v2t"
    do_train: bool = False
    do_eval: bool = False
    output_dir: str = "outputs"
    pretrained_clip_name: str = "ViT-B/32"  # OpenAI name, weights file, or random:<arch>
    init_model: Optional[str] = None        # weights to start from (ours or the published code's)
    resume_model: Optional[str] = None      # a training checkpoint to continue exactly
    epochs: int = 5
    batch_size: int = 128                   # global batch (all processes together), as published
    batch_size_val: int = 32                # global batch for encoding at evaluation
    gradient_accumulation_steps: int = 1
    num_thread_reader: int = 1              # data-loading worker processes per process
    n_display: int = 100                    # log every n optimiser steps
    seed: int = 42
    precision: str = "fp32"                 # fp32 | bf16 (autocast) | legacy_fp16 (CLIP weights in fp16, published)
    grad_checkpointing: bool = False        # recompute CLIP activations in backward: less memory, ~30% slower
    freeze_layer_num: int = 0               # published: freeze CLIP blocks below this and the embeddings; -1 none
    skip_nonfinite_loss: bool = False       # skip a step whose loss is NaN/inf instead of stopping
    checkpoint_every: int = 0               # also checkpoint every n optimiser steps inside an epoch (0: epoch ends)
    max_steps: int = 0                      # stop after this many optimiser steps (0: no limit); for smoke runs
    deterministic: bool = False             # deterministic kernels (exact resume / cross-run equality on CPU)
    sk_iters: int = 4                       # SK-norm Sinkhorn-Knopp iterations, published
    sk_bank_size: int = 0                   # 0: the whole training split as SK bank; N: a fixed subsample of N
    save_sims: bool = False                 # write per-level test and bank similarity matrices as .npy
    feature_cache: Optional[str] = None     # folder caching encoded features, so a second run only scores
    zero_shot: bool = field(default=False, metadata={"help": ZERO_SHOT_HELP})
    device: str = "auto"                    # auto | cpu | cuda
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip() != "")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def build_parser(mode: str) -> argparse.ArgumentParser:
    """The parser of ``train`` or ``eval_t2v`` / ``eval_v2t``; both know every flag so scripts can share lines."""
    d, m = DataConfig(datatype="msrvtt", data_path="", features_path="", train_csv="", val_csv=""), ModelConfig()
    o = OptimConfig()
    p = argparse.ArgumentParser(prog=f"python -m {mode}.main", description=f"UCoFiA {mode}")
    g = p.add_argument_group("run")
    g.add_argument("--do_train", action="store_true", help="train (train/main.py)")
    g.add_argument("--do_eval", action="store_true", help="evaluate (default for the eval entry points)")
    g.add_argument("--output_dir", required=True, help="folder for checkpoints, logs and results")
    g.add_argument("--init_model", default=None, help="weights to start from: ours or the published code's")
    g.add_argument("--resume_model", default=None, help="training checkpoint to continue exactly")
    g.add_argument("--pretrained_clip_name", default="ViT-B/32",
                   help="ViT-B/32 (weights read from modules/ViT-B-32.pt), a weights file, or random:<arch>")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    g.add_argument("--deterministic", action="store_true", help="deterministic kernels")

    g = p.add_argument_group("data")
    g.add_argument("--datatype", default="msrvtt", help="msrvtt | msvd | activity | didemo | vatex")
    g.add_argument("--train_csv", default=d.train_csv)
    g.add_argument("--val_csv", default=d.val_csv)
    g.add_argument("--data_path", default=d.data_path, help="annotation file (MSR-VTT) or folder")
    g.add_argument("--features_path", default=d.features_path, help="video folder")
    g.add_argument("--max_words", type=int, default=d.max_words)
    g.add_argument("--max_frames", type=int, default=d.max_frames)
    g.add_argument("--feature_framerate", type=float, default=d.feature_framerate)
    g.add_argument("--slice_framepos", type=int, default=d.slice_framepos, choices=[0, 1, 2])
    g.add_argument("--train_frame_order", type=int, default=d.train_frame_order, choices=[0, 1, 2])
    g.add_argument("--eval_frame_order", type=int, default=d.eval_frame_order, choices=[0, 1, 2])
    g.add_argument("--expand_msrvtt_sentences", action="store_true")
    g.add_argument("--skip_bad_videos", action="store_true",
                   help="drop missing/undecodable videos (logged and counted) instead of stopping")
    g.add_argument("--num_thread_reader", type=int, default=1)

    g = p.add_argument_group("model")
    g.add_argument("--sim_header", default=m.sim_header, choices=["seqTransf", "meanP"])
    g.add_argument("--cross_num_hidden_layers", type=int, default=m.temporal_layers)
    g.add_argument("--patch_scorer", default=m.patch_scorer, choices=["video", "frame"])
    g.add_argument("--topk", type=int, default=m.topk, help="patches selected per frame (K)")
    g.add_argument("--shift_layers", type=_int_list, default=m.shift_layers,
                   help="ViT blocks with the temporal token shift (negative: from the end); empty string: none")
    g.add_argument("--mask_padding", type=int, default=int(m.mask_padding), choices=[0, 1],
                   help="1: padded words/frames masked out of ISA; 0: published behaviour")
    g.add_argument("--eval_topk", default=m.eval_topk, choices=["perturbed", "hard"])
    g.add_argument("--loose_type", action="store_true", help="accepted for published scripts; UCoFiA is loose")
    g.add_argument("--linear_patch", default="2d", choices=["2d"], help="accepted for published scripts")

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=5)
    g.add_argument("--batch_size", type=int, default=128, help="global batch over all processes")
    g.add_argument("--batch_size_val", type=int, default=32)
    g.add_argument("--lr", type=float, default=o.lr)
    g.add_argument("--coef_lr", type=float, default=o.coef_lr)
    g.add_argument("--warmup_proportion", type=float, default=o.warmup_proportion)
    g.add_argument("--gradient_accumulation_steps", type=int, default=1)
    g.add_argument("--freeze_layer_num", type=int, default=0)
    g.add_argument("--precision", default="fp32", choices=PRECISIONS)
    g.add_argument("--grad_checkpointing", action="store_true")
    g.add_argument("--n_display", type=int, default=100)
    g.add_argument("--skip_nonfinite_loss", action="store_true")
    g.add_argument("--checkpoint_every", type=int, default=0)
    g.add_argument("--max_steps", type=int, default=0)

    g = p.add_argument_group("evaluation")
    g.add_argument("--sk_bank_size", type=int, default=0, help="0: whole training split; N: fixed subsample")
    g.add_argument("--save_sims", action="store_true")
    g.add_argument("--feature_cache", default=None)
    g.add_argument("--zero_shot", action="store_true", help=ZERO_SHOT_HELP)
    return p


def parse_args(argv: Optional[list[str]], mode: str) -> RunConfig:
    """Parse and validate; configuration errors raise ``ConfigError`` with the flag named."""
    a = build_parser(mode).parse_args(argv)
    model = dataclasses.replace(ModelConfig(), max_words=a.max_words, max_frames=a.max_frames,
                                sim_header=a.sim_header, temporal_layers=a.cross_num_hidden_layers,
                                patch_scorer=a.patch_scorer, topk=a.topk, shift_layers=tuple(a.shift_layers),
                                mask_padding=bool(a.mask_padding), eval_topk=a.eval_topk)
    data = DataConfig(datatype=a.datatype, data_path=a.data_path, features_path=a.features_path,
                      train_csv=a.train_csv, val_csv=a.val_csv, max_words=a.max_words, max_frames=a.max_frames,
                      feature_framerate=a.feature_framerate, slice_framepos=a.slice_framepos,
                      train_frame_order=a.train_frame_order, eval_frame_order=a.eval_frame_order,
                      expand_msrvtt_sentences=a.expand_msrvtt_sentences, skip_bad_videos=a.skip_bad_videos,
                      seed=a.seed)
    optim = dataclasses.replace(OptimConfig(), lr=a.lr, coef_lr=a.coef_lr, warmup_proportion=a.warmup_proportion)
    do_train = a.do_train or (mode == "train" and not a.do_eval)  # train/main.py trains unless only --do_eval
    cfg = RunConfig(model=model, data=data, optim=optim, mode=mode, do_train=do_train,
                    do_eval=a.do_eval or mode != "train", output_dir=a.output_dir,
                    pretrained_clip_name=a.pretrained_clip_name, init_model=a.init_model,
                    resume_model=a.resume_model, epochs=a.epochs, batch_size=a.batch_size,
                    batch_size_val=a.batch_size_val, gradient_accumulation_steps=a.gradient_accumulation_steps,
                    num_thread_reader=a.num_thread_reader, n_display=a.n_display, seed=a.seed,
                    precision=a.precision, grad_checkpointing=a.grad_checkpointing,
                    freeze_layer_num=a.freeze_layer_num, skip_nonfinite_loss=a.skip_nonfinite_loss,
                    checkpoint_every=a.checkpoint_every, max_steps=a.max_steps, deterministic=a.deterministic,
                    sk_bank_size=a.sk_bank_size, save_sims=a.save_sims, feature_cache=a.feature_cache,
                    zero_shot=a.zero_shot, device=a.device)
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Checks that need no data or model; each names the flag."""
    from modules.data.registry import DATASETS

    if cfg.data.datatype not in DATASETS:
        raise ConfigError(f"unknown --datatype {cfg.data.datatype!r}; valid: {', '.join(DATASETS)}")
    positive = {"--max_words": cfg.data.max_words, "--max_frames": cfg.data.max_frames, "--epochs": cfg.epochs,
                "--batch_size": cfg.batch_size, "--batch_size_val": cfg.batch_size_val,
                "--gradient_accumulation_steps": cfg.gradient_accumulation_steps, "--topk": cfg.model.topk}
    for flag, value in positive.items():
        if value < 1:
            raise ConfigError(f"{flag} must be at least 1, got {value}")
    if cfg.data.max_words < 3:
        raise ConfigError(f"--max_words must leave room for start, end and one word, got {cfg.data.max_words}")
    if cfg.batch_size % cfg.gradient_accumulation_steps:
        raise ConfigError(f"--batch_size {cfg.batch_size} is not divisible by --gradient_accumulation_steps "
                          f"{cfg.gradient_accumulation_steps}")
    if cfg.data.feature_framerate <= 0:
        raise ConfigError(f"--feature_framerate must be positive, got {cfg.data.feature_framerate}")
    if cfg.num_thread_reader < 0:
        raise ConfigError(f"--num_thread_reader must be 0 or more, got {cfg.num_thread_reader}")
    if cfg.sk_bank_size < 0:
        raise ConfigError(f"--sk_bank_size must be 0 (whole split) or positive, got {cfg.sk_bank_size}")
    if cfg.resume_model and cfg.init_model:
        raise ConfigError("--resume_model and --init_model exclude each other: a resumed run restores its own weights")
    if cfg.zero_shot and (cfg.mode == "train" or cfg.init_model or cfg.resume_model):
        raise ConfigError("--zero_shot evaluates plain CLIP with eval_t2v / eval_v2t; it takes no --init_model or "
                          "--resume_model and does not train")
    if not cfg.do_train and not cfg.do_eval:
        raise ConfigError("nothing to do: pass --do_train and/or --do_eval")
    if os.path.exists(cfg.output_dir) and not os.path.isdir(cfg.output_dir):
        raise ConfigError(f"--output_dir {cfg.output_dir} exists and is not a folder")
