"""The synthetic set: MSR-VTT layout read by the msrvtt reader, deterministic, and its videos show what the captions
say (colour and direction measured on the decoded frames)."""
import json
import os

import numpy as np
import pandas as pd
from data_fixtures import decode_all

from modules.data import DataConfig, build_split
from modules.data.synthetic import COLOURS, OPPOSITE, generate
from scripts.make_synthetic import main as make_synthetic


def _files(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in ("train.csv", "test.csv", "data.json")}


def test_layout_counts_and_determinism(tmp_path):
    assert make_synthetic(["--out", str(tmp_path / "a"), "--train", "6", "--test", "4", "--seed", "3"]) == 0
    generate(str(tmp_path / "b"), 6, 4, seed=3)
    generate(str(tmp_path / "c"), 6, 4, seed=4)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert _files(a) == _files(b) and _files(a) != _files(str(tmp_path / "c"))
    for vid in ("video0", "video9"):
        fa, fb = decode_all(f"{a}/videos/{vid}.mp4"), decode_all(f"{b}/videos/{vid}.mp4")
        assert len(fa) == len(fb) and all(np.array_equal(x, y) for x, y in zip(fa, fb))
    assert list(pd.read_csv(f"{a}/train.csv").columns) == ["video_id"]
    test_csv = pd.read_csv(f"{a}/test.csv")
    assert list(test_csv.columns) == ["key", "vid_key", "video_id", "sentence"]
    assert test_csv["video_id"].tolist() == [f"video{k}" for k in range(6, 10)]
    data = json.load(open(f"{a}/data.json"))
    assert {v["video_id"] for v in data["videos"]} == {f"video{k}" for k in range(10)}

    cfg = DataConfig(datatype="msrvtt", data_path=f"{a}/data.json", features_path=f"{a}/videos",
                     train_csv=f"{a}/train.csv", val_csv=f"{a}/test.csv", max_frames=12, image_resolution=32)
    train, test = build_split(cfg, "train"), build_split(cfg, "test")
    per_video = np.bincount(train.caption_to_video)
    assert len(train) == 6 and per_video.min() >= 3 and per_video.max() <= 5
    assert len(test.captions) == 4 and test.caption_to_video.tolist() == [0, 1, 2, 3]
    item = test[0]
    n = item["video_mask"].sum().item()
    assert 8 <= n <= 12 and item["video_mask"][:n].all()  # 8-12 s at 3 fps, one frame per second


def test_videos_show_their_captions(tmp_path):
    specs = generate(str(tmp_path), 2, 8, seed=0)
    test = [s for s in specs if s.split == "test"]
    for first, second in zip(test[::2], test[1::2]):  # pairs that differ only in direction
        assert second.direction == OPPOSITE[first.direction]
        assert (first.colour, first.shape, first.background) == (second.colour, second.shape, second.background)
    assert len({(s.colour, s.shape, s.background, s.direction) for s in test}) == len(test)
    sentences = json.load(open(tmp_path / "data.json"))["sentences"]
    for spec in specs:
        frames = decode_all(str(tmp_path / "videos" / f"{spec.video_id}.mp4"))
        assert len(frames) == spec.seconds * 3 and frames[0].shape == (96, 128, 3)
        colour = np.array(COLOURS[spec.colour], dtype=np.int32)
        centres = []
        for frame in (frames[0], frames[-1]):
            ys, xs = np.nonzero(np.abs(frame.astype(np.int32) - colour).sum(-1) < 60)
            assert len(xs) > 50, f"{spec.video_id}: no {spec.colour} shape found"
            centres.append((xs.mean(), ys.mean()))
        (x0, y0), (x1, y1) = centres
        moved = {"left": x0 - x1, "right": x1 - x0, "up": y0 - y1, "down": y1 - y0}[spec.direction]
        assert moved > 20, f"{spec.video_id} should move {spec.direction}"
        for caption in (s["caption"] for s in sentences if s["video_id"] == spec.video_id):
            assert spec.colour in caption and spec.shape in caption and spec.background in caption
