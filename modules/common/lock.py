"""One writer per output folder: a run holds an exclusive lock on ``<output_dir>/.ucofia.lock`` while it works (and
a frame-cache build on ``<frame_cache>/.ucofia.lock``).

The lock is the operating system's (``flock``), so it is released when the holder ends in any way: a normal end, an
error, an interrupt, SIGKILL or a crash. The file records the holder (pid, host, start, entry point) for the message
a second writer gets, and is removed on a clean end. A file left by a killed run on this host is stale: its lock is
free and its pid no longer runs (or runs another program); the next run takes it over with a warning. A record
whose pid still runs the recorded process is refused even when the lock is free (a filesystem whose locks do
nothing).

Other hosts: on a shared filesystem whose locks reach every host (NFSv4, NFSv3 with lockd, Lustre mounted with
``-o flock``) a run on another host is refused like a local one. Where locks stay within each host, a record from
another host cannot be checked from here: it is refused, and the message says to delete the file once that run is
known to be gone. A filesystem without locks at all gets a warning and no protection. Only the main process of a
run (rank 0) locks.

A run that fails or is stopped before writing anything but its log removes the folder again when it created it
(``run_folder``), so failed attempts leave no folders holding a lone ``log.txt``; a folder that existed is kept.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
from dataclasses import dataclass
from typing import Iterator, Optional

from modules.common.errors import ConfigError
from modules.common.io import prepare_output_dir

LOCK_NAME = ".ucofia.lock"
RUN_LOGS = ("log.txt", "log_eval_t2v.txt", "log_eval_v2t.txt")  # what the entry points write before anything else
NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


@dataclass
class OutputLock:
    """A held lock (``fd`` None: the filesystem has no locks); ``note`` is a warning for the run's log."""
    path: str
    fd: Optional[int]
    note: str = ""

    def release(self, keep_file: bool = False) -> None:
        """Remove the record (unless ``keep_file``), then unlock. Removing first: a run that opened the old file
        meanwhile finds it gone once it gets the lock, and retries on a new one."""
        if self.fd is None:
            return
        if not keep_file:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


def _process_start(pid: int) -> Optional[str]:
    """Start time of process ``pid`` in clock ticks since boot (Linux), to tell a reused pid apart; None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(record: dict) -> bool:
    """Whether the recorded process (on this host) still runs."""
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    except (KeyError, TypeError, ValueError, OverflowError):
        return False
    start = _process_start(int(record["pid"]))
    return start is None or record.get("pid_start") in (None, start)


def _describe(record: dict) -> str:
    return (f"pid {record.get('pid', '?')} on host {record.get('host', '?')}, {record.get('entry', '?')}, "
            f"started {record.get('started', '?')}")


def _read(fd: int) -> Optional[dict]:
    data = os.pread(fd, 65536, 0)
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None  # empty or cut short by a crash while it was written: no holder to name
    return record if isinstance(record, dict) else None


def acquire(folder: str, entry: str, flag: str = "--output_dir") -> OutputLock:
    """Lock ``folder`` (which exists) for this process, or raise ``ConfigError`` naming the run that holds it
    (``flag``: the option that named the folder, for the message)."""
    path = os.path.join(folder, LOCK_NAME)
    host = socket.gethostname()
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            who = _describe(holder) if holder else "its record is not written yet"
            raise ConfigError(f"{flag} {folder} is in use by another run ({who}); wait for it to end or "
                              f"choose another {flag}") from None
        except OSError as e:
            os.close(fd)
            if e.errno not in NO_LOCKS:
                raise
            return OutputLock(path, None, f"{folder}: the filesystem has no file locks ({e.strerror}): a second run "
                                          f"into this folder would not be detected")
        try:
            same_file = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        os.close(fd)  # the holder released and removed it after we opened it: lock the new file instead
    lock = OutputLock(path, fd)
    previous = _read(fd)
    if previous:
        if previous.get("host") != host:
            lock.release(keep_file=True)
            raise ConfigError(f"{flag} {folder} holds the lock file of a run on another host "
                              f"({_describe(previous)}), which this host cannot check: if that run has ended, delete "
                              f"{path}")
        if _alive(previous) and previous.get("pid") != os.getpid():
            lock.release(keep_file=True)
            raise ConfigError(f"{flag} {folder} is in use by another run ({_describe(previous)}; the lock "
                              f"file's lock was free: does this filesystem support locks?)")
        lock.note = f"{path}: taking over the lock file of a run that is no longer running ({_describe(previous)})"
    record = {"pid": os.getpid(), "pid_start": _process_start(os.getpid()), "host": host, "entry": entry,
              "started": datetime.datetime.now().isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode("utf-8"), 0)
    os.fsync(fd)
    return lock


@contextlib.contextmanager
def output_lock(folder: str, entry: str, enabled: bool = True) -> Iterator[OutputLock]:
    """Hold the lock of ``folder`` for the block (``enabled`` False: other ranks, nothing is locked)."""
    lock = acquire(folder, entry) if enabled else OutputLock(os.path.join(folder, LOCK_NAME), None)
    try:
        yield lock
    finally:
        lock.release()


@contextlib.contextmanager
def run_folder(folder: str, entry: str, is_main: bool = True) -> Iterator[OutputLock]:
    """Create ``folder`` (proving it writable) and hold its lock for the block. When the block fails or is
    interrupted, the main process removes the folder if this run created it and it holds nothing but logs. Only the
    main process writes there, and only it creates the folder: so it knows whether the folder is this run's."""
    created = is_main and not os.path.lexists(folder)
    if is_main:
        prepare_output_dir(folder)
    try:
        with output_lock(folder, entry, enabled=is_main) as lock:
            yield lock
    except BaseException:
        if created:
            _remove_if_only_logs(folder)
        raise


def _remove_if_only_logs(folder: str) -> None:
    with contextlib.suppress(OSError):
        names = os.listdir(folder)
        if all(name in RUN_LOGS or name == LOCK_NAME for name in names):
            for name in names:
                os.remove(os.path.join(folder, name))
            os.rmdir(folder)  # fails, keeping the folder, if anything appeared meanwhile
