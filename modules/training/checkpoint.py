"""Training checkpoints: the model, optimiser, position in the run, history and RNG states in one file.

``TrainState`` is where a run is; ``state.checkpoint(model, optimizer, config)`` makes the file's contents and
``TrainState.resume(obj, model, optimizer)`` restores all of it, so nothing is saved or restored field by field
elsewhere.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, fields
from typing import Optional

import numpy as np
import torch
from torch import nn

from modules.common.errors import CheckpointError
from modules.common.state_dicts import check_compatible
from modules.model.build import FORMAT, model_state_from


def capture_rng() -> dict:
    """RNG states of torch (CPU and CUDA), numpy and Python as tensors (loadable with ``weights_only``)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    out = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": torch.tensor(py_state[1], dtype=torch.int64),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(int(x) for x in state["python"].tolist()), None))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class TrainState:
    """Where a run is; saved in every checkpoint."""
    epoch: int = 0                  # epoch in progress, 0-based
    epoch_step: int = 0             # optimiser steps done in that epoch
    global_step: int = 0            # optimiser steps done in the run
    loss_sum: float = 0.0           # sum of step losses in the epoch in progress (for its mean after a resume)
    loss_steps: int = 0             # steps counted in loss_sum
    skipped_steps: int = 0          # steps of the epoch in progress skipped for a non-finite loss
    last_loss: float = float("nan")  # global loss of the latest step (not saved)
    history: list = field(default_factory=list)  # per finished epoch: loss, validation metrics
    best: Optional[dict] = None     # {"epoch", "R1", "split"} of the best validation so far

    SAVED = ("epoch", "epoch_step", "global_step", "loss_sum", "loss_steps", "skipped_steps", "history", "best")

    def next_epoch(self) -> None:
        """An epoch is done: the per-epoch counters start again."""
        self.epoch += 1
        self.epoch_step = 0
        self.loss_sum, self.loss_steps, self.skipped_steps = 0.0, 0, 0

    def checkpoint(self, model: nn.Module, optimizer: Optional[torch.optim.Optimizer], config: dict,
                   rng: Optional[dict] = None) -> dict:
        """Everything needed to resume exactly: model, optimiser, this state, configuration and RNG states (``rng``:
        states captured earlier, when the position was reached; default: now)."""
        return {
            "format": FORMAT,
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            **{k: v for k, v in asdict(self).items() if k in self.SAVED},
            "config": config,
            "rng": rng if rng is not None else capture_rng(),
        }

    @classmethod
    def resume(cls, obj: dict, path: str, model: nn.Module, optimizer: torch.optim.Optimizer) -> "TrainState":
        """Restore model, optimiser and RNG states from a checkpoint's contents ``obj`` (read from ``path``)."""
        if obj.get("format") != FORMAT or obj.get("optimizer") is None:
            raise CheckpointError(f"{path}: not a training checkpoint of this project (no optimiser state or "
                                  "position in the run); use --init_model to start from its weights")
        missing = [k for k in cls.SAVED + ("rng",) if k not in obj]
        if missing:
            raise CheckpointError(f"{path}: a training checkpoint without {', '.join(missing)}")
        state = model_state_from(obj, model, path)
        check_compatible(model.state_dict(), state, path, "this model's architecture")
        model.load_state_dict(state, strict=True)
        # The optimiser's moments and step counts come from the checkpoint, its settings (learning rates, schedule
        # length) from this run: the same unless --resume_allow_changes let them differ.
        settings = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
        optimizer.load_state_dict(obj["optimizer"])
        for group, own in zip(optimizer.param_groups, settings):
            group.update(own)
        restore_rng(obj["rng"])
        known = {f.name for f in fields(cls)}
        return cls(**{k: obj[k] for k in cls.SAVED if k in known})
