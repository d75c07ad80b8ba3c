"""Zero-shot CLIP through the evaluation protocol, and exported models (safetensors + config.json)."""
import json
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import data_flags

from eval_t2v.main import main as eval_t2v
from eval_v2t.main import main as eval_v2t
from modules.common.errors import CheckpointError
from modules.common.io import read_checkpoint
from modules.data import DataConfig, build_split, load_video
from modules.evaluation.metrics import t2v_metrics
from modules.evaluation.sinkhorn import sk_bias
from modules.model.build import build_model_from_checkpoint, load_model_weights
from modules.model.clip import build_random_clip
from modules.model.tokenizer import tokenize
from modules.model.ucofia import ModelConfig, UCoFiA
from modules.model.zero_shot import ZERO_SHOT_LEVEL
from scripts.export_checkpoint import main as export_main
from scripts.retrieve import main as retrieve

SMALL = ["--max_words", "16", "--max_frames", "4", "--batch_size_val", "16", "--num_thread_reader", "0",
         "--device", "cpu", "--sk_bank_size", "8"]


def _results(out: str, direction: str) -> dict:
    with open(os.path.join(out, f"results_{direction}.json")) as f:
        return json.load(f)


# --- zero-shot CLIP -------------------------------------------------------------------------------------------------

def _clip_reference(clip, captions: list[str], paths: list[str]) -> torch.Tensor:
    """CLIP4Clip's zero-shot score written out: logit scale x cos(sentence, normalised mean of normalised frames)."""
    cfg = DataConfig(max_words=16, max_frames=4)
    with torch.no_grad():
        text = F.normalize(clip.encode_text(tokenize(captions, 16)), dim=-1)                # [Nt, D]
        videos = []
        for path in paths:
            frames, mask = load_video(path, cfg)                                             # [4, 3, R, R], [4]
            emb = F.normalize(clip.encode_image(frames[mask]), dim=-1).mean(0)               # [D]
            videos.append(F.normalize(emb, dim=-1))
        return clip.logit_scale.exp() * text @ torch.stack(videos).t()                      # [Nt, Nv]


def test_zero_shot_on_a_clip_state_dict_matches_plain_clip(synthetic_set, tmp_path):
    torch.manual_seed(3)
    clip = build_random_clip("tiny").eval()
    weights = str(tmp_path / "clip_state.pt")
    torch.save(clip.state_dict(), weights)
    out = str(tmp_path / "zs")
    assert eval_t2v(data_flags(synthetic_set) + SMALL + ["--zero_shot", "--pretrained_clip_name", weights,
                                                         "--output_dir", out, "--save_sims"]) == 0
    res = _results(out, "t2v")
    assert list(res["levels"]) == [ZERO_SHOT_LEVEL] and res["model"] == f"zero-shot CLIP {weights}"
    assert res["checkpoint"] is None
    test = build_split(DataConfig(datatype="msrvtt", data_path=os.path.join(synthetic_set, "data.json"),
                                  features_path=os.path.join(synthetic_set, "videos"),
                                  train_csv=os.path.join(synthetic_set, "train.csv"),
                                  val_csv=os.path.join(synthetic_set, "test.csv"), max_words=16, max_frames=4), "test")
    expected = _clip_reference(clip, test.captions, test.video_paths)
    saved = torch.from_numpy(np.load(os.path.join(out, f"sims_t2v_test_{ZERO_SHOT_LEVEL}.npy")))
    torch.testing.assert_close(saved, expected, rtol=1e-4, atol=1e-4)
    assert res["metrics"]["raw"] == pytest.approx(t2v_metrics(expected, test.caption_to_video))
    bank = torch.from_numpy(np.load(os.path.join(out, f"sims_t2v_bank_{ZERO_SHOT_LEVEL}.npy")))   # [8, 12]
    assert bank.shape == (8, 12)
    normed = expected + sk_bias(bank)[None]
    assert res["metrics"]["sk_norm"] == pytest.approx(t2v_metrics(normed, test.caption_to_video), abs=1e-6)


def test_zero_shot_random_tiny_video_to_text_and_bad_flags(synthetic_set, tmp_path, capsys):
    out = str(tmp_path / "zs")
    flags = data_flags(synthetic_set) + SMALL + ["--pretrained_clip_name", "random:tiny", "--output_dir", out]
    assert eval_v2t(flags + ["--zero_shot"]) == 0
    res = _results(out, "v2t")
    assert res["model"] == "zero-shot CLIP random:tiny" and res["sk_bank"]["size"] == 8
    for m in res["metrics"].values():
        assert 0 <= m["R1"] <= m["R5"] <= m["R10"] <= 100
    with open(os.path.join(out, "config_v2t.json")) as f:
        assert json.load(f)["zero_shot"] is True
    capsys.readouterr()
    assert eval_v2t(flags + ["--zero_shot", "--init_model", "x.pth"]) == 2
    assert "--zero_shot" in capsys.readouterr().err
    assert eval_v2t(flags) == 2
    assert "--init_model is required" in capsys.readouterr().err


# --- exported models ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory) -> tuple[str, str]:
    checkpoint = os.path.join(trained_run, "checkpoints", "last.pth")
    folder = str(tmp_path_factory.mktemp("exported"))
    assert export_main([checkpoint, "--out", folder]) == 0
    return checkpoint, folder


def test_export_round_trip_is_bit_exact_and_runs_no_code(exported, trained_run, monkeypatch):
    checkpoint, folder = exported
    assert sorted(os.listdir(folder)) == ["config.json", "model.safetensors"]
    original = read_checkpoint(checkpoint)["model"]
    with monkeypatch.context() as m:  # reading the folder must never unpickle anything
        def refuse(*args, **kwargs):
            raise AssertionError("an exported folder was read with a pickle-based loader")
        m.setattr(torch, "load", refuse)
        m.setattr(pickle, "load", refuse)
        m.setattr(pickle, "loads", refuse)
        loaded = read_checkpoint(folder)
        model, _ = build_model_from_checkpoint(folder, ModelConfig(max_words=16, max_frames=4))
    assert loaded["model"].keys() == original.keys()
    for name, tensor in original.items():
        assert loaded["model"][name].dtype == tensor.dtype and torch.equal(loaded["model"][name], tensor), name
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, original[name].to(tensor.dtype)), name
    config = loaded["config"]
    with open(os.path.join(trained_run, "config.json")) as f:
        run = json.load(f)
    assert config["model"]["max_frames"] == 4 and config["clip"]["vision_layers"] == 4
    assert config["clip"]["pretrained_clip_name"] == "random:tiny"
    assert config["data"]["feature_framerate"] == 1.0 and config["data"]["max_words"] == 16
    assert config["training"]["command"] == run["command"] and "--epochs 1" in run["command"]
    assert config["data_version"] == run["data_version"] and config["data_version"]["videos"] == 32
    assert len(config["weights_sha256"]) == 64 and config["source"]["kind"] == "training checkpoint"
    # --init_model reads it into a model built from a CLIP name, strictly
    fresh = UCoFiA(build_random_clip("tiny"), ModelConfig(max_words=16, max_frames=4))
    load_model_weights(fresh, folder)
    assert all(torch.equal(v, original[k].to(v.dtype)) for k, v in fresh.state_dict().items())


def test_exported_folder_evaluates_like_its_checkpoint(synthetic_set, exported, tmp_path):
    checkpoint, folder = exported
    flags = data_flags(synthetic_set) + SMALL + ["--save_sims"]
    a, b = str(tmp_path / "ckpt"), str(tmp_path / "folder")
    assert eval_t2v(flags + ["--init_model", checkpoint, "--output_dir", a]) == 0
    assert eval_t2v(flags + ["--init_model", folder, "--output_dir", b]) == 0
    ra, rb = _results(a, "t2v"), _results(b, "t2v")
    assert ra["metrics"] == rb["metrics"] and ra["levels"] == rb["levels"]
    for name in ra["levels"]:
        for part in ("test", "bank"):
            path = f"sims_t2v_{part}_{name}.npy"
            assert np.array_equal(np.load(os.path.join(a, path)), np.load(os.path.join(b, path))), path


def test_retrieval_tool_accepts_the_folder(synthetic_set, exported, tmp_path, capsys):
    checkpoint, folder = exported
    captions = tmp_path / "captions.txt"
    captions.write_text("a red circle moves left\na blue square moves up\n")
    video = os.path.join(synthetic_set, "videos", sorted(os.listdir(os.path.join(synthetic_set, "videos")))[0])
    outputs = []
    for source in (checkpoint, folder):
        capsys.readouterr()
        assert retrieve(["rank", "--checkpoint", source, "--video", video, "--captions", str(captions),
                         "--device", "cpu"]) == 0
        outputs.append(capsys.readouterr().out.splitlines()[1:])                 # the table without its title
    assert outputs[0] == outputs[1] and len(outputs[0]) == 3


def test_export_refuses_bad_input(tmp_path, capsys):
    assert export_main([str(tmp_path / "missing.pth"), "--out", str(tmp_path / "out")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"format": "ucofia-export-v1"}')
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(str(broken))
    assert "model.safetensors" in str(info.value) and "\n" not in str(info.value)
    assert not os.path.exists(tmp_path / "out")
