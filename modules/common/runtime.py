"""Process set-up for the entry points: torchrun environment, device, seeds, logging, and one-line user errors.

Works the same under ``torchrun`` (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``; NCCL on CUDA, gloo on the CPU) and as a
plain ``python -m ...`` process. Nothing here runs at import time.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import logging
import os
import random
import sys
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
import torch.distributed as dist

from modules.common.errors import ConfigError, UCoFiAError
from modules.common.interrupts import Interrupted, stop_signals

logger = logging.getLogger("ucofia")
COLLECTIVE_TIMEOUT_MIN = 30  # a rank stuck longer than this in a collective ends the job instead of hanging


@dataclass
class Runtime:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def rank_from_env() -> int:
    """This process's global rank as torchrun set it (0 without a launcher)."""
    return _env_int("RANK", 0)


def world_size_from_env() -> int:
    """The number of processes torchrun started (1 without a launcher)."""
    return _env_int("WORLD_SIZE", 1)


def setup(device: str = "auto", seed: int = 42, deterministic: bool = False) -> Runtime:
    """Read torchrun's environment, pick the device, start the process group if several processes, seed RNGs."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but no CUDA device is available")
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices visible")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo",
                                timeout=datetime.timedelta(minutes=COLLECTIVE_TIMEOUT_MIN))
    if dev.type == "cpu":
        # ISA's sharp softmaxes (tau = 0.01) produce many subnormal floats, which slow CPU math ~2.5x; flushing them
        # to zero changes nothing above 1e-38. Set before torch's thread pool starts so every thread inherits it.
        torch.set_flush_denormal(True)
    seed_everything(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    return Runtime(rank=rank, local_rank=local_rank, world_size=world_size, device=dev)


def seed_everything(seed: int) -> None:
    """The same seed on every rank: identical initialisation everywhere (DDP also broadcasts rank 0's weights)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def setup_logging(rank: int, log_file: Optional[str] = None) -> None:
    """Main rank: INFO to stderr and ``log_file``; other ranks: warnings and errors only, tagged with the rank."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_ucofia", False):
            root.removeHandler(handler)
            handler.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s" if rank == 0 else
                            f"%(asctime)s rank{rank} %(levelname)s %(message)s", datefmt="%H:%M:%S")
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_file and rank == 0:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    handlers[0].addFilter(lambda record: not getattr(record, "file_only", False))  # long records: log file only
    if _env_int("WORLD_SIZE", 1) > 1:  # once a rank has reported an error, its line ends what the terminal shows
        handlers[0].addFilter(lambda record: not _peer_failed())
    for handler in handlers:
        handler.setFormatter(fmt)
        handler._ucofia = True
        root.addHandler(handler)
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)


_workers_said: set[tuple[int, int]] = set()


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the system has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def loader_workers(requested: int) -> int:
    """DataLoader workers for ``--num_thread_reader requested``: at most the CPUs this process may run on, shared by
    the processes of this node (``LOCAL_WORLD_SIZE``), so that a recipe written for a large machine does not
    oversubscribe a small one. Says so once in the log when it lowers the number."""
    cpus = available_cpus()
    local = max(1, _env_int("LOCAL_WORLD_SIZE", 1))
    workers = min(requested, max(1, cpus // local))
    if workers < requested and (requested, workers) not in _workers_said:
        _workers_said.add((requested, workers))
        logger.info("--num_thread_reader %d: %d DataLoader worker(s) per process, as %d CPU(s) are available to "
                    "this process and %d process(es) of this node share them", requested, workers, cpus, local)
    return workers


def show_progress(rt: Runtime) -> bool:
    """Progress bars on the main rank of an interactive terminal; logs and CI get the periodic log lines only."""
    return rt.is_main and sys.stderr.isatty()


# Write errors the user fixes (space, quota, permissions): one line instead of a traceback.
USER_OS_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)


def one_line(message: str) -> str:
    """The message of an error on one line.

    An error raised in a DataLoader worker comes back with the worker's traceback folded into its message ("Caught
    DataError in DataLoader worker process 0. Original Traceback ..."); its last line is the original message.
    """
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return message.strip()
    if len(lines) > 1 and lines[0].startswith("Caught ") and any("Traceback" in line for line in lines[1:]):
        last = lines[-1]
        name, sep, rest = last.partition(": ")
        return rest if sep and "." in name and " " not in name else last
    return " ".join(lines)


def run_entry(fn: Callable[[], int]) -> int:
    """Run an entry point: a ``UCoFiAError`` (or a full disk, a quota, a permission) becomes one line on stderr,
    also recorded in the log file, and exit status 2. SIGINT and SIGTERM stop it cleanly
    (``modules.common.interrupts``): one ``stopped:`` line and exit status 130 or 143.

    Under several processes, a rank that reports an error marks the job failed first; a rank that then fails only
    because of it (a collective whose peer left, or the SIGTERM torchrun sends after a failure) stays silent on
    stderr, so the failed rank's line is the end of the report."""
    try:
        with stop_signals():
            code = fn() or 0
    except Interrupted as e:
        if _peer_failed():
            return _quiet(e, 2)
        _report("stopped", one_line(str(e)))
        return e.exit_code
    except (UCoFiAError, OSError) as e:
        if isinstance(e, UCoFiAError):
            message = one_line(str(e))
        elif e.errno in USER_OS_ERRORS:
            message = f"{e.filename}: {e.strerror}" if e.filename else str(e)
        elif _peer_failed():
            return _quiet(e, 2)
        else:
            raise
        _mark_failed()
        _report("error", message)
        return 2
    except Exception as e:
        if _peer_failed():
            return _quiet(e, 2)
        raise
    teardown()
    return code


FAILED_KEY = "ucofia/failed_rank"  # set in the job's rendezvous store by the first rank that reports an error


def _store():
    """The process group's key-value store (torchrun's), or None for a single process."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return None
    return dist.distributed_c10d._get_default_store()


def _mark_failed() -> None:
    with contextlib.suppress(Exception):
        store = _store()
        if store is not None:
            store.set(FAILED_KEY, str(_env_int("RANK", 0)))


def _peer_failed() -> bool:
    """Whether another rank of this job has reported an error (False when that cannot be known)."""
    with contextlib.suppress(Exception):
        store = _store()
        return store is not None and store.check([FAILED_KEY])
    return False


def _quiet(e: BaseException, code: int) -> int:
    """End a rank that fails because another one did: a line in its log file only."""
    logger.error("stopped: [rank %d] after another rank's error (%s)", _env_int("RANK", 0),
                 one_line(str(e))[:300] or type(e).__name__, extra={"file_only": True})
    return code


def _report(kind: str, message: str) -> None:
    """One line on stderr, also in the log file. No process-group teardown: peers may sit in a collective; torchrun
    ends them when this one exits."""
    rank = _env_int("RANK", 0)
    prefix = f"[rank {rank}] " if _env_int("WORLD_SIZE", 1) > 1 else ""
    if any(getattr(h, "_ucofia", False) for h in logging.getLogger().handlers):  # else logging prints it again
        logger.error("stopped: %s%s", prefix, message, extra={"file_only": True})
    print(f"{kind}: {prefix}{message}", file=sys.stderr, flush=True)


def autocast_context(precision: str, device: torch.device):
    """bf16 runs under autocast; fp32 and the legacy fp16-weights recipe run without."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
