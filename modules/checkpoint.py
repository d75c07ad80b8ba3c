"""Checkpoints: written atomically, read with ``weights_only=True``, loaded strictly.

A training checkpoint is one file holding the model, optimiser, epoch, step inside the epoch, global step, resolved
configuration, RNG states and the validation history. ``--init_model`` also accepts a bare state dict, ours or the
published code's (mapped by ``modules.published``).
"""
from __future__ import annotations

import logging
import os
import random
import tempfile
from typing import Any, BinaryIO, Callable, Optional

import numpy as np
import torch
from torch import nn

from .errors import CheckpointError
from .state_dicts import check_compatible

logger = logging.getLogger(__name__)
FORMAT = "ucofia-checkpoint-v1"


class WriteError(CheckpointError, OSError):
    """A file that could not be written (full disk, quota, permissions): a user error, and still an ``OSError``."""


class _WriteRecorder:
    """A file wrapper that remembers an ``OSError`` of ``write``: ``torch.save`` turns it into an opaque
    RuntimeError ("unexpected pos ..."), and the message should say "No space left on device"."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.error: Optional[OSError] = None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self.f.flush()


def atomic_write(path: str, write: Callable[[Any], None]) -> None:
    """Write a file through ``write(f)`` into a temporary file in the same folder, fsync, then rename over ``path``.

    A crash or a full disk leaves the previous file untouched and no partial file behind (a process killed mid-write
    leaves a hidden temporary, which ``remove_stale_temporaries`` deletes at the next start). A failed write is a
    ``WriteError`` whose one-line message names the file.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp, recorder = None, None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as f:
            recorder = _WriteRecorder(f)
            write(recorder)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the permissions open() would
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        cause = recorder.error if recorder is not None and recorder.error is not None else e
        if isinstance(cause, OSError):
            previous = "; the previous file is intact" if os.path.exists(path) else ""
            raise WriteError(f"cannot write {path}: {cause.strerror or cause}{previous}") from None
        raise


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` through ``atomic_write``."""
    atomic_write(path, lambda f: torch.save(obj, f))


def remove_stale_temporaries(folder: str) -> list[str]:
    """Delete temporary files that an ``atomic_save`` killed mid-write left behind (the targets are intact)."""
    if not os.path.isdir(folder):
        return []
    stale = [os.path.join(folder, n) for n in os.listdir(folder) if n.startswith(".") and n.endswith(".tmp")]
    for path in stale:
        os.remove(path)
        logger.warning("removed %s, left by a checkpoint write that was interrupted", path)
    return stale


def read_checkpoint(path: str) -> dict:
    """Load a checkpoint file safely; any failure is a one-line ``CheckpointError`` naming the file."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        text = str(e)
        if "Weights only load failed" in text:
            # The line naming the refused global differs between torch versions.
            detail = next((line.strip().rstrip(".") for line in text.splitlines()
                           if line.strip().startswith(("Unsupported", "WeightsUnpickler", "Trying to load"))
                           and line.strip() != "WeightsUnpickler error:"), "not plain tensors")
            raise CheckpointError(f"{path}: refused: the file holds Python objects that could run code when loaded "
                                  f"({detail})") from None
        first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({type(e).__name__}: {first})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(obj).__name__}")
    return obj


def model_state_from(obj: dict, model: nn.Module, path: str) -> dict:
    """The model state dict inside a checkpoint of ours, a bare state dict of ours, or a published-code one."""
    from .published import import_published_state_dict, is_published_state_dict

    if obj.get("format") == FORMAT:
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
