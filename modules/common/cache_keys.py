"""Keys naming a cached result by what it was computed from: a checkpoint file and the settings that shape features.

The checkpoint is identified by its absolute path, size and modification time (hashing its bytes would cost a full
read of a large file on every run), so a rewritten checkpoint never hits a stale cache entry.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any


def checkpoint_key(checkpoint: str, **settings: Any) -> str:
    """16 hex digits naming ``checkpoint`` (path, size, mtime) together with ``settings`` (JSON-serialisable values,
    or values whose ``str`` is stable); equal inputs give equal keys across runs and processes."""
    stat = os.stat(checkpoint)
    ident = {"checkpoint": os.path.abspath(checkpoint), "size": stat.st_size, "mtime": stat.st_mtime_ns, **settings}
    return hashlib.sha1(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]
