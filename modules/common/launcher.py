"""torchrun for the shell scripts: ``python -m modules.common.launcher --nproc_per_node N ... -m train.main ...``.

The same launcher as ``python -m torch.distributed.run`` (same flags, same worker environment), with one difference:
when a worker fails, its own output is the whole report. A worker that stops on a user error prints one ``error:``
line and exits with status 2; plain torchrun then adds its ``ChildFailedError`` traceback (about 30 lines) and exits
with status 1. Here the launcher adds nothing and exits with the first failed worker's status (2 for an error, 130 /
143 for a stop by SIGINT / SIGTERM). A worker killed by a signal, which printed nothing, gets one line naming it.
"""
from __future__ import annotations

import logging
import signal
import sys


def _quiet_launcher_logs() -> None:
    """torchrun's agent logs each worker's exit status and the SIGTERM it sends the others after the first failure:
    lines that would come after the worker's own message. Its loggers set their levels explicitly, one by one."""
    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def exit_status(exitcode: int) -> int:
    """A worker's exit status as a shell reports it: a negative one is the signal that ended it (128 + signal)."""
    return 128 - exitcode if exitcode < 0 else exitcode


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(sys.argv[1:] if argv is None else argv)
    _quiet_launcher_logs()
    try:
        run(args)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        if failure.exitcode < 0:
            name = signal.Signals(-failure.exitcode).name if -failure.exitcode in signal.valid_signals() else \
                f"signal {-failure.exitcode}"
            print(f"error: rank {rank} was ended by {name}", file=sys.stderr, flush=True)
        return exit_status(failure.exitcode)
    except SignalException as e:  # SIGINT / SIGTERM to the launcher: passed on to the workers, which stopped
        return 128 + int(e.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
