"""Errors that are the user's to fix: entry points print their message on one line and exit with status 2.

Everything else (a bug) keeps its traceback.
"""


class UCoFiAError(Exception):
    """Base class: a problem with the input, the configuration or a file, explained in the message."""


class ConfigError(UCoFiAError):
    """A flag or combination of flags that cannot work."""


class DataError(UCoFiAError):
    """An annotation file or video that is missing, malformed or undecodable; the message names the file."""


class CheckpointError(UCoFiAError):
    """A weights or checkpoint file that is missing, truncated, unsafe or of another architecture."""
