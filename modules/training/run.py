"""A training run: data, model, optimiser, resume, epochs, validation, checkpoints (``train/main.py``).

Every epoch writes ``checkpoints/last.pth`` (and ``best.pth`` when validation R@1 improves) atomically, with the model,
optimiser, position in the run, resolved configuration and RNG states, so ``--resume_model`` continues exactly.
Validation uses the dataset's validation split; where it has none the test split is used and labelled as such.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shlex
import sys
import time

import torch
from torch.nn.parallel import DistributedDataParallel

from modules.common.errors import CheckpointError, ConfigError
from modules.common.io import (
    WriteError,
    atomic_save,
    atomic_write,
    prepare_output_dir,
    remove_stale_temporaries,
    write_json,
)
from modules.common.runtime import Runtime
from modules.data import build_split, collate_skip_none
from modules.data.samplers import GlobalBatchSampler
from modules.evaluation.encoding import EvalOptions, encode_test_set, evaluate_directions, score_test
from modules.model.build import build_model, load_model_weights
from modules.training.checkpoint import restore_rng, training_checkpoint
from modules.training.config import RunConfig
from modules.training.engine import TrainState, train_one_epoch
from modules.training.optim import build_optimizer, freeze_clip_layers

logger = logging.getLogger("ucofia")


def check_batch_layout(cfg: RunConfig, world_size: int) -> None:
    """The global batch must split evenly over processes and accumulation steps (checked before any process group
    starts, so that every rank stops at once with the same message)."""
    accumulation = cfg.gradient_accumulation_steps
    if cfg.batch_size % (world_size * accumulation):
        raise ConfigError(f"--batch_size {cfg.batch_size} (global) is not divisible by {world_size} processes x "
                          f"{accumulation} accumulation steps")


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


def count_bad_videos(split, rt: Runtime) -> int:
    """Videos of ``split`` dropped so far: missing or empty when built, undecodable since (over all processes)."""
    flags = split.undecodable_flags().to(rt.device, torch.int32)
    if rt.distributed:
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
    return len(split.skipped) + int(flags.sum())


def validate(model, split, rt: Runtime, cfg: RunConfig) -> dict:
    """Raw (no normalisation) metrics of both directions on ``split``."""
    core = model.module if hasattr(model, "module") else model
    core.eval()
    opts = EvalOptions(batch_size=max(1, cfg.batch_size_val // rt.world_size), workers=cfg.num_thread_reader,
                       precision=cfg.precision)
    feats = encode_test_set(core, split, rt, opts)
    metrics = evaluate_directions(score_test(core, feats, rt), feats.caption_to_video)
    core.train()
    return metrics


def _tensorboard(output_dir: str, rt: Runtime):
    if not rt.is_main:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(os.path.join(output_dir, "tensorboard"))


def run_training(cfg: RunConfig, rt: Runtime, command: str = "") -> dict:
    """Train (and validate every epoch); returns the final state's history and best entry.

    ``command`` (the command line) is recorded with the configuration in ``config.json`` and every checkpoint,
    together with the training split's fingerprint, so an exported model says how it was made and on what data.
    """
    accumulation = cfg.gradient_accumulation_steps
    check_batch_layout(cfg, rt.world_size)
    ckpt_dir = os.path.join(cfg.output_dir, "checkpoints")
    steps_log = os.path.join(cfg.output_dir, "train_steps.jsonl")
    if not cfg.resume_model and os.path.exists(os.path.join(ckpt_dir, "last.pth")):
        raise ConfigError(f"--output_dir {cfg.output_dir} already holds a training run (checkpoints/last.pth); "
                          f"continue it with --resume_model {os.path.join(ckpt_dir, 'last.pth')} or choose another "
                          f"--output_dir")
    if rt.is_main:
        remove_stale_temporaries(ckpt_dir)

    train_split = build_split(cfg.data, "train")
    val_split = build_split(cfg.data, "val")
    val_label = "test (the dataset has no validation split)" if getattr(val_split, "is_test_fallback", False) \
        else "val"
    sampler = GlobalBatchSampler(len(train_split), cfg.batch_size, accumulation, rt.world_size, rt.rank, cfg.seed)
    if sampler.steps_per_epoch == 0:
        raise ConfigError(f"the training split has {len(train_split)} items, fewer than one --batch_size "
                          f"{cfg.batch_size}")
    total_steps = sampler.steps_per_epoch * cfg.epochs

    model = build_model(cfg.pretrained_clip_name, cfg.model, cfg.precision, cfg.grad_checkpointing, rt.device)
    frozen = freeze_clip_layers(model, cfg.freeze_layer_num)
    if frozen:
        logger.info("--freeze_layer_num %d: %d CLIP tensors frozen", cfg.freeze_layer_num, frozen)
    if cfg.init_model:
        load_model_weights(model, cfg.init_model)
        logger.info("initialised from %s", cfg.init_model)
    optimizer = build_optimizer(model, cfg.optim, total_steps)
    state = TrainState()
    if cfg.resume_model:
        obj = load_model_weights(model, cfg.resume_model)
        if obj.get("optimizer") is None:
            raise CheckpointError(f"{cfg.resume_model}: holds no optimiser state; use --init_model to start from it")
        optimizer.load_state_dict(obj["optimizer"])
        state = TrainState(epoch=obj["epoch"], epoch_step=obj["epoch_step"], global_step=obj["global_step"],
                           loss_sum=obj.get("loss_sum", 0.0), loss_steps=obj.get("loss_steps", 0),
                           history=list(obj["history"]), best=obj["best"])
        state.skipped_steps = obj.get("skipped_steps", 0)
        restore_rng(obj["rng"])
        logger.info("resumed from %s at epoch %d, step %d", cfg.resume_model, state.epoch + 1, state.epoch_step)

    config_dict = dict(cfg.to_dict(), command=command, data_version=train_split.fingerprint())
    # Written only now that the data, the model and the checkpoints have been read: bad input leaves nothing behind.
    if rt.is_main:
        if cfg.resume_model:
            trim_steps_log(steps_log, state.global_step)
        elif os.path.exists(steps_log):
            os.remove(steps_log)
        write_json(config_dict, os.path.join(cfg.output_dir, "config.json"))
        logger.info("resolved configuration: %s", json.dumps(config_dict, default=str), extra={"file_only": True})
        logger.info("resolved configuration written to %s", os.path.join(cfg.output_dir, "config.json"))

    ddp = DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None) \
        if rt.distributed else model
    loader = torch.utils.data.DataLoader(train_split, batch_sampler=sampler, num_workers=cfg.num_thread_reader,
                                         collate_fn=collate_skip_none, pin_memory=rt.device.type == "cuda")
    writer = _tensorboard(cfg.output_dir, rt)

    def save(name: str) -> None:
        if rt.is_main:
            obj = training_checkpoint(model, optimizer, epoch=state.epoch, epoch_step=state.epoch_step,
                                      global_step=state.global_step, config=config_dict, history=state.history,
                                      best=state.best)
            obj.update(loss_sum=state.loss_sum, loss_steps=state.loss_steps, skipped_steps=state.skipped_steps)
            atomic_save(obj, os.path.join(ckpt_dir, name))

    def on_step(s: TrainState) -> None:
        if rt.is_main:  # every step's global loss at full precision, for curves and cross-run comparisons
            finite = math.isfinite(s.last_loss)
            line = json.dumps({"epoch": s.epoch + 1, "step": s.global_step, "loss": s.last_loss if finite else None,
                               "lr": optimizer.get_lr(), **({} if finite else {"skipped": "non-finite loss"})})
            try:
                with open(steps_log, "a") as f:
                    f.write(line + "\n")
            except OSError as e:  # a full disk: name the file (the OSError of a write does not)
                raise WriteError(f"cannot write {steps_log}: {e.strerror or e}") from None
        if cfg.checkpoint_every and s.global_step % cfg.checkpoint_every == 0 and s.epoch_step < \
                sampler.steps_per_epoch:
            save("last.pth")

    logger.info("training on %d pairs, %d steps/epoch x %d epochs, global batch %d on %d process(es)",
                len(train_split), sampler.steps_per_epoch, cfg.epochs, cfg.batch_size, rt.world_size)
    started = time.time()
    while state.epoch < cfg.epochs:
        sampler.set_epoch(state.epoch, state.epoch_step)
        train_split.set_epoch(state.epoch)
        mean_loss = train_one_epoch(ddp, loader, optimizer, state, rt=rt, seed=cfg.seed, accumulation=accumulation,
                                    precision=cfg.precision, max_grad_norm=cfg.optim.max_grad_norm,
                                    n_display=cfg.n_display, skip_nonfinite=cfg.skip_nonfinite_loss,
                                    steps_per_epoch=sampler.steps_per_epoch, total_steps=total_steps,
                                    max_steps=cfg.max_steps, on_step=on_step, writer=writer)
        if state.epoch_step < sampler.steps_per_epoch:  # stopped by --max_steps inside the epoch
            save("last.pth")
            logger.info("stopped after %d steps (--max_steps)", state.global_step)
            break
        bad_videos = count_bad_videos(train_split, rt)
        if bad_videos or state.skipped_steps:
            logger.warning("epoch %d: %d training video(s) skipped as missing or undecodable (--skip_bad_videos), "
                           "%d step(s) skipped for a non-finite loss (--skip_nonfinite_loss)", state.epoch + 1,
                           bad_videos, state.skipped_steps)
        metrics = validate(ddp, val_split, rt, cfg)
        entry = {"epoch": state.epoch + 1, "train_loss": mean_loss, "split": val_label, "metrics": metrics,
                 "skipped_videos": bad_videos, "skipped_steps": state.skipped_steps}
        state.history.append(entry)
        improved = state.best is None or metrics["t2v"]["R1"] > state.best["R1"]
        if improved:
            state.best = {"epoch": state.epoch + 1, "R1": metrics["t2v"]["R1"], "split": val_label}
        if writer is not None:
            for direction, m in metrics.items():
                for name, value in m.items():
                    writer.add_scalar(f"val_{direction}/{name}", value, state.epoch + 1)
        logger.info("epoch %d on %s: text-to-video R@1 %.1f R@5 %.1f R@10 %.1f | video-to-text R@1 %.1f",
                    state.epoch + 1, val_label, metrics["t2v"]["R1"], metrics["t2v"]["R5"], metrics["t2v"]["R10"],
                    metrics["v2t"]["R1"])
        state.epoch += 1
        state.epoch_step = 0
        state.loss_sum, state.loss_steps, state.skipped_steps = 0.0, 0, 0
        save("last.pth")
        if improved:
            save("best.pth")
        if rt.is_main:
            write_json({"history": state.history, "best": state.best}, os.path.join(cfg.output_dir, "history.json"))
        if cfg.max_steps and state.global_step >= cfg.max_steps:
            break
    if writer is not None:
        writer.close()
    if state.history and rt.is_main:
        last = state.history[-1]
        logger.info("done in %.0f s. last epoch %d: text-to-video R@1 %.1f on %s; best epoch %d: R@1 %.1f on %s "
                    "(chosen on that split)", time.time() - started, last["epoch"], last["metrics"]["t2v"]["R1"],
                    last["split"], state.best["epoch"], state.best["R1"], state.best["split"])
    return {"history": state.history, "best": state.best, "global_step": state.global_step}


def train_main(argv) -> int:
    """Entry point body of ``train``: train, or with ``--do_eval`` alone validate ``--init_model`` (raw metrics)."""
    from modules.common.runtime import run_entry, setup, setup_logging, world_size_from_env
    from modules.model.build import build_model_from_checkpoint
    from modules.training.config import parse_args

    def run() -> int:
        cfg = parse_args(argv, "train")
        if cfg.do_train:
            check_batch_layout(cfg, world_size_from_env())
        prepare_output_dir(cfg.output_dir)
        rt = setup(cfg.device, cfg.seed, cfg.deterministic)
        setup_logging(rt.rank, os.path.join(cfg.output_dir, "log.txt"))
        if cfg.do_train:
            run_training(cfg, rt, "python -m train.main " + shlex.join(sys.argv[1:] if argv is None else argv))
            return 0
        if not cfg.init_model:
            raise ConfigError("--do_eval without --do_train needs --init_model")
        model, _ = build_model_from_checkpoint(cfg.init_model, cfg.model, cfg.precision, rt.device)
        metrics = validate(model, build_split(cfg.data, "val"), rt, cfg)
        logger.info("validation of %s: %s", cfg.init_model, json.dumps(metrics))
        return 0

    return run_entry(run)
