"""Checkpoints: written atomically, read with ``weights_only=True``, loaded strictly.

A training checkpoint is one file holding the model, optimiser, epoch, step inside the epoch, global step, resolved
configuration, RNG states and the validation history. ``--init_model`` also accepts a bare state dict, ours or the
published code's (mapped by ``modules.published``).
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any, BinaryIO, Callable, Optional

import torch

from modules.common.errors import CheckpointError, ConfigError
from modules.common.interrupts import deferred

logger = logging.getLogger(__name__)
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
    ``WriteError`` whose one-line message names the file. A first SIGINT or SIGTERM waits for the write to finish
    (``modules.common.interrupts``); a second one abandons it, leaving the previous file.
    """
    with deferred():
        _write_and_rename(path, write)


def _write_and_rename(path: str, write: Callable[[Any], None]) -> None:
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


def prepare_output_dir(path: str) -> None:
    """Create the folder and prove it is writable before any work starts."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write_test_{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f"--output_dir {path} is not writable ({e.strerror or e})") from None


def write_json(obj, path: str) -> None:
    """Atomically: a reader never sees half a file, and a full disk leaves the previous one as it was."""
    text = json.dumps(obj, indent=2, default=str)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
