"""Print raw and SK-norm results of both directions side by side from ``results_t2v.json`` / ``results_v2t.json``.

    python scripts/summarize_results.py OUTPUT_DIR [OUTPUT_DIR ...]

Each folder is searched for the two results files that ``eval_t2v`` and ``eval_v2t`` write. A file that is not
such a results file (truncated, not JSON, missing fields) is named in a one-line error.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any

from modules.common.errors import ConfigError, DataError
from modules.common.runtime import run_entry
from modules.data.annotations import read_json
from modules.evaluation.config import DIRECTION_NAMES as NAMES

ROWS = (("raw", "raw"), ("sk_norm", "SK-norm"), ("dsl", "DSL*"))
METRICS = ("R1", "R5", "R10", "MdR", "MnR")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_results(res: Any, path: str) -> dict:
    """``res`` if it has what the table prints, else DataError naming the file and the first thing missing."""
    problem = None
    if not isinstance(res, dict):
        problem = f"a {type(res).__name__}, not an object"
    elif res.get("direction") not in NAMES:
        problem = f"'direction' is {res.get('direction')!r}, not t2v or v2t"
    elif not isinstance(res.get("datatype"), str):
        problem = "no 'datatype'"
    elif not all(isinstance(res.get(k), int) and res[k] > 0 for k in ("num_texts", "num_videos")):
        problem = "'num_texts' and 'num_videos' are not positive counts"
    elif not isinstance(res.get("metrics"), dict):
        problem = "no 'metrics'"
    else:
        for key, _ in ROWS:
            row = res["metrics"].get(key)
            if not isinstance(row, dict) or not all(_number(row.get(m)) for m in METRICS):
                problem = f"'metrics.{key}' lacks one of {', '.join(METRICS)}"
                break
    if problem:
        raise DataError(f"{path}: not a results file of eval_t2v / eval_v2t ({problem})")
    return res


def load(folders: list[str]) -> list[dict]:
    found = []
    for folder in folders:
        if not os.path.isdir(folder):
            raise ConfigError(f"{folder}: not a folder (give the --output_dir of an evaluation)")
        for direction in ("t2v", "v2t"):
            path = os.path.join(folder, f"results_{direction}.json")
            if os.path.exists(path):
                found.append(check_results(read_json(path), path))
    return found


def table(results: list[dict]) -> str:
    lines = [f"{'':28s}{'R@1':>7s}{'R@5':>7s}{'R@10':>7s}{'MdR':>7s}{'MnR':>8s}"]
    for res in results:
        chance = 100.0 / res["num_videos"]  # both directions rank among num_videos items (videos or caption sets)
        lines.append(f"{NAMES[res['direction']]} ({res['num_texts']} captions x {res['num_videos']} videos, "
                     f"chance R@1 {chance:.1f})")
        for key, label in ROWS:
            m = res["metrics"][key]
            lines.append(f"  {label:26s}{m['R1']:7.1f}{m['R5']:7.1f}{m['R10']:7.1f}{m['MdR']:7.1f}{m['MnR']:8.1f}")
    lines.append("* DSL normalises over the test queries, i.e. uses test-set statistics; SK-norm uses a training bank.")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+")
    args = parser.parse_args(argv)

    def run() -> int:
        results = load(args.folders)
        if not results:
            raise DataError(f"no results_t2v.json or results_v2t.json in {', '.join(args.folders)}")
        print(table(results))
        return 0

    return run_entry(run)


if __name__ == "__main__":
    sys.exit(main())
