"""The options every entry point shares: where to write, which weights, seed, device, precision, loading."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from modules.common.cli import option
from modules.common.errors import ConfigError

PRECISIONS = ("fp32", "bf16", "legacy_fp16")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class RunOptions:
    output_dir: str = option("", "folder for checkpoints, logs and results (required)")
    pretrained_clip_name: str = option(
        "ViT-B/32", "CLIP backbone: ViT-B/32 (weights read from modules/ViT-B-32.pt), a weights file, or "
        "random:<arch> (an OpenAI name or tiny) for random weights")
    init_model: Optional[str] = option(None, "weights to start from (training) or to evaluate: a checkpoint of this "
                                       "project or of the published code")
    seed: int = option(42, "seeds every random choice: initialisation, batches, captions, patch-selection noise")
    device: str = option("auto", "auto: CUDA when available, else the CPU", choices=DEVICES)
    deterministic: bool = option(False, "deterministic kernels (bit-exact resume and cross-run equality)")
    num_thread_reader: int = option(1, "data-loading worker processes per process (0: load in the main process)")
    batch_size_val: int = option(32, "global batch (all processes together) for encoding at evaluation")
    precision: str = option("fp32", "fp32; bf16 (autocast); legacy_fp16 (CLIP weights in fp16, the published "
                            "recipe)", choices=PRECISIONS)
    do_eval: bool = option(False, "evaluate (train/main.py: validate --init_model without training; the eval entry "
                           "points always evaluate)")


def validate_run(cfg: RunOptions) -> None:
    """Checks of the shared options; each error names the flag."""
    if not cfg.output_dir:
        raise ConfigError("--output_dir is required")
    if os.path.exists(cfg.output_dir) and not os.path.isdir(cfg.output_dir):
        raise ConfigError(f"--output_dir {cfg.output_dir} exists and is not a folder")
    if cfg.batch_size_val < 1:
        raise ConfigError(f"--batch_size_val must be at least 1, got {cfg.batch_size_val}")
    if cfg.num_thread_reader < 0:
        raise ConfigError(f"--num_thread_reader must be 0 or more, got {cfg.num_thread_reader}")
