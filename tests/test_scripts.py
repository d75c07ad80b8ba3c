"""Errors through the shell scripts (train/scripts, eval_*/scripts, scripts/eval, scripts/demo.sh): each ends with
the entry point's one line and exit status 2, with no launcher traceback, on one process and on two (torchrun)."""
import logging
import os
import shutil

import pytest
from helpers import ROOT, msrvtt_layout, run_script

from modules.common import runtime

TWO = pytest.param(2, marks=pytest.mark.slow)  # two processes: torchrun, about 10 s on two cores


@pytest.fixture(scope="module")
def data(synthetic_set, tmp_path_factory) -> str:
    return msrvtt_layout(synthetic_set, str(tmp_path_factory.mktemp("layout") / "MSRVTT"))


@pytest.fixture(scope="module")
def checkpoint(trained_run) -> str:
    return os.path.join(trained_run, "checkpoints", "best.pth")


def ends_with_one_error(run, *needles: str) -> list[str]:
    """Exit status 2; the last line of stderr is an ``error:`` line holding every needle; no traceback. Returns the
    ``error:`` lines (one per rank that failed on its own)."""
    assert run.returncode == 2, run.stderr[-3000:]
    lines = run.stderr.strip().splitlines()
    assert "Traceback" not in run.stderr and "ChildFailedError" not in run.stderr, run.stderr[-3000:]
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors and lines[-1] == errors[-1], run.stderr[-3000:]
    for line in errors:
        assert all(needle in line for needle in needles), (line, needles)
    return errors


def test_shared_eval_body_refuses_a_missing_direction(tmp_path):
    for direction in ("", "x2v"):
        run = run_script("scripts/eval/eval_msrvtt.sh", [], {"DIRECTION": direction, "DATA_PATH": "/data",
                                                                "OUTPUT_DIR": str(tmp_path / "out")})
        assert run.returncode == 2 and run.stderr == (
            f"error: DIRECTION is '{direction}', not t2v or v2t: run eval_t2v/scripts/eval_msrvtt.sh (text-to-video) "
            "or eval_v2t/scripts/eval_msrvtt.sh (video-to-text), which set it\n")
    run = run_script("scripts/eval/eval_msrvtt.sh", [], {"DIRECTION": "t2v", "CKPT": ""})
    assert run.returncode == 2 and run.stderr.startswith("error: set CKPT (the checkpoint to evaluate)")
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, TWO])
def test_contradicting_model_flag_through_the_eval_script(data, checkpoint, tmp_path, nproc):
    """The eval scripts pass no model flags: the checkpoint's apply; one given that contradicts it is refused."""
    out = tmp_path / "eval"
    run = run_script("eval_t2v/scripts/eval_msrvtt.sh", ["--device", "cpu", "--max_words", "32"],
                     {"CKPT": checkpoint, "DATA_PATH": data, "OUTPUT_DIR": str(out), "NGPU": str(nproc)})
    errors = ends_with_one_error(run, f"--max_words 32 does not match the checkpoint {checkpoint}",
                                 "trained with --max_words 16")
    assert 1 <= len(errors) <= nproc  # each rank finds it itself, unless torchrun ended it first (then it is silent)
    assert not out.exists()  # the folder the run made held only its log: removed


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, TWO])
def test_a_video_only_the_last_rank_reads_through_the_eval_script(data, checkpoint, tmp_path, nproc):
    """Test videos are sharded contiguously: the added last one is rank 1's alone. Rank 0 then fails in a collective
    whose peer left; it stays silent, so rank 1's line ends the report. ANNOTATIONS and VIDEOS override DATA_PATH."""
    annotations, videos = tmp_path / "annotations", tmp_path / "videos"
    shutil.copytree(os.path.join(data, "msrvtt_data"), annotations)
    os.makedirs(videos)
    for name in os.listdir(os.path.join(data, "videos", "all")):
        os.symlink(os.path.join(data, "videos", "all", name), videos / name)
    (videos / "zz_last.mp4").write_text("not a video")
    with open(annotations / "MSRVTT_JSFUSION_test.csv", "a", encoding="utf-8") as f:
        f.write("ret_zz,msr_zz,zz_last,a clip only the last rank reads\n")
    out = tmp_path / "eval"
    os.makedirs(out)  # an existing folder: kept, with the run's log
    run = run_script("eval_v2t/scripts/eval_msrvtt.sh", ["--device", "cpu", "--num_thread_reader", "0"],
                     {"CKPT": checkpoint, "DATA_PATH": "/nowhere", "ANNOTATIONS": str(annotations),
                      "VIDEOS": str(videos), "OUTPUT_DIR": str(out), "NGPU": str(nproc)}, timeout=240)
    prefix = "[rank 1] " if nproc == 2 else ""
    assert ends_with_one_error(run) == [f"error: {prefix}{videos / 'zz_last.mp4'}: cannot open video (missing, empty, "
                                        "truncated or not a video)"]
    assert sorted(os.listdir(out)) == ["log_eval_v2t.txt"]
    if nproc == 2:
        assert "after another rank's error" in (out / "log_eval_v2t.txt").read_text()


@pytest.mark.slow
def test_training_script_errors(tmp_path):
    out = tmp_path / "run"
    missing = run_script("train/scripts/train_msrvtt.sh", ["--device", "cpu"],
                         {"DATA_PATH": str(tmp_path / "none"), "OUTPUT_DIR": str(out), "NGPU": "1"})
    ends_with_one_error(missing, str(tmp_path / "none"))
    assert not out.exists()
    abbreviated = run_script("train/scripts/train_msrvtt.sh", ["--epoch", "1"],
                             {"DATA_PATH": str(tmp_path), "OUTPUT_DIR": str(out), "NGPU": "1"})
    assert abbreviated.returncode == 2 and abbreviated.stderr == (
        "error: unrecognized arguments: --epoch 1 (python -m train.main --help lists the flags)\n")


@pytest.mark.slow
def test_demo_checks_its_clip_weights_before_any_work(tmp_path):
    present = os.path.exists(os.path.join(ROOT, "modules", "ViT-B-32.pt"))
    for name in [str(tmp_path / "weights.pt") if present else "ViT-B/32"]:
        run = run_script("scripts/demo.sh", [], {"DEMO_DIR": str(tmp_path / "demo"), "DEMO_CLIP": name}, timeout=60)
        assert run.returncode == 2 and run.stderr.startswith("error: CLIP weights not found: ")
        assert run.stderr.count("\n") == 1 and run.stdout == ""  # nothing started
        assert not (tmp_path / "demo").exists()


def test_loader_workers_capped_by_the_cpus_of_the_process(monkeypatch, caplog):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(runtime, "_workers_said", set())
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    with caplog.at_level(logging.INFO, logger="ucofia"):
        assert [runtime.loader_workers(n) for n in (8, 8, 2, 0)] == [2, 2, 2, 0]
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two processes of this node share the two CPUs
        assert runtime.loader_workers(8) == 1
    said = [r.getMessage() for r in caplog.records if "--num_thread_reader" in r.getMessage()]
    assert said == ["--num_thread_reader 8: 2 DataLoader worker(s) per process, as 2 CPU(s) are available to this "
                    "process and 1 process(es) of this node share them",
                    "--num_thread_reader 8: 1 DataLoader worker(s) per process, as 2 CPU(s) are available to this "
                    "process and 2 process(es) of this node share them"]
