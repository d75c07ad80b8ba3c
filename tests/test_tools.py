"""Tools on a trained checkpoint: UCoFiA.explain, scripts/retrieve.py (index, search, rank, bad input) and
scripts/visualize.py."""
import csv
import math
import os
import shutil

import cv2
import numpy as np
import pytest
import torch

from modules.data import DataConfig, load_video
from modules.model.build import build_model_from_checkpoint
from modules.model.clip import resolve_clip
from modules.model.isa import isa, isa_scaled_weights
from modules.model.tokenizer import text_mask, tokenize
from modules.model.ucofia import ModelConfig, UCoFiA
from scripts.retrieve import main as retrieve
from scripts.visualize import main as visualize

LEVELS = ("video_sentence", "frame_sentence", "patch_word")
CPU = ["--device", "cpu"]
FAST = CPU + ["--workers", "0"]


# --- the explain API ------------------------------------------------------------------------------------------------

def _tiny(**overrides) -> UCoFiA:
    torch.manual_seed(0)
    model = UCoFiA(resolve_clip("random:tiny"), ModelConfig(max_words=8, max_frames=4, topk=2, topk_samples=30,
                                                            **overrides)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # away from the identity initialisation, so that every ISA matrix matters
        for p in model.levels.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("overrides", [dict(), dict(eval_topk="hard"), dict(mask_padding=False)])
def test_explain_matches_similarity_levels(overrides):
    model = _tiny(**overrides)
    ids = tokenize("a dog runs", 8)                                          # 5 real tokens, 3 padding
    video = torch.randn(1, 4, 3, 224, 224)
    vmask = torch.tensor([[True, True, True, False]])
    expl = model.explain(ids, text_mask(ids), video, vmask)
    with torch.no_grad():
        levels = model.similarity_levels(model.encode_text(ids, text_mask(ids)), model.encode_video(video, vmask))
    for name in LEVELS:
        torch.testing.assert_close(expl.levels[name], levels[name][0, 0], rtol=1e-5, atol=1e-5)
    assert expl.selection.shape == (4, 2, 49) and expl.token_weights.shape == (4, 3)
    torch.testing.assert_close(expl.selection.sum(-1), torch.ones(4, 2))    # each slot: a distribution over patches
    for weights in (expl.frame_weights, expl.word_weights, expl.token_weights):
        assert float(weights.sum()) == pytest.approx(1.0, abs=1e-5) and bool((weights >= 0).all())
    if model.config.mask_padding:
        assert float(expl.frame_weights[3]) == 0 and float(expl.token_weights[3].sum()) == 0
        assert float(expl.word_weights[5:].sum()) == 0 and expl.word_mask.tolist() == [True] * 5 + [False] * 3
    if model.config.eval_topk == "hard":
        assert set(expl.selection.unique().tolist()) == {0.0, 1.0}


def test_explain_wants_one_pair():
    model = _tiny()
    ids = tokenize(["a", "b"], 8)
    with pytest.raises(ValueError, match="one caption and one video"):
        model.explain(ids, text_mask(ids), torch.randn(2, 4, 3, 224, 224), torch.ones(2, 4, dtype=torch.bool))


def test_isa_weights_by_hand():
    x = torch.tensor([0.3, -0.1, 0.25], dtype=torch.float64)
    w = torch.tensor([[0.2, 1.0, 0.0], [0.5, 0.1, 0.4], [0.0, 0.3, 0.9]], dtype=torch.float64)
    tau = 0.05
    inner = torch.softmax(x / tau, 0)
    expected = torch.softmax(inner @ w / tau, 0)                            # alpha = softmax(softmax(x/tau) W / tau)
    alpha = isa_scaled_weights(x / tau, w / tau)
    torch.testing.assert_close(alpha, expected, rtol=1e-12, atol=1e-12)
    assert float((alpha * x).sum()) == pytest.approx(float(isa(x, w, tau)), rel=1e-12)


# --- scripts/retrieve.py --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(trained_run) -> str:
    return os.path.join(trained_run, "checkpoints", "last.pth")


def _test_captions(folder: str) -> dict[str, str]:
    with open(os.path.join(folder, "test.csv")) as f:
        return {row["video_id"]: row["sentence"] for row in csv.DictReader(f)}


def _rows(out: str, title: str) -> list[list[str]]:
    """The rows of the table printed under the line that starts with ``title``: rank, four scores, name."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title)) + 2
    rows = []
    for line in lines[start:]:
        if not line.strip() or not line.split()[0].isdigit():
            break
        rows.append(line.split(maxsplit=5))
    return rows


def _direct_scores(model: UCoFiA, videos: list[str], captions: list[str]) -> dict[str, torch.Tensor]:
    """Per-level [Nc, Nv] scores from the model's own API, without the tools."""
    cfg = DataConfig(max_words=16, max_frames=4)
    frames, masks = zip(*(load_video(v, cfg) for v in videos))
    ids = tokenize(captions, 16)
    with torch.no_grad():
        return model.similarity_levels(model.encode_text(ids, text_mask(ids)),
                                       model.encode_video(torch.stack(frames), torch.stack(masks)))


def test_index_search_and_rank(synthetic_set, checkpoint, tmp_path, capsys):
    src = os.path.join(synthetic_set, "videos")
    folder = tmp_path / "mine"
    os.makedirs(folder / "sub")
    names = ["video32.mp4", "video33.mp4", "video36.mp4", "sub/video40.mp4"]
    for name in names:
        shutil.copy(os.path.join(src, os.path.basename(name)), folder / name)
    (folder / "broken.mp4").write_bytes(os.urandom(2000))
    (folder / "notes.txt").write_text("not a video")
    base = ["--checkpoint", checkpoint, "--videos", str(folder)] + FAST

    assert retrieve(["index"] + base) == 0
    captured = capsys.readouterr()
    assert "4 videos (0 from the cache, 4 encoded, 1 undecodable skipped)" in captured.out
    assert "broken.mp4" in captured.err
    index_file = folder / "ucofia_index.pt"
    stamp = os.stat(index_file).st_mtime_ns
    assert retrieve(["index"] + base) == 0                                    # nothing new: nothing encoded
    assert "4 videos (4 from the cache, 0 encoded" in capsys.readouterr().out
    assert os.stat(index_file).st_mtime_ns == stamp
    shutil.copy(os.path.join(src, "video41.mp4"), folder / "video41.mp4")
    os.remove(folder / "broken.mp4")

    captions = _test_captions(synthetic_set)
    query = captions["video33"]
    assert retrieve(["search"] + base + ["--query", query, "--top_k", "0"]) == 0
    out = capsys.readouterr().out
    assert "5 videos (4 from the cache, 1 encoded)" in out                    # one new video: only it is encoded
    rows = _rows(out, f"query: {query!r}")
    listed = ["sub/video40.mp4", "video32.mp4", "video33.mp4", "video36.mp4", "video41.mp4"]
    assert sorted(r[5] for r in rows) == listed
    model, _ = build_model_from_checkpoint(checkpoint, ModelConfig(max_words=16, max_frames=4))
    direct = _direct_scores(model, [str(folder / n) for n in listed], [query])
    overall = sum(direct[k] for k in LEVELS)[0] / 3                           # [Nv]
    assert rows[0][5] == listed[int(overall.argmax())]
    for row in rows:                                                          # every printed score, per level
        v = listed.index(row[5])
        printed = dict(zip(("overall",) + LEVELS, (float(x) for x in row[1:5])))
        assert printed["overall"] == pytest.approx(float(overall[v]), abs=1e-3)
        for k in LEVELS:
            assert printed[k] == pytest.approx(float(direct[k][0, v]), abs=1e-3)

    caption_file = tmp_path / "captions.txt"
    texts = [captions["video32"], captions["video33"], "a purple diamond moves to the right"]
    caption_file.write_text(f"{texts[0]}\n\n{texts[1]}\n{texts[2]}\n")
    video = str(folder / "video32.mp4")
    assert retrieve(["rank", "--checkpoint", checkpoint, "--video", video, "--captions", str(caption_file)]
                    + CPU) == 0
    rows = _rows(capsys.readouterr().out, f"video: {video}")
    direct = _direct_scores(model, [video], texts)
    overall = sum(direct[k] for k in LEVELS)[:, 0] / 3                        # [Nc]
    assert [r[5] for r in rows] == [texts[i] for i in torch.argsort(overall, descending=True).tolist()]
    assert [float(r[1]) for r in rows] == pytest.approx(sorted(overall.tolist(), reverse=True), abs=1e-3)


def _fails(capsys, argv, message) -> None:
    assert retrieve(argv + (CPU if argv[0] == "rank" else FAST)) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and message in err[0], err


def test_bad_paths_and_files(synthetic_set, checkpoint, tmp_path, capsys):
    ckpt = ["--checkpoint", checkpoint]
    _fails(capsys, ["index", "--videos", str(tmp_path / "nowhere")] + ckpt, "no such file or folder")
    os.makedirs(tmp_path / "empty")
    _fails(capsys, ["index", "--videos", str(tmp_path / "empty")] + ckpt, "no video files")
    _fails(capsys, ["index", "--videos", str(tmp_path / "empty"), "--checkpoint", str(tmp_path / "x.pth")],
           "no video files")                                                  # paths are checked first
    video = os.path.join(synthetic_set, "videos", "video32.mp4")
    _fails(capsys, ["index", "--videos", video, "--checkpoint", str(tmp_path / "x.pth")], "checkpoint not found")
    _fails(capsys, ["index", "--videos", video, "--index", checkpoint] + ckpt, "is not a video index")
    os.makedirs(tmp_path / "bad")
    (tmp_path / "bad" / "a.mp4").write_bytes(b"")
    (tmp_path / "bad" / "b.avi").write_bytes(os.urandom(500))
    _fails(capsys, ["index", "--videos", str(tmp_path / "bad")] + ckpt, "none of the 2 video files could be decoded")
    assert not os.path.exists(tmp_path / "bad" / "ucofia_index.pt")
    _fails(capsys, ["search", "--videos", video, "--query", " "] + ckpt, "empty caption")

    captions = tmp_path / "captions.txt"
    captions.write_text("a red circle\n")
    rank = ["rank"] + ckpt
    _fails(capsys, rank + ["--video", str(tmp_path / "no.mp4"), "--captions", str(captions)], "no such video file")
    _fails(capsys, rank + ["--video", video, "--captions", str(tmp_path / "no.txt")], "no such captions file")
    (tmp_path / "blank.txt").write_text("\n  \n")
    _fails(capsys, rank + ["--video", video, "--captions", str(tmp_path / "blank.txt")], "no captions")
    _fails(capsys, rank + ["--video", str(tmp_path / "bad" / "b.avi"), "--captions", str(captions)],
           "cannot open video")


# --- scripts/visualize.py -------------------------------------------------------------------------------------------

def test_visualize_writes_a_picture(synthetic_set, checkpoint, tmp_path, capsys):
    video = os.path.join(synthetic_set, "videos", "video32.mp4")
    out = tmp_path / "fig" / "pair.png"
    caption = "a red circle moves up on a gray background"
    assert visualize(["--checkpoint", checkpoint, "--video", video, "--caption", caption, "--out", str(out),
                      "--eval_topk", "hard"] + CPU) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    img = cv2.imread(str(out))
    assert img is not None and 820 <= img.shape[1] <= 2000 and 400 <= img.shape[0] <= 1500
    # hard top-K: 3 opaque orange boxes per frame are drawn (BGR about (0, 140, 255))
    orange = (np.abs(img.astype(int) - np.array([0, 140, 255])).sum(-1) < 60).sum()
    assert orange > 4 * 3 * 4 * 20
    assert math.isclose(float(img.mean()), 255, abs_tol=60) and img.std() > 20  # mostly white page, with content

    assert visualize(["--checkpoint", checkpoint, "--video", str(tmp_path / "no.mp4"), "--caption", caption,
                      "--out", str(out)]) == 2
    assert "no such video file" in capsys.readouterr().err
    assert visualize(["--checkpoint", checkpoint, "--video", video, "--caption", caption,
                      "--out", str(tmp_path / "x.jpg")]) == 2
    assert "expected a .png" in capsys.readouterr().err
