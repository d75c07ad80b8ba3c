"""Keys of cached state: everything that changes a cache entry's content goes into its key, so that an entry is never
read back for other inputs.

A key is the digest of a JSON description of those inputs (``cache_key``). Files enter it by identity
(``file_stamp``: path, size, modification and status-change times), not by content: hashing every video or a 1.7 GB
checkpoint on each run would cost more than the cache saves, and the status-change time, which no user tool can set,
still tells a file replaced in place apart from the original even when its size and modification time were carried
over (``cp -p``, ``rsync -t``). ``code_version`` covers the project's own source and ``software_versions`` the
libraries that decode frames and compute features: a different version may compute different numbers.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
from typing import Any, Optional

# Libraries whose version can change decoded frames or computed features.
FEATURE_LIBRARIES = ("torch", "opencv-python", "opencv-python-headless", "pillow", "numpy")
_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cache_key(ident: Any, length: int = 20) -> str:
    """Hex digest (``length`` characters) of ``ident``, a JSON-serialisable description of a cache entry's inputs.

    Dict keys are sorted, so the key does not depend on the order a description was built in.
    """
    text = json.dumps(ident, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def file_stamp(path: Optional[str]) -> Optional[list[int]]:
    """[size, mtime_ns, ctime_ns] of a file (links followed); None when there is no readable file."""
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def file_identity(path: str) -> dict:
    """Where a file is and which version of it: the resolved path and its ``file_stamp``."""
    return {"path": os.path.realpath(path), "stamp": file_stamp(path)}


@functools.lru_cache(maxsize=None)
def code_version(package: str = "modules") -> str:
    """Digest of every file of the project's ``package`` folder (source and data, caches excluded).

    Any edit of the code invalidates cached features, including edits that change nothing: a spurious re-encode
    costs minutes, a stale feature a wrong result.
    """
    h = hashlib.sha256()
    top = os.path.join(_PROJECT_ROOT, package)
    for folder, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo")) or name.startswith("."):
                continue
            path = os.path.join(folder, name)
            h.update(os.path.relpath(path, top).encode("utf-8") + b"\0")
            with open(path, "rb") as f:
                h.update(f.read())
            h.update(b"\0")
    return h.hexdigest()[:20]


@functools.lru_cache(maxsize=None)
def software_versions() -> dict[str, Optional[str]]:
    """Installed versions of ``FEATURE_LIBRARIES`` (None: not installed)."""
    out: dict[str, Optional[str]] = {}
    for name in FEATURE_LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out
