"""Write the synthetic video-text set in the MSR-VTT layout.

    python scripts/make_synthetic.py --out data_synth --train 200 --test 50 --seed 0

then train/evaluate with ``--datatype msrvtt --train_csv DIR/train.csv --val_csv DIR/test.csv
--data_path DIR/data.json --features_path DIR/videos``.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time

from modules.data.synthetic import generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--train", type=int, default=200, help="number of training videos")
    parser.add_argument("--test", type=int, default=50, help="number of test videos")
    parser.add_argument("--seed", type=int, default=0, help="the same seed writes the same set")
    args = parser.parse_args(argv)
    if args.train < 1 or args.test < 1:
        parser.error("--train and --test must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.time()
    generate(args.out, args.train, args.test, args.seed)
    logging.info("done in %.1f s: %s/{train.csv,test.csv,data.json,videos/}", time.time() - start, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
