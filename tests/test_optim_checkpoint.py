"""The published optimiser and schedule, freezing, samplers, and safe checkpoint files."""
import math
import os
import pickle

import pytest
import torch
from torch import nn

from modules.common.errors import CheckpointError
from modules.common.io import atomic_save, read_checkpoint
from modules.data.samplers import GlobalBatchSampler, ShardSampler, noise_seeds
from modules.model.clip import build_random_clip
from modules.training.optim import (
    BertAdam,
    MultiTensorBertAdam,
    OptimConfig,
    build_optimizer,
    freeze_clip_layers,
    warmup_cosine,
)


def test_warmup_cosine_is_the_published_curve():
    assert warmup_cosine(0.0, 0.1) == 0.0
    assert warmup_cosine(0.05, 0.1) == pytest.approx(0.5)
    # after warmup the cosine runs over the whole run, so it starts below 1 (as published)
    assert warmup_cosine(0.1, 0.1) == pytest.approx(0.5 * (1 + math.cos(0.1 * math.pi)))
    assert warmup_cosine(1.0, 0.1) == pytest.approx(0.0)


def test_bert_adam_step_by_hand():
    p = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = BertAdam([p], lr=0.1, warmup=0.5, t_total=4, weight_decay=0.2, max_grad_norm=1.0)
    lr_at = [0.1 * warmup_cosine(s / 4, 0.5) for s in range(3)]
    m = torch.zeros(2)
    v = torch.zeros(2)
    expected = p.detach().clone()
    for step, grad in enumerate([torch.tensor([3.0, 4.0]), torch.tensor([0.3, -0.4]), torch.tensor([0.0, 1.0])]):
        p.grad = grad.clone()
        opt.step()
        g = grad / max(1.0, grad.norm().item())          # per-parameter clipping to norm 1
        m = 0.9 * m + 0.1 * g
        v = 0.98 * v + 0.02 * g * g
        update = m / (v.sqrt() + 1e-6) + 0.2 * expected  # no bias correction; decoupled decay
        expected = expected - lr_at[step] * update
        assert torch.allclose(p.detach(), expected, atol=1e-6), step
    assert opt.get_lr() == [pytest.approx(0.1 * warmup_cosine(3 / 4, 0.5))]


class _Groups(nn.Module):
    """Parameters of the four published groups: CLIP / new modules x decayed / not decayed (by name)."""

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.clip = nn.ModuleDict({"proj": nn.Linear(24, 16), "LayerNorm": nn.LayerNorm(16)}).to(dtype)
        self.head = nn.Linear(16, 8)
        self.temporal = nn.Linear(8, 8, bias=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_multi_tensor_bert_adam_equals_the_per_parameter_one(dtype):
    """Six steps over the four published groups (decay and none, two learning rates) through warmup and the cosine,
    with gradients above and below the clipping norm, fp16 CLIP weights and moments (the legacy_fp16 recipe) and a
    parameter without gradient for a step (it falls a step behind): the same weights and state, bit for bit."""
    torch.manual_seed(0)
    model, other = _Groups(dtype), _Groups(dtype)
    other.load_state_dict(model.state_dict())
    initial = {name: p.detach().clone() for name, p in model.named_parameters()}
    cfg = OptimConfig(lr=1e-2, coef_lr=0.5)
    per_param = build_optimizer(model, cfg, t_total=8)
    multi = build_optimizer(other, cfg, t_total=8, impl="multi_tensor")
    assert type(per_param) is BertAdam and type(multi) is MultiTensorBertAdam and len(multi.param_groups) == 4
    pairs = list(zip(model.named_parameters(), other.parameters()))
    for step in range(6):
        gen = torch.Generator().manual_seed(step)
        for (name, a), b in pairs:
            if step == 2 and name.startswith("temporal."):
                a.grad = b.grad = None
                continue
            scale = 10.0 if name.startswith("clip.") else 1e-3         # clipped and unclipped gradients
            grad = (torch.randn(a.shape, generator=gen) * scale).to(a.dtype)
            a.grad, b.grad = grad.clone(), grad.clone()
        per_param.step()
        multi.step()
    assert per_param.get_lr() == multi.get_lr()
    for (name, a), b in pairs:
        assert not torch.equal(a, initial[name]), name
        assert torch.equal(a, b), name
        sa, sb = per_param.state[a], multi.state[b]
        assert sa["step"] == sb["step"] and torch.equal(sa["next_m"], sb["next_m"]), name
        assert torch.equal(sa["next_v"], sb["next_v"]) and sa["next_v"].dtype == a.dtype, name
    assert per_param.state[model.temporal.weight]["step"] == 5


@pytest.mark.slow
def test_training_with_the_multi_tensor_optimizer_ends_with_the_same_weights(synthetic_set, tmp_path):
    """Two optimiser steps of a training run with each implementation: the same checkpoint, bit for bit."""
    from helpers import tiny_flags

    from train.main import main as train_main

    weights = []
    for impl in ("per_param", "multi_tensor"):
        out = str(tmp_path / impl)
        assert train_main(tiny_flags(synthetic_set, out) + ["--max_steps", "2", "--optimizer_impl", impl]) == 0
        weights.append(read_checkpoint(os.path.join(out, "checkpoints", "last.pth"))["model"])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


class _Wrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.clip = build_random_clip("tiny")
        self.head = nn.Linear(4, 4)


def test_groups_and_freezing():
    model = _Wrapper()
    frozen = freeze_clip_layers(model, 0)
    names = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert names == {"clip.token_embedding.weight", "clip.positional_embedding", "clip.visual.conv1.weight",
                     "clip.visual.class_embedding", "clip.visual.positional_embedding", "clip.visual.ln_pre.weight",
                     "clip.visual.ln_pre.bias"} and frozen == len(names)
    opt = build_optimizer(model, OptimConfig(lr=1e-4, coef_lr=1e-3), t_total=10)
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["clip_decay"]["lr"] == pytest.approx(1e-7) and groups["head_decay"]["lr"] == pytest.approx(1e-4)
    assert groups["head_no_decay"]["weight_decay"] == 0.0 and groups["clip_decay"]["weight_decay"] == 0.2
    assert any(p is model.head.bias for p in groups["head_no_decay"]["params"])
    assert any(p is model.clip.ln_final.weight for p in groups["clip_decay"]["params"])  # published decay rule
    total = sum(len(g["params"]) for g in opt.param_groups)
    assert total == sum(1 for p in model.parameters() if p.requires_grad)
    model2 = _Wrapper()
    assert freeze_clip_layers(model2, -1) == 0 and freeze_clip_layers(model2, 2) > freeze_clip_layers(_Wrapper(), 0)


@pytest.mark.parametrize("world,accum", [(1, 1), (2, 1), (4, 2)])
def test_global_batches_do_not_depend_on_process_count(world, accum):
    reference = list(GlobalBatchSampler(50, 8, 1, 1, 0, seed=3))
    samplers = [GlobalBatchSampler(50, 8, accum, world, r, seed=3) for r in range(world)]
    per_rank = [list(s) for s in samplers]
    for step, batch in enumerate(reference):
        parts = [i for r in range(world) for m in range(accum) for i in per_rank[r][step * accum + m]]
        assert sorted(parts) == sorted(batch)
    assert len(reference) == 50 // 8 and samplers[0].steps_per_epoch == 6
    s = GlobalBatchSampler(50, 8, 1, 1, 0, seed=3)
    s.set_epoch(0, start_step=4)
    assert list(s) == reference[4:]
    s.set_epoch(1)
    assert list(s) != reference


def test_shards_cover_once_and_noise_seeds_are_stable():
    shards = [ShardSampler(10, 3, r).indices for r in range(3)]
    assert sum(shards, []) == list(range(10))
    a = noise_seeds(42, 1, torch.tensor([0, 1, 2, 3]))
    assert torch.equal(a, noise_seeds(42, 1, torch.tensor([0, 1, 2, 3])))
    assert len(set(a.tolist())) == 4 and (a >= 0).all()
    assert not torch.equal(a, noise_seeds(42, 2, torch.tensor([0, 1, 2, 3])))
    torch.Generator().manual_seed(int(a.max()))  # a valid seed


def test_atomic_save_keeps_previous_file_on_failure(tmp_path, monkeypatch):
    path = str(tmp_path / "last.pth")
    atomic_save({"x": torch.ones(3)}, path)

    def failing_save(obj, f):
        f.write(b"partial bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError):
        atomic_save({"x": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(read_checkpoint(path)["x"], torch.ones(3))
    assert os.listdir(tmp_path) == ["last.pth"]


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_unsafe_and_truncated_checkpoints_are_refused(tmp_path):
    bad = tmp_path / "evil.pth"
    with open(bad, "wb") as f:
        pickle.dump({"model": _Exploit()}, f)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(CheckpointError, match="refused|unreadable"):
            read_checkpoint(str(bad))
        assert not os.path.exists("pwned")
    finally:
        os.chdir(cwd)
    good = tmp_path / "good.pth"
    atomic_save({"x": torch.arange(1000)}, str(good))
    data = good.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pth: unreadable or truncated"):
        read_checkpoint(str(tmp_path / "cut.pth"))
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(str(tmp_path / "absent.pth"))
