"""Evaluate a checkpoint on video-to-text retrieval: ``python -m eval_v2t.main --init_model CKPT ...``.

Prints raw, SK-norm (the paper's protocol) and DSL results side by side and writes ``<output_dir>/results_v2t.json``.
Runs under ``torchrun`` too; ``eval_v2t/scripts/`` holds each dataset's settings.
"""
import sys

from modules.evaluation.protocol import eval_main


def main(argv=None) -> int:
    return eval_main(argv, "v2t")


if __name__ == "__main__":
    sys.exit(main())
