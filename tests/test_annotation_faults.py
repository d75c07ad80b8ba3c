"""Annotation files that used to give silently wrong splits or tracebacks (README, "Bad input and faults").

Byte-order marks and CRLF in every dataset's files, counts that add up to what the annotation lists (or a logged
reason), two files that could be one video, numbers read from ActivityNet and DiDeMo, a corrupt MSVD pickle, and
annotation or video paths that are FIFOs. Each dataset is built on a hand-made fixture in its real format.
"""
import json
import logging
import os
import pickle

import pytest
from data_fixtures import copy_videos, write_mp4v, write_pickle

from modules.common.errors import DataError
from modules.data import DataConfig, build_split
from modules.data.annotations import captions_by_video, read_pickle

SMALL = dict(max_words=16, max_frames=4, image_resolution=32)
BOM = "\ufeff"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return write_mp4v(str(tmp_path_factory.mktemp("tpl") / "t.mp4"), 6, 3)


def _text(path, lines, bom=True, crlf=True) -> None:
    """A text file as a Windows editor saves it: byte-order mark and CRLF line ends."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write((BOM if bom else "") + ("\r\n" if crlf else "\n").join(lines) + ("\r\n" if crlf else "\n"))


def _json(path, data, bom=True) -> None:
    _text(path, [json.dumps(data, indent=1)], bom=bom)


def _cfg(datatype, root, **extra) -> DataConfig:
    return DataConfig(datatype=datatype, data_path=str(root), features_path=str(root / "videos"), **SMALL, **extra)


# ------------------------------------------------------------------------------------------- BOM and CRLF

def _didemo(root, template, ids, listed, bom=True):
    copy_videos(template, str(root / "videos"), [f"{v}.mp4" for v in ids])
    moments = [{"video": f"{v}.mov", "description": f"moment of {v}", "times": [[0, 1], [1, 1]]} for v in ids]
    for split in ("train", "val", "test"):
        _json(root / f"{split}_data.json", moments, bom=bom)
        _text(root / f"{split}_list.txt", [f"{v}.mov" for v in listed], bom=bom)
    return _cfg("didemo", root)


def test_didemo_list_with_a_byte_order_mark_keeps_all_eight_videos(tmp_path, template):
    """The issue's case: the first id carried the mark, 7 of 8 test videos were evaluated, 0 reported skipped."""
    ids = [f"d{k}" for k in range(8)]
    split = build_split(_didemo(tmp_path, template, ids, ids), "test")
    assert split.video_ids == [f"{v}.mov" for v in ids]
    assert (split.listed_videos, split.listed_texts, split.left_out) == (8, 8, [])


def test_didemo_listed_video_without_moments_is_logged_and_counted(tmp_path, template, caplog):
    ids = [f"d{k}" for k in range(4)]
    cfg = _didemo(tmp_path, template, ids, ids + ["ghost"])
    with caplog.at_level(logging.WARNING):
        split = build_split(cfg, "test")
    assert len(split.video_ids) == 4 and len(split.left_out) == 1
    assert "test_list.txt: 1 listed video(s) have no moment in" in split.left_out[0] and "ghost" in split.left_out[0]
    assert "ghost" in caplog.text and "left out" in caplog.text


def test_msvd_with_bom_and_crlf(tmp_path, template):
    copy_videos(template, str(tmp_path / "videos"), ["vA.avi", "vB.mp4"])
    write_pickle(str(tmp_path / "raw-captions.pkl"), {"vA": [["a", "man"], ["singing"]], "vB": [["a", "dog"]]})
    for split in ("train", "val", "test"):
        _text(tmp_path / f"{split}_list.txt", ["vA", "vB"])
    split = build_split(_cfg("msvd", tmp_path), "test")
    assert split.video_ids == ["vA", "vB"] and split.captions == ["a man", "singing", "a dog"]


def test_vatex_with_bom_and_crlf_and_lists_joined_by_cat(tmp_path, template):
    copy_videos(template, str(tmp_path / "videos"), ["y1.mp4", "y2.webm", "y3.mp4"])
    _json(tmp_path / "ref_captions.json", {"y1": ["one", "uno"], "y2": ["two"], "y3": ["three"]})
    _text(tmp_path / "train_list.txt", ["y3"])
    # two lists saved with a mark each, then joined: the second mark sits at the start of a line
    _text(tmp_path / "test_list.txt", ["y1", BOM + "y2"])
    split = build_split(_cfg("vatex", tmp_path), "test")
    assert split.video_ids == ["y1", "y2"] and len(split.captions) == 3


def test_msrvtt_with_bom_and_crlf_reads_as_without(tmp_path, template):
    def make(root, bom):
        copy_videos(template, str(root / "videos"), ["video0.mp4", "video1.mp4", "video7.mp4"])
        _text(root / "train.csv", ["video_id", "video0", "video1"], bom=bom, crlf=bom)
        _text(root / "test.csv", ["key,vid_key,video_id,sentence", "ret0,msr7,video7,a dog runs",
                                  'ret1,msr0,video0,"a cat, sleeping"'], bom=bom, crlf=bom)
        _json(root / "data.json", {"sentences": [{"video_id": "video0", "caption": "zero"},
                                                 {"video_id": "video1", "caption": "one"}]}, bom=bom)
        return DataConfig(datatype="msrvtt", data_path=str(root / "data.json"), features_path=str(root / "videos"),
                          train_csv=str(root / "train.csv"), val_csv=str(root / "test.csv"), **SMALL)

    plain, marked = make(tmp_path / "plain", False), make(tmp_path / "marked", True)
    for split in ("train", "test"):
        a, b = build_split(plain, split), build_split(marked, split)
        assert (a.video_ids, a.captions, a.caption_to_video.tolist()) == \
            (b.video_ids, b.captions, b.caption_to_video.tolist())
    assert build_split(marked, "test").captions == ["a dog runs", "a cat, sleeping"]


def _activity(root, template, annotations, ids=None, bom=True):
    copy_videos(template, str(root / "videos"), [f"{v}.mp4" for v in annotations])
    for name in ("train.json", "val_1.json"):
        _json(root / name, annotations, bom=bom)
    if ids is not None:
        _json(root / "val_ids.json", ids, bom=bom)
    return _cfg("activity", root)


def _entry(duration=10.0, timestamps=((0, 4), (4, 9.5)), sentences=("A man cooks.", "He eats.")):
    return {"duration": duration, "timestamps": [list(t) for t in timestamps], "sentences": list(sentences)}


def test_activitynet_with_bom_and_an_ids_file_listing_an_unannotated_video(tmp_path, template):
    cfg = _activity(tmp_path, template, {"v_a": _entry(), "v_b": _entry(30)}, ids=["v_b", "v_zzz", "v_a"])
    split = build_split(cfg, "test")
    assert split.video_ids == ["v_b", "v_a"] and split.windows == [(0, 30), (0, 10)]
    assert split.listed_videos == 2 and "val_ids.json: 1 listed video(s) have no annotation" in split.left_out[0]


def test_an_invisible_character_in_an_id_is_shown_escaped(tmp_path, template):
    copy_videos(template, str(tmp_path / "videos"), ["y1.mp4"])
    _json(tmp_path / "ref_captions.json", {"y1": ["one"]})
    _text(tmp_path / "test_list.txt", ["y1\u200b"])  # a zero-width space pasted with the id
    with pytest.raises(DataError, match=r"have no captions \(first: 'y1\\u200b'\)"):
        build_split(_cfg("vatex", tmp_path), "test")


# ------------------------------------------------------------------------------------------- counts add up

def test_skipped_videos_and_their_captions_are_counted_and_logged(tmp_path, template, caplog):
    copy_videos(template, str(tmp_path / "videos"), ["y1.mp4", "y3.mp4"])
    _json(tmp_path / "ref_captions.json", {"y1": ["a", "b"], "y2": ["c", "d", "e"], "y3": ["f"]})
    _text(tmp_path / "test_list.txt", ["y1", "y2", "y3"])
    with caplog.at_level(logging.INFO):
        split = build_split(_cfg("vatex", tmp_path, skip_bad_videos=True), "test")
    assert (split.listed_videos, split.listed_texts) == (3, 6)
    assert (len(split.video_ids), len(split.captions), len(split.skipped)) == (2, 3, 1)
    assert "vatex test: 3 caption(s) dropped with the 1 skipped video(s)" in caplog.text
    assert "(the annotation lists 6 captions of 3 videos)" in caplog.text


# -------------------------------------------------------------------------------- two files for one video

def _two_folders(root, template, first, second):
    os.makedirs(root / "videos" / "a")
    os.makedirs(root / "videos" / "b")
    write_pickle(str(root / "raw-captions.pkl"), {"clip1": [["one"]], "clip2": [["two"]]})
    _text(root / "test_list.txt", ["clip1", "clip2"])
    copy_videos(template, str(root / "videos" / "a"), [first, "clip2.mp4"])
    copy_videos(template, str(root / "videos" / "b"), [second])
    return _cfg("msvd", root)


@pytest.mark.parametrize("second", ["clip1.mp4", "clip1.webm"])
def test_one_video_name_in_two_subfolders_is_refused_naming_both(second, tmp_path, template):
    cfg = _two_folders(tmp_path, template, "clip1.mp4", second)
    with pytest.raises(DataError) as e:
        build_split(cfg, "test")
    message = str(e.value)
    assert message.startswith("video clip1: 2 files under ") and "different folders" in message
    assert os.path.join(cfg.features_path, "a", "clip1.mp4") in message
    assert os.path.join(cfg.features_path, "b", second) in message


def test_same_name_in_one_folder_prefers_mp4_and_unused_duplicates_are_fine(tmp_path, template):
    copy_videos(template, str(tmp_path / "videos"), ["clip1.webm", "clip1.mp4", "clip2.mp4"])
    copy_videos(template, str(tmp_path / "videos" / "old"), ["clip9.mp4"])
    copy_videos(template, str(tmp_path / "videos" / "new"), ["clip9.mp4"])  # ambiguous, but no split uses it
    write_pickle(str(tmp_path / "raw-captions.pkl"), {"clip1": [["one"]], "clip2": [["two"]]})
    _text(tmp_path / "test_list.txt", ["clip1", "clip2"])
    split = build_split(_cfg("msvd", tmp_path), "test")
    assert split.video_paths[0] == os.path.join(tmp_path, "videos", "clip1.mp4")


# ----------------------------------------------------------------------------------------- ActivityNet numbers

@pytest.mark.parametrize("entry,says", [
    (_entry(duration=float("inf")), "'duration' is inf, not a finite number"),
    (_entry(duration=float("nan")), "'duration' is nan, not a finite number"),
    (_entry(duration=-5.0), "'duration' is -5.0; a video lasts more than 0 seconds"),
    (_entry(duration=0), "'duration' is 0; a video lasts more than 0 seconds"),
    (_entry(duration="ten"), "'duration' is 'ten', not a finite number"),
    (_entry(duration=True), "'duration' is True, not a finite number"),
    (_entry(duration=None), "'duration' is None, not a finite number"),
    (_entry(timestamps=((0, 4), (9, 3))), "'timestamps' entry 1 is [9, 3]; expected 0 <= start <= end"),
    (_entry(timestamps=((-1, 4), (4, 9))), "'timestamps' entry 0 is [-1, 4]; expected 0 <= start <= end"),
    (_entry(timestamps=((0, float("inf")), (4, 9))), "'timestamps[0]' is inf, not a finite number"),
    (_entry(timestamps=((0, 4),)), "'timestamps' has 1 entries for 2 sentences"),
    (_entry(timestamps=((0, 4), (4,))), "'timestamps' entry 1 is [4], not [start, end]"),
], ids=["inf", "nan", "negative", "zero", "text", "bool", "null", "reversed", "negative_start", "inf_end",
        "one_short", "not_a_pair"])
def test_activitynet_numbers_are_validated_naming_file_video_and_field(entry, says, tmp_path, template):
    cfg = _activity(tmp_path, template, {"v_ok": _entry(), "v_bad": entry})
    with pytest.raises(DataError) as e:
        build_split(cfg, "test")
    assert str(e.value) == f"{tmp_path / 'val_1.json'}: video v_bad: {says}"


def test_activitynet_infinite_duration_written_by_python_json(tmp_path, template):
    """``json.dump`` writes ``Infinity`` for inf and ``json.load`` reads it back: it used to end in OverflowError."""
    cfg = _activity(tmp_path, template, {"v_a": _entry()}, bom=False)
    with open(tmp_path / "val_1.json", "w") as f:
        json.dump({"v_a": _entry(duration=float("inf"))}, f)
    with pytest.raises(DataError, match="video v_a: 'duration' is inf, not a finite number"):
        build_split(cfg, "test")


def test_activitynet_end_past_the_duration_is_accepted(tmp_path, template):
    """The released files have timestamps ending a little after the duration; the window is the whole video."""
    cfg = _activity(tmp_path, template, {"v_a": _entry(duration=12.2, timestamps=((0.01, 12.26), (3, 5)))})
    assert build_split(cfg, "test").windows == [(0, 13)]


# ---------------------------------------------------------------------------------------------- DiDeMo numbers

@pytest.mark.parametrize("times,says", [
    ([[3, 2]], "'times' entry 0 is [3, 2]"),
    ([[0, 1], [0, 6]], "'times' entry 1 is [0, 6]"),
    ([[-1, 0]], "'times' entry 0 is [-1, 0]"),
    ([[0.5, 1]], "'times' entry 0 is [0.5, 1]"),
    ([[0, 1, 2]], "'times' entry 0 is [0, 1, 2]"),
    ([], "'times' is [], not a list of [start, end] segments"),
    ("0-1", "'times' is '0-1', not a list of [start, end] segments"),
])
def test_didemo_times_are_validated_naming_file_moment_and_field(times, says, tmp_path, template):
    cfg = _didemo(tmp_path, template, ["d0", "d1"], ["d0", "d1"])
    moments = [{"video": "d0.mov", "description": "fine", "times": [[0, 0]]},
               {"video": "d1.mov", "description": "broken", "times": times}]
    _json(tmp_path / "test_data.json", moments)
    with pytest.raises(DataError) as e:
        build_split(cfg, "test")
    assert str(e.value).startswith(f"{tmp_path / 'test_data.json'}: moment 1 (video d1.mov): {says}")


def test_didemo_moment_without_times_and_unlisted_bad_moment_are_fine(tmp_path, template):
    cfg = _didemo(tmp_path, template, ["d0"], ["d0"])
    _json(tmp_path / "test_data.json", [{"video": "d0.mov", "description": "no times given"},
                                        {"video": "unused.mov", "description": "", "times": [[9, 1]]}])
    assert build_split(cfg, "test").captions == ["no times given"]


# ------------------------------------------------------------------------------------------------ MSVD pickle

def test_every_one_byte_corruption_of_raw_captions_is_a_data_error(tmp_path):
    """The issue's case ended in AttributeError; TypeError and OverflowError were there too. Every position, a few
    byte values: either the file still reads (and its content is checked) or one DataError line names it."""
    data = pickle.dumps({"vidA_1_5": [["a", "man", "sings"], ["someone", "is", "singing"]], "vidB": [["a", "dog"]]},
                        protocol=4)
    path = str(tmp_path / "raw-captions.pkl")
    outcomes = {"read": 0, "refused": 0}
    for i in range(len(data)):
        for value in (0x00, 0x01, 0x5D, 0x62, 0x71, 0x80, 0xFF, ord("a"), ord("}"), ord("R")):
            corrupt = bytearray(data)
            corrupt[i] = value
            with open(path, "wb") as f:
                f.write(bytes(corrupt))
            try:
                captions_by_video(read_pickle(path), ["vidA_1_5", "vidB"], path, "test_list.txt", token_lists=True)
                outcomes["read"] += 1
            except DataError as e:
                assert "\n" not in str(e) and str(e).startswith(path), str(e)
                outcomes["refused"] += 1
    assert outcomes["refused"] > 500 and outcomes["read"] > 0


def test_corrupt_msvd_pickle_through_build_split(tmp_path, template):
    copy_videos(template, str(tmp_path / "videos"), ["vidA_1_5.mp4"])
    data = bytearray(pickle.dumps({"vidA_1_5": [["a", "man"]]}, protocol=2))
    data[6] = 0x0B  # a length byte: the old reader ended in AttributeError ("str" object has no attribute "append")
    with open(tmp_path / "raw-captions.pkl", "wb") as f:
        f.write(bytes(data))
    _text(tmp_path / "test_list.txt", ["vidA_1_5"])
    with pytest.raises(DataError, match="raw-captions.pkl: not a pickle of plain captions, or corrupt"):
        build_split(_cfg("msvd", tmp_path), "test")


def test_pickle_with_a_huge_length_field_fails_fast(tmp_path):
    path = str(tmp_path / "raw-captions.pkl")
    with open(path, "wb") as f:  # BINUNICODE8 claiming 2**62 bytes
        f.write(b"\x80\x04\x8d" + (2 ** 62).to_bytes(8, "little") + b"abc")
    with pytest.raises(DataError, match="not a pickle of plain captions, or corrupt"):
        read_pickle(path)


# ------------------------------------------------------------------------------------------- FIFOs as files

def test_annotation_file_that_is_a_fifo_is_refused_without_hanging(tmp_path, template):
    copy_videos(template, str(tmp_path / "videos"), ["y1.mp4"])
    _json(tmp_path / "ref_captions.json", {"y1": ["one"]})
    os.mkfifo(tmp_path / "test_list.txt")
    with pytest.raises(DataError, match=r"test_list.txt: not a regular file \(a FIFO\)"):
        build_split(_cfg("vatex", tmp_path), "test")


def test_video_that_is_a_fifo_is_named_without_hanging(tmp_path, template):
    copy_videos(template, str(tmp_path / "videos"), ["y1.mp4"])
    os.mkfifo(tmp_path / "videos" / "y2.mp4")
    _json(tmp_path / "ref_captions.json", {"y1": ["one"], "y2": ["two"]})
    _text(tmp_path / "test_list.txt", ["y1", "y2"])
    with pytest.raises(DataError, match=r"y2 \(not a regular file: a FIFO\)"):
        build_split(_cfg("vatex", tmp_path), "test")
    assert build_split(_cfg("vatex", tmp_path, skip_bad_videos=True), "test").video_ids == ["y1"]
