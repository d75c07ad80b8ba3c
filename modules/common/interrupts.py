"""SIGINT (Ctrl-C) and SIGTERM (a cluster's pre-emption) as a clean stop: one line, exit status 128 + the signal's
number (130 for SIGINT, 143 for SIGTERM, as a shell reports a process the signal ended), nothing half-written.

``stop_signals()`` (installed by ``run_entry``) turns either signal into ``Interrupted``, raised at once, except
inside ``deferred()`` blocks: there the signal is recorded, and raised when the outermost block ends, so an atomic
write finishes and a training step completes. A training run also checks ``requested()`` at every step boundary to
save its position before it stops. A second signal stops at once even inside a deferred block (an atomic write in
progress is then abandoned: its target keeps the previous version). The terminal and torchrun can each deliver the
same Ctrl-C, so signals within ``DUPLICATE_WINDOW_S`` of the first count as one.

DataLoader workers ignore both signals (``ignore_in_worker``): the main process decides when to stop, and its
workers end with it; a worker killed by the signal would otherwise fail the main process's next batch. Because
they ignore SIGTERM, they must be shut down through the loader, never left to multiprocessing's exit handler (which
terminates daemonic children with SIGTERM and then waits for them forever): iterate loaders through
``closing_batches``, which shuts the workers down when the loop ends and, for a loop an exception left suspended
(its traceback keeps the iterator alive), at interpreter exit before multiprocessing's own handler runs.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing.util  # noqa: F401  (its exit handler is registered first: see _shut_down_open_loaders)
import signal
import threading
import time
import weakref
from typing import Iterable, Iterator, Optional

logger = logging.getLogger("ucofia")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
DUPLICATE_WINDOW_S = 1.0


class Interrupted(BaseException):
    """A stop asked for by SIGINT or SIGTERM. A ``BaseException``, like ``KeyboardInterrupt``, so that no
    ``except Exception`` swallows it."""

    def __init__(self, signum: int, message: str = "", at_once: bool = False):
        self.signum, self.at_once = signum, at_once  # at_once: a second signal, nothing more is to be written
        super().__init__(message or f"interrupted by {signal_name(signum)}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class _State:
    installed = False
    depth = 0                     # nested deferred() blocks in progress
    signum: Optional[int] = None  # the first stop signal received
    first_at = 0.0
    raised = False                # Interrupted already raised for it: later deferred blocks end normally


_state = _State()


def _handler(signum: int, frame) -> None:
    now = time.monotonic()
    if _state.signum is None:
        _state.signum, _state.first_at = signum, now
        if _state.depth == 0:
            _raise(signum)
        logger.warning("%s received: stopping at the next safe point (send it again to stop at once)",
                       signal_name(signum))
        return
    if now - _state.first_at < DUPLICATE_WINDOW_S:
        return
    _raise(signum, f"interrupted by a second {signal_name(signum)}: stopped at once", at_once=True)


def _raise(signum: int, message: str = "", at_once: bool = False) -> None:
    _state.raised = True
    raise Interrupted(signum, message, at_once)


def requested() -> Optional[int]:
    """The stop signal received so far (None: none)."""
    return _state.signum


def stop(message: str) -> None:
    """Raise ``Interrupted`` for the signal received (SIGTERM when another process received it)."""
    _raise(_state.signum or signal.SIGTERM, message)


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Handle SIGINT and SIGTERM as described above for the duration of the block (main thread only; elsewhere,
    or when already installed, the block runs with the handlers as they are)."""
    if _state.installed or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in STOP_SIGNALS}
    _state.installed, _state.depth, _state.signum, _state.raised = True, 0, None, False
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _state.installed, _state.depth, _state.signum, _state.raised = False, 0, None, False


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A block a first stop signal does not cut: it is raised when the outermost deferred block ends."""
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
    if _state.depth == 0 and _state.signum is not None and not _state.raised:
        _raise(_state.signum)


def ignore_in_worker(worker_id: int = 0) -> None:
    """``worker_init_fn`` of DataLoaders: the worker ignores SIGINT and SIGTERM (see the module docstring)."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


_open_loaders: "weakref.WeakSet" = weakref.WeakSet()  # multi-process DataLoader iterators not yet shut down


def closing_batches(loader: Iterable) -> Iterator:
    """Iterate ``loader``, shutting its worker processes down when the loop ends (see the module docstring).

    The workers of a loader with ``persistent_workers`` live on after a loop that ran to its end (the next epoch
    reuses them; they are shut down at exit); a loop cut short shuts them down and the next one starts new ones.
    """
    iterator = iter(loader)
    shutdown = getattr(iterator, "_shutdown_workers", None)  # a multi-process DataLoader iterator
    persistent = bool(getattr(loader, "persistent_workers", False))
    if shutdown is not None:
        _open_loaders.add(iterator)
    finished = False
    try:
        yield from iterator
        finished = True
    finally:
        if shutdown is not None and not (persistent and finished):
            shutdown()
            _open_loaders.discard(iterator)
            if persistent:
                loader._iterator = None  # type: ignore[attr-defined]  # PyTorch's handle of the persistent workers


@atexit.register  # registered after multiprocessing's exit handler (imported above), so it runs before it
def _shut_down_open_loaders() -> None:
    for iterator in list(_open_loaders):
        iterator._shutdown_workers()
