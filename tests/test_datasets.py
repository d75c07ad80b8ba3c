"""Every dataset reader on a hand-built fixture in its real file format: exact captions, counts and mappings;
the training-item rules; text/video views; bad videos and malformed annotations; the registry."""
import argparse
import datetime
import os

import numpy as np
import pytest
import torch
from data_fixtures import copy_videos, write_json, write_lines, write_mp4v, write_pickle
from torch.utils.data import DataLoader

from modules.common.errors import ConfigError, DataError
from modules.data import DATASETS, DataConfig, build_split, collate_skip_none, has_val_split
from modules.model.tokenizer import text_mask, tokenize

SMALL = dict(max_words=16, max_frames=4, image_resolution=32)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return write_mp4v(str(tmp_path_factory.mktemp("tpl") / "t.mp4"), 9, 3)  # 3 s at 3 fps: 3 sampled frames


def msrvtt(root, template, videos=("video0", "video1", "video2", "video7", "video8")):
    copy_videos(template, str(root / "videos"), [f"{v}.mp4" for v in videos])
    (root / "train.csv").write_text("video_id\nvideo0\nvideo1\nvideo2\n")
    (root / "test.csv").write_text("key,vid_key,video_id,sentence\nret0,msr7,video7,a dog runs \U0001F415\n"
                                   "ret1,msr8,video8,\"a cat, sleeping\x07\"\n")
    sentences = [("video1", "b one"), ("video0", "a one"), ("video5", "not in train"), ("video0", "a two"),
                 ("video2", "c one"), ("video1", "b two"), ("video0", "a three"), ("video7", "test caption")]
    write_json(str(root / "MSRVTT_data.json"), {"videos": [], "sentences": [
        {"video_id": v, "caption": c, "sen_id": k} for k, (v, c) in enumerate(sentences)]})
    return DataConfig(datatype="msrvtt", data_path=str(root / "MSRVTT_data.json"), features_path=str(root / "videos"),
                      train_csv=str(root / "train.csv"), val_csv=str(root / "test.csv"), **SMALL)


def test_msrvtt(tmp_path, template):
    cfg = msrvtt(tmp_path, template)
    train = build_split(cfg, "train")
    assert train.video_ids == ["video0", "video1", "video2"]
    assert train.captions == ["a one", "a two", "a three", "b one", "b two", "c one"]
    assert train.caption_to_video.tolist() == [0, 0, 0, 1, 1, 2] and train.caption_to_video.dtype == np.int64
    assert train.video_paths == [os.path.join(cfg.features_path, f"{v}.mp4") for v in train.video_ids]
    assert len(train) == 3  # one item per video without --expand_msrvtt_sentences
    item = train[1]
    assert item["text_ids"].shape == (16,) and item["text_mask"].dtype == torch.bool
    assert item["video"].shape == (4, 3, 32, 32) and item["video_mask"].tolist() == [True, True, True, False]
    assert item["index"] == 1
    caption = train.captions[train.pair(1)[0]]
    assert torch.equal(item["text_ids"], tokenize([caption], 16)[0]) and caption.startswith("b ")
    assert torch.equal(item["text_mask"], text_mask(tokenize([caption], 16))[0])

    expanded = build_split(DataConfig(**{**cfg.__dict__, "expand_msrvtt_sentences": True}), "train")
    assert len(expanded) == 6 and expanded.captions == train.captions
    assert [expanded.pair(i) for i in range(6)] == [(i, v) for i, v in enumerate([0, 0, 0, 1, 1, 2])]

    test = build_split(cfg, "test")
    assert test.video_ids == ["video7", "video8"] and test.caption_to_video.tolist() == [0, 1]
    assert test.captions == ["a dog runs \U0001F415", "a cat, sleeping\x07"]
    assert test[0]["text_mask"].sum() > 2  # emoji and control characters tokenise without trouble
    val = build_split(cfg, "val")
    assert val.is_test_fallback and val.split == "test" and val.captions == test.captions
    assert not has_val_split("msrvtt") and not test.is_test_fallback


def test_caption_choice_is_a_function_of_seed_epoch_index(tmp_path, template):
    cfg = msrvtt(tmp_path, template)
    train = build_split(cfg, "train")
    picks = {e: [train.pair(i, e)[0] for i in range(3)] for e in range(30)}
    assert all(train.caption_to_video[c] == i for p in picks.values() for i, c in enumerate(p))
    assert {p[0] for p in picks.values()} == {0, 1, 2}  # video0's three captions all come up
    assert build_split(cfg, "train").pair(0, 7) == train.pair(0, 7)
    other = build_split(DataConfig(**{**cfg.__dict__, "seed": 1}), "train")
    assert [other.pair(0, e) for e in range(30)] != [train.pair(0, e) for e in range(30)]
    # Same items whatever the number of workers, and set_epoch reaches the workers.
    train.set_epoch(5)
    texts = {}
    for workers in (0, 2):
        loader = DataLoader(train, batch_size=2, num_workers=workers)
        texts[workers] = torch.cat([b["text_ids"] for b in loader])
    assert torch.equal(texts[0], texts[2])
    assert torch.equal(texts[0], tokenize([train.captions[train.pair(i, 5)[0]] for i in range(3)], 16))


def test_train_frame_shuffle_is_a_function_of_seed_epoch_index(tmp_path, template):
    cfg = msrvtt(tmp_path, template)
    shuffled = build_split(DataConfig(**{**cfg.__dict__, "train_frame_order": 2}), "train")
    ordered = build_split(cfg, "train")
    reference = ordered[0]["video"][:3]  # the three real frames in time order
    orders = []
    for epoch in range(6):
        shuffled.set_epoch(epoch)
        video = shuffled[0]["video"][:3]
        assert torch.equal(video, shuffled[0]["video"][:3])  # same epoch, same order
        orders.append(tuple(next(j for j in range(3) if torch.equal(video[i], reference[j])) for i in range(3)))
    assert all(sorted(o) == [0, 1, 2] for o in orders) and len(set(orders)) > 1
    assert torch.equal(shuffled.video_view()[0]["video"][:3], reference)  # evaluation order stays 0


def test_views(tmp_path, template, monkeypatch):
    cfg = msrvtt(tmp_path, template)
    train = build_split(cfg, "train")
    videos = train.video_view()
    assert len(videos) == 3 and [videos[i]["index"] for i in range(3)] == [0, 1, 2]
    monkeypatch.setattr("modules.data.frame_cache.decode_clip",
                        lambda *a, **k: pytest.fail("text view decoded a video"))
    texts = train.text_view()
    assert len(texts) == 6  # every caption of every training video, with or without --expand_msrvtt_sentences
    batch = next(iter(DataLoader(texts, batch_size=6)))
    assert torch.equal(batch["text_ids"], tokenize(train.captions, 16)) and batch["index"].tolist() == list(range(6))
    assert set(batch) == {"text_ids", "text_mask", "index"}


def test_msvd(tmp_path, template):
    copy_videos(template, str(tmp_path / "videos"), ["vidA_1_5.avi", "vidB_2_9.mp4", "vidC_0_4.mp4"])
    write_pickle(str(tmp_path / "raw-captions.pkl"), {
        "vidA_1_5": [["a", "man", "sings"], ["someone", "is", "singing"]],
        "vidB_2_9": [["a", "dog"], ["the", "dog", "barks"], ["dog"]], "vidC_0_4": [["x"]]})
    write_lines(str(tmp_path / "train_list.txt"), ["vidC_0_4"])
    write_lines(str(tmp_path / "val_list.txt"), ["vidC_0_4"])
    write_lines(str(tmp_path / "test_list.txt"), ["vidB_2_9", "vidA_1_5"])
    cfg = DataConfig(datatype="msvd", data_path=str(tmp_path), features_path=str(tmp_path / "videos"), **SMALL)
    test = build_split(cfg, "test")
    assert test.video_ids == ["vidB_2_9", "vidA_1_5"]
    assert test.video_paths[1].endswith("vidA_1_5.avi")
    assert test.captions == ["a dog", "the dog barks", "dog", "a man sings", "someone is singing"]
    assert test.caption_to_video.tolist() == [0, 0, 0, 1, 1] and len(test) == 5
    assert has_val_split("msvd") and not build_split(cfg, "val").is_test_fallback
    assert build_split(cfg, "train")[0]["text_ids"].shape == (16,)


def test_msvd_pickle_that_runs_code_is_refused(tmp_path):
    write_pickle(str(tmp_path / "raw-captions.pkl"), {"v": [["a"]], "when": datetime.date(2020, 1, 1)})
    write_lines(str(tmp_path / "test_list.txt"), ["v"])
    os.makedirs(tmp_path / "videos")
    cfg = DataConfig(datatype="msvd", data_path=str(tmp_path), features_path=str(tmp_path / "videos"))
    with pytest.raises(DataError, match="raw-captions.pkl.*refusing to load datetime.date"):
        build_split(cfg, "test")


def test_activitynet(tmp_path, template):
    copy_videos(template, str(tmp_path / "videos"), ["v_aaa.mp4", "bbb.mkv", "v_ccc.mp4"])
    write_json(str(tmp_path / "train.json"), {
        "v_ccc": {"duration": 5.0, "timestamps": [[0, 5]], "sentences": ["One."]}})
    write_json(str(tmp_path / "val_1.json"), {
        "v_aaa": {"duration": 12.3, "timestamps": [[0, 3], [3, 9]], "sentences": ["A man cooks.", " He eats."]},
        "v_bbb": {"duration": 30, "timestamps": [[0, 30]], "sentences": ["Long take."]}})
    write_json(str(tmp_path / "val_ids.json"), ["v_bbb", "v_aaa", "v_zzz"])  # v_zzz has no annotation
    cfg = DataConfig(datatype="activity", data_path=str(tmp_path), features_path=str(tmp_path / "videos"), **SMALL)
    test = build_split(cfg, "test")
    assert test.video_ids == ["v_bbb", "v_aaa"] and test.video_paths[0].endswith("bbb.mkv")
    assert test.captions == ["Long take.", "A man cooks.  He eats."]
    assert test.caption_to_video.tolist() == [0, 1] and test.windows == [(0, 30), (0, 13)]
    val = build_split(cfg, "val")
    assert val.is_test_fallback and val.video_ids == test.video_ids and not has_val_split("activity")
    train = build_split(cfg, "train")
    assert train.captions == ["One."] and train[0]["video_mask"].sum() == 3


def test_didemo(tmp_path, template):
    copy_videos(template, str(tmp_path / "videos"), ["x1.mp4", "x2.mov.mp4", "x3.mp4"])
    moments = [{"video": "x2.mov", "description": "a bird flies", "times": [[0, 0]]},
               {"video": "x1.mov", "description": "first", "times": [[1, 2]]},
               {"video": "x2.mov", "description": "it lands", "times": [[2, 3]]},
               {"video": "x3.mov", "description": "not listed", "times": [[0, 1]]}]
    for split in ("train", "val", "test"):
        write_json(str(tmp_path / f"{split}_data.json"), moments)
        write_lines(str(tmp_path / f"{split}_list.txt"), ["x1.mov", "x2.mov"])
    cfg = DataConfig(datatype="didemo", data_path=str(tmp_path), features_path=str(tmp_path / "videos"), **SMALL)
    test = build_split(cfg, "test")
    assert test.video_ids == ["x2.mov", "x1.mov"]
    assert test.video_paths[0].endswith("x2.mov.mp4") and test.video_paths[1].endswith("x1.mp4")
    assert test.captions == ["a bird flies it lands", "first"] and test.caption_to_video.tolist() == [0, 1]
    assert test.windows == [(0, 31), (0, 31)] and has_val_split("didemo")
    assert build_split(cfg, "val").split == "val"


def test_vatex(tmp_path, template):
    copy_videos(template, str(tmp_path / "videos"), ["yt1_000010_000020.mp4", "yt2_000000_000010.webm"])
    write_json(str(tmp_path / "ref_captions.json"), {
        "yt1_000010_000020": [f"cap {k}" for k in range(10)], "yt2_000000_000010": ["only one"]})
    write_lines(str(tmp_path / "train_list.txt"), ["yt2_000000_000010"])
    write_lines(str(tmp_path / "test_list.txt"), ["yt1_000010_000020", "yt2_000000_000010"])
    cfg = DataConfig(datatype="vatex", data_path=str(tmp_path), features_path=str(tmp_path / "videos"), **SMALL)
    test = build_split(cfg, "test")
    assert len(test.captions) == 11 and test.caption_to_video.tolist() == [0] * 10 + [1]
    assert build_split(cfg, "val").is_test_fallback and not has_val_split("vatex")
    assert len(build_split(cfg, "train")) == 1


def test_missing_videos_are_named(tmp_path, template):
    ids = [f"v{k:02d}" for k in range(30)]
    copy_videos(template, str(tmp_path / "videos"), [f"{v}.mp4" for v in ids[:5]])
    (tmp_path / "videos" / "v04.mp4").write_bytes(b"")
    write_json(str(tmp_path / "ref_captions.json"), {v: [f"caption of {v}", "another"] for v in ids})
    write_lines(str(tmp_path / "test_list.txt"), ids)
    cfg = DataConfig(datatype="vatex", data_path=str(tmp_path), features_path=str(tmp_path / "videos"), **SMALL)
    with pytest.raises(DataError) as err:
        build_split(cfg, "test")
    message = str(err.value)
    assert "26 of 30 videos" in message and "v04 (empty file)" in message and "v05 (missing)" in message
    assert "v23 (missing)" in message and "v24" not in message and "and 6 more" in message
    assert "\n" not in message
    kept = build_split(DataConfig(**{**cfg.__dict__, "skip_bad_videos": True}), "test")
    assert kept.video_ids == ids[:4] and kept.caption_to_video.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert kept.captions[2] == "caption of v01" and len(kept.skipped) == 26
    assert kept.skipped[0].endswith("v04.mp4")


def test_undecodable_video(tmp_path, template):
    cfg = msrvtt(tmp_path, template)
    bad = os.path.join(cfg.features_path, "video1.mp4")
    with open(bad, "wb") as f:
        f.write(os.urandom(2000))
    train = build_split(cfg, "train")
    with pytest.raises(DataError, match="video1.mp4"):
        train[1]
    skipping = build_split(DataConfig(**{**cfg.__dict__, "skip_bad_videos": True}), "train")
    assert skipping[1]["index"] == 2  # replaced by the next item
    assert skipping[1]["index"] == 2 and skipping.undecodable == [bad] and skipping.skipped == []
    view = build_split(DataConfig(**{**cfg.__dict__, "skip_bad_videos": True}), "train").video_view()
    batches = list(DataLoader(view, batch_size=3, num_workers=2, collate_fn=collate_skip_none))
    assert batches[0]["index"].tolist() == [0, 2] and batches[0]["video"].shape[0] == 2
    assert view.split.undecodable == [bad]  # recorded in a worker, visible here
    assert collate_skip_none([None, None]) is None


@pytest.mark.parametrize("caption,match", [("   \t", "is empty"), ("\u200b\u2028", "is empty"),
                                           ("x" * 8193, "has 8193 characters")], ids=["blank", "invisible", "long"])
def test_bad_captions(tmp_path, template, caption, match):
    cfg = msrvtt(tmp_path, template)
    with open(cfg.val_csv, "w") as f:
        f.write(f"key,vid_key,video_id,sentence\nret0,msr7,video7,\"{caption}\"\n")
    with pytest.raises(DataError, match=r"test.csv: caption of row 2 \(video video7\) " + match):
        build_split(cfg, "test")


def test_malformed_annotations(tmp_path, template):
    cfg = msrvtt(tmp_path, template)
    (tmp_path / "bad.csv").write_text("id,sentence\nvideo7,hello\n")
    with pytest.raises(DataError, match="bad.csv: missing column.*video_id"):
        build_split(DataConfig(**{**cfg.__dict__, "val_csv": str(tmp_path / "bad.csv")}), "test")
    (tmp_path / "MSRVTT_data.json").write_text('{"sentences": [')
    with pytest.raises(DataError, match="MSRVTT_data.json: not valid JSON"):
        build_split(cfg, "train")
    write_json(str(tmp_path / "MSRVTT_data.json"), {"sentences": [{"video_id": "video0"}]})
    with pytest.raises(DataError, match="sentence 0 has no 'caption'"):
        build_split(cfg, "train")
    with pytest.raises(DataError, match="nope.csv: annotation file not found"):
        build_split(DataConfig(**{**cfg.__dict__, "train_csv": str(tmp_path / "nope.csv")}), "train")
    with pytest.raises(ConfigError, match="--train_csv is required"):
        build_split(DataConfig(**{**cfg.__dict__, "train_csv": ""}), "train")
    with pytest.raises(DataError, match="video folder"):
        build_split(DataConfig(**{**cfg.__dict__, "features_path": str(tmp_path / "none")}), "test")


def test_registry():
    assert list(DATASETS) == ["msrvtt", "msvd", "activity", "didemo", "vatex"]
    with pytest.raises(ConfigError, match="unknown --datatype 'lsmdc'; valid: msrvtt, msvd, activity, didemo, vatex"):
        build_split(DataConfig(datatype="lsmdc"), "train")
    with pytest.raises(ConfigError, match="split"):
        build_split(DataConfig(datatype="msrvtt"), "dev")
    with pytest.raises(ConfigError, match="slice_framepos"):
        DataConfig(slice_framepos=3)
    args = argparse.Namespace(datatype="msvd", max_frames=64, lr=1e-4, expand_msrvtt_sentences=True)
    cfg = DataConfig.from_args(args, seed=7)
    assert (cfg.datatype, cfg.max_frames, cfg.expand_msrvtt_sentences, cfg.seed, cfg.max_words) == \
        ("msvd", 64, True, 7, 32)
