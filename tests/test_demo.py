"""The embedded default (scripts/demo.sh) end to end, at a reduced size."""
import json
import os
import subprocess

import pytest
from helpers import ROOT


@pytest.mark.slow
def test_demo_runs_and_prints_the_table(tmp_path):
    out = tmp_path / "my demo"  # a space in DEMO_DIR: every path is quoted
    env = dict(os.environ, DEMO_DIR=str(out), DEMO_TRAIN="40", DEMO_TEST="12", DEMO_EPOCHS="1", OMP_NUM_THREADS="2")
    run = subprocess.run(["sh", "scripts/demo.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    tail = run.stdout[run.stdout.index("UCoFiA demo:"):]
    for line in ("text-to-video (12 captions x 12 videos, chance R@1 8.3)", "video-to-text (12 captions x 12 videos",
                 "  raw ", "  SK-norm ", "  DSL* "):
        assert line in tail, line
    # Every clip decoded once into the frame cache; training and both evaluations read it (strict: nothing decoded).
    assert "52 clips, 0 already cached, 52 decoded" in run.stdout
    for name in ("train/config.json", "eval/config_t2v.json", "eval/config_v2t.json"):
        data = json.loads((out / name).read_text())["data"]
        assert data["frame_cache"] == f"{out}/frames" and data["frame_cache_strict"], name
    for name in ("train/checkpoints/last.pth", "eval/results_t2v.json", "eval/results_v2t.json"):
        assert (out / name).is_file(), name
    # It ends with the paths of the training curves and the evaluation report.
    assert run.stdout.rstrip().splitlines()[-2:] == [f"training curves: {out}/training.png",
                                                     f"evaluation report: {out}/report.html"]
    assert (out / "training.png").stat().st_size > 10000
    assert "The saved matrices give exactly" in (out / "report.html").read_text()
    # A folder the demo did not make is never deleted: refused.
    assert subprocess.run(["sh", "scripts/demo.sh"], cwd=ROOT, env=dict(env, DEMO_DIR=str(tmp_path)),
                          capture_output=True, text=True).returncode == 2


def test_demo_refuses_knobs_that_are_not_counts(tmp_path):
    for knob, value in (("DEMO_TRAIN", "abc"), ("DEMO_EPOCHS", "0"), ("DEMO_TEST", "-3")):
        run = subprocess.run(["sh", "scripts/demo.sh"], cwd=ROOT, env=dict(os.environ, DEMO_DIR=str(tmp_path / "d"),
                             **{knob: value}), capture_output=True, text=True)
        assert run.returncode == 2 and run.stderr == f"error: {knob}={value}: expected a whole number of at least 1\n"
        assert not os.path.exists(tmp_path / "d")
