"""scripts/report.py on a short evaluation (checked against the saved matrices and in headless Chromium where it is
installed), the analysis behind it, and scripts/plot_training.py."""
import base64
import json
import os
import re
import shutil
import subprocess

import cv2
import numpy as np
import pytest
import torch
from helpers import data_flags

from eval_t2v.main import main as eval_t2v
from eval_v2t.main import main as eval_v2t
from modules.evaluation.analysis import hubness_stats, k_occurrence, query_gallery, recall_curve
from scripts.plot_training import lr_series
from scripts.plot_training import main as plot_training
from scripts.report import main as report

EVAL = ["--max_words", "16", "--max_frames", "4", "--batch_size_val", "16", "--num_thread_reader", "0",
        "--device", "cpu", "--sk_bank_size", "8", "--save_sims"]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def evaluated(synthetic_set, trained_run, tmp_path_factory) -> str:
    """Both evaluations of the trained run's checkpoint, with --save_sims, in one folder (as the demo does)."""
    out = str(tmp_path_factory.mktemp("evaluated"))
    flags = data_flags(synthetic_set) + EVAL + ["--init_model", os.path.join(trained_run, "checkpoints", "last.pth"),
                                                "--output_dir", out]
    assert eval_t2v(flags) == 0 and eval_v2t(flags) == 0
    return out


@pytest.fixture(scope="module")
def page(evaluated) -> tuple[str, str]:
    path = os.path.join(evaluated, "report.html")
    assert report([evaluated, "--out", path, "--workers", "1"]) == 0
    with open(path, encoding="utf-8") as f:
        return path, f.read()


def _data(text: str) -> dict:
    payload = re.search(r'<script id="report-data" type="application/json">(.*?)</script>', text, re.S).group(1)
    return json.loads(payload)


def _ranks(sim: np.ndarray, target: np.ndarray) -> np.ndarray:
    """0-based rank of each row's correct column, ties counted against it (brute force)."""
    return np.array([int((row >= row[t]).sum()) - 1 for row, t in zip(sim, target)])


def test_report_content_matches_the_saved_matrices(evaluated, page):
    _, text = page
    data = _data(text)
    assert [d["key"] for d in data["directions"]] == ["t2v", "v2t"]
    assert "The saved matrices give exactly the results file's metrics" in text and "class='warn'" not in text
    for d in data["directions"]:
        with open(os.path.join(evaluated, f"results_{d['key']}.json")) as f:
            res = json.load(f)
        assert f"<td>{res['metrics']['sk_norm']['R1']:.1f}</td>" in text
        raw = sum(np.load(os.path.join(evaluated, f"sims_{d['key']}_test_{k}.npy")) for k in res["levels"]) / 3
        queries = d["queries"]
        assert len(queries) == 12 and d["levels"] == list(res["levels"])
        # one caption per video: both directions rank the 12 x 12 raw matrix, one of them transposed
        sim = raw if d["key"] == "t2v" else raw.T
        assert [q["r_raw"] for q in queries] == _ranks(sim, np.arange(12)).tolist()
        for q in queries:
            assert q["top_raw"][0][0] == int(np.argmax(sim[q["i"]]))
            assert q["top_raw"][0][1] == pytest.approx(float(sim[q["i"]].max()), abs=1e-3)
            assert len(q["top_sk"]) == 5 and all(len(e[3]) == 3 for e in q["top_sk"])
        helped = sum(q["r_sk"] < q["r_raw"] for q in queries)
        assert "SK-norm helped" in text and 0 <= helped <= 12
    assert len(data["thumbs"]) == 12                      # every test video appears somewhere: each decoded once
    for uri in data["thumbs"].values():
        jpeg = base64.b64decode(uri.split(",", 1)[1])
        assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (64, 256, 3)
    # offline: nothing is fetched from anywhere
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text)
    assert len(re.findall(r"<img alt='(R@K|hubness)' src='data:image/png;base64,", text)) == 6


def test_report_without_matrices_and_of_no_evaluation(evaluated, tmp_path, capsys):
    only = tmp_path / "results_only"
    only.mkdir()
    shutil.copy(os.path.join(evaluated, "results_t2v.json"), only)
    assert report([str(only)]) == 0
    text = (only / "report.html").read_text()
    assert "No similarity matrices for text-to-video" in text and "<h3>text-to-video" in text
    capsys.readouterr()
    assert report([str(tmp_path / "nothing")]) == 2
    assert "no results_t2v.json or results_v2t.json" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed")
def test_report_loads_in_headless_chromium(page, tmp_path):
    path, _ = page
    url = "file://" + os.path.abspath(path)

    def chromium(*args: str) -> subprocess.CompletedProcess:
        profile = tmp_path / f"profile{len(list(tmp_path.iterdir()))}"
        return subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr",
                               "--v=0", *args], capture_output=True, text=True, timeout=120)

    shot = tmp_path / "report.png"
    run = chromium(f"--screenshot={shot}", "--window-size=1280,2400", url)
    assert shot.is_file(), run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console                                               # no error, no message at all
    img = cv2.imread(str(shot))
    assert img.shape[:2] == (2400, 1280) and float(img.std()) > 20           # a page was drawn, not a blank
    dom = chromium("--dump-dom", url + "#v2t").stdout                         # the DOM after the scripts ran
    assert dom.count('class="query"') == 12 and "video-to-text" in dom and "correct caption set at rank" in dom


def test_analysis_functions_against_brute_force():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(7, 9, generator=g)
    counts = k_occurrence(scores, 3)
    brute = np.zeros(9, dtype=int)
    for row in scores.numpy():
        for j in np.argsort(-row, kind="stable")[:3]:
            brute[j] += 1
    assert counts.tolist() == brute.tolist() and int(counts.sum()) == 21
    stats = hubness_stats(counts, 3)
    x = brute.astype(float)
    assert stats["skewness"] == pytest.approx(((x - x.mean()) ** 3).mean() / x.std() ** 3)
    assert stats["max"] == brute.max() and stats["never"] == int((brute == 0).sum())
    curve = recall_curve(torch.tensor([0, 0, 2, 5]), 6)
    assert curve.tolist() == [50.0, 50.0, 75.0, 75.0, 75.0, 100.0]
    # video-to-text with several captions per video: a caption set is scored by its best caption
    sim = torch.tensor([[1.0, 0.0], [3.0, 0.5], [0.2, 2.0]])                  # 3 captions x 2 videos
    c2v = torch.tensor([0, 0, 1])
    torch.testing.assert_close(query_gallery(sim, c2v, "v2t"), torch.tensor([[3.0, 0.2], [0.5, 2.0]]))  # [video, set]
    assert query_gallery(sim, c2v, "t2v") is sim


def test_training_plot(trained_run, tmp_path, capsys):
    out = str(tmp_path / "curves.png")
    assert plot_training([trained_run, "--out", out]) == 0
    assert out in capsys.readouterr().out
    img = cv2.imread(out)
    assert img is not None and img.shape[1] == 760 and img.shape[0] > 900 and float(img.std()) > 10
    assert plot_training([str(tmp_path)]) == 2
    assert "no train_steps.jsonl" in capsys.readouterr().err


def test_learning_rate_curves_are_grouped_and_named():
    steps = [{"step": s, "lr": [1e-7 * s, 1e-7 * s, 1e-4 * s, 1e-4 * s]} for s in range(1, 4)]
    series = lr_series(steps, coef_lr=1e-3)
    assert [s.label for s in series] == ["CLIP backbone (lr x coef_lr)", "new modules (lr)"]
    assert list(series[1].y) == pytest.approx([1e-4, 2e-4, 3e-4])
    assert [s.label for s in lr_series([{"step": 1, "lr": [0.1, 0.1]}], coef_lr=1.0)] == ["all parameters"]
