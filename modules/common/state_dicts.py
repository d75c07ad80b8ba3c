"""Strict comparison of state dicts, with one error that lists what differs."""
from __future__ import annotations

from modules.common.errors import CheckpointError


def check_compatible(expected: dict, given: dict, source: str, what: str = "this model", hint: str = "") -> None:
    """Raise ``CheckpointError`` unless ``given`` has exactly ``expected``'s keys with the same shapes.

    Args:
        expected: state dict (or key -> tensor-like with ``.shape``) of the model to load into.
        given: the loaded state dict.
        source: file or description named in the message.
        what: how to call the target in the message.
        hint: appended to the message (which flags to check, for instance).
    """
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong = sorted(k for k in set(expected) & set(given) if tuple(expected[k].shape) != tuple(given[k].shape))
    if missing or unexpected or wrong:
        parts = [f"{name} {len(keys)} (e.g. {', '.join(keys[:3])})"
                 for name, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise CheckpointError(f"{source}: does not match {what}: " + "; ".join(parts) + (f" — {hint}" if hint else ""))
