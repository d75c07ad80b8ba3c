"""Command lines generated from config dataclasses: each field carries its default and help text, once.

A field becomes a flag when its metadata has ``help`` (made by ``option``); ``flag`` renames it (the published
``--cross_num_hidden_layers`` fills ``ModelConfig.temporal_layers``), ``modes`` limits it to some entry points.
Parsers record which flags were given explicitly (``Parsed.explicit``), so that settings read from a checkpoint can
be told apart from defaults. Abbreviated flags are refused: ``--max_frame 4`` is an error, not ``--max_frames 4``.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import MISSING, dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence


def option(default: Any, help: str, *, flag: Optional[str] = None, choices: Optional[Sequence] = None,
           parse: Optional[Callable[[str], Any]] = None, modes: Optional[Iterable[str]] = None,
           metavar: Optional[str] = None) -> Any:
    """A dataclass field that is also a command-line flag.

    Args:
        default: the default value (immutable; tuples for sequences).
        help: one line for ``--help``.
        flag: the flag's name when it differs from the field's (without the leading dashes).
        choices: allowed values.
        parse: converts the flag's text (default: the type of ``default``; booleans default to ``store_true``).
        modes: entry points that show the flag (default: every one that includes the dataclass).
    """
    meta = {"help": help, "flag": flag, "choices": tuple(choices) if choices is not None else None, "parse": parse,
            "modes": tuple(modes) if modes is not None else None, "metavar": metavar}
    return field(default=default, metadata=meta)


def setting(default: Any, reason: str) -> Any:
    """A dataclass field that is not a flag: a number of the method with the reason it has this value."""
    return field(default=default, metadata={"reason": reason})


def cli_fields(cls: type, mode: str) -> list[dataclasses.Field]:
    """The fields of ``cls`` that are flags in ``mode``."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata
            and (f.metadata["modes"] is None or mode in f.metadata["modes"])]


def flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or f.name


def _default(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None


def add_options(parser: argparse.ArgumentParser, cls: type, title: str, mode: str,
                only: Optional[Iterable[str]] = None) -> None:
    """One argument group holding every flag of ``cls`` in ``mode`` (or the fields named in ``only``); defaults are
    filled in by ``values``: a flag not given is absent from the namespace."""
    group = parser.add_argument_group(title)
    for f in cli_fields(cls, mode):
        if only is not None and f.name not in only:
            continue
        meta, default = f.metadata, _default(f)
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        hidden = default is None or default is False or default == ""
        shown = "" if hidden else f" (default: {_show(default)})"
        if isinstance(default, bool) and meta["parse"] is None:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = meta["parse"] or (type(default) if default is not None else str)
            if meta["choices"] is not None:
                kwargs["choices"] = meta["choices"]
            if meta["choices"] is None:
                kwargs["metavar"] = meta["metavar"] or flag_name(f).upper()
        group.add_argument("--" + flag_name(f), help=meta["help"] + shown, **kwargs)


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "none"
    if isinstance(value, bool):
        return str(int(value))
    return str(value)


def values(cls: type, namespace: argparse.Namespace, mode: str, **fixed: Any) -> dict[str, Any]:
    """Keyword arguments for ``cls``: flags given, else the field's default; ``fixed`` values win."""
    out = {}
    for f in cli_fields(cls, mode):
        if hasattr(namespace, f.name):
            value = getattr(namespace, f.name)
            out[f.name] = bool(value) if isinstance(_default(f), bool) else value
    out.update(fixed)
    return out


def int_list(text: str) -> tuple[int, ...]:
    """``"-2,-1"`` -> (-2, -1); the empty string -> ()."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip() != "")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def zero_or_one(text: str) -> bool:
    """The published 0/1 switches (``--mask_padding 0``)."""
    if text not in ("0", "1"):
        raise argparse.ArgumentTypeError(f"expected 0 or 1, got {text!r}")
    return text == "1"


class OneLineErrors(argparse.ArgumentParser):
    """Abbreviated flags are refused (``--epoch`` is not ``--epochs``), and a bad command line is one ``error:``
    line and exit status 2, like every other error the user fixes (argparse would print its whole usage first)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} ({self.prog} --help lists the flags)\n")


def new_parser(prog: str, description: str) -> argparse.ArgumentParser:
    return OneLineErrors(prog=prog, description=description, allow_abbrev=False)


@dataclass
class Parsed:
    """A parsed command line: the namespace (given flags only) and the names of the fields given explicitly."""
    namespace: argparse.Namespace
    explicit: frozenset = frozenset()


def parse(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> Parsed:
    namespace = parser.parse_args(argv)
    return Parsed(namespace, frozenset(vars(namespace)))
