"""Training end to end on generated videos: learning, checkpoints, process-count independence, the launch scripts.

Exact resume after a kill or a signal is tested in test_faults.py and test_runs.py."""
import json
import os
import shutil
import subprocess

import pytest
from helpers import ROOT, read_steps, run_module, tiny_flags

from modules.common.io import read_checkpoint
from train.main import main as train_main


def test_training_writes_checkpoints_history_and_refuses_a_second_run(synthetic_set, trained_run, tmp_path, capsys):
    """The shared one-epoch run (conftest's ``trained_run``): 32 videos, one caption each, batch 8."""
    steps = read_steps(trained_run)
    assert [s["step"] for s in steps] == [1, 2, 3, 4] and all(s["epoch"] == 1 for s in steps)
    for name in ("checkpoints/last.pth", "checkpoints/best.pth", "history.json", "config.json", "log.txt"):
        assert os.path.isfile(os.path.join(trained_run, name)), name
    last = read_checkpoint(os.path.join(trained_run, "checkpoints", "last.pth"))
    assert last["epoch"] == 1 and last["epoch_step"] == 0 and last["global_step"] == len(steps)
    assert [h["epoch"] for h in last["history"]] == [1]
    assert last["history"][0]["split"].startswith("test")  # MSR-VTT has no validation split: labelled
    # A second fresh run into the same folder would overwrite the first: refused.
    out = shutil.copytree(trained_run, str(tmp_path / "run"))
    capsys.readouterr()
    assert train_main(tiny_flags(synthetic_set, out) + ["--epochs", "1"]) == 2
    assert "already holds a training run" in capsys.readouterr().err


@pytest.mark.slow
def test_training_lowers_the_loss(synthetic_set, tmp_path):
    """Every caption of the 32 training videos for 2 epochs (34 steps of 8): the loss falls (measured: from 2.36 to
    1.27 over the first and last 4 steps; 1.35 at 4 frames a video, at a third more work)."""
    out = str(tmp_path / "run")
    assert train_main(tiny_flags(synthetic_set, out) + ["--epochs", "2", "--expand_msrvtt_sentences",
                                                        "--max_frames", "2"]) == 0
    losses = [s["loss"] for s in read_steps(out)]
    train_ids = set(open(os.path.join(synthetic_set, "train.csv")).read().split()[1:])
    pairs = sum(s["video_id"] in train_ids for s in json.load(open(os.path.join(synthetic_set, "data.json")))
                ["sentences"])
    assert len(losses) == 2 * (pairs // 8)  # every caption of the 32 training videos, batch 8, 2 epochs
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.2
    last = read_checkpoint(os.path.join(out, "checkpoints", "last.pth"))
    assert last["epoch"] == 2 and last["global_step"] == len(losses) and len(last["history"]) == 2


@pytest.mark.slow
def test_two_processes_follow_the_single_process_loss_curve(synthetic_set, tmp_path):
    flags = ["--epochs", "1", "--deterministic"]
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    r1 = run_module("train.main", tiny_flags(synthetic_set, one) + flags)
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = run_module("train.main", tiny_flags(synthetic_set, two) + flags, nproc=2)
    assert r2.returncode == 0, r2.stderr[-2000:]
    a, b = read_steps(one), read_steps(two)
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        assert abs(x["loss"] - y["loss"]) <= 1e-5, (x, y)
    wa = read_checkpoint(os.path.join(one, "checkpoints", "last.pth"))["model"]
    wb = read_checkpoint(os.path.join(two, "checkpoints", "last.pth"))["model"]
    assert max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa) < 1e-4


def test_every_script_datatype_is_registered():
    from modules.data import DATASETS

    folders = (os.path.join(ROOT, "train", "scripts"), os.path.join(ROOT, "scripts", "eval"))
    scripts = [os.path.join(folder, f) for folder in folders for f in sorted(os.listdir(folder))]
    assert len(scripts) == 10
    for path in scripts:
        datatype = open(path).read().split("--datatype ")[1].split()[0]
        assert datatype in DATASETS, (path, datatype)
    # each direction's eval script is the shared one for its dataset, with its own checkpoint and direction
    for direction in ("t2v", "v2t"):
        for name in os.listdir(os.path.join(ROOT, f"eval_{direction}", "scripts")):
            text = open(os.path.join(ROOT, f"eval_{direction}", "scripts", name)).read()
            assert f"DIRECTION={direction}" in text and f"scripts/eval/{name}" in text and "CKPT=" in text


@pytest.mark.slow
@pytest.mark.parametrize("script", ["train/scripts/train_msrvtt.sh", "eval_t2v/scripts/eval_msvd.sh",
                                    "eval_v2t/scripts/eval_activitynet.sh", "train/scripts/train_didemo.sh"])
def test_scripts_build_a_command_the_entry_point_accepts(script, tmp_path):
    from modules.evaluation.config import build_parser as eval_parser
    from modules.training.config import build_parser as train_parser

    folder, name = os.path.split(os.path.join(ROOT, script))
    env = dict(os.environ, DRY_RUN="1", DATA_PATH="/data", OUTPUT_DIR=str(tmp_path), NGPU="2",
               FRAME_CACHE="/fast/frames")
    # as the published README runs them: from inside the entry point's folder
    out = subprocess.run(["sh", os.path.join("scripts", name)], cwd=os.path.dirname(folder), env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    words = out.stdout.split()
    assert words[1:4] == ["-m", "modules.common.launcher", "--nproc_per_node=2"]  # torchrun's flags
    at = words.index("-m", 3)  # the entry point's -m, after the launcher's
    single = subprocess.run(["sh", os.path.join("scripts", name)], cwd=os.path.dirname(folder),
                            env=dict(env, NGPU="1"), capture_output=True, text=True)
    assert single.stdout.split()[1:] == words[at:]  # one process: the entry point itself, same flags
    module = words[at + 1]
    entry = module.split(".")[0]
    parser = train_parser() if entry == "train" else eval_parser(entry[-3:])
    args = parser.parse_args(words[at + 2:])
    assert args.output_dir == str(tmp_path) and args.frame_cache == "/fast/frames"
    missing = subprocess.run(["sh", script], cwd=ROOT, env=dict(os.environ, DRY_RUN="1"), capture_output=True,
                             text=True)
    assert missing.returncode == 2 and "set DATA_PATH" in missing.stderr
