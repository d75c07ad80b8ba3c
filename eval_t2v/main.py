"""Evaluate a checkpoint on text-to-video retrieval: ``python -m eval_t2v.main --init_model CKPT ...``.

Prints raw, SK-norm (the paper's protocol) and DSL results side by side and writes ``<output_dir>/results_t2v.json``.
Runs under ``torchrun`` too; ``eval_t2v/scripts/`` holds each dataset's settings.
"""
import sys

from modules.evaluation.protocol import eval_main


def main(argv=None) -> int:
    return eval_main(argv, "t2v")


if __name__ == "__main__":
    sys.exit(main())
