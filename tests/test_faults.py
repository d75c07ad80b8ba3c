"""Every bad input and fault tried against the real entry points.

A case the user must fix ends with exit status 2 and exactly one ``error: ...`` line on stderr that names the file,
flag or step (no traceback); ``--skip_bad_videos`` instead logs each dropped video and counts it. In every case no
file is left half-written and nothing written before (checkpoints, results) changes: folders are fingerprinted
before a failing run and compared after it.

Kept fast for two shared cores: one small generated set (conftest's ``small_set``: 24 training videos = 3 steps of
batch 8, 4 test videos), one shared short run as the trained checkpoint (``small_run``), runs that only differ in what
the case needs, and in-process calls of ``main`` wherever no signal or launcher is involved. The ``slow`` cases run
real processes: a SIGKILL compared with the uninterrupted ``reference_run`` of a subprocess, two ranks under torchrun.
"""
import csv
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch
from data_fixtures import decode_all, ffmpeg_exe, write_h264, write_mp4v
from helpers import N_TEST, N_TRAIN, REFERENCE, ROOT, data_flags, read_steps, run_module, same_run, tiny_flags

from eval_t2v.main import main as eval_t2v
from eval_v2t.main import main as eval_v2t
from modules.common import io as checkpoint_module
from modules.common.errors import DataError
from modules.common.io import read_checkpoint
from modules.data import build_split
from modules.data.config import DataConfig
from modules.data.video import load_video, load_video_raw, sample_frame_indices
from train.main import main as train_main

EVAL = ["--pretrained_clip_name", "random:tiny", "--max_words", "16", "--max_frames", "4", "--batch_size_val", "8",
        "--num_thread_reader", "0", "--device", "cpu"]
LOGS = ("log.txt", "log_eval_t2v.txt", "log_eval_v2t.txt")

pytestmark = pytest.mark.usefixtures("one_thread", "detach_run_logging")


# ---------------------------------------------------------------------------------------------------- helpers

def fingerprint(*folders: str) -> dict[str, str]:
    """sha256 of every file under the folders (following the symlinked videos)."""
    out = {}
    for folder in folders:
        for root, _, files in os.walk(folder):
            for name in files:
                path = os.path.join(root, name)
                with open(path, "rb") as f:
                    out[path] = hashlib.sha256(f.read()).hexdigest()
    return out


def assert_untouched(before: dict[str, str], *folders: str, allowed: tuple[str, ...] = LOGS) -> None:
    """Nothing that existed changed and nothing new appeared, except the run's log files (appended to)."""
    after = fingerprint(*folders)
    changed = [p for p, h in before.items() if os.path.basename(p) not in allowed and after.get(p) != h]
    new = [p for p in after if p not in before and os.path.basename(p) not in allowed]
    assert not changed, f"changed or removed: {changed}"
    assert not new, f"written by a failing run: {new}"


def error_line(capsys, code: int, *needles: str) -> str:
    """Exit status 2, exactly one ``error:`` line holding every needle, and no traceback."""
    err = capsys.readouterr().err
    assert code == 2, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def failing_run(fn, args: list[str], capsys, watch: list[str], *needles: str) -> str:
    """Run an entry point that must fail; check the message and that nothing under ``watch`` was written."""
    for folder in watch:
        os.makedirs(folder, exist_ok=True)
    before = fingerprint(*watch)
    capsys.readouterr()
    line = error_line(capsys, fn(args), *needles)
    assert_untouched(before, *watch)
    return line


def copy_set(base: str, dst: str) -> str:
    """An editable copy of the synthetic set: annotation files copied, videos symlinked one by one."""
    os.makedirs(os.path.join(dst, "videos"))
    for name in ("train.csv", "test.csv", "data.json"):
        shutil.copy(os.path.join(base, name), dst)
    for name in sorted(os.listdir(os.path.join(base, "videos"))):
        os.symlink(os.path.join(base, "videos", name), os.path.join(dst, "videos", name))
    return dst


def add_test_video(folder: str, video_id: str, make=None, caption: str = "a clip added for this case") -> str:
    """Append a test.csv row for ``video_id``; ``make(path)`` writes its file (none: the video is missing)."""
    with open(os.path.join(folder, "test.csv"), "a", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerow([f"ret_{video_id}", f"msr_{video_id}", video_id, caption])
    path = os.path.join(folder, "videos", f"{video_id}.mp4")
    if make is not None:
        make(path)
    return path


def eval_args(folder: str, checkpoint: str, out: str, *extra: str) -> list[str]:
    return data_flags(folder) + EVAL + ["--init_model", checkpoint, "--output_dir", out, *extra]


def results(out: str, direction: str = "t2v") -> dict:
    with open(os.path.join(out, f"results_{direction}.json")) as f:
        return json.load(f)


def text_of(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


# ------------------------------------------------------------------------------------------- shared fixtures

@pytest.fixture(scope="module")
def base(small_set) -> str:
    return small_set


@pytest.fixture(scope="module")
def checkpoint(small_run) -> str:
    return os.path.join(small_run, "checkpoints", "last.pth")


@pytest.fixture(scope="module")
def earlier_results(base, checkpoint, tmp_path_factory) -> str:
    """A results_t2v.json of a successful evaluation: failing runs into its folder must leave it as it is."""
    out = str(tmp_path_factory.mktemp("earlier_results"))
    assert eval_t2v(eval_args(base, checkpoint, out)) == 0
    return os.path.join(out, "results_t2v.json")


def eval_output(tmp_path, earlier_results: str) -> str:
    """An output folder already holding an earlier evaluation's results."""
    out = str(tmp_path / "out")
    os.makedirs(out)
    shutil.copy(earlier_results, out)
    return out


# ------------------------------------------------------------------------------------------------ videos

def _zero_byte(path):
    open(path, "wb").close()


def _bytes_of(path, write) -> bytes:
    """The bytes ``write(scratch)`` produces, written outside the video folder (whose index must not see them)."""
    scratch = os.path.join(os.path.dirname(os.path.dirname(path)), "scratch_" + os.path.basename(path))
    write(scratch)
    with open(scratch, "rb") as f:
        data = f.read()
    os.remove(scratch)
    return data


def _faststart(path) -> bytes:
    """An H.264 mp4 with its index in front (as web videos are): 40 frames promised by the header."""
    return _bytes_of(path, lambda p: write_h264(p, seconds=4, fps=10, width=64, height=48,
                                                extra=("-movflags", "+faststart")))


def _truncated_index_first(path):
    data = _faststart(path)
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])


def _truncated_index_last(path):
    data = _bytes_of(path, lambda p: write_mp4v(p, 30, 3, width=64, height=48))  # OpenCV writes the index last
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])


def _text_named_mp4(path):
    with open(path, "w") as f:
        f.write("video_id,url\nvideo9,https://example.com/video9\n")


def _no_frames(path):
    write_mp4v(path, 0, 3)  # a container with a video stream and not a single frame


def _zero_decodable_frames(path):
    data = _faststart(path)
    payload = data.index(b"mdat") + 4
    with open(path, "wb") as f:  # the header is intact, every byte of the compressed frames is zero
        f.write(data[:payload] + bytes(len(data) - payload))


# case -> (writer, what the error line says about the file)
BAD_VIDEOS = {
    "missing": (None, "bad_missing (missing)"),
    "zero_byte": (_zero_byte, "bad_zero_byte (empty file)"),
    "truncated_index_first": (_truncated_index_first, "bad_truncated_index_first.mp4: truncated or corrupt video"),
    "truncated_index_last": (_truncated_index_last, "bad_truncated_index_last.mp4: cannot open video"),
    "text_named_mp4": (_text_named_mp4, "bad_text_named_mp4.mp4: cannot open video"),
    "no_frames": (_no_frames, "bad_no_frames.mp4: cannot open video"),
    "zero_decodable_frames": (_zero_decodable_frames, "bad_zero_decodable_frames.mp4: truncated or corrupt video: "
                                                      "the header promises 40 frames, 0 are decodable"),
}


@pytest.mark.parametrize("case", list(BAD_VIDEOS))
def test_bad_test_video_stops_evaluation_naming_the_file(case, base, checkpoint, earlier_results, tmp_path, capsys):
    folder = copy_set(base, str(tmp_path / "set"))
    make, says = BAD_VIDEOS[case]
    add_test_video(folder, f"bad_{case}", make)
    out = eval_output(tmp_path, earlier_results)
    line = failing_run(eval_t2v, eval_args(folder, checkpoint, out), capsys, [out, folder], says)
    if make is None or make is _zero_byte:  # found by the manifest check, before any decoding
        assert "--skip_bad_videos drops them" in line


def test_undecodable_video_in_a_dataloader_worker_is_still_one_line(base, checkpoint, earlier_results, tmp_path,
                                                                   capsys):
    """Worker exceptions come back with the worker's traceback folded into the message: still one line."""
    folder = copy_set(base, str(tmp_path / "set"))
    add_test_video(folder, "bad_via_loader", _text_named_mp4)
    out = eval_output(tmp_path, earlier_results)
    args = eval_args(folder, checkpoint, out) + ["--num_thread_reader", "1"]
    line = failing_run(eval_t2v, args, capsys, [out, folder], "bad_via_loader.mp4: cannot open video")
    assert "Caught" not in line and "Traceback" not in line


@pytest.fixture(scope="module")
def skipping_eval(base, checkpoint, tmp_path_factory) -> tuple[str, dict]:
    """One evaluation with --skip_bad_videos over the 4 good test videos plus one of every bad kind."""
    root = tmp_path_factory.mktemp("skipping")
    folder = copy_set(base, str(root / "set"))
    for case, (make, _) in BAD_VIDEOS.items():
        add_test_video(folder, f"bad_{case}", make)
    out = str(root / "out")
    assert eval_t2v(eval_args(folder, checkpoint, out, "--skip_bad_videos")) == 0
    return text_of(os.path.join(out, "log_eval_t2v.txt")), results(out)


@pytest.mark.parametrize("case", list(BAD_VIDEOS))
def test_skip_bad_videos_logs_and_counts_each(case, skipping_eval):
    log, res = skipping_eval
    lines = [line for line in log.splitlines() if f"bad_{case}" in line and "skipping" in line]
    assert len(lines) == 1, log
    assert res["skipped_videos"] == len(BAD_VIDEOS)
    assert res["num_videos"] == res["num_texts"] == N_TEST  # the captions of dropped videos are dropped too


def test_skipped_counts_add_up_to_what_the_annotation_lists(skipping_eval):
    _, res = skipping_eval
    listed = N_TEST + len(BAD_VIDEOS)  # one caption per test video
    assert res["annotation"] == {"texts": listed, "videos": listed, "left_out": []}
    assert res["num_videos"] + res["skipped_videos"] == listed
    assert res["num_texts"] + res["skipped_texts"] == listed and res["skipped_texts"] == len(BAD_VIDEOS)


def test_training_skips_bad_videos_logs_and_counts_them(base, tmp_path, capsys):
    folder = copy_set(base, str(tmp_path / "set"))
    os.remove(os.path.join(folder, "videos", "video3.mp4"))
    os.remove(os.path.join(folder, "videos", "video5.mp4"))
    _text_named_mp4(os.path.join(folder, "videos", "video5.mp4"))
    out = str(tmp_path / "run")
    # without the flag: the missing file is named before anything is trained or written
    failing_run(train_main, tiny_flags(folder, out) + ["--epochs", "1"], capsys, [out, folder],
                "1 of 24 videos of msrvtt train are missing or empty", "video3 (missing)")
    # one batch of all 23 remaining videos, so that the undecodable one is certainly drawn
    assert train_main(tiny_flags(folder, out) + ["--epochs", "1", "--skip_bad_videos", "--batch_size", "23"]) == 0
    log = text_of(os.path.join(out, "log.txt"))
    assert "skipping video video3 of msrvtt train: missing" in log
    assert "skipping undecodable video" in log and "video5.mp4: cannot open video" in log
    assert "2 training video(s) skipped" in log
    history = json.load(open(os.path.join(out, "history.json")))["history"]
    assert history[0]["skipped_videos"] == 2 and len(read_steps(out)) == 1


@pytest.fixture(scope="module")
def odd_videos(base, checkpoint, tmp_path_factory) -> tuple[str, dict]:
    """One evaluation whose test split adds a short, a variable-frame-rate and a 4K video: it must just work."""
    root = tmp_path_factory.mktemp("odd")
    folder = copy_set(base, str(root / "set"))
    add_test_video(folder, "short", lambda p: write_mp4v(p, 3, 3, width=64, height=48))  # 1 s: 1 frame of 4
    add_test_video(folder, "vfr", _variable_frame_rate)
    add_test_video(folder, "uhd", lambda p: write_h264(p, seconds=1, fps=3, width=3840, height=2160))
    out = str(root / "out")
    assert eval_t2v(eval_args(folder, checkpoint, out)) == 0
    return folder, results(out)


def _variable_frame_rate(path):
    """300 frames: 150 at 25 fps, then 150 at 5 fps; keyframes every 30 frames so that seeking would be tempting."""
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=64x48:rate=25", "-frames:v", "300", "-vf",
                    "setpts='if(lt(N,150),N*0.04,6+(N-150)*0.2)/TB'", "-fps_mode", "vfr", "-c:v", "libx264",
                    "-preset", "ultrafast", "-g", "30", "-bf", "0", "-sc_threshold", "0", "-pix_fmt", "yuv420p", path],
                   check=True)


def _test_item(folder: str, video_id: str):
    cfg = DataConfig(datatype="msrvtt", data_path=os.path.join(folder, "data.json"),
                     features_path=os.path.join(folder, "videos"), train_csv=os.path.join(folder, "train.csv"),
                     val_csv=os.path.join(folder, "test.csv"), max_words=16, max_frames=4)
    split = build_split(cfg, "test")
    index = split.video_ids.index(video_id)
    return cfg, split.video_paths[index], split.video_view()[index]


def test_video_shorter_than_max_frames_is_padded_and_masked(odd_videos):
    folder, res = odd_videos
    assert res["num_videos"] == N_TEST + 3 and res["skipped_videos"] == 0
    _, _, item = _test_item(folder, "short")
    assert item["video_mask"].tolist() == [True, False, False, False]
    assert item["video"][0].abs().sum() > 0 and not item["video"][1:].any()


def test_variable_frame_rate_gives_the_frames_at_the_rule_positions(odd_videos):
    folder, res = odd_videos
    assert res["num_videos"] == N_TEST + 3
    cfg, path, item = _test_item(folder, "vfr")
    reference = decode_all(path)  # every frame, read in order: position k is the k-th frame shown
    cap = cv2.VideoCapture(path)
    fps = cap.get(cv2.CAP_PROP_FPS)  # the container's average rate (300 frames over 35.8 s)
    cap.release()
    expected = sample_frame_indices(len(reference), fps, 4)
    frames, indices = load_video_raw(path, cfg)
    assert indices == expected and len(reference) == 300
    for k, i in enumerate(indices):
        assert np.array_equal(frames[k], reference[i]), i
    assert item["video_mask"].all()


def test_4k_video_is_decoded_and_resized(odd_videos):
    folder, res = odd_videos
    assert res["num_videos"] == N_TEST + 3
    cfg, path, item = _test_item(folder, "uhd")
    frames, indices = load_video_raw(path, cfg)
    assert frames.shape[1:] == (2160, 3840, 3) and indices == [0]  # 3 frames at 3 fps: 1 s, frame 0
    assert item["video"].shape == (4, 3, 224, 224) and item["video_mask"].tolist() == [True, False, False, False]


def _activitynet_copy(base: str, dst: str, durations: dict[str, float]) -> str:
    """The synthetic videos in ActivityNet's layout; ``durations`` overrides the annotated duration of videos."""
    data = json.load(open(os.path.join(base, "data.json")))
    seconds = {v["video_id"]: v["seconds"] for v in data["videos"]}
    captions: dict[str, list[str]] = {}
    for s in data["sentences"]:
        captions.setdefault(s["video_id"], []).append(s["caption"])
    os.makedirs(dst)
    for name, split in (("train.json", "train"), ("val_1.json", "test")):
        ids = [v["video_id"] for v in data["videos"] if v["split"] == split]
        with open(os.path.join(dst, name), "w") as f:
            json.dump({v: {"duration": durations.get(v, seconds[v]), "timestamps": [[0, seconds[v]]] * 2,
                           "sentences": captions[v][:2]} for v in ids}, f)
    return dst


def test_clip_window_past_the_end(base, checkpoint, tmp_path, capsys):
    """An annotated end past the video's end is cut to the end; a window starting past the end is an error."""
    test_ids = [line.split(",")[2] for line in text_of(os.path.join(base, "test.csv")).splitlines()[1:]]
    first = test_ids[0]
    folder = _activitynet_copy(base, str(tmp_path / "activity"), {first: 1000.0})
    flags = ["--datatype", "activity", "--data_path", folder, "--features_path", os.path.join(base, "videos")]
    out = str(tmp_path / "out")
    assert eval_t2v(flags + EVAL + ["--init_model", checkpoint, "--output_dir", out]) == 0
    assert results(out)["num_videos"] == N_TEST and results(out)["skipped_videos"] == 0
    path = os.path.join(base, "videos", f"{first}.mp4")
    cfg = DataConfig(max_frames=4)
    assert load_video_raw(path, cfg, 0, 1000)[1] == load_video_raw(path, cfg)[1]  # the whole video
    with pytest.raises(DataError, match=rf"{first}.mp4: no frames in the window \[100, 120\] s"):
        load_video(path, cfg, 100, 120)


def test_activitynet_ids_with_a_byte_order_mark_and_an_unannotated_id(base, checkpoint, tmp_path):
    """Every id used (the mark no longer hides the first), and the listed id without annotation is counted."""
    folder = _activitynet_copy(base, str(tmp_path / "activity"), {})
    ids = list(json.load(open(os.path.join(folder, "val_1.json"))))
    with open(os.path.join(folder, "val_ids.json"), "w", encoding="utf-8-sig") as f:
        json.dump(ids + ["v_gone"], f)
    out = str(tmp_path / "out")
    flags = ["--datatype", "activity", "--data_path", folder, "--features_path", os.path.join(base, "videos")]
    assert eval_t2v(flags + EVAL + ["--init_model", checkpoint, "--output_dir", out]) == 0
    res = results(out)
    assert res["num_videos"] == N_TEST and res["skipped_videos"] == 0 and res["annotation"]["videos"] == N_TEST
    assert len(res["annotation"]["left_out"]) == 1
    assert "val_ids.json: 1 listed video(s) have no annotation in" in res["annotation"]["left_out"][0]


# ------------------------------------------------------------------------------------------- annotations

def _rewrite(path: str, edit) -> None:
    text = text_of(path)
    with open(path, "w", encoding="utf-8") as f:
        f.write(edit(text))


def _data_json(folder: str, edit) -> None:
    path = os.path.join(folder, "data.json")
    data = json.load(open(path))
    edit(data)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)


def _set_caption(folder: str, video_id: str, caption: str) -> None:
    def edit(data):
        next(s for s in data["sentences"] if s["video_id"] == video_id)["caption"] = caption
    _data_json(folder, edit)


def _test_rows(folder: str) -> list[list[str]]:
    with open(os.path.join(folder, "test.csv"), newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def _write_test_rows(folder: str, rows: list[list[str]]) -> None:
    with open(os.path.join(folder, "test.csv"), "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def _drop_sentence_column(folder):
    _write_test_rows(folder, [row[:3] for row in _test_rows(folder)])


def _test_caption(caption):
    def edit(folder):
        rows = _test_rows(folder)
        rows[2][3] = caption
        _write_test_rows(folder, rows)
    return edit


def _ids_without_video(folder):
    for k in range(25):
        add_test_video(folder, f"gone{k:02d}")


# Cases read by the evaluation (test.csv) and by training (train.csv, data.json): (edit, entry point, needles).
ANNOTATION_ERRORS = {
    "missing_file": (lambda f: os.remove(os.path.join(f, "test.csv")), "eval",
                     ["test.csv: annotation file not found"]),
    "missing_column": (_drop_sentence_column, "eval",
                       ["test.csv: missing column(s) sentence (found: key, vid_key, video_id)"]),
    "malformed_json": (lambda f: _rewrite(os.path.join(f, "data.json"), lambda t: t[:len(t) // 2]), "train",
                       ["data.json: not valid JSON (", "at line"]),
    "ids_with_no_video": (_ids_without_video, "eval",
                          ["25 of 29 videos of msrvtt test are missing or empty", "gone00 (missing)",
                           "gone19 (missing) and 5 more", "--skip_bad_videos"]),
    "train_id_with_no_caption": (lambda f: _rewrite(os.path.join(f, "train.csv"), lambda t: t + "video999\n"),
                                 "train", ["data.json: 1 videos of", "train.csv have no caption (first: video999)"]),
    "empty_caption": (_test_caption(""), "eval", ["test.csv: caption of row 3 (video video25) is empty"]),
    "whitespace_caption": (lambda f: _set_caption(f, "video7", " \t\u3000\n "), "train",
                           ["data.json: caption of sentence", "(video video7) is empty"]),
    "caption_of_10000_characters": (_test_caption("a red circle " * 769 + "xxx"), "eval",
                                    ["test.csv: caption of row 3 (video video25) has 10000 characters (more than "
                                     "8192)"]),
}


@pytest.mark.parametrize("case", list(ANNOTATION_ERRORS))
def test_bad_annotation_is_one_line_naming_file_and_entry(case, base, checkpoint, earlier_results, tmp_path, capsys):
    folder = copy_set(base, str(tmp_path / "set"))
    edit, entry, needles = ANNOTATION_ERRORS[case]
    edit(folder)
    if entry == "eval":
        out = eval_output(tmp_path, earlier_results)
        failing_run(eval_t2v, eval_args(folder, checkpoint, out), capsys, [out, folder], *needles)
    else:
        out = str(tmp_path / "run")
        failing_run(train_main, tiny_flags(folder, out) + ["--epochs", "1"], capsys, [out, folder], *needles)


def test_duplicate_key_in_a_json_object_is_refused(base, checkpoint, earlier_results, tmp_path, capsys):
    """JSON keeps the last of two equal keys silently: one annotation would vanish. Named instead."""
    folder = _activitynet_copy(base, str(tmp_path / "activity"), {})
    path = os.path.join(folder, "val_1.json")
    data = json.load(open(path))
    first = next(iter(data))
    text = json.dumps(data)
    entry = json.dumps({first: data[first]})[1:-1]
    with open(path, "w") as f:
        f.write(text[:-1] + ", " + entry + "}")  # the first video's entry once more, at the end
    out = eval_output(tmp_path, earlier_results)
    flags = ["--datatype", "activity", "--data_path", folder, "--features_path", os.path.join(base, "videos")]
    failing_run(eval_t2v, flags + EVAL + ["--init_model", checkpoint, "--output_dir", out], capsys, [out, folder],
                f"val_1.json: key '{first}' appears twice in one object")


@pytest.fixture(scope="module")
def quirky_annotations(base, checkpoint, tmp_path_factory) -> tuple[str, dict]:
    """One evaluation on annotations that are unusual but valid: test captions with control characters and emoji,
    a training video listed three times, captions of videos that no split lists."""
    root = tmp_path_factory.mktemp("quirky")
    folder = copy_set(base, str(root / "set"))
    rows = _test_rows(folder)
    rows[1][3] = "a red\x07 square\x00 slides \u200bdown \U0001F3AC\U0001F431 \u202eright\u202c \t!"
    rows[2][3] = "\U0001F534\U0001F7E5\u2b07\ufe0f"  # emoji only
    _write_test_rows(folder, rows)
    _rewrite(os.path.join(folder, "train.csv"), lambda t: t + "video3\nvideo3\n")
    _set_caption(folder, "video0", "black\x1b[31m backdrop\x00 \U0001F600 with a blue square going up \u0301")
    _data_json(folder, lambda d: d["sentences"].append({"video_id": "video_unlisted", "caption": "never used"}))
    out = str(root / "out")
    assert eval_t2v(eval_args(folder, checkpoint, out)) == 0
    return text_of(os.path.join(out, "log_eval_t2v.txt")), results(out)


def test_control_characters_and_emoji_in_captions_work(quirky_annotations):
    _, res = quirky_annotations
    assert res["num_texts"] == res["num_videos"] == N_TEST and res["skipped_videos"] == 0
    assert all(np.isfinite(v) for v in res["metrics"]["raw"].values())


def test_duplicate_video_ids_in_a_list_are_used_once_and_logged(quirky_annotations, earlier_results):
    log, res = quirky_annotations
    assert "train.csv: 1 video id(s) listed more than once, each used once (video3 x3)" in log
    assert f", {N_TRAIN} videos, " in next(line for line in log.splitlines() if "msrvtt train: " in line)
    with open(earlier_results) as f:
        assert res["sk_bank"] == json.load(f)["sk_bank"]  # the same training captions, none twice


# ---------------------------------------------------------------------------------------------- configuration

@pytest.mark.parametrize("entry", ["train", "eval_v2t"])
def test_unknown_datatype(entry, base, checkpoint, earlier_results, tmp_path, capsys):
    out = eval_output(tmp_path, earlier_results)
    if entry == "train":
        args, fn = tiny_flags(base, out) + ["--epochs", "1"], train_main
    else:
        args, fn = eval_args(base, checkpoint, out), eval_v2t
    args = [a if a != "msrvtt" else "lsmdc" for a in args]
    failing_run(fn, args, capsys, [out], "unknown --datatype 'lsmdc'; valid: msrvtt, msvd, activity, didemo, vatex")


@pytest.mark.parametrize("entry", ["train", "eval_t2v"])
def test_max_words_above_the_text_context(entry, base, checkpoint, earlier_results, tmp_path, capsys):
    out = eval_output(tmp_path, earlier_results)
    if entry == "train":
        args, fn = tiny_flags(base, out) + ["--epochs", "1", "--max_words", "78"], train_main
        needles = ("--max_words 78 exceeds CLIP's context of 77",)
    else:  # evaluation takes --max_words from the checkpoint: a contradicting flag names both values
        args, fn = eval_args(base, checkpoint, out, "--max_words", "78"), eval_t2v
        needles = ("--max_words 78 does not match the checkpoint", "trained with --max_words 16")
    failing_run(fn, args, capsys, [out], *needles)


def test_batch_size_not_divisible_by_world_size(base, tmp_path, capsys, monkeypatch):
    """What each torchrun process sees: refused before the process group starts, so no rank waits for another."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    out = str(tmp_path / "run")
    failing_run(train_main, tiny_flags(base, out) + ["--batch_size", "7"], capsys, [str(tmp_path)],
                "error: [rank 1] --batch_size 7 (global) is not divisible by 2 processes x 1 accumulation steps")
    assert not os.path.exists(out)


@pytest.mark.parametrize("entry", ["train", "eval_t2v"])
def test_output_dir_not_writable(entry, base, checkpoint, tmp_path, capsys):
    """A folder under a regular file: not creatable even for root (chmod would not stop root)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = str(blocker / "out")
    args = tiny_flags(base, out) + ["--epochs", "1"] if entry == "train" else eval_args(base, checkpoint, out)
    failing_run(train_main if entry == "train" else eval_t2v, args, capsys, [str(tmp_path)],
                f"--output_dir {out} is not writable (Not a directory)")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_dir(base, tmp_path, capsys):
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(0o500)
    try:
        failing_run(train_main, tiny_flags(base, str(out)) + ["--epochs", "1"], capsys, [str(tmp_path)],
                    f"--output_dir {out} is not writable (Permission denied)")
    finally:
        out.chmod(0o700)


# ------------------------------------------------------------------------------------------------ checkpoints

def _truncate(src: str, dst: str) -> str:
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(data[:len(data) * 2 // 3])
    return dst


class _RunsCode:
    """Unpickling calls ``os.mkdir(marker)``: proof that code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def _bad_checkpoint(kind: str, checkpoint: str, folder: str) -> tuple[str, list[str]]:
    """A bad checkpoint file in ``folder`` and what the error line says."""
    path = os.path.join(folder, f"{kind}.pth")
    if kind == "missing":
        return path, [f"checkpoint not found: {path}"]
    if kind == "truncated":
        return _truncate(checkpoint, path), [f"{path}: unreadable or truncated checkpoint"]
    if kind == "pickle_running_code":
        torch.save({"format": "ucofia-checkpoint-v1", "model": _RunsCode(os.path.join(folder, "pwned"))}, path)
        return path, [f"{path}: refused: the file holds Python objects that could run code", "mkdir"]
    if kind == "nan_weights":
        obj = read_checkpoint(checkpoint)
        obj["model"]["levels.sentence_proj"] = obj["model"]["levels.sentence_proj"] * float("nan")
        torch.save(obj, path)
        return path, [f"{path}: 1 tensor(s) hold NaN or inf values (levels.sentence_proj)"]
    raise ValueError(kind)


CHECKPOINT_USES = {"eval_init_model": (eval_t2v, "--init_model"), "train_init_model": (train_main, "--init_model"),
                   "train_resume_model": (train_main, "--resume_model")}


@pytest.mark.parametrize("kind,use", [("missing", "eval_init_model"), ("missing", "train_resume_model"),
                                      ("truncated", "eval_init_model"), ("truncated", "train_resume_model"),
                                      ("pickle_running_code", "eval_init_model"),
                                      ("pickle_running_code", "train_resume_model"),
                                      ("nan_weights", "train_init_model")])
def test_bad_checkpoint_file(kind, use, base, checkpoint, earlier_results, tmp_path, capsys):
    folder = str(tmp_path / "ckpts")
    os.makedirs(folder)
    path, needles = _bad_checkpoint(kind, checkpoint, folder)
    fn, flag = CHECKPOINT_USES[use]
    out = eval_output(tmp_path, earlier_results)
    if fn is eval_t2v:
        args = eval_args(base, path, out)
    else:
        args = tiny_flags(base, out) + ["--epochs", "1", flag, path]
    failing_run(fn, args, capsys, [out, folder], *needles)
    assert not os.path.exists(os.path.join(folder, "pwned"))


def test_checkpoint_of_another_architecture(base, checkpoint, tmp_path, capsys):
    """Trained with the temporal transformer (seqTransf), loaded into a meanP model: the keys are listed."""
    out = str(tmp_path / "run")
    failing_run(train_main, tiny_flags(base, out) + ["--epochs", "1", "--sim_header", "meanP",
                                                     "--init_model", checkpoint], capsys, [out],
                f"{checkpoint}: does not match this model's architecture: unexpected", "temporal.")


def test_clip_backbone_given_as_a_ucofia_checkpoint(base, checkpoint, earlier_results, tmp_path, capsys):
    """A bare CLIP state dict (what ViT-B-32.pt holds) passed to --init_model of the evaluation."""
    clip = {k[len("clip."):]: v for k, v in read_checkpoint(checkpoint)["model"].items() if k.startswith("clip.")}
    path = str(tmp_path / "clip_only.pth")
    torch.save(clip, path)
    out = eval_output(tmp_path, earlier_results)
    failing_run(eval_t2v, eval_args(base, path, out), capsys, [out], f"{path}: holds no CLIP backbone weights")


def test_published_checkpoint_with_an_unexpected_key(base, checkpoint, earlier_results, tmp_path, capsys):
    from test_published_import import published_layout

    from modules.model.build import build_model_from_checkpoint
    from modules.model.ucofia import ModelConfig

    model, _ = build_model_from_checkpoint(checkpoint, ModelConfig(max_words=16, max_frames=4))
    published = published_layout(model)
    published["visual_token_selector.score_predictor.extra_head.weight"] = torch.zeros(4, 4)
    path = str(tmp_path / "pytorch_model.bin.4")
    torch.save(published, path)
    out = eval_output(tmp_path, earlier_results)
    failing_run(eval_t2v, eval_args(base, path, out), capsys, [out],
                "published checkpoint: keys this model does not have: "
                "visual_token_selector.score_predictor.extra_head.weight")
    del published["visual_token_selector.score_predictor.extra_head.weight"]
    torch.save(published, path)  # the same file without the stray key imports and evaluates
    assert eval_t2v(eval_args(base, path, str(tmp_path / "ok"))) == 0


# ------------------------------------------------------------------------------------------------------ faults

# Runs train.main with torch.save replaced: the KILL_AT_SAVE-th save writes half of its bytes, then the process
# SIGKILLs itself (uncatchable: no cleanup code runs), as a kill at that moment from outside would.
KILL_DURING_SAVE = """
import io, os, signal, sys
import torch
real_save, saves = torch.save, [0]
def save(obj, f, *args, **kwargs):
    saves[0] += 1
    if saves[0] < int(os.environ["KILL_AT_SAVE"]):
        return real_save(obj, f, *args, **kwargs)
    buffer = io.BytesIO()
    real_save(obj, buffer)
    f.write(buffer.getvalue()[:buffer.tell() // 2])
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = save
from train.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights(base, reference_run, tmp_path):
    """The kill-and-resume test: the reference run's flags, SIGKILLed (uncatchable: no clean-up code runs) at the
    worst moment, half of the checkpoint of step 5 written; the previous checkpoint is whole, and --resume_model in a
    new process ends with the uninterrupted run's weights, history and step log.

    Saves: steps 1, 2 (mid-epoch), end of epoch 1 (last, best), step 4, then step 5: killed mid-write.
    """
    out = str(tmp_path / "killed")
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", KILL_AT_SAVE="6")
    r = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE] + tiny_flags(base, out) + REFERENCE, cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == -9, r.stderr[-3000:]
    folder = os.path.join(out, "checkpoints")
    stale = [n for n in os.listdir(folder) if n.endswith(".tmp")]
    assert len(stale) == 1 and stale[0].startswith(".last.pth."), os.listdir(folder)
    last = os.path.join(folder, "last.pth")
    obj = read_checkpoint(last)  # the step-4 checkpoint, whole
    assert (obj["epoch"], obj["epoch_step"], obj["global_step"]) == (1, 1, 4)
    assert read_checkpoint(os.path.join(folder, "best.pth"))["global_step"] == 3
    assert [s["step"] for s in read_steps(out)] == [1, 2, 3, 4, 5]  # step 5 done, its checkpoint not

    r = run_module("train.main", tiny_flags(base, out) + REFERENCE + ["--resume_model", last])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "left by a checkpoint write that was interrupted" in r.stderr
    assert not [n for n in os.listdir(folder) if n.endswith(".tmp")]  # the stale temporary is gone
    # weights, validation history and every step logged once with the uninterrupted run's losses (step 5, redone,
    # is not repeated)
    same_run(reference_run, out)


class _FullDisk:
    """Stands in for ``os`` inside one module: files it opens with ``fdopen`` take ``capacity`` bytes, then every
    write fails with ENOSPC, as on a full disk (the bytes that fit are written)."""

    def __init__(self, capacity: int, after_files: int = 0):
        self.capacity, self.after_files, self.opened = capacity, after_files, 0

    def __getattr__(self, name):
        return getattr(os, name)

    def fdopen(self, fd, *args, **kwargs):
        f = os.fdopen(fd, *args, **kwargs)
        self.opened += 1
        return f if self.opened <= self.after_files else _LimitedFile(f, self.capacity)


class _LimitedFile:
    """A file (binary or text) that takes ``capacity`` more bytes or characters, then fails like a full disk."""

    def __init__(self, f, capacity: int):
        self.f, self.room = f, capacity

    def write(self, data):
        data = data if isinstance(data, (str, bytes)) else bytes(data)
        if len(data) > self.room:
            self.f.write(data[:self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def flush(self):
        self.f.flush()

    def fileno(self):
        return self.f.fileno()

    def close(self):
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_full_disk_while_writing_a_checkpoint(base, tmp_path, capsys, monkeypatch):
    """The first checkpoint (step 1) fits, the disk is full at the second: the run stops, step 1's stays whole."""
    # files written atomically, in order: config.json, step 1's checkpoint, then step 2's: the disk is full
    monkeypatch.setattr(checkpoint_module, "os", _FullDisk(capacity=1 << 20, after_files=2))
    out = str(tmp_path / "run")
    capsys.readouterr()
    code = train_main(tiny_flags(base, out) + ["--epochs", "1", "--checkpoint_every", "1"])
    last = os.path.join(out, "checkpoints", "last.pth")
    error_line(capsys, code, f"cannot write {last}: No space left on device; the previous file is intact")
    monkeypatch.undo()
    assert read_checkpoint(last)["global_step"] == 1
    assert os.listdir(os.path.dirname(last)) == ["last.pth"]  # no partial temporary left


def test_full_disk_while_appending_to_the_step_log(base, tmp_path, capsys, monkeypatch):
    """The per-step log is appended to, not replaced: a full disk there also ends in one line naming the file."""
    from modules.training import run as training

    def open_on_full_disk(path, mode="r", *args, **kwargs):
        f = open(path, mode, *args, **kwargs)
        return _LimitedFile(f, 0) if str(path).endswith("train_steps.jsonl") else f

    monkeypatch.setattr(training, "open", open_on_full_disk, raising=False)  # shadows the builtin in that module
    out = str(tmp_path / "run")
    capsys.readouterr()
    code = train_main(tiny_flags(base, out) + ["--epochs", "1"])
    error_line(capsys, code, f"cannot write {os.path.join(out, 'train_steps.jsonl')}: No space left on device")


def test_full_disk_while_writing_results(base, checkpoint, earlier_results, tmp_path, capsys, monkeypatch):
    out = eval_output(tmp_path, earlier_results)
    before = fingerprint(out)
    monkeypatch.setattr(checkpoint_module, "os", _FullDisk(capacity=100))
    capsys.readouterr()
    code = eval_t2v(eval_args(base, checkpoint, out))
    monkeypatch.undo()
    error_line(capsys, code, f"cannot write {os.path.join(out, 'results_t2v.json')}: No space left on device; "
                             "the previous file is intact")
    assert_untouched(before, out)


def _nan_at_calls(monkeypatch, calls: set[int]) -> None:
    """The model's training loss is NaN at the given forward calls (1-based): a diverging batch."""
    from modules.model.ucofia import UCoFiA

    real, count = UCoFiA.forward, [0]

    def forward(self, *args, **kwargs):
        count[0] += 1
        loss = real(self, *args, **kwargs)
        return loss * float("nan") if count[0] in calls else loss

    monkeypatch.setattr(UCoFiA, "forward", forward)


def test_non_finite_loss_stops_naming_epoch_step_and_batch(base, tmp_path, capsys, monkeypatch):
    _nan_at_calls(monkeypatch, {2})
    out = str(tmp_path / "run")
    capsys.readouterr()
    code = train_main(tiny_flags(base, out) + ["--epochs", "1", "--checkpoint_every", "1"])
    line = error_line(capsys, code, "non-finite loss nan at epoch 1, step 2 (global step 2), batch indices [",
                      "--skip_nonfinite_loss")
    indices = line.split("batch indices [")[1].split("]")[0].split(", ")
    assert len(indices) == 8 and all(0 <= int(i) < N_TRAIN for i in indices)  # the batch's dataset items
    assert read_checkpoint(os.path.join(out, "checkpoints", "last.pth"))["global_step"] == 1  # step 1's, whole
    assert not [n for n in os.listdir(os.path.join(out, "checkpoints")) if n.endswith(".tmp")]


def test_non_finite_loss_skipped_with_the_flag_is_logged_and_counted(base, tmp_path, monkeypatch):
    _nan_at_calls(monkeypatch, {2})
    out = str(tmp_path / "run")
    assert train_main(tiny_flags(base, out) + ["--epochs", "1", "--skip_nonfinite_loss"]) == 0
    log = text_of(os.path.join(out, "log.txt"))
    assert "skipping a step with non-finite loss at epoch 1, step 2 (global step 2), batch indices [" in log
    history = json.load(open(os.path.join(out, "history.json")))["history"]
    assert history[0]["skipped_steps"] == 1 and np.isfinite(history[0]["train_loss"])
    steps = read_steps(out)
    assert [s["step"] for s in steps] == [1, 2, 3] and steps[1]["loss"] is None and "skipped" in steps[1]
    weights = read_checkpoint(os.path.join(out, "checkpoints", "last.pth"))["model"]
    assert all(bool(torch.isfinite(v).all()) for v in weights.values() if v.is_floating_point())


@pytest.mark.slow
def test_one_of_two_gloo_ranks_raising_ends_the_job(base, checkpoint, earlier_results, tmp_path):
    """Evaluation shards the test videos contiguously: the last one, unreadable, is rank 1's alone. Rank 0 waits in
    the gather; torchrun ends it when rank 1 exits. Nothing hangs, nothing is written."""
    folder = copy_set(base, str(tmp_path / "set"))
    add_test_video(folder, "zz_rank1_only", _text_named_mp4)
    out = eval_output(tmp_path, earlier_results)
    before = fingerprint(out, folder)
    started = time.time()
    r = run_module("eval_t2v.main", eval_args(folder, checkpoint, out), nproc=2, timeout=180)
    assert r.returncode != 0 and time.time() - started < 120
    lines = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert lines == [f"error: [rank 1] {os.path.join(folder, 'videos', 'zz_rank1_only.mp4')}: cannot open video "
                     "(missing, empty, truncated or not a video)"], r.stderr[-3000:]
    assert_untouched(before, out, folder)
