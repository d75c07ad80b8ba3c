"""The CUDA path against the CPU: a training step per precision, evaluation's similarity matrices and ranks, resume.

Tests marked ``cuda`` need a GPU and are skipped without one (``python -m pytest -m cuda tests/test_cuda.py``, as
``scripts/gpu_check.sh`` runs them). Each compares two runs through one function (``train_step``,
``eval_matrices``, ``resumed_and_uninterrupted``); the unmarked twins run the same functions on the CPU alone, so
that CI exercises every line a GPU run will take.

Both devices start from identical weights (built on the CPU from one seed, then moved) and identical inputs. The
training patch-selection noise is drawn on the device it is used on, so its values differ between CPU and GPU; the
comparisons draw it on the CPU for both (``cpu_noise``) and compare arithmetic only. Both devices compute fp32
without TF32 (``strict_fp32``: TF32 matmuls and convolutions round inputs to 10 bits, 1e-3 relative).

Tolerances:
- fp32, GPU against CPU: 1e-4 relative. Sums in another order differ by about 1e-6 relative per layer; 1e-4 leaves
  a factor of ten over what a few dozen layers accumulate, and a wrong kernel or a lost mask is off by far more.
- bf16 and legacy_fp16 against fp32 on one device: the loss within 2e-2 relative and every gradient pointing the
  same way (cosine at least 0.99 over all parameters together). bf16 keeps 8 significant bits (rounding 2^-9,
  2e-3) and fp16 11 (2^-12, 2.4e-4) on each of the backbone's matmul inputs; through the layers and the sharp ISA
  softmaxes (temperature 0.01, which multiplies rounding errors of similarities by 100) the loss moves by several
  rounding units: on the CPU twin 2e-3 (bf16) and 3e-4 (legacy_fp16), gradient cosines 0.9997 and 0.99999, so the
  bounds leave a factor of ten for the GPU's other kernels. A broken half-precision path (overflow, a cast lost,
  weights left in fp16 where fp32 is needed) shows as a non-finite value or a loss off by far more than 2e-2.
"""
import contextlib
import copy
import functools
import math
import os

import pytest
import torch
from helpers import tiny_flags

from modules.common.io import read_checkpoint
from modules.common.runtime import Runtime, autocast_context
from modules.data import build_split
from modules.data.config import DataConfig
from modules.evaluation.encoding import EvalOptions, bank_scores, combine, encode_test_set, score_test, sk_biases
from modules.evaluation.metrics import ranks_of
from modules.model import ucofia
from modules.model.build import build_model
from modules.model.token_selection import seeded_noise
from modules.model.ucofia import ModelConfig
from modules.training.optim import OptimConfig, build_optimizer

# Deterministic cuBLAS reads this when its first handle is made: before any test here touches the GPU.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
WORDS, FRAMES, CLIPS = 16, 4, 2
FP32_RTOL = 1e-4
HALF_LOSS_RTOL, HALF_GRAD_COSINE = 2e-2, 0.99


@contextlib.contextmanager
def strict_fp32():
    """fp32 matmuls and convolutions without TF32 for the block (restored after)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(autouse=True)
def _restore_kernel_settings():
    """A --deterministic run in this process switches deterministic kernels on for good: switch them back."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic)
    yield
    torch.use_deterministic_algorithms(saved[0])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[1:]


@pytest.fixture
def cpu_noise(monkeypatch):
    """Training noise drawn on the CPU and copied to the model's device: the same values on every device."""
    monkeypatch.setattr(ucofia, "seeded_noise", lambda seeds, shape, device: seeded_noise(seeds, shape).to(device))


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||, in float64."""
    a, b = a.double().flatten(), b.double().flatten()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@functools.lru_cache(maxsize=None)
def train_step(device: str, precision: str) -> dict:
    """One training step of random tiny UCoFiA as the engine runs it (autocast, fp32 loss, global clipping, BertAdam,
    temperature clamp) on identical weights and inputs. Returns the loss, the gradients before clipping and each
    parameter's update, all as fp32 on the CPU. Computed once per (device, precision) in a session; callers use
    ``cpu_noise`` and leave the result unchanged."""
    torch.manual_seed(0)
    model = build_model("random:tiny", ModelConfig(max_words=WORDS, max_frames=FRAMES), precision, device=device)
    model.train()
    # No warm-up (the first step would have learning rate 0) and one learning rate, so every update counts alike.
    optimizer = build_optimizer(model, OptimConfig(lr=1e-3, coef_lr=1.0, warmup_proportion=0.0), t_total=10)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 49000, (CLIPS, WORDS), generator=gen)
    ids[:, 0], ids[:, -1] = 49406, 49407
    text_mask = torch.ones(CLIPS, WORDS, dtype=torch.bool)
    text_mask[0, 10:] = False                                          # a padded caption
    video = torch.randn(CLIPS, FRAMES, 3, 224, 224, generator=gen)
    video_mask = torch.ones(CLIPS, FRAMES, dtype=torch.bool)
    video_mask[1, 3:] = False                                          # a padded video
    before = {n: p.detach().float().cpu().clone() for n, p in model.named_parameters()}
    with autocast_context(precision, torch.device(device)):
        loss = model(ids.to(device), text_mask.to(device), video.to(device), video_mask.to(device),
                     torch.arange(CLIPS) + 7)
    loss.float().backward()
    grads = {n: p.grad.detach().float().cpu().clone() for n, p in model.named_parameters() if p.grad is not None}
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    update = {n: p.detach().float().cpu() - before[n] for n, p in model.named_parameters()}
    return {"loss": float(loss.detach().float()), "grads": grads, "update": update}


def flat(parts: dict) -> torch.Tensor:
    return torch.cat([parts[k].flatten().double() for k in sorted(parts)])


def assert_same_step(a: dict, b: dict, rtol: float) -> None:
    assert a["grads"].keys() == b["grads"].keys()
    assert abs(a["loss"] - b["loss"]) <= rtol * abs(b["loss"]), (a["loss"], b["loss"])
    assert relative(flat(a["grads"]), flat(b["grads"])) <= rtol
    assert relative(flat(a["update"]), flat(b["update"])) <= rtol


def assert_close_to_fp32(half: dict, fp32: dict) -> None:
    assert math.isfinite(half["loss"]) and all(torch.isfinite(g).all() for g in half["grads"].values())
    assert abs(half["loss"] - fp32["loss"]) <= HALF_LOSS_RTOL * abs(fp32["loss"]), (half["loss"], fp32["loss"])
    cosine = torch.nn.functional.cosine_similarity(flat(half["grads"]), flat(fp32["grads"]), dim=0)
    assert cosine >= HALF_GRAD_COSINE, float(cosine)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> str:
    from modules.data.synthetic import generate

    folder = str(tmp_path_factory.mktemp("cuda_set"))
    generate(folder, n_train=8, n_test=6, seed=0)
    return folder


def eval_matrices(folder: str, device: str, batch_size: int) -> dict:
    """Evaluation of random tiny UCoFiA on ``folder``: per-level test matrices, both SK banks, the combined
    SK-normed text-to-video and video-to-text matrices and their ranks, on the CPU."""
    torch.manual_seed(0)
    cfg = ModelConfig(max_words=WORDS, max_frames=FRAMES)
    model = build_model("random:tiny", cfg, device=device).eval()
    data = DataConfig(datatype="msrvtt", data_path=os.path.join(folder, "data.json"),
                      features_path=os.path.join(folder, "videos"), train_csv=os.path.join(folder, "train.csv"),
                      val_csv=os.path.join(folder, "test.csv"), max_words=WORDS, max_frames=FRAMES)
    rt = Runtime(rank=0, local_rank=0, world_size=1, device=torch.device(device))
    opts = EvalOptions(batch_size=batch_size, workers=0)
    test, train = build_split(data, "test"), build_split(data, "train")
    feats = encode_test_set(model, test, rt, opts)
    levels = score_test(model, feats, rt)
    out = {f"test_{k}": v.cpu() for k, v in levels.items()}
    c2v = feats.caption_to_video
    for direction in ("t2v", "v2t"):
        bank = bank_scores(model, train, feats, direction, rt, opts)
        assert all(v.device.type == torch.device(device).type for v in bank.values())   # kept on the device
        out.update({f"bank_{direction}_{k}": v.cpu() for k, v in bank.items()})
        sim = combine(levels, sk_biases(bank, 4), direction).cpu()
        out[f"sk_{direction}"] = sim
        if direction == "t2v":                                         # each caption's video
            out["ranks_t2v"] = ranks_of(sim, c2v)
        else:                                                          # each video's first caption
            first = (c2v[None, :] == torch.arange(sim.shape[1])[:, None]).int().argmax(dim=1)
            out["ranks_v2t"] = ranks_of(sim.t(), first)
    return out


def assert_same_evaluation(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if key.startswith("ranks_"):
            assert torch.equal(a[key], b[key]), key
        else:
            worst = float((a[key] - b[key]).abs().max() / b[key].abs().max())
            assert worst <= FP32_RTOL, (key, worst)


def resumed_and_uninterrupted(folder: str, tmp_path, device: str) -> tuple[dict, dict]:
    """Final checkpoints of a 2-epoch deterministic run, and of the same run stopped after 3 steps and resumed."""
    from train.main import main as train_main

    def flags(out: str) -> list[str]:
        f = tiny_flags(folder, out) + ["--epochs", "2", "--deterministic", "--batch_size", "4"]
        f[f.index("--device") + 1] = device
        return f

    whole, cut = str(tmp_path / "whole"), str(tmp_path / "cut")
    assert train_main(flags(whole)) == 0
    assert train_main(flags(cut) + ["--max_steps", "3"]) == 0
    last = os.path.join(cut, "checkpoints", "last.pth")
    assert read_checkpoint(last)["global_step"] == 3
    assert train_main(flags(cut) + ["--resume_model", last]) == 0
    return tuple(read_checkpoint(os.path.join(d, "checkpoints", "last.pth")) for d in (whole, cut))


def assert_same_run(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"] == 4
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]


# ------------------------------------------------------------------------------------------------- on a GPU

@pytest.mark.cuda
@needs_cuda
def test_fp32_train_step_on_the_gpu_equals_the_cpu(cpu_noise):
    with strict_fp32():
        assert_same_step(train_step("cuda", "fp32"), train_step("cpu", "fp32"), FP32_RTOL)


@pytest.mark.parametrize("precision", ["bf16", "legacy_fp16"])
@pytest.mark.cuda
@needs_cuda
def test_half_precision_train_steps_on_the_gpu_are_finite_and_close_to_fp32(precision, cpu_noise):
    with strict_fp32():
        assert_close_to_fp32(train_step("cuda", precision), train_step("cuda", "fp32"))


@pytest.mark.cuda
@needs_cuda
def test_evaluation_on_the_gpu_gives_the_cpu_matrices_and_ranks(small_set):
    with strict_fp32():
        assert_same_evaluation(eval_matrices(small_set, "cuda", 4), eval_matrices(small_set, "cpu", 4))


@pytest.mark.cuda
@needs_cuda
def test_resume_on_the_gpu_is_exact_in_deterministic_mode(small_set, tmp_path):
    assert_same_run(*resumed_and_uninterrupted(small_set, tmp_path, "cuda"))


# ------------------------------------------------------------------------- the same functions on the CPU (CI)

def test_cpu_twin_train_step_comparison(cpu_noise):
    """The comparison's own machinery: two CPU steps agree, and a changed input is noticed."""
    a = train_step("cpu", "fp32")
    assert_same_step(a, copy.deepcopy(a), FP32_RTOL)
    shifted = dict(a, loss=a["loss"] * (1 + 10 * FP32_RTOL))
    with pytest.raises(AssertionError):
        assert_same_step(shifted, a, FP32_RTOL)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "legacy_fp16"])
def test_cpu_twin_half_precision_steps_are_close_to_fp32(precision, cpu_noise):
    assert_close_to_fp32(train_step("cpu", precision), train_step("cpu", "fp32"))


@pytest.mark.slow
def test_cpu_twin_evaluation_does_not_depend_on_batching(small_set):
    assert_same_evaluation(eval_matrices(small_set, "cpu", 3), eval_matrices(small_set, "cpu", 4))


@pytest.mark.slow
def test_cpu_twin_resume_is_exact(small_set, tmp_path):
    assert_same_run(*resumed_and_uninterrupted(small_set, tmp_path, "cpu"))
