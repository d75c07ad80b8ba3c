"""scripts/compress_video.py: 3 fps, shorter side 224, mirrored folders, atomic outputs, resumable, failures named."""
import os

import cv2
from data_fixtures import ffmpeg_exe, write_mp4v

from scripts.compress_video import main as compress


def _props(path):
    cap = cv2.VideoCapture(path)
    props = (cap.get(cv2.CAP_PROP_FPS), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
             int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
    cap.release()
    return props


def test_compress_folder(tmp_path, capsys):
    src, dst = tmp_path / "raw", tmp_path / "out"
    os.makedirs(src / "sub")
    write_mp4v(str(src / "wide.mp4"), 20, 10, width=160, height=90)      # 2 s landscape
    write_mp4v(str(src / "sub" / "tall.avi"), 20, 10, width=90, height=160)  # 2 s portrait, other container
    (src / "broken.mp4").write_bytes(os.urandom(3000))
    (src / "notes.txt").write_text("not a video")
    args = ["--input_root", str(src), "--output_root", str(dst), "--workers", "2", "--ffmpeg", ffmpeg_exe()]
    assert compress(args) == 1  # one failure
    err = capsys.readouterr().err
    assert "failed: " + str(src / "broken.mp4") in err
    fps, w, h, n = _props(str(dst / "wide.mp4"))
    # 160x90 -> 398x224 (even width); 2 s at 3 fps, plus up to two repeats of the last frame from ffmpeg's -r,
    # which the published script uses.
    assert fps == 3 and h == 224 and w == 398 and 6 <= n <= 8
    fps, w, h, n = _props(str(dst / "sub" / "tall.mp4"))
    assert fps == 3 and w == 224 and h == 398
    assert sorted(os.listdir(dst)) == ["sub", "wide.mp4"]  # no partial files, no output for the broken input
    stamp = os.stat(dst / "wide.mp4").st_mtime_ns
    os.remove(src / "broken.mp4")
    assert compress(args) == 0
    assert "2 videos, 2 already done, 0 to encode" in capsys.readouterr().out
    assert os.stat(dst / "wide.mp4").st_mtime_ns == stamp


def test_without_a_system_ffmpeg_the_required_package_ships_one(tmp_path, capsys, monkeypatch):
    """The README's data path after `pip install -e .` alone: no ffmpeg on PATH, imageio-ffmpeg's binary is used."""
    src, dst = tmp_path / "raw", tmp_path / "out"
    os.makedirs(src)
    write_mp4v(str(src / "clip.mp4"), 20, 10, width=160, height=90)
    empty = tmp_path / "bin"
    os.makedirs(empty)
    monkeypatch.setenv("PATH", str(empty))  # nothing named ffmpeg anywhere on PATH
    assert compress(["--input_root", str(src), "--output_root", str(dst), "--workers", "1"]) == 0
    assert "imageio_ffmpeg" in capsys.readouterr().out  # "... to encode with <imageio-ffmpeg's binary>"
    assert _props(str(dst / "clip.mp4"))[1:3] == (398, 224)
