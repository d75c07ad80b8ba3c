"""One training epoch: micro-batches, gradient accumulation, clipping, the optimiser step, logging, a non-finite guard.

``train_one_epoch`` is shared by every training run; checkpointing and validation are handed in as callbacks so this
file knows nothing of files or datasets.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import Callable, Optional

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from modules.common.errors import UCoFiAError
from modules.common.interrupts import closing_batches
from modules.common.runtime import Runtime, autocast_context, show_progress
from modules.data.samplers import noise_seeds
from modules.data.transforms import video_to_device
from modules.training.checkpoint import TrainState

logger = logging.getLogger("ucofia")
LOGIT_SCALE_MAX = math.log(100.0)  # published clamp of CLIP's temperature after every step


class NonFiniteLoss(UCoFiAError):
    pass


def _all_reduce_mean(value: torch.Tensor, rt: Runtime) -> torch.Tensor:
    value = value.detach().float().clone()
    if rt.distributed:
        dist.all_reduce(value)
        value /= rt.world_size
    return value


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def train_one_epoch(model: nn.Module, loader, optimizer, state: TrainState, *, rt: Runtime, seed: int,
                    accumulation: int, precision: str, max_grad_norm: float, n_display: int,
                    skip_nonfinite: bool, steps_per_epoch: int, total_steps: int, max_steps: int = 0,
                    on_step: Optional[Callable[[TrainState], None]] = None,
                    writer=None) -> float:
    """Train until the loader is exhausted (or ``max_steps`` optimiser steps in the run); returns the epoch's mean
    loss (including steps done before a resume).

    Args:
        model: UCoFiA, possibly wrapped in DistributedDataParallel; ``model(text_ids, text_mask, video, video_mask,
            noise_seeds)`` returns this process's loss share, whose mean over processes is the global loss.
        loader: yields this process's micro-batches (dicts from the datasets).
        state: advanced in place after every optimiser step.
        on_step: called after every optimiser step (mid-epoch checkpoints).
    """
    model.train()
    core = _unwrap(model)
    params = [p for p in model.parameters() if p.requires_grad]
    last_loss, n_clips, wait, started = float("nan"), 0, 0.0, time.perf_counter()
    window_start, window_wait, window_clips = started, 0.0, 0
    bar = tqdm(total=steps_per_epoch, initial=state.epoch_step, disable=not show_progress(rt), dynamic_ncols=True,
               desc=f"epoch {state.epoch + 1}", leave=False)
    step_loss = torch.zeros((), device=rt.device)
    iterator = closing_batches(loader)
    micro = 0
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            break
        waited = time.perf_counter() - t0
        wait += waited
        window_wait += waited
        last_micro = (micro + 1) % accumulation == 0
        seeds = noise_seeds(seed, state.epoch, batch["index"]).to(rt.device)
        sync = contextlib.nullcontext() if (last_micro or not rt.distributed) else model.no_sync()
        with sync:
            with autocast_context(precision, rt.device):
                video, video_mask = video_to_device(batch["video"], batch["video_mask"], rt.device)
                loss = model(batch["text_ids"].to(rt.device, non_blocking=True),
                             batch["text_mask"].to(rt.device, non_blocking=True), video, video_mask, seeds)
            (loss.float() / accumulation).backward()
        step_loss += loss.detach().float() / accumulation
        n_clips += len(batch["index"]) * rt.world_size
        window_clips += len(batch["index"]) * rt.world_size
        micro += 1
        if not last_micro:
            continue
        global_loss = _all_reduce_mean(step_loss, rt)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm) if max_grad_norm > 0 else None
        finite = torch.isfinite(global_loss) and (grad_norm is None or bool(torch.isfinite(grad_norm)))
        if not finite:
            where = (f"epoch {state.epoch + 1}, step {state.epoch_step + 1} (global step {state.global_step + 1}), "
                     f"batch indices {batch['index'][:8].tolist()}{'...' if len(batch['index']) > 8 else ''}")
            if not skip_nonfinite:
                raise NonFiniteLoss(f"non-finite loss {global_loss.item()} at {where}; nothing was updated. "
                                    f"Check the data of that batch, lower --lr, or pass --skip_nonfinite_loss")
            state.skipped_steps += 1
            state.last_loss = global_loss.item()  # the per-step log records the skipped step's loss, not a stale one
            logger.warning("skipping a step with non-finite loss at %s (--skip_nonfinite_loss)", where)
            optimizer.zero_grad(set_to_none=True)
        else:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                core.clip.logit_scale.clamp_(max=LOGIT_SCALE_MAX)
            last_loss = state.last_loss = global_loss.item()
            state.loss_sum += last_loss
            state.loss_steps += 1
        step_loss.zero_()
        state.epoch_step += 1
        state.global_step += 1
        bar.update(1)
        if rt.is_main:
            bar.set_postfix(loss=f"{last_loss:.4f}")
        if rt.is_main and state.global_step % n_display == 0:
            elapsed = time.perf_counter() - window_start
            lrs = "/".join(f"{lr:.2e}" for lr in sorted(set(optimizer.get_lr())))
            logger.info("epoch %d step %d/%d (global %d/%d) loss %.4f lr %s | %.1f clips/s, %.0f%% waiting for data",
                        state.epoch + 1, state.epoch_step, steps_per_epoch,
                        state.global_step, total_steps, last_loss, lrs,
                        window_clips / max(elapsed, 1e-9), 100 * window_wait / max(elapsed, 1e-9))
            if writer is not None:
                writer.add_scalar("train/loss", last_loss, state.global_step)
                for group, lr in zip(optimizer.param_groups, optimizer.get_lr()):
                    writer.add_scalar(f"train/lr_{group.get('name', 'group')}", lr, state.global_step)
                writer.add_scalar("train/clips_per_s", window_clips / max(elapsed, 1e-9), state.global_step)
            window_start, window_wait, window_clips = time.perf_counter(), 0.0, 0
        if on_step is not None:
            on_step(state)
        if max_steps and state.global_step >= max_steps:
            break
    bar.close()
    elapsed = time.perf_counter() - started
    mean_loss = state.loss_sum / state.loss_steps if state.loss_steps else float("nan")
    if rt.is_main and micro:
        logger.info("epoch %d: mean loss %.4f, %.1f clips/s, %.0f%% of the time waiting for data", state.epoch + 1,
                    mean_loss, n_clips / max(elapsed, 1e-9), 100 * wait / max(elapsed, 1e-9))
    return mean_loss
