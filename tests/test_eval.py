"""Evaluation end to end on the shared short training run: both directions, invariances, several captions per video."""
import json
import os
import pickle
import random
import shutil

import numpy as np
import pytest
import torch
from helpers import data_flags, run_module

from eval_t2v.main import main as eval_t2v
from eval_v2t.main import main as eval_v2t
from modules.evaluation.metrics import t2v_metrics, v2t_metrics

MODEL = ["--pretrained_clip_name", "random:tiny", "--max_words", "16", "--max_frames", "4", "--batch_size_val", "5",
         "--num_thread_reader", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def checkpoint(trained_run) -> str:
    return os.path.join(trained_run, "checkpoints", "last.pth")


def _eval(fn, folder_flags, ckpt, out, *extra):
    assert fn(folder_flags + MODEL + ["--init_model", ckpt, "--output_dir", out, *extra]) == 0
    direction = "t2v" if fn is eval_t2v else "v2t"
    with open(os.path.join(out, f"results_{direction}.json")) as f:
        return json.load(f)


@pytest.mark.slow
def test_both_directions_end_to_end(synthetic_set, checkpoint, tmp_path):
    for fn, direction in ((eval_t2v, "t2v"), (eval_v2t, "v2t")):
        res = _eval(fn, data_flags(synthetic_set), checkpoint, str(tmp_path), "--save_sims")
        assert res["direction"] == direction and res["datatype"] == "msrvtt"
        assert res["num_texts"] == 12 and res["num_videos"] == 12
        assert set(res["metrics"]) == {"raw", "sk_norm", "dsl"}
        assert set(res["levels"]) == {"video_sentence", "frame_sentence", "patch_word"}
        for m in list(res["metrics"].values()) + [v["raw"] for v in res["levels"].values()]:
            assert set(m) == {"R1", "R5", "R10", "MdR", "MnR"} and 0 <= m["R1"] <= m["R5"] <= m["R10"] <= 100
        bank = np.load(tmp_path / f"sims_{direction}_bank_patch_word.npy")
        # t2v bank: every training caption x test videos; v2t bank: every training video once x test captions
        assert bank.shape == ((_n_train_captions(synthetic_set), 12) if direction == "t2v" else (32, 12))
        # the raw numbers are those of the saved matrices, scored independently
        test = sum(np.load(tmp_path / f"sims_{direction}_test_{k}.npy") for k in res["levels"]) / 3
        reference = (t2v_metrics if direction == "t2v" else v2t_metrics)(torch.tensor(test), list(range(12)))
        assert res["metrics"]["raw"] == pytest.approx(reference)


def _n_train_captions(folder: str) -> int:
    train = set(open(os.path.join(folder, "train.csv")).read().split()[1:])
    return sum(s["video_id"] in train for s in json.load(open(os.path.join(folder, "data.json")))["sentences"])


def _flat(results: dict) -> dict:
    out = {f"metrics.{k}.{m}": v for k, ms in results["metrics"].items() for m, v in ms.items()}
    out.update({f"{level}.{k}.{m}": v for level, kinds in results["levels"].items() for k, ms in kinds.items()
                for m, v in ms.items()})
    return out


def _shuffled_copy(src: str, dst: str) -> str:
    os.makedirs(dst)
    for name in ("train.csv", "data.json"):
        shutil.copy(os.path.join(src, name), dst)
    lines = open(os.path.join(src, "test.csv")).read().splitlines()
    body = lines[1:]
    random.Random(1).shuffle(body)
    with open(os.path.join(dst, "test.csv"), "w") as f:
        f.write("\n".join([lines[0]] + body) + "\n")
    os.symlink(os.path.join(src, "videos"), os.path.join(dst, "videos"))
    return dst


@pytest.mark.slow
def test_shuffled_rows_change_nothing(synthetic_set, checkpoint, tmp_path):
    base = _eval(eval_t2v, data_flags(synthetic_set), checkpoint, str(tmp_path / "base"))
    shuffled = _shuffled_copy(synthetic_set, str(tmp_path / "shuffled"))
    res = _eval(eval_t2v, data_flags(shuffled), checkpoint, str(tmp_path / "shuffled_out"))
    assert _flat(res) == pytest.approx(_flat(base))


@pytest.mark.slow
def test_two_processes_change_nothing(synthetic_set, checkpoint, tmp_path):
    base = _eval(eval_t2v, data_flags(synthetic_set), checkpoint, str(tmp_path / "base"))
    out = str(tmp_path / "two")
    r = run_module("eval_t2v.main", data_flags(synthetic_set) + MODEL + ["--init_model", checkpoint,
                                                                        "--output_dir", out], nproc=2)
    assert r.returncode == 0, r.stderr[-2000:]
    two = json.load(open(os.path.join(out, "results_t2v.json")))
    assert _flat(two) == pytest.approx(_flat(base)) and two["sk_bank"] == base["sk_bank"]


def _msvd_copy(src: str, dst: str) -> str:
    """The synthetic videos in MSVD's layout: several captions per test video (Nt != Nv)."""
    data = json.load(open(os.path.join(src, "data.json")))
    captions: dict[str, list[list[str]]] = {}
    for s in data["sentences"]:
        captions.setdefault(s["video_id"], []).append(s["caption"].split())
    train = open(os.path.join(src, "train.csv")).read().split()[1:]
    test = [line.split(",")[2] for line in open(os.path.join(src, "test.csv")).read().splitlines()[1:]]
    os.makedirs(dst)
    with open(os.path.join(dst, "raw-captions.pkl"), "wb") as f:
        pickle.dump(captions, f)
    for name, ids in (("train_list.txt", train), ("val_list.txt", test), ("test_list.txt", test)):
        with open(os.path.join(dst, name), "w") as f:
            f.write("\n".join(ids) + "\n")
    return dst


@pytest.mark.slow
def test_several_captions_per_video(synthetic_set, checkpoint, tmp_path):
    folder = _msvd_copy(synthetic_set, str(tmp_path / "msvd"))
    flags = ["--datatype", "msvd", "--data_path", folder, "--features_path", os.path.join(synthetic_set, "videos")]
    for fn, direction in ((eval_t2v, "t2v"), (eval_v2t, "v2t")):
        out = str(tmp_path / direction)
        res = _eval(fn, flags, checkpoint, out, "--save_sims")
        assert res["num_videos"] == 12 and res["num_texts"] > 12
        test = sum(np.load(os.path.join(out, f"sims_{direction}_test_{k}.npy")) for k in res["levels"]) / 3
        assert test.shape == (res["num_texts"], 12)


def test_missing_and_mismatched_checkpoints(synthetic_set, checkpoint, tmp_path, capsys):
    flags = data_flags(synthetic_set) + MODEL + ["--output_dir", str(tmp_path)]
    assert eval_t2v(flags + ["--init_model", str(tmp_path / "nope.pth")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    mismatched = [a if a != "4" else "6" for a in flags]  # --max_frames 6: ISA matrices of another size
    assert eval_v2t(mismatched + ["--init_model", checkpoint]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not match" in err[0] and "--max_frames" in err[0]
    assert eval_t2v(flags) == 2
    assert "--init_model is required" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "results_t2v.json")


@pytest.mark.slow
def test_feature_cache_makes_a_second_run_score_only(synthetic_set, checkpoint, tmp_path, caplog):
    cache = str(tmp_path / "cache")
    first = _eval(eval_t2v, data_flags(synthetic_set), checkpoint, str(tmp_path / "a"), "--feature_cache", cache)
    assert len(os.listdir(cache)) == 1
    caplog.clear()
    with caplog.at_level("INFO"):
        second = _eval(eval_t2v, data_flags(synthetic_set), checkpoint, str(tmp_path / "b"), "--feature_cache", cache)
    assert sum("read from cache" in r.getMessage() for r in caplog.records) == 2  # test features and the SK bank
    assert _flat(second) == pytest.approx(_flat(first))
    # another model setting is another cache entry, never a stale hit
    _eval(eval_t2v, data_flags(synthetic_set), checkpoint, str(tmp_path / "c"), "--feature_cache", cache,
          "--eval_topk", "hard")
    assert len(os.listdir(cache)) == 2
