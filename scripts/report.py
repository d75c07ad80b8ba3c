"""An evaluation as one self-contained HTML page: where the numbers come from and where the model fails.

    python scripts/report.py RUN_DIR [--out RUN_DIR/report.html]

RUN_DIR is the ``--output_dir`` of ``eval_t2v`` / ``eval_v2t``. The page shows, for each direction found:
  - the summary table (raw, SK-norm, DSL, each level raw and with SK-norm) from ``results_<d>.json``;
and, where the evaluation ran with ``--save_sims``:
  - R@K curves, raw vs SK-norm and per level (pictures);
  - hubness: how often each video (caption set) is in a query's top 5, raw vs SK-norm;
  - every query: its caption (or video), the rank of the correct item raw and with SK-norm, and the top 5 with
    thumbnails (a strip of frames, each video decoded once) and each level's score; filter by "SK-norm helped / hurt
    / wrong at rank 1", sort, search.
Everything, thumbnails included, is inside the one file: it opens from disk with no server and no network.
"""
from __future__ import annotations

import argparse
import base64
import datetime
import html
import json
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import numpy as np

os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # see scripts/retrieve.py: a bad file is reported once
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402

from modules.common.errors import DataError  # noqa: E402
from modules.common.io import atomic_write  # noqa: E402
from modules.common.runtime import run_entry, setup_logging  # noqa: E402
from modules.data import DataConfig, load_video_raw  # noqa: E402
from modules.data.annotations import read_json  # noqa: E402
from modules.evaluation.analysis import (  # noqa: E402
    SavedAnalysis,
    analyse,
    hubness_stats,
    k_occurrence,
    load_saved,
    recall_curve,
    top_k,
)
from modules.evaluation.config import DIRECTION_NAMES as NAMES  # noqa: E402
from scripts.plotlib import PALETTE, Series, line_chart, png_bytes  # noqa: E402
from scripts.summarize_results import check_results  # noqa: E402

logger = logging.getLogger("ucofia")
TOP, HUB_K = 5, 5
THUMB_FRAMES, THUMB_SIDE = 4, 64
CHART_W, CHART_H = 600, 340
TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "report_template.html")
ROWS = (("raw", "raw (mean of the levels)"), ("sk_norm", "SK-norm (paper protocol)"),
        ("dsl", "DSL* (test-query statistics)"))


def metrics_table(res: dict) -> str:
    """The summary table of one results file."""
    cells = {"R1": "R@1", "R5": "R@5", "R10": "R@10", "MdR": "MdR", "MnR": "MnR"}
    head = "<tr><th></th>" + "".join(f"<th>{label}</th>" for label in cells.values()) + "</tr>"
    rows = [(label, res["metrics"][key], "") for key, label in ROWS]
    for level, kinds in res["levels"].items():
        rows += [(f"{level}, {'raw' if kind == 'raw' else 'SK-norm'}", m, "level") for kind, m in kinds.items()]
    body = "".join(f"<tr class='{cls}'><td>{html.escape(label)}</td>" +
                   "".join(f"<td>{m[c]:.1f}</td>" for c in cells) + "</tr>" for label, m, cls in rows)
    return f"<table class='metrics'>{head}{body}</table>"


def img_tag(picture: np.ndarray, alt: str) -> str:
    data = base64.b64encode(png_bytes(picture)).decode("ascii")
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def recall_charts(a: SavedAnalysis) -> list[np.ndarray]:
    """R@K curves: overall raw vs SK-norm, and each level raw (solid) and SK-norm (dashed)."""
    n, run = a.n_gallery, a.run
    k = np.arange(1, n + 1)
    log_x = n > 20
    what = NAMES[run.direction]
    overall = [Series(name, k, recall_curve(a.ranks[kind], n), PALETTE[i])
               for i, (kind, name) in enumerate((("raw", "raw"), ("sk_norm", "SK-norm")))]
    charts = [line_chart(overall, f"{what}: R@K, mean of the levels", "K", "R@K (%)", CHART_W, CHART_H,
                         x_range=(1, n), y_range=(0, 100), log_x=log_x, x_integer=True)]
    per_level = []
    for i, (name, by_kind) in enumerate(a.level_ranks.items()):
        for kind, ranks in by_kind.items():
            per_level.append(Series(f"{name} {'raw' if kind == 'raw' else 'SK'}", k, recall_curve(ranks, n),
                                    PALETTE[(i + 2) % len(PALETTE)], dashed=kind != "raw"))
    charts.append(line_chart(per_level, f"{what}: R@K per level (dashed: SK-norm)", "K", "R@K (%)", CHART_W,
                             CHART_H, x_range=(1, n), y_range=(0, 100), log_x=log_x, x_integer=True))
    return charts


def hubness_section(a: SavedAnalysis) -> str:
    item, items = ("video", "videos") if a.run.direction == "t2v" else ("caption set", "caption sets (one per video)")
    counts = {kind: k_occurrence(a.scores[kind], HUB_K) for kind in ("raw", "sk_norm")}
    stats = {kind: hubness_stats(c, HUB_K) for kind, c in counts.items()}
    x = np.arange(1, a.n_gallery + 1)
    series = [Series(label, x, np.sort(counts[kind].numpy())[::-1], PALETTE[i])
              for i, (kind, label) in enumerate((("raw", "raw"), ("sk_norm", "SK-norm")))]
    chart = line_chart(series, f"{NAMES[a.run.direction]}: top-{HUB_K} lists each {item} is in, most retrieved first",
                       f"{items}, sorted", f"top-{HUB_K} lists", CHART_W, CHART_H, x_range=(1, a.n_gallery),
                       x_integer=True, y_from_zero=True)
    rows = "".join(f"<tr><td>{label}</td><td>{s['skewness']:.2f}</td><td>{s['max']}</td><td>{s['never']}</td>"
                   f"<td>{s['top5pct_share']:.1f}</td></tr>"
                   for label, s in (("raw", stats["raw"]), ("SK-norm", stats["sk_norm"])))
    table = (f"<table class='metrics'><tr><th></th><th>skewness of N{HUB_K}</th><th>most retrieved: lists</th>"
             f"<th>{item}s in no list</th><th>% of slots taken by the most retrieved 5%</th></tr>{rows}</table>")
    note = (f"<p class='note'>A hub is a {item} that many queries retrieve whatever they ask for; it pushes the "
            f"correct {item} down. SK-norm exists to correct this: its bias lowers the {item}s that a bank of training "
            f"queries scores highly. Lower skewness, a lower maximum and fewer {item}s in no list mean less hubness."
            "</p>")
    return f"<div class='charts'>{img_tag(chart, 'hubness')}</div>{table}{note}"


def query_rows(a: SavedAnalysis) -> list[dict]:
    """Per query: text, ranks, correct items, and the top 5 by raw and by SK-norm score with each level's score."""
    run, items = a.run, a.run.items
    tops = {kind: top_k(a.scores[kind], TOP) for kind in ("raw", "sk_norm")}
    rows = []
    for q in range(a.scores["raw"].shape[0]):
        if run.direction == "t2v":
            text, gt, video = items["captions"][q], [int(a.caption_to_video[q])], None
        else:
            text, gt, video = items["video_ids"][q], [q], q

        def entry(g: int, q: int = q) -> list:
            levels = a.level_scores(q, g)
            caption = a.best_caption(q, g) if run.direction == "v2t" else None
            return [g, round(float(a.scores["raw"][q, g]), 4), round(float(a.scores["sk_norm"][q, g]), 4),
                    [round(v, 4) for v in levels.values()], caption]

        rows.append({"i": q, "text": text, "video": video, "gt": gt, "r_raw": int(a.ranks["raw"][q]),
                     "r_sk": int(a.ranks["sk_norm"][q]), "top_raw": [entry(int(g)) for g in tops["raw"][q]],
                     "top_sk": [entry(int(g)) for g in tops["sk_norm"][q]]})
    return rows


def thumbnail(path: str, window, framerate: float) -> Optional[str]:
    """A strip of THUMB_FRAMES uniformly sampled frames (the centre crop the model sees) as a JPEG data URI."""
    cfg = DataConfig(max_frames=THUMB_FRAMES, feature_framerate=framerate, slice_framepos=2)
    try:
        frames, _ = load_video_raw(path, cfg, *(window or (None, None)), resolution=THUMB_SIDE)  # [n, S, S, 3]
    except DataError as e:
        logger.warning("no thumbnail for %s: %s", path, e)
        return None
    strip = np.concatenate(list(frames), axis=1)                                           # [S, n S, 3] RGB
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(strip, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode("ascii") if ok else None


def thumbnails(videos: dict[str, tuple[str, object]], framerate: float, workers: int) -> dict[str, str]:
    """Video id -> strip for each (path, window) in ``videos``, each decoded once (threads: OpenCV decodes without
    the GIL)."""
    ids = sorted(videos)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        strips = pool.map(lambda v: thumbnail(videos[v][0], videos[v][1], framerate), ids)
        return {v: s for v, s in zip(ids, strips) if s is not None}


def header(run_dir: str, results: dict[str, dict]) -> list[str]:
    """The title, what was evaluated, and the summary tables."""
    first = next(iter(results.values()))
    meta = [os.path.abspath(run_dir), f"{first['datatype']} {first.get('split', 'test')}",
            f"model {first.get('model', 'UCoFiA')}", f"checkpoint {first.get('checkpoint')}",
            f"test split sha256 {str((first.get('data_version') or {}).get('sha256', '?'))[:12]}",
            f"made {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}"]
    out = [f"<header><h1>Evaluation report: {html.escape(os.path.basename(os.path.abspath(run_dir)))}</h1>"
           f"<div class='meta'>{html.escape(' · '.join(meta))}</div></header>", "<section><h2>Summary</h2>"]
    for d, res in results.items():
        out.append(f"<h3>{NAMES[d]}: {res['num_texts']} captions x {res['num_videos']} videos, chance R@1 "
                   f"{100 / res['num_videos']:.1f}; SK bank {res['sk_bank']['size']} "
                   f"({html.escape(res['sk_bank']['source'])})</h3>{metrics_table(res)}")
    out.append("<p class='note'>Recalls in percent, ranks 1-based. SK-norm adds to each level a bias learnt by "
               "Sinkhorn-Knopp on a bank of training queries; DSL* normalises over the test queries themselves "
               "(test-set statistics, not comparable).</p></section>")
    return out


def direction_section(a: SavedAnalysis) -> str:
    """Agreement with the results file, R@K curves and hubness of one direction."""
    problems = a.check()
    check = (f"<p class='warn'>The saved matrices do not give the results file's numbers: "
             f"{html.escape('; '.join(problems))}</p>" if problems else
             "<p class='ok'>The saved matrices give exactly the results file's metrics (raw and SK-norm, overall and "
             "per level).</p>")
    charts = "".join(img_tag(c, "R@K") for c in recall_charts(a))
    return (f"<section><h2>{NAMES[a.run.direction]}</h2>{check}<h3>Recall at K</h3><div class='charts'>{charts}"
            f"</div><h3>Hubness</h3>{hubness_section(a)}</section>")


def check_report_results(res, path: str) -> dict:
    """What summarize_results.py checks, and the SK bank the summary names."""
    check_results(res, path)
    bank = res.get("sk_bank")
    if not (isinstance(bank, dict) and isinstance(bank.get("size"), int) and isinstance(bank.get("source"), str)):
        raise DataError(f"{path}: not a results file of eval_t2v / eval_v2t (no 'sk_bank')")
    return res


def build(run_dir: str, workers: int = 2) -> str:
    """The page's HTML."""
    results = {}
    for d in NAMES:
        path = os.path.join(run_dir, f"results_{d}.json")
        if os.path.exists(path):
            results[d] = check_report_results(read_json(path), path)
    if not results:
        raise DataError(f"{run_dir}: no results_t2v.json or results_v2t.json (is it the --output_dir of an eval?)")
    body = header(run_dir, results)
    analyses = {d: analyse(run) for d in results if (run := load_saved(run_dir, d)) is not None}
    missing = [NAMES[d] for d in results if d not in analyses]
    if missing:
        body.append(f"<section><p class='note'>No similarity matrices for {', '.join(missing)}: run that evaluation "
                    "with --save_sims for curves, hubness and per-query results.</p></section>")
    directions, shown, framerate = [], {}, 1.0
    for d, a in analyses.items():
        body.append(direction_section(a))
        rows = query_rows(a)
        items = a.run.items
        for r in rows:   # every video a card or a query shows
            for v in r["gt"] + [e[0] for e in r["top_raw"] + r["top_sk"]] + [r["video"]] * (r["video"] is not None):
                shown[items["video_ids"][v]] = (items["video_paths"][v], items["windows"][v])
        names = list(a.run.levels)
        directions.append({"key": d, "name": NAMES[d], "levels": names, "videos": items["video_ids"],
                           "level_short": ["".join(w[0] for w in n.split("_")) for n in names],
                           "gallery_kind": "video" if d == "t2v" else "caption set",
                           "captions": items["captions"] if d == "v2t" else [], "queries": rows})
        framerate = a.run.config.get("data", {}).get("feature_framerate", framerate)
    if directions:
        level_key = " · ".join(f"{s} = {n}" for s, n in zip(directions[0]["level_short"], directions[0]["levels"]))
        body.append("<section><h2>Queries</h2><p class='note'>Each card: a top-5 item with its thumbnail (frames the "
                    f"model sees, centre crop), its overall raw and SK-norm scores and each level's raw logit "
                    f"({html.escape(level_key)}); the correct item has a green frame.</p><div id='queries'></div>"
                    "</section>")
    data = {"directions": directions, "thumbs": thumbnails(shown, framerate, workers)}
    with open(TEMPLATE, encoding="utf-8") as f:
        page = f.read()
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")   # never closes the script element
    return (page.replace("__TITLE__", html.escape(f"UCoFiA evaluation report: {os.path.basename(run_dir)}"))
            .replace("__BODY__", "\n".join(body)).replace("__DATA__", payload))


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/report.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="the --output_dir of eval_t2v / eval_v2t (with --save_sims for the details)")
    parser.add_argument("--out", default=None, help="HTML file to write (default: RUN_DIR/report.html)")
    parser.add_argument("--workers", type=int, default=2, help="threads decoding thumbnails")
    args = parser.parse_args(argv)

    def run() -> int:
        setup_logging(0)
        out = args.out or os.path.join(args.run_dir, "report.html")
        text = build(args.run_dir, args.workers)
        atomic_write(out, lambda f: f.write(text.encode("utf-8")))
        print(f"report: {out} ({len(text) / 1e6:.1f} MB)", flush=True)
        return 0

    return run_entry(run)


if __name__ == "__main__":
    sys.exit(main())
