"""Train UCoFiA: ``python -m train.main --do_train ...`` or ``torchrun --nproc_per_node N -m train.main ...``.

Flags are the published ones (``python -m train.main --help``); ``train/scripts/`` holds each dataset's recipe.
"""
import sys

from modules.training.run import train_main


def main(argv=None) -> int:
    return train_main(argv)


if __name__ == "__main__":
    sys.exit(main())
