"""Readers for the annotation files users already have, and the index of a video folder.

Every problem becomes a one-line ``DataError`` (or ``ConfigError`` for an unset flag) naming the file and what is
wrong with it: a missing column, an entry without a caption, a caption that is empty or implausibly long, a number
that is not finite. Text files are read as UTF-8 with or without a byte-order mark (``utf-8-sig``; Windows editors
write one), with any line ending.
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
import pickle
import unicodedata
from collections import Counter
from typing import Any, Iterable

import pandas as pd

from modules.common.errors import ConfigError, DataError
from modules.common.io import not_a_regular_file

logger = logging.getLogger(__name__)

# Far longer than any real caption or ActivityNet/DiDeMo paragraph: such a "caption" means a malformed file.
MAX_CAPTION_CHARS = 8192
# Extensions accepted as videos when indexing --features_path (DiDeMo's originals come in many containers).
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp",
                    ".ogv", ".ts")


def require_path(value: str, flag: str, datatype: str) -> str:
    """The value of a required path flag, or ConfigError naming the flag."""
    if not value:
        raise ConfigError(f"--{flag} is required for --datatype {datatype}")
    return value


# Read annotation text with this codec: a leading byte-order mark is dropped instead of becoming part of the first id.
TEXT_ENCODING = "utf-8-sig"


def _must_exist(path: str) -> None:
    kind = not_a_regular_file(path)
    if kind == "missing":
        raise DataError(f"{path}: annotation file not found")
    if kind:
        raise DataError(f"{path}: not a regular file ({kind}); an annotation file is expected")


def shown(text: str) -> str:
    """An id or name for a message: as it is when printable, else escaped, so that invisible characters show."""
    return text if text.isprintable() else ascii(text)


def read_json(path: str) -> Any:
    """Parsed JSON; DataError naming the file and the position of a syntax error, or a key repeated in one object
    (the json module would silently keep only its last value)."""
    _must_exist(path)

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict:
        out: dict = {}
        for key, value in pairs:
            if key in out:
                raise DataError(f"{path}: key {key!r} appears twice in one object (only one value can be right; "
                                "remove or merge the repeats)")
            out[key] = value
        return out

    try:
        with open(path, encoding=TEXT_ENCODING) as f:
            return json.load(f, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def read_csv(path: str, columns: Iterable[str]) -> pd.DataFrame:
    """A csv whose listed columns must exist; values are read as strings (video ids like ``0001`` stay intact)."""
    _must_exist(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding=TEXT_ENCODING)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable csv ({str(e).splitlines()[0] if str(e) else type(e).__name__})") \
            from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(map(str, frame.columns))})")
    return frame


def read_lines(path: str) -> list[str]:
    """Non-empty stripped lines (video id lists, caption files); a byte-order mark starting any line is dropped
    (files joined with ``cat`` carry one per part)."""
    _must_exist(path)
    try:
        with open(path, encoding=TEXT_ENCODING) as f:
            lines = (line.strip().lstrip("\ufeff").strip() for line in f)
            return [line for line in lines if line]
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def unique_ids(ids: Iterable[str], path: str) -> list[str]:
    """Video ids of a list file, each once in first-seen order; repeats are logged (they add no data)."""
    ids = list(ids)
    unique = list(dict.fromkeys(ids))
    if len(unique) < len(ids):
        counts = Counter(ids)
        repeated = [v for v in unique if counts[v] > 1]
        named = ", ".join(f"{shown(v)} x{counts[v]}" for v in repeated[:5]) + (" ..." if len(repeated) > 5 else "")
        logger.warning("%s: %d video id(s) listed more than once, each used once (%s)", path, len(repeated), named)
    return unique


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles containers of strings only: an annotation pickle that would import code is refused."""
    ALLOWED = {("collections", "OrderedDict"), ("collections", "defaultdict"), ("builtins", "list"),
               ("builtins", "dict"), ("builtins", "str"), ("builtins", "tuple"), ("builtins", "set")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_pickle(path: str) -> Any:
    """A pickle of plain containers (MSVD's raw-captions.pkl); DataError when malformed or not plain data.

    The file is read whole first: a corrupt length field then fails as truncated data instead of asking the file
    object for gigabytes. Whatever a corrupt pickle raises (it can be almost any exception: a changed opcode calls
    methods on the wrong objects) is a malformed file.
    """
    _must_exist(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        return _PlainUnpickler(io.BytesIO(data)).load()
    except Exception as e:  # noqa: BLE001 - see the docstring
        detail = str(e).splitlines()[0] if str(e) else ""
        raise DataError(f"{path}: not a pickle of plain captions, or corrupt ({type(e).__name__}: {detail})") \
            from None


def check_caption(text: Any, path: str, ident: str) -> str:
    """Validate one caption as read from ``path`` for entry ``ident``.

    Control characters and emoji are fine (the tokenizer handles any text); empty text and text longer than
    ``MAX_CAPTION_CHARS`` are not.
    Returns:
        the caption unchanged.
    """
    if not isinstance(text, str):
        raise DataError(f"{path}: caption of {ident} is not text ({type(text).__name__}: {str(text)[:40]!r})")
    if all(unicodedata.category(c)[0] in "CZ" for c in text):
        raise DataError(f"{path}: caption of {ident} is empty")
    if len(text) > MAX_CAPTION_CHARS:
        raise DataError(f"{path}: caption of {ident} has {len(text)} characters (more than {MAX_CAPTION_CHARS}); "
                        "the file looks malformed")
    return text


def captions_by_video(mapping: Any, video_ids: list[str], path: str, list_path: str,
                      token_lists: bool = False) -> list[list[str]]:
    """Checked captions of each listed video from a video id -> captions mapping (MSVD's pickle, VATEX's json).

    Args:
        mapping: the loaded file.
        video_ids: the split's videos, in order.
        path, list_path: the mapping's file and the split list, for messages.
        token_lists: captions may be lists of word tokens, joined with spaces (MSVD, as published).
    Returns:
        One list of captions per video.
    """
    if not isinstance(mapping, dict):
        raise DataError(f"{path}: expected a mapping of video id -> captions, got {type(mapping).__name__}")
    missing = [v for v in video_ids if v not in mapping]
    if missing:
        raise DataError(f"{path}: {len(missing)} videos of {list_path} have no captions "
                        f"(first: {', '.join(map(shown, missing[:5]))})")
    out = []
    for vid in video_ids:
        caps = mapping[vid]
        if not isinstance(caps, (list, tuple)) or not caps:
            raise DataError(f"{path}: captions of {vid} are not a non-empty list")
        joined = []
        for j, cap in enumerate(caps):
            if token_lists and isinstance(cap, (list, tuple)):
                if not all(isinstance(w, str) for w in cap):
                    raise DataError(f"{path}: caption {j} of {vid} has a token that is not text")
                cap = " ".join(cap)
            joined.append(check_caption(cap, path, f"caption {j} of {vid}"))
        out.append(joined)
    return out


def finite_number(value: Any, path: str, where: str, key: str) -> float:
    """A number read from an annotation: ``value`` as a float, or DataError naming the file, the entry and the
    field when it is not a finite number (text holding one is accepted)."""
    number = math.nan
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            number = float(value)
        except ValueError:
            pass
    if not math.isfinite(number):
        raise DataError(f"{path}: {where}: '{key}' is {value!r}, not a finite number")
    return number


def entry_field(entry: Any, key: str, path: str, where: str) -> Any:
    """``entry[key]`` of a JSON object, or DataError naming the file, the entry and the missing key."""
    if not isinstance(entry, dict):
        raise DataError(f"{path}: {where} is a {type(entry).__name__}, expected an object")
    if key not in entry:
        raise DataError(f"{path}: {where} has no '{key}' field")
    return entry[key]


class VideoIndex:
    """Video files under a folder (recursive), found by file name or by file name without its extension.

    An annotation names a video, not a folder: when files that could be the video sit in two subfolders, looking it
    up is a DataError naming both instead of a silent pick. Within one folder, ``clip.mp4`` wins over ``clip.webm``
    (``VIDEO_EXTENSIONS`` order: the compressed copies are mp4).
    """

    def __init__(self, root: str):
        if not root:
            raise ConfigError("--features_path (the video folder) is required")
        if not os.path.isdir(root):
            raise DataError(f"{root}: video folder (--features_path) not found")
        self.root = root
        self.by_name: dict[str, list[str]] = {}
        self.by_stem: dict[str, list[str]] = {}
        self.rank = {ext: i for i, ext in enumerate(VIDEO_EXTENSIONS)}
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                stem, ext = os.path.splitext(name)
                # Hidden files include the partial outputs of scripts/compress_video.py.
                if name.startswith(".") or ext.lower() not in self.rank:
                    continue
                path = os.path.join(folder, name)
                self.by_name.setdefault(name, []).append(path)
                self.by_stem.setdefault(stem, []).append(path)

    def _pick(self, video_id: str, paths: list[str]) -> str | None:
        if not paths:
            return None
        folders = sorted({os.path.dirname(p) for p in paths})
        if len(folders) > 1:
            first, second = (next(p for p in paths if os.path.dirname(p) == d) for d in folders[:2])
            raise DataError(f"video {shown(video_id)}: {len(paths)} files under {self.root} could be it, in different "
                            f"folders: {first}, {second}; remove the wrong one or point --features_path at the "
                            "folder that holds the right one")
        return min(paths, key=lambda p: self.rank[os.path.splitext(p)[1].lower()])

    def find(self, video_id: str) -> str | None:
        """Path of the video with this id, or None.

        Tries the file name ``id``, then ``id.<ext>`` (preferring .mp4), then, for ids that carry an extension
        (DiDeMo's ``xxx.mov``), the same stem re-encoded to another container.
        Raises:
            DataError: the id matches files in more than one folder.
        """
        found = self._pick(video_id, self.by_name.get(video_id, [])) or \
            self._pick(video_id, self.by_stem.get(video_id, []))
        stem, ext = os.path.splitext(video_id)
        if found is None and ext.lower() in VIDEO_EXTENSIONS:
            found = self._pick(video_id, self.by_stem.get(stem, []))
        return found

    def expected(self, video_id: str) -> str:
        """Where a missing video was looked for, for error messages."""
        return os.path.join(self.root, f"{video_id}.mp4")
