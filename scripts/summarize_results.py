"""Print raw and SK-norm results of both directions side by side from ``results_t2v.json`` / ``results_v2t.json``.

    python scripts/summarize_results.py OUTPUT_DIR [OUTPUT_DIR ...]

Each folder is searched for the two results files that ``eval_t2v`` and ``eval_v2t`` write.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

ROWS = (("raw", "raw"), ("sk_norm", "SK-norm"), ("dsl", "DSL*"))
NAMES = {"t2v": "text-to-video", "v2t": "video-to-text"}


def load(folders: list[str]) -> list[dict]:
    found = []
    for folder in folders:
        for direction in ("t2v", "v2t"):
            path = os.path.join(folder, f"results_{direction}.json")
            if os.path.isfile(path):
                with open(path) as f:
                    found.append(json.load(f))
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
    results = load(args.folders)
    if not results:
        print(f"error: no results_t2v.json or results_v2t.json in {', '.join(args.folders)}", file=sys.stderr)
        return 2
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
