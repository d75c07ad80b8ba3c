"""A training run as named steps: build, resume, then per epoch train, validate, record and checkpoint.

    run = build(cfg, rt)            data, model, optimiser, loader (nothing written yet)
    resume(run)                     --resume_model: model, optimiser, position, history, RNG states
    start(run)                      the run's files: config.json, a fresh or trimmed train_steps.jsonl
    while epochs remain:
        train_epoch(run)            one pass over the training split (modules.training.engine)
        validate(run)               raw metrics on the validation split (handed in by train/main.py)
        end_epoch(run, ...)         history, best, TensorBoard, checkpoints/last.pth and best.pth, history.json

Every checkpoint holds the model, optimiser, position in the run, resolved configuration and RNG states, so
``--resume_model`` continues exactly. The configuration recorded (``config.json`` and checkpoints) also holds the
command line and the training split's fingerprint, so an exported model says how it was made and on what data.
Where a dataset has no validation split the test split is used and labelled so.
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch.nn.parallel import DistributedDataParallel

from modules.common.errors import ConfigError
from modules.common.interrupts import Interrupted, deferred, ignore_in_worker, requested, signal_name, stop
from modules.common.io import (
    WriteError,
    atomic_save,
    atomic_write,
    read_checkpoint,
    remove_stale_temporaries,
    write_json,
)
from modules.common.runtime import Runtime, loader_workers
from modules.data import build_split, collate_skip_none
from modules.data.base import RetrievalSplit, feed_uint8, loader_settings
from modules.data.samplers import GlobalBatchSampler
from modules.model.build import build_model, load_model_weights
from modules.model.ucofia import UCoFiA
from modules.training.checkpoint import TrainState, capture_rng
from modules.training.config import TrainConfig
from modules.training.engine import train_one_epoch
from modules.training.optim import build_optimizer, freeze_clip_layers
from modules.training.resume_checks import check_output_dir, check_settings, recut_epoch

logger = logging.getLogger("ucofia")

# (model, split, rt, cfg) -> {"t2v": metrics, "v2t": metrics}; train/main.py passes evaluation's validation.
Validator = Callable[[UCoFiA, RetrievalSplit, Runtime, TrainConfig], dict]


@dataclass
class Run:
    """Everything a training run holds between its steps."""
    cfg: TrainConfig
    rt: Runtime
    train_split: RetrievalSplit
    val_split: RetrievalSplit
    val_label: str
    sampler: GlobalBatchSampler
    model: UCoFiA
    ddp: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loader: torch.utils.data.DataLoader
    state: TrainState
    record: dict          # the resolved configuration with the command line and the training data's fingerprint
    writer: Any = None
    saved_at: Optional[tuple[int, int]] = None  # (epoch, epoch_step) that checkpoints/last.pth holds
    rng: Optional[dict] = None  # RNG states when the current position was reached, while validation draws from them

    @property
    def ckpt_dir(self) -> str:
        return os.path.join(self.cfg.output_dir, "checkpoints")

    @property
    def steps_log(self) -> str:
        return os.path.join(self.cfg.output_dir, "train_steps.jsonl")

    @property
    def total_steps(self) -> int:
        return self.sampler.steps_per_epoch * self.cfg.epochs


def check_batch_layout(cfg: TrainConfig, world_size: int) -> None:
    """The global batch must split evenly over processes and accumulation steps (checked before any process group
    starts, so that every rank stops at once with the same message)."""
    accumulation = cfg.gradient_accumulation_steps
    if cfg.batch_size % (world_size * accumulation):
        raise ConfigError(f"--batch_size {cfg.batch_size} (global) is not divisible by {world_size} processes x "
                          f"{accumulation} accumulation steps")


def build(cfg: TrainConfig, rt: Runtime, command: str = "") -> Run:
    """Read the data, build the model, optimiser and loader; refuse to overwrite another run. Writes nothing.
    ``command`` is the command line, recorded with the configuration."""
    check_batch_layout(cfg, rt.world_size)
    check_output_dir(cfg)
    train_split = build_split(cfg.data, "train")
    val_split = build_split(cfg.data, "val")
    val_label = "test (the dataset has no validation split)" if getattr(val_split, "is_test_fallback", False) \
        else "val"
    sampler = GlobalBatchSampler(len(train_split), cfg.batch_size, cfg.gradient_accumulation_steps, rt.world_size,
                                 rt.rank, cfg.seed)
    if sampler.steps_per_epoch == 0:
        raise ConfigError(f"the training split has {len(train_split)} items, fewer than one --batch_size "
                          f"{cfg.batch_size}")
    model = build_model(cfg.pretrained_clip_name, cfg.model, cfg.precision, cfg.grad_checkpointing, rt.device)
    frozen = freeze_clip_layers(model, cfg.freeze_layer_num)
    if frozen:
        logger.info("--freeze_layer_num %d: %d CLIP tensors frozen", cfg.freeze_layer_num, frozen)
    if cfg.init_model:
        load_model_weights(model, cfg.init_model)
        logger.info("initialised from %s", cfg.init_model)
    optimizer = build_optimizer(model, cfg.optim, sampler.steps_per_epoch * cfg.epochs, cfg.optimizer_impl)
    if cfg.compile:
        model.compile()  # in place: the state dict keeps its keys; evaluation's encoders stay eager
    ddp = DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None) \
        if rt.distributed else model
    for split in (train_split, val_split):
        split.uint8_video = feed_uint8(rt.device)
    workers = loader_workers(cfg.num_thread_reader)
    loader = torch.utils.data.DataLoader(train_split, batch_sampler=sampler, num_workers=workers,
                                         collate_fn=collate_skip_none, worker_init_fn=ignore_in_worker,
                                         **loader_settings(rt.device, workers, persistent=True))
    record = dict(cfg.to_dict(), command=command, data_version=train_split.fingerprint())
    return Run(cfg, rt, train_split, val_split, val_label, sampler, model, ddp, optimizer, loader, TrainState(),
               record)


def resume(run: Run) -> None:
    """Continue ``--resume_model`` exactly: model, optimiser, position in the run, history and RNG states; settings
    that differ from the checkpoint's are refused unless --resume_allow_changes (``resume_checks``)."""
    path = run.cfg.resume_model
    obj = read_checkpoint(path)
    check_settings(run.cfg, run.record, obj, path)
    run.state = TrainState.resume(obj, path, run.model, run.optimizer)
    saved_batch = (obj.get("config") or {}).get("batch_size", run.cfg.batch_size)
    recut_epoch(run.state, saved_batch, run.cfg.batch_size, run.sampler.steps_per_epoch)
    logger.info("resumed from %s at epoch %d, step %d", path, run.state.epoch + 1, run.state.epoch_step)


def start(run: Run) -> None:
    """Write the run's files, now that the data, the model and the checkpoints have been read (bad input leaves
    nothing behind)."""
    cfg, rt = run.cfg, run.rt
    if rt.is_main:
        remove_stale_temporaries(run.ckpt_dir)
        if cfg.resume_model:
            trim_steps_log(run.steps_log, run.state.global_step)
        elif os.path.exists(run.steps_log):
            os.remove(run.steps_log)
        write_json(run.record, os.path.join(cfg.output_dir, "config.json"))
        logger.info("resolved configuration: %s", json.dumps(run.record, default=str), extra={"file_only": True})
        logger.info("resolved configuration written to %s", os.path.join(cfg.output_dir, "config.json"))
        run.writer = _tensorboard(cfg.output_dir)
    logger.info("training on %d pairs, %d steps/epoch x %d epochs, global batch %d on %d process(es)",
                len(run.train_split), run.sampler.steps_per_epoch, cfg.epochs, cfg.batch_size, rt.world_size)


def train_epoch(run: Run) -> float:
    """Train the epoch in progress from where it stands; returns its mean loss."""
    cfg, state = run.cfg, run.state
    run.sampler.set_epoch(state.epoch, state.epoch_step)
    run.train_split.set_epoch(state.epoch)
    loss = train_one_epoch(run.ddp, run.loader, run.optimizer, state, rt=run.rt, seed=cfg.seed,
                           accumulation=cfg.gradient_accumulation_steps, precision=cfg.precision,
                           max_grad_norm=cfg.optim.max_grad_norm, n_display=cfg.n_display,
                           skip_nonfinite=cfg.skip_nonfinite_loss, steps_per_epoch=run.sampler.steps_per_epoch,
                           total_steps=run.total_steps, max_steps=cfg.max_steps, on_step=lambda s: after_step(run),
                           writer=run.writer)
    run.train_split.log_frame_cache_report()
    return loss


def after_step(run: Run) -> None:
    """Log every step's global loss at full precision (for curves and cross-run comparisons); mid-epoch
    checkpoints under ``--checkpoint_every``."""
    s = run.state
    if run.rt.is_main:
        finite = math.isfinite(s.last_loss)
        line = json.dumps({"epoch": s.epoch + 1, "step": s.global_step, "loss": s.last_loss if finite else None,
                           "lr": run.optimizer.get_lr(), **({} if finite else {"skipped": "non-finite loss"})})
        try:
            with open(run.steps_log, "a") as f:
                f.write(line + "\n")
        except OSError as e:  # a full disk: name the file (the OSError of a write does not)
            raise WriteError(f"cannot write {run.steps_log}: {e.strerror or e}") from None
    every = run.cfg.checkpoint_every
    if every and s.global_step % every == 0 and s.epoch_step < run.sampler.steps_per_epoch:
        checkpoint(run, "last.pth")
    if stop_requested(run.rt):
        if run.saved_at != (s.epoch, s.epoch_step):
            checkpoint(run, "last.pth")
        if run.rt.distributed:
            torch.distributed.barrier()  # every rank stops after the main one has written the checkpoint
        stop(interrupted_at(run, ""))


def stop_requested(rt: Runtime) -> bool:
    """Whether SIGINT or SIGTERM reached this process, or under several processes any of them (all stop after the
    same step)."""
    if not rt.distributed:
        return requested() is not None
    flag = torch.tensor([1 if requested() is not None else 0], device=rt.device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item())


def interrupted_at(run: Run, phase: str) -> str:
    s = run.state
    name = signal_name(requested() or signal.SIGTERM)
    return (f"interrupted by {name} at epoch {s.epoch + 1}, step {s.epoch_step} of {run.sampler.steps_per_epoch} "
            f"(global step {s.global_step}){phase}; checkpoints/last.pth holds that position: continue with "
            f"--resume_model {os.path.join(run.ckpt_dir, 'last.pth')}")


def validate(run: Run, validator: Validator) -> dict:
    """Raw metrics of both directions on the validation split, the model in eval mode meanwhile."""
    run.model.eval()
    metrics = validator(run.model, run.val_split, run.rt, run.cfg)
    run.model.train()
    return metrics


def end_epoch(run: Run, mean_loss: float, metrics: dict) -> None:
    """Record the epoch (history, best, TensorBoard, log), then write the checkpoints and history.json."""
    state, rt = run.state, run.rt
    bad_videos = count_bad_videos(run.train_split, rt)
    if bad_videos or state.skipped_steps:
        logger.warning("epoch %d: %d training video(s) skipped as missing or undecodable (--skip_bad_videos), "
                       "%d step(s) skipped for a non-finite loss (--skip_nonfinite_loss)", state.epoch + 1,
                       bad_videos, state.skipped_steps)
    state.history.append({"epoch": state.epoch + 1, "train_loss": mean_loss, "split": run.val_label,
                          "metrics": metrics, "skipped_videos": bad_videos, "skipped_steps": state.skipped_steps})
    improved = state.best is None or metrics["t2v"]["R1"] > state.best["R1"]
    if improved:
        state.best = {"epoch": state.epoch + 1, "R1": metrics["t2v"]["R1"], "split": run.val_label}
    if run.writer is not None:
        for direction, m in metrics.items():
            for name, value in m.items():
                run.writer.add_scalar(f"val_{direction}/{name}", value, state.epoch + 1)
    logger.info("epoch %d on %s: text-to-video R@1 %.1f R@5 %.1f R@10 %.1f | video-to-text R@1 %.1f",
                state.epoch + 1, run.val_label, metrics["t2v"]["R1"], metrics["t2v"]["R5"], metrics["t2v"]["R10"],
                metrics["v2t"]["R1"])
    state.next_epoch()
    checkpoint(run, "last.pth")
    if improved:
        checkpoint(run, "best.pth")
    if rt.is_main:
        write_json({"history": state.history, "best": state.best}, os.path.join(run.cfg.output_dir, "history.json"))


def checkpoint(run: Run, name: str) -> None:
    """Write ``checkpoints/<name>`` atomically (main process)."""
    if run.rt.is_main:
        atomic_save(run.state.checkpoint(run.model, run.optimizer, run.record, run.rng),
                    os.path.join(run.ckpt_dir, name))
    if name == "last.pth":
        run.saved_at = (run.state.epoch, run.state.epoch_step)


def run_training(cfg: TrainConfig, rt: Runtime, validator: Validator, command: str = "") -> dict:
    """Train and validate every epoch; returns the history, the best entry and the steps done."""
    run = build(cfg, rt, command)
    if cfg.resume_model:
        resume(run)
    start(run)
    started = time.time()
    state = run.state
    try:
        while state.epoch < cfg.epochs:
            with deferred():  # a stop signal ends the epoch after the step in progress (``after_step``)
                mean_loss = train_epoch(run)
            if state.epoch_step < run.sampler.steps_per_epoch:  # stopped by --max_steps inside the epoch
                checkpoint(run, "last.pth")
                logger.info("stopped after %d steps (--max_steps)", state.global_step)
                break
            run.rng = capture_rng()
            metrics = validate(run, validator)  # a stop signal abandons validation; the position is saved below
            run.rng = None
            with deferred():  # history, last.pth, best.pth and history.json are written together
                end_epoch(run, mean_loss, metrics)
            if cfg.max_steps and state.global_step >= cfg.max_steps:
                break
    except Interrupted as e:
        if e.at_once:
            raise
        during = " during validation" if run.rng is not None else ""
        if run.saved_at != (state.epoch, state.epoch_step):
            checkpoint(run, "last.pth")  # with the RNG states of when the position was reached
        raise Interrupted(e.signum, interrupted_at(run, during)) from None
    if run.writer is not None:
        run.writer.close()
    if state.history and rt.is_main:
        last = state.history[-1]
        logger.info("done in %.0f s. last epoch %d: text-to-video R@1 %.1f on %s; best epoch %d: R@1 %.1f on %s "
                    "(chosen on that split)", time.time() - started, last["epoch"], last["metrics"]["t2v"]["R1"],
                    last["split"], state.best["epoch"], state.best["R1"], state.best["split"])
    return {"history": state.history, "best": state.best, "global_step": state.global_step}


def trim_steps_log(path: str, global_step: int) -> None:
    """Keep the per-step log lines up to the resumed checkpoint's step: steps logged after it (and a line cut by a
    kill) are redone by the resumed run and would otherwise appear twice."""
    if not os.path.exists(path):
        return
    kept = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                break
            if not isinstance(entry, dict) or entry.get("step", 0) > global_step:
                break
            kept.append(line if line.endswith("\n") else line + "\n")
    atomic_write(path, lambda f: f.write("".join(kept).encode("utf-8")))


def count_bad_videos(split: RetrievalSplit, rt: Runtime) -> int:
    """Videos of ``split`` dropped so far: missing or empty when built, undecodable since (over all processes)."""
    flags = split.undecodable_flags().to(rt.device, torch.int32)
    if rt.distributed:
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
    return len(split.skipped) + int(flags.sum())


def _tensorboard(output_dir: str) -> Optional[Any]:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(os.path.join(output_dir, "tensorboard"))
