"""Cached state never stale, runs that never trample each other, clean interrupts.

Cached state: an evaluation with ``--feature_cache`` after an edited annotation, a replaced video, another seed or
another training split gives exactly what an evaluation without the cache gives; so does the retrieval index after
its checkpoint was replaced in place. Runs: one writer per output folder (locks taken over only when stale), a resume
never writes into another run's folder and never changes a setting silently. Interrupts: SIGINT and SIGTERM at every
phase of a run end with one ``stopped:`` line and status 130 / 143, ``last.pth`` usable, and a resume that ends with
the weights of an uninterrupted run, bit for bit.

In-process runs (one thread, the same as their in-process reference) for speed; the ``slow`` tests send real signals
to real processes (and their DataLoader workers) and compare with a reference run in a subprocess.
"""
import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from helpers import REFERENCE, ROOT, data_flags, read_steps, run_module, same_run, tiny_flags
from test_faults import EVAL, assert_untouched, copy_set, error_line, fingerprint

from eval_t2v.main import main as eval_t2v
from modules.common import interrupts
from modules.common.cache_keys import file_stamp
from modules.common.io import read_checkpoint
from modules.common.lock import LOCK_NAME, acquire
from modules.common.runtime import Runtime
from modules.evaluation import encoding as eval_encoding
from modules.evaluation.feature_cache import FeatureCache
from modules.evaluation.protocol import split_counts
from modules.training.checkpoint import TrainState
from modules.training.resume_checks import recut_epoch
from scripts.retrieve import main as retrieve
from train.main import main as train_main

pytestmark = pytest.mark.usefixtures("one_thread", "detach_run_logging")


# ---------------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def base(small_set) -> str:
    return small_set


@pytest.fixture(scope="module")
def trained(small_run) -> str:
    """The uninterrupted in-process run (conftest's ``small_run``): 2 epochs x 3 steps, a checkpoint after every
    step, deterministic."""
    return small_run


@pytest.fixture(scope="module")
def checkpoint(trained) -> str:
    return os.path.join(trained, "checkpoints", "last.pth")


def stopped_line(capsys, code: int, expected: int, *needles: str) -> str:
    """Exit status ``expected``, exactly one ``stopped:`` line holding every needle, no ``error:`` and no traceback."""
    err = capsys.readouterr().err
    assert code == expected, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("stopped: ")]
    assert len(lines) == 1 and "Traceback" not in err and "error: " not in err, err[-3000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def no_leftovers(out: str) -> None:
    """No lock file and no checkpoint temporary left behind."""
    assert not os.path.exists(os.path.join(out, LOCK_NAME))
    folder = os.path.join(out, "checkpoints")
    assert not [n for n in (os.listdir(folder) if os.path.isdir(folder) else []) if n.endswith(".tmp")]


# --------------------------------------------------------------------------------------- stale cached state

def _eval(folder: str, checkpoint: str, out: str, *extra: str) -> dict:
    assert eval_t2v(data_flags(folder) + EVAL + ["--init_model", checkpoint, "--output_dir", out, *extra]) == 0
    with open(os.path.join(out, "results_t2v.json")) as f:
        return json.load(f)


def _scores(results: dict) -> dict:
    return {k: results[k] for k in ("num_texts", "num_videos", "skipped_videos", "metrics", "levels")}


def _rows(folder: str, name: str) -> list[list[str]]:
    with open(os.path.join(folder, name), newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def _write_rows(folder: str, name: str, rows: list[list[str]]) -> None:
    with open(os.path.join(folder, name), "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def _fewer_test_rows(folder):
    _write_rows(folder, "test.csv", _rows(folder, "test.csv")[:3])  # header and 2 of the 4 videos


def _caption_edited(folder):
    rows = _rows(folder, "test.csv")
    rows[1][3] = "a completely different caption for this video"
    _write_rows(folder, "test.csv", rows)


def _video_rewritten(folder):
    """The first test video's file rewritten in place with another video's bytes."""
    video_id = _rows(folder, "test.csv")[1][2]
    path = os.path.join(folder, "videos", f"{video_id}.mp4")
    other = os.path.realpath(os.path.join(folder, "videos", f"{_rows(folder, 'test.csv')[2][2]}.mp4"))
    os.remove(path)
    shutil.copy(other, path)


def _cache_reads(caplog) -> int:
    return sum("read from cache" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("edit", [_fewer_test_rows, _caption_edited, _video_rewritten])
def test_feature_cache_follows_the_test_split(edit, base, checkpoint, tmp_path, caplog):
    """Once wrong: a cached 8-video test set was reported for a 5-video csv (num_videos 8, skipped_videos -3)."""
    folder = copy_set(base, str(tmp_path / "set"))
    cache = str(tmp_path / "cache")
    _eval(folder, checkpoint, str(tmp_path / "first"), "--feature_cache", cache)
    edit(folder)
    caplog.clear()
    with caplog.at_level("INFO"):
        cached = _eval(folder, checkpoint, str(tmp_path / "second"), "--feature_cache", cache)
    assert _cache_reads(caplog) == 0  # the test features and the bank (scored against them) are computed again
    assert len(os.listdir(cache)) == 2
    fresh = _eval(folder, checkpoint, str(tmp_path / "fresh"))
    assert _scores(cached) == _scores(fresh)
    assert cached["skipped_videos"] == 0 and cached["num_videos"] == len(_rows(folder, "test.csv")) - 1


def test_sk_bank_subsample_follows_the_seed(base, checkpoint, tmp_path, caplog):
    cache = str(tmp_path / "cache")
    sims = "sims_t2v_bank_video_sentence.npy"
    _eval(base, checkpoint, str(tmp_path / "s1"), "--feature_cache", cache, "--sk_bank_size", "10", "--seed", "1",
          "--save_sims")
    caplog.clear()
    with caplog.at_level("INFO"):
        cached = _eval(base, checkpoint, str(tmp_path / "s2"), "--feature_cache", cache, "--sk_bank_size", "10",
                       "--seed", "2", "--save_sims")
    assert _cache_reads(caplog) == 1  # the test features only: another seed draws another bank subsample
    fresh = _eval(base, checkpoint, str(tmp_path / "fresh"), "--sk_bank_size", "10", "--seed", "2", "--save_sims")
    assert _scores(cached) == _scores(fresh)
    bank = {run: np.load(os.path.join(tmp_path, run, sims)) for run in ("s1", "s2", "fresh")}
    assert np.array_equal(bank["s2"], bank["fresh"]) and not np.array_equal(bank["s1"], bank["s2"])
    # the whole split as bank does not depend on the seed: both entries come from the cache
    _eval(base, checkpoint, str(tmp_path / "w1"), "--feature_cache", cache, "--seed", "1")
    caplog.clear()
    with caplog.at_level("INFO"):
        _eval(base, checkpoint, str(tmp_path / "w2"), "--feature_cache", cache, "--seed", "2")
    assert _cache_reads(caplog) == 2


def test_training_split_change_recomputes_the_bank_only(base, checkpoint, tmp_path, caplog):
    folder = copy_set(base, str(tmp_path / "set"))
    cache = str(tmp_path / "cache")
    first = _eval(folder, checkpoint, str(tmp_path / "a"), "--feature_cache", cache)
    _write_rows(folder, "train.csv", _rows(folder, "train.csv")[:13])  # 12 of the 24 training videos
    caplog.clear()
    with caplog.at_level("INFO"):
        second = _eval(folder, checkpoint, str(tmp_path / "b"), "--feature_cache", cache)
    assert _cache_reads(caplog) == 1  # the test features; the bank is computed from the new training split
    assert second["sk_bank"]["size"] < first["sk_bank"]["size"]
    assert _scores(second) == _scores(_eval(folder, checkpoint, str(tmp_path / "fresh")))


def test_cache_entry_made_for_other_inputs_is_not_used(tmp_path):
    rt = Runtime(0, 0, 1, torch.device("cpu"))
    FeatureCache(str(tmp_path), "k1", rt).save("entry.pt", "bank-a", {"x": torch.ones(2)})
    cache = FeatureCache(str(tmp_path), "k1", rt)
    assert torch.equal(cache.load("entry.pt", "bank-a")["x"], torch.ones(2))
    assert cache.load("entry.pt", "bank-b") is None
    assert FeatureCache(None, "", rt).load("entry.pt", "") is None


def test_skipped_video_count_adds_up_or_stops(base):
    from modules.data import build_split
    from modules.data.config import DataConfig

    split = build_split(DataConfig(datatype="msrvtt", val_csv=os.path.join(base, "test.csv"),
                                   data_path=os.path.join(base, "data.json"),
                                   features_path=os.path.join(base, "videos")), "test")

    def skipped_videos(index):
        return split_counts(split, 0, torch.tensor(index, dtype=torch.long))["skipped_videos"]

    assert skipped_videos([0, 1, 2, 3]) == 0
    assert skipped_videos([0, 2]) == 2
    for stale in ([0, 1, 2, 3, 4, 5, 6, 7], [0, 9]):  # features of another, larger split
        with pytest.raises(RuntimeError, match="belong to another split"):
            skipped_videos(stale)


def test_file_stamp_sees_a_file_replaced_with_its_size_and_time(tmp_path):
    path = tmp_path / "v.mp4"
    path.write_bytes(b"a" * 100)
    before = os.stat(path)
    stamp = file_stamp(str(path))
    time.sleep(0.01)
    path.write_bytes(b"b" * 100)                                    # what cp -p / rsync -t of another file does
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(path).st_size == before.st_size and os.stat(path).st_mtime_ns == before.st_mtime_ns
    assert file_stamp(str(path)) != stamp
    assert file_stamp(str(tmp_path / "missing")) is None


def test_video_index_follows_a_checkpoint_replaced_in_place(base, trained, tmp_path, capsys):
    videos = tmp_path / "videos"
    os.makedirs(videos)
    for name in sorted(os.listdir(os.path.join(base, "videos")))[:2]:
        shutil.copy(os.path.join(base, "videos", name), videos / name)
    ckpt = str(tmp_path / "model.pth")
    shutil.copy2(os.path.join(trained, "checkpoints", "best.pth"), ckpt)
    args = ["index", "--checkpoint", ckpt, "--videos", str(videos), "--device", "cpu", "--workers", "0"]

    def index() -> str:
        capsys.readouterr()
        assert retrieve(args) == 0
        return capsys.readouterr().out

    assert "(0 from the cache, 2 encoded" in index()
    assert "(2 from the cache, 0 encoded" in index()
    old = os.stat(ckpt)
    shutil.copy(os.path.join(trained, "checkpoints", "last.pth"), ckpt)  # other weights, same path
    os.utime(ckpt, ns=(old.st_atime_ns, old.st_mtime_ns))              # and the old modification time
    assert "(0 from the cache, 2 encoded" in index()
    # an index written by the previous format is encoded again, not refused
    index_file = str(videos / "ucofia_index.pt")
    obj = read_checkpoint(index_file)
    obj["format"] = "ucofia-video-index-v1"
    torch.save(obj, index_file)
    assert "(0 from the cache, 2 encoded" in index()


# ------------------------------------------------------------------------------ runs that trample each other

def _lock_record(out: str, **record) -> str:
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, LOCK_NAME)
    with open(path, "w") as f:
        json.dump({"host": socket.gethostname(), "entry": "train.main", "started": "2024-01-01T00:00:00", **record}, f)
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_writer_is_refused(base, checkpoint, tmp_path, capsys):
    out = str(tmp_path / "run")
    os.makedirs(out)
    lock = acquire(out, "train.main")
    try:
        before = fingerprint(out)
        capsys.readouterr()
        error_line(capsys, train_main(tiny_flags(base, out)), f"--output_dir {out} is in use by another run (pid "
                   f"{os.getpid()} on host {socket.gethostname()}, train.main, started ", "choose another --output_dir")
        error_line(capsys, eval_t2v(data_flags(base) + EVAL + ["--init_model", checkpoint, "--output_dir", out]),
                   "is in use by another run")
        assert_untouched(before, out, allowed=())  # not even a log line in the running run's folder
    finally:
        lock.release()
    assert os.listdir(out) == []


def test_lock_is_released_after_an_error(base, tmp_path, capsys):
    out = str(tmp_path / "run")
    error_line(capsys, train_main(tiny_flags(base, out) + ["--do_eval"]), "--do_eval without --do_train needs "
               "--init_model")
    no_leftovers(out)


def test_stale_lock_of_a_dead_process_is_taken_over(base, tmp_path, capsys):
    out = str(tmp_path / "run")
    _lock_record(out, pid=_dead_pid())
    code = train_main(tiny_flags(base, out) + ["--do_eval"])  # stops after the lock, with a known error
    err = capsys.readouterr().err
    assert code == 2 and "taking over the lock file of a run that is no longer running (pid " in err
    assert "taking over" in open(os.path.join(out, "log.txt")).read()
    no_leftovers(out)


@pytest.mark.slow
def test_lock_left_by_a_sigkilled_run_is_taken_over(tmp_path):
    out = str(tmp_path / "run")
    os.makedirs(out)
    code = ("import os, signal, sys; from modules.common.lock import acquire; acquire(sys.argv[1], 'train.main'); "
            "os.kill(os.getpid(), signal.SIGKILL)")
    r = subprocess.run([sys.executable, "-c", code, out], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == -signal.SIGKILL and os.path.exists(os.path.join(out, LOCK_NAME))
    lock = acquire(out, "eval_t2v.main")
    assert "no longer running" in lock.note
    lock.release()


@pytest.mark.parametrize("case", ["another host", "running process"])
def test_lock_record_that_cannot_be_proven_stale_is_refused(case, base, tmp_path, capsys):
    out = str(tmp_path / "run")
    if case == "another host":
        path = _lock_record(out, pid=1234, host="node-elsewhere")
        needles = ("holds the lock file of a run on another host (pid 1234 on host node-elsewhere",
                   f"if that run has ended, delete {path}")
    else:  # the lock itself is free, but the recorded process runs: a filesystem whose locks do nothing
        from modules.common.lock import _process_start

        path = _lock_record(out, pid=os.getppid(), pid_start=_process_start(os.getppid()))
        needles = (f"is in use by another run (pid {os.getppid()}", "does this filesystem support locks?")
    before = fingerprint(out)
    capsys.readouterr()
    error_line(capsys, train_main(tiny_flags(base, out)), *needles)
    assert_untouched(before, out, allowed=())  # the record stays for its owner


def test_unreadable_lock_record_is_taken_over(tmp_path):
    out = str(tmp_path / "run")
    os.makedirs(out)
    with open(os.path.join(out, LOCK_NAME), "wb") as f:
        f.write(b'{"pid": 12')  # cut by a crash while it was written
    lock = acquire(out, "train.main")
    lock.release()
    assert os.listdir(out) == []


def _copy_run(trained: str, dst: str) -> str:
    shutil.copytree(trained, dst)
    return dst


def test_resume_into_another_runs_folder_is_refused(base, trained, tmp_path, capsys):
    other = str(tmp_path / "B")
    assert train_main(tiny_flags(base, other) + ["--epochs", "1", "--max_steps", "1"]) == 0
    before = fingerprint(other, trained)
    capsys.readouterr()
    last = os.path.join(trained, "checkpoints", "last.pth")
    error_line(capsys, train_main(tiny_flags(base, other) + REFERENCE + ["--resume_model", last]),
               f"--output_dir {other} holds another training run (checkpoints/last.pth)",
               f"continue that run in place with --output_dir {trained}")
    assert_untouched(before, other, trained)


def test_resume_as_a_copy_or_in_place_through_a_link(base, trained, tmp_path, capsys):
    last = os.path.join(trained, "checkpoints", "last.pth")
    before = fingerprint(trained)
    copy = str(tmp_path / "copy")
    os.makedirs(copy)
    with open(os.path.join(copy, "results_t2v.json"), "w") as f:
        f.write("{}")  # evaluation results: not a training run
    assert train_main(tiny_flags(base, copy) + REFERENCE + ["--resume_model", last]) == 0  # nothing left to train
    assert os.path.exists(os.path.join(copy, "config.json"))
    assert_untouched(before, trained)
    run = _copy_run(trained, str(tmp_path / "run"))
    link = str(tmp_path / "link")
    os.symlink(run, link)
    resumed = os.path.join(run, "checkpoints", "best.pth")  # in place, from the best epoch
    assert train_main(tiny_flags(base, link) + REFERENCE + ["--resume_model", resumed]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("flags, listed", [
    (["--batch_size", "16", "--lr", "2e-3"], "(--batch_size 8 -> 16, --lr 0.001 -> 0.002)"),
    (["--seed", "7"], "(--seed 42 -> 7)"),
    (["--epochs", "3", "--max_frames", "3", "--precision", "bf16"], "--max_frames 4 -> 3"),
])
def test_resume_with_changed_settings_is_refused(flags, listed, base, trained, tmp_path, capsys):
    run = _copy_run(trained, str(tmp_path / "run"))
    before = fingerprint(run)
    capsys.readouterr()
    error_line(capsys, train_main(tiny_flags(base, run) + REFERENCE + flags + ["--resume_model",
                                  os.path.join(run, "checkpoints", "last.pth")]),
               "last.pth was trained with other settings ", listed, "--resume_allow_changes")
    assert_untouched(before, run)


def test_harmless_settings_may_change_on_resume(base, trained, tmp_path, caplog):
    run = _copy_run(trained, str(tmp_path / "run"))
    flags = ["--num_thread_reader", "1", "--n_display", "7", "--batch_size_val", "3", "--checkpoint_every", "0",
             "--max_steps", "100", "--epochs", "2", "--deterministic"]
    with caplog.at_level("WARNING"):
        assert train_main(tiny_flags(base, run) + flags + ["--resume_model",
                                                           os.path.join(run, "checkpoints", "last.pth")]) == 0
    assert not [r for r in caplog.records if "--resume_allow_changes" in r.getMessage()]


def test_allowed_changes_are_logged_and_take_effect(base, trained, tmp_path, caplog):
    run = _copy_run(trained, str(tmp_path / "run"))
    last = os.path.join(run, "checkpoints", "last.pth")
    with caplog.at_level("WARNING"):
        assert train_main(tiny_flags(base, run) + REFERENCE + ["--epochs", "3", "--lr", "2e-3", "--resume_model",
                                                               last, "--resume_allow_changes"]) == 0
    logged = [r.getMessage() for r in caplog.records if "--resume_allow_changes" in r.getMessage()]
    assert logged == ["--resume_allow_changes: --epochs changes from 2 to 3 at the resumed step",
                      "--resume_allow_changes: --lr changes from 0.001 to 0.002 at the resumed step"]
    obj = read_checkpoint(last)
    assert obj["global_step"] == 9 and len(obj["history"]) == 3
    groups = obj["optimizer"]["param_groups"]
    assert {g["t_total"] for g in groups} == {9} and {g["lr"] for g in groups} == {2e-3}  # --coef_lr 1


def test_a_new_batch_size_continues_after_the_same_samples():
    state = TrainState(epoch=1, epoch_step=2)
    recut_epoch(state, 8, 16, 1)  # 16 samples done at batch 8: one batch of 16, the epoch's only one
    assert state.epoch_step == 1
    state = TrainState(epoch=1, epoch_step=3)
    recut_epoch(state, 8, 16, 5)
    assert state.epoch_step == 1  # 24 samples: one whole batch of 16 (8 are seen again)


# ---------------------------------------------------------------------------------------------- interrupts

def _signal_at_forward(monkeypatch, calls: dict[int, list[int]]) -> None:
    """The training forward pass of call n (1-based) sends the signals ``calls[n]`` to this process, then goes on."""
    from modules.model.ucofia import UCoFiA

    real, count = UCoFiA.forward, [0]

    def forward(self, *args, **kwargs):
        count[0] += 1
        for signum in calls.get(count[0], []):
            os.kill(os.getpid(), signum)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(UCoFiA, "forward", forward)


def _resume(base: str, out: str) -> None:
    assert train_main(tiny_flags(base, out) + REFERENCE + ["--resume_model",
                                                           os.path.join(out, "checkpoints", "last.pth")]) == 0


def _position(out: str) -> tuple[int, int, int]:
    c = read_checkpoint(os.path.join(out, "checkpoints", "last.pth"))
    return c["epoch"], c["epoch_step"], c["global_step"]


def test_sigterm_mid_step_finishes_the_step_saves_and_resumes_exactly(base, trained, tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "run")
    _signal_at_forward(monkeypatch, {4: [signal.SIGTERM]})
    capsys.readouterr()
    code = train_main(tiny_flags(base, out) + ["--epochs", "2", "--deterministic"])  # no --checkpoint_every
    stopped_line(capsys, code, 143, "interrupted by SIGTERM at epoch 2, step 1 of 3 (global step 4); "
                 "checkpoints/last.pth holds that position: continue with --resume_model")
    assert _position(out) == (1, 1, 4) and [s["step"] for s in read_steps(out)] == [1, 2, 3, 4]
    no_leftovers(out)
    monkeypatch.undo()
    _resume(base, out)
    same_run(trained, out)


def test_sigint_during_validation_saves_the_epoch_end_and_resumes_exactly(base, trained, tmp_path, capsys,
                                                                          monkeypatch):
    import train.main as entry

    out = str(tmp_path / "run")
    real = entry.validate_split

    def validate(*args):
        os.kill(os.getpid(), signal.SIGINT)
        return real(*args)

    monkeypatch.setattr(entry, "validate_split", validate)
    capsys.readouterr()
    stopped_line(capsys, train_main(tiny_flags(base, out) + REFERENCE), 130,
                 "interrupted by SIGINT at epoch 1, step 3 of 3 (global step 3) during validation")
    assert _position(out) == (0, 3, 3) and not os.path.exists(os.path.join(out, "history.json"))
    no_leftovers(out)
    monkeypatch.undo()
    _resume(base, out)
    same_run(trained, out)


def test_sigint_during_a_checkpoint_write_completes_the_epoch_end(base, trained, tmp_path, capsys, monkeypatch):
    """Saves: step 1, step 2, then the end of epoch 1 (last.pth, best.pth): SIGINT in the third, half written."""
    out = str(tmp_path / "run")
    real, saves = torch.save, [0]

    def save(obj, f, *args, **kwargs):
        saves[0] += 1
        if saves[0] != 3:
            return real(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real(obj, buffer)
        data = buffer.getvalue()
        f.write(data[:len(data) // 2])
        os.kill(os.getpid(), signal.SIGINT)  # half of the file is out: the write still finishes, whole
        f.write(data[len(data) // 2:])

    monkeypatch.setattr(torch, "save", save)
    capsys.readouterr()
    stopped_line(capsys, train_main(tiny_flags(base, out) + REFERENCE), 130,
                 "interrupted by SIGINT at epoch 2, step 0 of 3 (global step 3)")
    monkeypatch.undo()
    assert _position(out) == (1, 0, 3)
    assert read_checkpoint(os.path.join(out, "checkpoints", "best.pth"))["global_step"] == 3  # written too
    with open(os.path.join(out, "history.json")) as f:
        assert len(json.load(f)["history"]) == 1
    no_leftovers(out)
    _resume(base, out)
    same_run(trained, out)


@pytest.mark.parametrize("window, expected", [(0.0, "at once"), (interrupts.DUPLICATE_WINDOW_S, "one signal")])
def test_a_second_signal_stops_at_once_unless_it_is_the_same_one(window, expected, base, tmp_path, capsys,
                                                                 monkeypatch):
    """Two SIGTERMs in one step: a second signal stops at once (last.pth stays the previous step's); the terminal and
    torchrun both delivering one Ctrl-C count as one."""
    monkeypatch.setattr(interrupts, "DUPLICATE_WINDOW_S", window)
    _signal_at_forward(monkeypatch, {5: [signal.SIGTERM, signal.SIGTERM]})
    out = str(tmp_path / "run")
    capsys.readouterr()
    code = train_main(tiny_flags(base, out) + REFERENCE)
    if expected == "at once":
        stopped_line(capsys, code, 143, "interrupted by a second SIGTERM: stopped at once")
        assert _position(out) == (1, 1, 4)
    else:
        stopped_line(capsys, code, 143, "(global step 5)")
        assert _position(out) == (1, 2, 5)
    no_leftovers(out)


def test_signal_before_training_starts_writes_nothing(base, tmp_path, capsys, monkeypatch):
    import modules.training.run as run_module_

    real = run_module_.build_split

    def build_split(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args)

    monkeypatch.setattr(run_module_, "build_split", build_split)
    out = str(tmp_path / "run")
    capsys.readouterr()
    stopped_line(capsys, train_main(tiny_flags(base, out) + REFERENCE), 143, "interrupted by SIGTERM")
    assert not os.path.exists(out)  # the folder it made held only its log: removed


def test_sigint_during_evaluation_leaves_earlier_results(base, checkpoint, tmp_path, capsys, monkeypatch):
    encoding = eval_encoding
    out, cache = str(tmp_path / "out"), str(tmp_path / "cache")
    _eval(base, checkpoint, out)
    before = fingerprint(out)
    real = encoding.iter_video_features

    def iter_video_features(*args, **kwargs):
        for n, part in enumerate(real(*args, **kwargs)):
            if n == 0:
                os.kill(os.getpid(), signal.SIGINT)
            yield part

    monkeypatch.setattr(encoding, "iter_video_features", iter_video_features)
    capsys.readouterr()
    stopped_line(capsys, eval_t2v(data_flags(base) + EVAL + ["--init_model", checkpoint, "--output_dir", out,
                                                             "--feature_cache", cache]), 130, "interrupted by SIGINT")
    assert_untouched(before, out)
    assert not os.path.exists(cache) or not any(files for _, _, files in os.walk(cache))
    no_leftovers(out)


# ------------------------------------------------------------------------------------- real processes (slow)

def _steps_logged(out: str) -> int:
    try:
        with open(os.path.join(out, "train_steps.jsonl")) as f:
            return sum(1 for line in f if line.endswith("\n"))
    except FileNotFoundError:
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("signum, workers", [(signal.SIGTERM, "2"), (signal.SIGINT, "0")])
def test_real_signal_mid_training_then_resume_gives_the_uninterrupted_weights(signum, workers, base,
                                                                              reference_run, tmp_path):
    """SIGTERM to the whole process group, DataLoader workers included (a cluster's pre-emption), or SIGINT to the
    training process (Ctrl-C); then --resume_model in a new process."""
    out = str(tmp_path / "run")
    flags = tiny_flags(base, out) + ["--epochs", "2", "--deterministic", "--num_thread_reader", workers]
    proc = subprocess.Popen([sys.executable, "-m", "train.main"] + flags, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1"))
    deadline = time.time() + 240
    while _steps_logged(out) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    if signum == signal.SIGTERM:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 128 + signum, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("stopped: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    epoch, step, global_step = _position(out)
    assert 2 <= global_step < 6, "the run must be interrupted in the middle"
    no_leftovers(out)
    r = run_module("train.main", flags + ["--num_thread_reader", "0", "--resume_model",
                                          os.path.join(out, "checkpoints", "last.pth")])
    assert r.returncode == 0, r.stderr[-3000:]
    same_run(reference_run, out)


@pytest.mark.slow
def test_two_trainings_started_into_one_folder(base, tmp_path):
    """The second is refused while the first runs (ended by SIGTERM once the second has been refused)."""
    out = str(tmp_path / "run")
    first = subprocess.Popen([sys.executable, "-m", "train.main"] + tiny_flags(base, out) + ["--epochs", "50"],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1"))
    deadline = time.time() + 120
    while not (os.path.exists(os.path.join(out, LOCK_NAME)) and os.path.getsize(os.path.join(out, LOCK_NAME))) \
            and time.time() < deadline:
        time.sleep(0.02)
    second = run_module("train.main", tiny_flags(base, out) + ["--epochs", "1"])
    assert second.returncode == 2, second.stderr[-3000:]
    assert f"error: --output_dir {out} is in use by another run (pid {first.pid} on host" in second.stderr
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=240) == 143, first.stderr.read()[-3000:]
    steps = [s["step"] for s in read_steps(out)]
    assert steps == list(range(1, len(steps) + 1))  # one run's steps, not two interleaved
    no_leftovers(out)


LOOP_ERROR = """
import sys, torch
from modules.common.interrupts import closing_batches, ignore_in_worker
loader = torch.utils.data.DataLoader(list(range(64)), batch_size=2, num_workers=2, worker_init_fn=ignore_in_worker)
for batch in closing_batches(loader):
    raise RuntimeError("an error in the loop body")
"""


@pytest.mark.slow
def test_process_exits_after_an_uncaught_error_with_workers_running(tmp_path):
    """Workers ignore SIGTERM, so multiprocessing's exit handler (terminate, then join) would wait for them forever
    when an uncaught error leaves the loop suspended; the process must end with the error instead."""
    script = tmp_path / "loop_error.py"
    script.write_text(LOOP_ERROR)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "an error in the loop body" in done.stderr
