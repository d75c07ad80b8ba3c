"""Training curves of a run as one PNG: loss per step, learning rates per step, validation R@1 per epoch.

    python scripts/plot_training.py RUN_DIR [--out RUN_DIR/training.png]

Reads ``train_steps.jsonl`` (every optimiser step's global loss and learning rates) and ``history.json`` (per epoch:
mean training loss and validation metrics of both directions, with the split they were measured on), both written by
``train.main``; ``config.json`` names the learning-rate groups. Drawn with OpenCV.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

import numpy as np

from modules.common.errors import DataError  # noqa: E402
from modules.common.io import atomic_write  # noqa: E402
from modules.common.runtime import run_entry  # noqa: E402
from modules.data.annotations import read_json  # noqa: E402
from modules.evaluation.config import DIRECTION_NAMES  # noqa: E402
from scripts.plotlib import PALETTE, Series, line_chart, png_bytes, stack  # noqa: E402

WIDTH, HEIGHT = 760, 330


def read_steps(path: str) -> list[dict]:
    """Lines of ``train_steps.jsonl``; a line cut by a kill (the last one) is ignored."""
    steps = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                entry = json.loads(raw.decode("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                break
            if not isinstance(entry, dict) or not isinstance(entry.get("step"), int):
                raise DataError(f"{path}: line {number} is not a training step record")
            steps.append(entry)
    return steps


def _read_object(path: str, key: str | None = None) -> dict:
    """A JSON object (one-line DataError otherwise); with ``key``, its value must be a list."""
    obj = read_json(path)
    if not isinstance(obj, dict) or (key is not None and not isinstance(obj.get(key, []), list)):
        expected = f"an object with a list {key!r}" if key else "an object"
        raise DataError(f"{path}: not the file train.main writes (expected {expected})")
    return obj


def lr_series(steps: list[dict], coef_lr: Optional[float]) -> list[Series]:
    """One series per distinct learning-rate curve (parameter groups that share a schedule are drawn once); with two
    curves and ``coef_lr`` < 1 the lower one is the CLIP backbone's (its lr is lr x coef_lr)."""
    x = [s["step"] for s in steps]
    columns = np.asarray([s["lr"] for s in steps], dtype=np.float64)             # [steps, groups]
    distinct = []
    for column in columns.T:
        if not any(np.allclose(column, d, rtol=1e-9, atol=0) for d in distinct):
            distinct.append(column)
    distinct.sort(key=lambda c: float(c.max()))
    if len(distinct) == 1:
        names = ["all parameters"]
    elif len(distinct) == 2 and coef_lr is not None and coef_lr < 1:
        names = ["CLIP backbone (lr x coef_lr)", "new modules (lr)"]
    else:
        names = [f"group {i + 1}" for i in range(len(distinct))]
    return [Series(name, x, list(col), PALETTE[i % len(PALETTE)]) for i, (name, col) in enumerate(zip(names, distinct))]


def render(run_dir: str) -> np.ndarray:
    """The three charts stacked, BGR."""
    steps_path, history_path = os.path.join(run_dir, "train_steps.jsonl"), os.path.join(run_dir, "history.json")
    if not os.path.isfile(steps_path):
        raise DataError(f"{run_dir}: no train_steps.jsonl (is it the --output_dir of train.main?)")
    steps = read_steps(steps_path)
    if not steps:
        raise DataError(f"{steps_path}: no steps recorded yet")
    history = []
    if os.path.exists(history_path):
        history = [h for h in _read_object(history_path, "history").get("history", []) if isinstance(h, dict)]
    config = {}
    if os.path.exists(os.path.join(run_dir, "config.json")):
        config = _read_object(os.path.join(run_dir, "config.json"))
    coef_lr = (config.get("optim") or {}).get("coef_lr")
    name = os.path.basename(os.path.abspath(run_dir))

    x = [s["step"] for s in steps]
    loss = [s["loss"] if s.get("loss") is not None else float("nan") for s in steps]   # None: a skipped step
    per_epoch = {}
    for s in steps:
        per_epoch.setdefault(s["epoch"], s["step"])
    series = [Series("loss per step", x, loss, PALETTE[0], thickness=1)]
    if history:  # the epoch's mean loss, placed at the epoch's last step
        ends = [max(s["step"] for s in steps if s["epoch"] == h["epoch"]) for h in history
                if any(s["epoch"] == h["epoch"] for s in steps)]
        series.append(Series("epoch mean", ends, [h["train_loss"] for h in history][:len(ends)], PALETTE[1],
                             markers=True))
    charts = [line_chart(series, f"{name}: training loss (global batch, symmetric InfoNCE)", "optimiser step",
                         "loss", WIDTH, HEIGHT)]
    charts.append(line_chart(lr_series(steps, coef_lr), "learning rates (published warm-up then cosine schedule)",
                             "optimiser step", "learning rate", WIDTH, HEIGHT, y_from_zero=True))
    if history:
        epochs = [h["epoch"] for h in history]
        split = history[-1].get("split", "val")
        curves = [Series(f"{label} R@1", epochs, [h["metrics"][d]["R1"] for h in history], PALETTE[i], markers=True)
                  for i, (d, label) in enumerate(DIRECTION_NAMES.items())]
        best = max(history, key=lambda h: h["metrics"]["t2v"]["R1"])
        title = f"validation R@1 per epoch on {split}; best text-to-video R@1: epoch {best['epoch']}"
        x_range = (min(epochs) - 0.5, max(epochs) + 0.5) if len(epochs) > 1 else (epochs[0] - 1, epochs[0] + 1)
        charts.append(line_chart(curves, title, "epoch", "R@1 (%)", WIDTH, HEIGHT, x_range=x_range, x_integer=True))
    return stack(charts, columns=1)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/plot_training.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="the --output_dir of a training run")
    parser.add_argument("--out", default=None, help="PNG to write (default: RUN_DIR/training.png)")
    args = parser.parse_args(argv)

    def run() -> int:
        out = args.out or os.path.join(args.run_dir, "training.png")
        img = render(args.run_dir)
        data = png_bytes(img)
        atomic_write(out, lambda f: f.write(data))
        print(f"training curves: {out} ({img.shape[1]}x{img.shape[0]})", flush=True)
        return 0

    return run_entry(run)


if __name__ == "__main__":
    sys.exit(main())
