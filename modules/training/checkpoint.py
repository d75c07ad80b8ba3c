"""Training checkpoints: the model, optimiser, position in the run and RNG states in one file."""
from __future__ import annotations

import random
from typing import Optional

import numpy as np
import torch
from torch import nn

from modules.model.build import FORMAT


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


def training_checkpoint(model: nn.Module, optimizer: Optional[torch.optim.Optimizer], *, epoch: int, epoch_step: int,
                        global_step: int, config: dict, history: list, best: Optional[dict]) -> dict:
    """Everything needed to resume; ``epoch`` is the epoch in progress and ``epoch_step`` the batches done in it."""
    return {
        "format": FORMAT,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "epoch": epoch,
        "epoch_step": epoch_step,
        "global_step": global_step,
        "config": config,
        "rng": capture_rng(),
        "history": history,
        "best": best,
    }
