"""The frame cache: exact frames, stale videos, strict mode, killed builds, concurrent readers, bad videos, and a
training plus evaluation that give the same numbers with and without it."""
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from data_fixtures import write_mp4v
from helpers import ROOT, data_flags, read_steps, tiny_flags

from modules.common.errors import ConfigError, DataError
from modules.common.lock import acquire
from modules.data import DataConfig, build_split
from modules.data.frame_batch import CachedClip
from modules.data.frame_cache import CACHED, CHANGED, MISSING, FrameCache, FrameCacheError, load_clip
from modules.data.frame_cache_build import build_frame_cache, split_clips
from modules.data.transforms import normalize_video
from modules.data.video import decode_clip


def split_cfg(folder: str, **kw) -> DataConfig:
    return DataConfig(datatype="msrvtt", train_csv=os.path.join(folder, "train.csv"),
                      val_csv=os.path.join(folder, "test.csv"), data_path=os.path.join(folder, "data.json"),
                      features_path=os.path.join(folder, "videos"), max_frames=4, max_words=16, **kw)


@pytest.fixture
def small_set(synthetic_set, tmp_path) -> str:
    """A private copy of the session's synthetic set (these tests rewrite and break videos)."""
    folder = str(tmp_path / "set")
    shutil.copytree(synthetic_set, folder)
    return folder


def build(root: str, cfg: DataConfig, splits=("train", "test"), **kw):
    clips = [c for s in splits for c in split_clips(build_split(cfg, s))]
    return build_frame_cache(root, cfg, clips, progress=False, **kw)


def test_cached_frames_equal_live_decoding(tmp_path):
    # Several lengths, frame rates (fractional, below the sampling rate, high), sizes (portrait, landscape, odd).
    shapes = [(7, 3, 48, 32), (40, 25, 64, 48), (95, 30, 40, 72), (31, 2.5, 50, 50), (200, 24, 34, 22)]
    videos = [write_mp4v(str(tmp_path / f"v{k}.mp4"), *shape) for k, shape in enumerate(shapes)]
    for max_frames, rate, slice_pos in ((4, 1, 2), (12, 2, 0), (3, 0.5, 1)):
        cfg = DataConfig(max_frames=max_frames, feature_framerate=rate, slice_framepos=slice_pos, image_resolution=32)
        clips = [(v, None, None) for v in videos] + [(v, 1.0, 2.0) for v in videos[1:3]]
        root = str(tmp_path / f"cache{max_frames}")
        report = build_frame_cache(root, cfg, clips, workers=2 if max_frames == 4 else 0, progress=False)
        assert (report.decoded, report.bad) == (len(clips), [])
        cache = FrameCache(root, dataclasses.replace(cfg, frame_cache=root), strict=True)
        for path, start, end in clips:
            live, _ = decode_clip(path, cfg, start, end, 32)
            cached, status = cache.frames(path, start, end)
            assert status == CACHED and cached.dtype == np.uint8 and np.array_equal(cached, live), (path, start)
            for order in (0, 1, 2):  # the frame order is applied after reading, as after decoding
                ref = load_clip(None, path, cfg, start, end, order, (7, 1, 3))
                got = load_clip(cache, path, cfg, start, end, order, (7, 1, 3))
                assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])
                clip, mask, _ = load_clip(cache, path, cfg, start, end, order, (7, 1, 3), uint8=True)
                assert isinstance(clip, CachedClip) and clip.tensor().dtype == torch.uint8  # copied into its batch
                assert torch.equal(normalize_video(clip.tensor(), mask), ref[0])
        # Another setting is another cache: nothing of these frames is served for it.
        other = FrameCache(root, dataclasses.replace(cfg, max_frames=max_frames + 1))
        assert other.lookup(videos[0]) == (MISSING, None)


def test_changed_video_is_decoded_counted_or_refused(small_set, tmp_path):
    root = str(tmp_path / "frames")
    cfg = split_cfg(small_set)
    build(root, cfg, splits=("test",))
    test = build_split(dataclasses.replace(cfg, frame_cache=root), "test")
    changed = test.video_paths[3]
    write_mp4v(changed, 30, 3, 40, 30)  # another video under the same name
    item = test.video_view()[3]
    live = build_split(cfg, "test").video_view()[3]
    assert torch.equal(item["video"], live["video"])  # never the stale frames
    assert test.frame_cache.lookup(changed)[0] == CHANGED
    assert "1 of 12 videos decoded instead of read from the frame cache (1 changed" in test.frame_cache_report()
    strict = build_split(dataclasses.replace(cfg, frame_cache=root, frame_cache_strict=True), "test")
    with pytest.raises(FrameCacheError, match=f"video {changed} changed since it was cached"):
        strict.video_view()[3]
    # Not in the cache at all (the training split was not built): named too; skip_bad_videos does not swallow it.
    train = build_split(dataclasses.replace(cfg, frame_cache=root, frame_cache_strict=True, skip_bad_videos=True),
                        "train")
    with pytest.raises(FrameCacheError, match="is not in the cache"):
        train[0]
    again = build(root, cfg, splits=("test",))
    assert (again.reused, again.decoded, again.changed) == (11, 1, 1)
    fresh = build_split(dataclasses.replace(cfg, frame_cache=root, frame_cache_strict=True), "test")
    assert torch.equal(fresh.video_view()[3]["video"], live["video"])
    with pytest.raises(ConfigError, match="needs --frame_cache"):
        dataclasses.replace(cfg, frame_cache_strict=True)


@pytest.mark.slow
def test_killed_build_is_completed_by_the_next(small_set, tmp_path):
    root = str(tmp_path / "frames")
    cmd = [sys.executable, "scripts/cache_frames.py", *data_flags(small_set), "--max_frames", "4",
           "--frame_cache", root, "--workers", "0", "--shard_mb", "0.1"]  # a shard per clip
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    shards = []
    while time.time() < deadline and proc.poll() is None:
        shards = [n for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
                  for n in os.listdir(os.path.join(root, d)) if n.endswith(".json") and n.startswith("shard")] \
            if os.path.isdir(root) else []
        if len(shards) >= 3:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(shards) >= 3, "the build ended before it could be killed"
    folder = next(os.path.join(root, d) for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    kept = len([n for n in os.listdir(folder) if n.endswith(".json") and n.startswith("shard")])
    assert kept < 44, "the build was not killed in the middle"
    # What a kill inside a write leaves: a temporary and a shard .npy without its .json.
    open(os.path.join(folder, ".shard-999999.npy.x.tmp"), "wb").close()
    np.save(os.path.join(folder, "shard-999998.npy"), np.zeros((1, 2, 2, 3), np.uint8))
    cfg = split_cfg(small_set)
    report = build(root, cfg)
    assert report.reused == kept and report.reused + report.decoded == report.clips == 44
    names = os.listdir(folder)
    assert not any(n.endswith(".tmp") for n in names) and "shard-999998.npy" not in names
    for split in ("train", "test"):
        cached = build_split(dataclasses.replace(cfg, frame_cache=root, frame_cache_strict=True), split)
        live = build_split(cfg, split)
        for i in range(len(live.video_ids)):
            assert torch.equal(cached.video_view()[i]["video"], live.video_view()[i]["video"])


DIGEST = """
import json, sys
from modules.data import DataConfig, build_split
cfg = DataConfig(**json.loads(sys.argv[1]))
split = build_split(cfg, "train")
print(json.dumps([float(split.video_view()[i]["video"].double().sum()) for i in range(len(split.video_ids))]))
"""


def sums(split) -> list[float]:
    return [float(split.video_view()[i]["video"].double().sum()) for i in range(len(split.video_ids))]


@pytest.mark.slow
def test_workers_and_processes_read_one_cache(small_set, tmp_path):
    root = str(tmp_path / "frames")
    cfg = split_cfg(small_set)
    build(root, cfg, splits=("train",))
    live = build_split(cfg, "train")
    cached_cfg = dataclasses.replace(cfg, frame_cache=root, frame_cache_strict=True)
    cached = build_split(cached_cfg, "train")
    loader = torch.utils.data.DataLoader(cached.video_view(), batch_size=5, num_workers=2)
    ref = torch.utils.data.DataLoader(live.video_view(), batch_size=5, num_workers=0)
    for a, b in zip(loader, ref):
        assert torch.equal(a["video"], b["video"]) and torch.equal(a["index"], b["index"])
    # Two other processes at once, while a second builder is refused (readers need no lock).
    lock = acquire(root, "another build", flag="--frame_cache")
    try:
        env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
        procs = [subprocess.Popen([sys.executable, "-c", DIGEST, json.dumps(dataclasses.asdict(cached_cfg))], cwd=ROOT,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        with pytest.raises(ConfigError, match="--frame_cache .* is in use by another run"):
            build(root, cfg, splits=("test",))
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        lock.release()
    expected = sums(live)
    assert [json.loads(out) for out, _ in outputs] == [expected, expected], outputs[0][1][-2000:]


def test_bad_videos_behave_the_same_with_and_without_the_cache(small_set, tmp_path):
    root = str(tmp_path / "frames")
    cfg = split_cfg(small_set, skip_bad_videos=True)
    broken = build_split(cfg, "train").video_paths[2]
    with open(broken, "wb") as f:
        f.write(b"not a video" * 100)
    report = build(root, cfg, splits=("train",))
    assert report.bad == [broken]
    runs = {}
    for name, c in (("live", cfg), ("cached", dataclasses.replace(cfg, frame_cache=root, frame_cache_strict=True))):
        split = build_split(c, "train")
        items = [split[i] for i in range(len(split))]
        runs[name] = ([it["index"] for it in items], [it["video"] for it in items], split.undecodable)
        with pytest.raises(DataError) as error:
            build_split(dataclasses.replace(c, skip_bad_videos=False), "train").video_view()[2]
        runs[name] += (str(error.value),)
    (li, lv, lu, le), (ci, cv, cu, ce) = runs["live"], runs["cached"]
    assert li == ci and lu == cu == [broken] and le == ce and broken in le
    assert all(torch.equal(a, b) for a, b in zip(lv, cv))


def test_training_and_evaluation_give_the_same_numbers_with_the_cache(synthetic_set, trained_run, tmp_path):
    from eval_v2t.main import main as eval_main
    from train.main import main as train_main

    root = str(tmp_path / "frames")
    build(root, split_cfg(synthetic_set))
    out = str(tmp_path / "train")
    cache = ["--frame_cache", root, "--frame_cache_strict"]
    assert train_main(tiny_flags(synthetic_set, out) + ["--epochs", "1"] + cache) == 0
    assert [s["loss"] for s in read_steps(out)] == [s["loss"] for s in read_steps(trained_run)]
    results = {}
    for name, extra in (("live", []), ("cached", cache)):
        folder = str(tmp_path / name)
        args = data_flags(synthetic_set) + ["--init_model", os.path.join(trained_run, "checkpoints", "last.pth"),
                                            "--output_dir", folder, "--num_thread_reader", "0", "--device", "cpu"]
        assert eval_main(args + extra) == 0
        with open(os.path.join(folder, "results_v2t.json")) as f:
            results[name] = json.load(f)
    assert results["live"]["metrics"] == results["cached"]["metrics"]
    assert results["live"]["levels"] == results["cached"]["levels"]


def _uint8_batches(split, view: bool, workers: int, pin: bool = False) -> list[dict]:
    from modules.data import collate_skip_none

    split.uint8_video = True
    data = split.video_view() if view else split
    loader = torch.utils.data.DataLoader(data, batch_size=5, num_workers=workers, collate_fn=collate_skip_none,
                                         pin_memory=pin)
    return list(loader)


@pytest.mark.parametrize("workers, pin", [(0, False), (2, False), pytest.param(
    2, True, marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")])])
def test_uint8_batches_are_copied_once_from_the_cache_and_equal_live_decoding(small_set, tmp_path, workers, pin):
    """The CUDA feed: cached clips travel as references and are copied into their batch where it is used (with
    ``pin``: by the pin-memory thread, into pinned memory); a clip decoded live (here: changed since the build) and a
    bad one (skipped) share the batch; shuffled frame order."""
    import pickle

    from modules.data.frame_batch import CachedClip, FrameBatch, batch_video
    from modules.data.transforms import pad_uint8

    root = str(tmp_path / "frames")
    cfg = split_cfg(small_set, train_frame_order=2, eval_frame_order=1, skip_bad_videos=True)
    paths = build_split(cfg, "train").video_paths
    with open(paths[6], "wb") as f:
        f.write(b"not a video" * 100)
    build(root, cfg, splits=("train",))
    write_mp4v(paths[3], 30, 3, 40, 30)  # changed after the build: decoded live
    for view in (False, True):
        live = _uint8_batches(build_split(cfg, "train"), view, workers)
        cached = _uint8_batches(build_split(dataclasses.replace(cfg, frame_cache=root), "train"), view, workers, pin)
        assert len(live) == len(cached)
        for a, b in zip(live, cached):
            assert torch.equal(a["index"], b["index"]) and torch.equal(a["video_mask"], b["video_mask"])
            assert torch.equal(batch_video(a["video"]), batch_video(b["video"]))
            assert b["video"].is_pinned() if pin else isinstance(b["video"], FrameBatch)
        assert 6 not in torch.cat([b["index"] for b in cached]).tolist()  # the bad video: skipped or replaced
        if pin:
            continue
        kinds = [type(c) for b in cached for c in b["video"].clips]
        assert kinds.count(torch.Tensor) == 1 and kinds.count(CachedClip) == len(kinds) - 1
        assert len(pickle.dumps(cached[-1]["video"])) < 2000  # what a worker hands over: no frames
        out = torch.full(cached[0]["video"].shape, 7, dtype=torch.uint8)
        assert batch_video(cached[0]["video"], out=out) is out and torch.equal(out, batch_video(live[0]["video"]))
        with pytest.raises(ValueError, match="out: uint8"):
            batch_video(cached[0]["video"], out=out[:1])
    split = build_split(dataclasses.replace(cfg, frame_cache=root), "test")
    clip = split.frame_cache.cached_clip(split.video_paths[0], None, None, 4)
    assert clip is None  # the test split is not in this cache
    train = build_split(dataclasses.replace(cfg, frame_cache=root), "train")
    clip = train.frame_cache.cached_clip(train.video_paths[0], None, None, 4)
    frames, _ = decode_clip(train.video_paths[0], cfg, None, None, 224)
    assert torch.equal(clip.tensor(), pad_uint8(frames, 4)[0])


def test_a_cuda_loaders_pin_memory_thread_copies_a_frame_batch_into_pinned_memory(monkeypatch):
    """PyTorch's pin-memory step hands a FrameBatch to its own ``pin_memory`` (pinning itself needs a GPU)."""
    from torch.utils.data._utils.pin_memory import pin_memory as pin_batch

    from modules.data.frame_batch import FrameBatch

    calls = []
    monkeypatch.setattr(FrameBatch, "tensor", lambda self, pin=False, out=None: calls.append(pin) or torch.ones(1))
    assert torch.equal(pin_batch({"video": FrameBatch([])})["video"], torch.ones(1)) and calls == [True]


def test_a_cache_built_again_in_the_same_place_is_read_anew(small_set, tmp_path):
    """Deleted and built again (new shard files under the old names): a new reader in the same process reads the new
    frames; a reference into a replaced shard stops with an error, never other frames."""
    root = str(tmp_path / "frames")
    cfg = split_cfg(small_set)
    cached = dataclasses.replace(cfg, frame_cache=root, frame_cache_strict=True)

    def first_video(c: DataConfig):
        split = build_split(c, "test")
        split.uint8_video = True
        return split, split.video_view()[0]["video"]  # cached: a CachedClip; live: uint8 [F, R, R, 3]

    build(root, cfg, splits=("test",))
    _, before = first_video(cached)
    old_frames = before.tensor()
    assert torch.equal(old_frames, first_video(cfg)[1])
    shutil.rmtree(root)
    write_mp4v(build_split(cfg, "test").video_paths[0], 30, 3, 40, 30)
    build(root, cfg, splits=("test",))
    (split, after), (_, live) = first_video(cached), first_video(cfg)
    assert not torch.equal(live, old_frames) and torch.equal(after.tensor(), live)
    frames, status = split.frame_cache.frames(split.video_paths[0])
    assert status == CACHED and torch.equal(torch.from_numpy(frames), live[:len(frames)])
    with pytest.raises(DataError, match="was replaced while this run read it"):
        before.tensor()


def test_persistent_loader_workers_survive_epochs_and_restart_after_a_cut():
    from modules.common.interrupts import closing_batches

    loader = torch.utils.data.DataLoader(list(range(12)), batch_size=4, num_workers=1, persistent_workers=True)
    assert [b.tolist() for b in closing_batches(loader)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    workers = loader._iterator._workers
    assert sum(len(b) for b in closing_batches(loader)) == 12 and loader._iterator._workers == workers  # reused
    for _batch in closing_batches(loader):
        break  # a loop cut short shuts its workers down ...
    assert loader._iterator is None and not any(w.is_alive() for w in workers)
    assert sum(len(b) for b in closing_batches(loader)) == 12  # ... and the next epoch starts new ones
