"""Checkpoints: written atomically, read with ``weights_only=True``, loaded strictly.

A training checkpoint is one file holding the model, optimiser, epoch, step inside the epoch, global step, resolved
configuration, RNG states and the validation history. ``--init_model`` also accepts a bare state dict, ours or the
published code's (mapped by ``modules.published``), and an exported model folder (``scripts/export_checkpoint.py``):
``model.safetensors`` and ``config.json``, read without unpickling anything.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import tempfile
from typing import Any, BinaryIO, Callable, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save as safetensors_bytes

from modules.common.errors import CheckpointError, ConfigError
from modules.common.interrupts import deferred
from modules.common.torchscript import is_torchscript_archive

logger = logging.getLogger(__name__)
EXPORT_FORMAT = "ucofia-export-v1"
EXPORT_WEIGHTS, EXPORT_CONFIG = "model.safetensors", "config.json"


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


def not_a_regular_file(path: str) -> str:
    """Why ``path`` cannot be read as a file ("" when it can): reading a FIFO or a device would block or never end.

    Returns:
        "", "missing", "a folder", "a FIFO", "a socket" or "a device".
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "missing"
    if stat.S_ISREG(mode):
        return ""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    return "a socket" if stat.S_ISSOCK(mode) else "a device"


def _not_a_checkpoint(path: str) -> str:
    """What the file is instead of a torch checkpoint, from its first bytes; "" when it may be one."""
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        return "the file is empty"
    if head.startswith(b"PK\x03\x04"):
        if is_torchscript_archive(path):
            return ("it is a TorchScript archive (the format of OpenAI's CLIP weights), which is given to "
                    "--pretrained_clip_name")
        return ""
    if head[0] == 0x80:  # a pickle: torch.save's legacy format
        return ""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"unknown binary format (starts with {head[:8]!r})"
    kind = "JSON text" if text.lstrip()[:1] in ("{", "[") else "a text file"
    return f"it is {kind} (starts with {text.strip()[:24]!r})"


def read_checkpoint(path: str) -> dict:
    """Load a checkpoint file (or an exported model folder, see ``read_exported``) safely; any failure is a one-line
    ``CheckpointError`` naming the file."""
    if os.path.isdir(path):
        return read_exported(path)
    kind = not_a_regular_file(path)
    if kind == "missing":
        raise CheckpointError(f"checkpoint not found: {path}")
    if kind:
        raise CheckpointError(f"{path}: not a checkpoint: it is {kind}")
    why = _not_a_checkpoint(path)
    if why:
        raise CheckpointError(f"{path}: not a checkpoint: {why}")
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


def prepare_output_dir(path: str, flag: str = "--output_dir") -> None:
    """Create the folder and prove it is writable before any work starts (``flag`` names it in the error)."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write_test_{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f"{flag} {path} is not writable ({e.strerror or e})") from None


def write_json(obj, path: str) -> None:
    """Atomically: a reader never sees half a file, and a full disk leaves the previous one as it was."""
    text = json.dumps(obj, indent=2, default=str)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def weights_file(path: str) -> str:
    """The file that holds the weights of a checkpoint path: the path itself, or an exported folder's
    ``model.safetensors`` (what size and modification time should identify)."""
    return os.path.join(path, EXPORT_WEIGHTS) if os.path.isdir(path) else path


def read_exported(folder: str) -> dict:
    """An exported model folder as ``{"format": EXPORT_FORMAT, "model": state dict, "config": config.json}``.

    Only JSON and safetensors are parsed, so loading can never run code. Any problem is a one-line
    ``CheckpointError`` naming the file.
    """
    config_path, weights = os.path.join(folder, EXPORT_CONFIG), os.path.join(folder, EXPORT_WEIGHTS)
    for name in (config_path, weights):
        if not os.path.isfile(name):
            raise CheckpointError(f"{folder}: not an exported model folder ({os.path.basename(name)} is missing)")
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{config_path}: not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{config_path}: not the config of an exported model (expected \"format\": "
                              f"\"{EXPORT_FORMAT}\")")
    try:
        state = load_safetensors(weights)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights}: unreadable or truncated safetensors file ({str(e).splitlines()[0]})") \
            from None
    return {"format": EXPORT_FORMAT, "model": state, "config": config}


def write_exported(folder: str, state: dict[str, torch.Tensor], config: dict) -> str:
    """Write ``model.safetensors`` then ``config.json`` into ``folder``, each atomically (a folder with a config
    is complete). Returns the sha256 of the weights file, also recorded in the config as ``weights_sha256``."""
    blob = safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in state.items()}, metadata={"format": "pt"})
    digest = hashlib.sha256(blob).hexdigest()
    atomic_write(os.path.join(folder, EXPORT_WEIGHTS), lambda f: f.write(blob))
    write_json(dict(config, format=EXPORT_FORMAT, weights=EXPORT_WEIGHTS, weights_sha256=digest),
               os.path.join(folder, EXPORT_CONFIG))
    return digest
