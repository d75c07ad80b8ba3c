"""The published optimiser: BertAdam with warmup-cosine, CLIP's learning rate scaled by ``coef_lr``, weight decay 0.2.

BertAdam (CLIP4Clip's optimiser, used unchanged by X-CLIP and UCoFiA) differs from ``torch.optim.AdamW`` in ways that
change training, so it is reproduced rather than substituted:
- no bias correction of the moments (early updates are smaller than Adam's);
- every parameter's gradient is clipped to norm ``max_grad_norm`` on its own, after the loop's global clipping;
- decoupled weight decay added to the update before it is scaled by the learning rate;
- the schedule is a function of the optimiser's own step count: x / warmup during warmup, then
  0.5 (1 + cos(pi x)) with x the fraction of *all* steps done (not of the steps after warmup), as published;
- moments are kept in the parameter's dtype, so the legacy fp16 recipe also keeps fp16 moments.

``--optimizer_impl multi_tensor`` runs the same arithmetic as ``torch._foreach_*`` calls over all parameters of a
group at once (one kernel launch per operation instead of one per parameter): the same results, bit for bit on the
CPU, and the same state, so a checkpoint written by one implementation resumes with the other.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from modules.common.cli import option, setting

NO_DECAY_KEYS = ("bias", "LayerNorm.bias", "LayerNorm.weight")  # published names; CLIP's ln_* are decayed too
# Always trained when freezing the bottom of CLIP: the output heads (published freeze rule).
FREEZE_EXEMPT_PREFIXES = ("ln_final.", "text_projection", "logit_scale", "visual.ln_post.", "visual.proj")


def warmup_cosine(progress: float, warmup: float) -> float:
    """Learning-rate multiplier at ``progress`` = step / total steps (published ``warmup_cosine``)."""
    if progress < warmup:
        return progress / warmup
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class BertAdam(torch.optim.Optimizer):
    """Adam without bias correction, per-parameter gradient clipping and a built-in warmup-cosine schedule.

    Args:
        params: parameter groups; a group may set its own ``lr`` and ``weight_decay``.
        lr: base learning rate.
        warmup: fraction of ``t_total`` spent warming up linearly.
        t_total: total number of optimiser steps of the run.
        betas, eps, weight_decay, max_grad_norm: as published (0.9/0.98, 1e-6, 0.2, 1.0).
    """

    def __init__(self, params, lr: float, warmup: float, t_total: int, betas=(0.9, 0.98), eps: float = 1e-6,
                 weight_decay: float = 0.2, max_grad_norm: float = 1.0):
        if t_total < 1:
            raise ValueError(f"t_total must be at least 1, got {t_total}")
        defaults = dict(lr=lr, warmup=warmup, t_total=t_total, b1=betas[0], b2=betas[1], e=eps,
                        weight_decay=weight_decay, max_grad_norm=max_grad_norm)
        super().__init__(params, defaults)

    def scheduled_lr(self, group: dict, step: int) -> float:
        return group["lr"] * warmup_cosine(step / group["t_total"], group["warmup"])

    def get_lr(self) -> list[float]:
        """Current learning rate of every group (for logging)."""
        out = []
        for group in self.param_groups:
            steps = [self.state[p]["step"] for p in group["params"] if p in self.state and "step" in self.state[p]]
            out.append(self.scheduled_lr(group, max(steps) if steps else 0))
        return out

    def _state_of(self, p: torch.Tensor) -> dict:
        """The parameter's step count and moments (``next_m``, ``next_v`` as the published code names them), made at
        its first update."""
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["next_m"] = torch.zeros_like(p)
            state["next_v"] = torch.zeros_like(p)
        return state

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self._state_of(p)
                if group["max_grad_norm"] > 0:
                    torch.nn.utils.clip_grad_norm_(p, group["max_grad_norm"])
                m, v = state["next_m"], state["next_v"]
                m.mul_(group["b1"]).add_(grad, alpha=1 - group["b1"])
                v.mul_(group["b2"]).addcmul_(grad, grad, value=1 - group["b2"])
                update = m / (v.sqrt() + group["e"])
                if group["weight_decay"] > 0:
                    update.add_(p, alpha=group["weight_decay"])
                p.add_(update, alpha=-self.scheduled_lr(group, state["step"]))
                state["step"] += 1
        return loss


class MultiTensorBertAdam(BertAdam):
    """``BertAdam`` with each operation applied to a group's parameters at once (``torch._foreach_*``).

    Parameters are bucketed by (device, dtype) for the per-parameter clipping, whose norms must stay in the
    gradient's dtype as ``clip_grad_norm_`` keeps them, and by their step count for the scheduled learning rate.
    """

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                self._state_of(p)
            if group["max_grad_norm"] > 0:
                _clip_each(params, group["max_grad_norm"])
            grads = [p.grad for p in params]
            ms = [self.state[p]["next_m"] for p in params]
            vs = [self.state[p]["next_v"] for p in params]
            # The decay factors as 0-dim fp32 tensors, not Python numbers: with fp16 moments the foreach scalar
            # overload rounds a number to fp16 before multiplying, while the per-parameter step multiplies in fp32.
            b1, b2 = (torch.tensor(group[k], dtype=torch.float32, device=params[0].device) for k in ("b1", "b2"))
            torch._foreach_mul_(ms, b1)
            torch._foreach_add_(ms, grads, alpha=1 - group["b1"])
            torch._foreach_mul_(vs, b2)
            torch._foreach_addcmul_(vs, grads, grads, value=1 - group["b2"])
            denominators = torch._foreach_sqrt(vs)
            torch._foreach_add_(denominators, group["e"])
            updates = torch._foreach_div(ms, denominators)
            if group["weight_decay"] > 0:
                torch._foreach_add_(updates, params, alpha=group["weight_decay"])
            by_step: dict[int, list[int]] = {}
            for i, p in enumerate(params):
                by_step.setdefault(self.state[p]["step"], []).append(i)
            for step, members in by_step.items():
                torch._foreach_add_([params[i] for i in members], [updates[i] for i in members],
                                    alpha=-self.scheduled_lr(group, step))
            for p in params:
                self.state[p]["step"] += 1
        return loss


def _clip_each(params: list, max_norm: float) -> None:
    """``clip_grad_norm_(p, max_norm)`` for every p, computed per (device, dtype) bucket at once."""
    buckets: dict[tuple, list] = {}
    for p in params:
        buckets.setdefault((p.grad.device, p.grad.dtype), []).append(p.grad)
    for grads in buckets.values():
        norms = torch.stack(torch._foreach_norm(grads))[:, None]                 # [n, 1]
        total = torch.linalg.vector_norm(norms, 2, dim=1)                         # [n], as clip_grad_norm_ per tensor
        coefs = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        torch._foreach_mul_(grads, list(coefs.unbind()))


OPTIMIZERS = {"per_param": BertAdam, "multi_tensor": MultiTensorBertAdam}


@dataclass
class OptimConfig:
    lr: float = option(1e-4, "learning rate of the new modules (published)")
    coef_lr: float = option(1e-3, "CLIP parameters train at lr x coef_lr (1e-7, published)")
    warmup_proportion: float = option(0.1, "share of the steps with a linear warm-up before the cosine decay")
    weight_decay: float = setting(0.2, "published, applied to every non-bias parameter")
    max_grad_norm: float = setting(1.0, "published, global and per parameter")
    betas: tuple = setting((0.9, 0.98), "published")
    eps: float = setting(1e-6, "published")


def freeze_clip_layers(model: nn.Module, freeze_layer_num: int) -> int:
    """Published ``--freeze_layer_num``: freeze CLIP blocks below the number and the embeddings; -1 freezes nothing.

    With the published default 0 no block is frozen but the embeddings (token and positional embeddings, the patch
    convolution, class embedding, ``ln_pre``) are, exactly as in the published code. Returns the frozen count.
    """
    if freeze_layer_num < 0:
        return 0
    frozen = 0
    for name, param in model.clip.named_parameters():
        if name.startswith(FREEZE_EXEMPT_PREFIXES):
            continue
        if ".resblocks." in name and int(name.split(".resblocks.")[1].split(".")[0]) >= freeze_layer_num:
            continue
        param.requires_grad_(False)
        frozen += 1
    return frozen


def build_optimizer(model: nn.Module, cfg: OptimConfig, t_total: int, impl: str = "per_param") -> BertAdam:
    """Four groups as published: CLIP / new modules x decay / no decay; frozen parameters are left out. ``impl``
    picks the implementation (``OPTIMIZERS``); both compute the same."""
    groups = {(True, True): [], (True, False): [], (False, True): [], (False, False): []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_clip = name.startswith("clip.")
        decay = not any(key in name for key in NO_DECAY_KEYS)
        groups[(is_clip, decay)].append(param)
    param_groups = []
    for (is_clip, decay), params in groups.items():
        if params:
            param_groups.append({"params": params, "lr": cfg.lr * (cfg.coef_lr if is_clip else 1.0),
                                 "weight_decay": cfg.weight_decay if decay else 0.0,
                                 "name": f"{'clip' if is_clip else 'head'}_{'decay' if decay else 'no_decay'}"})
    return OPTIMIZERS[impl](param_groups, lr=cfg.lr, warmup=cfg.warmup_proportion, t_total=t_total,
                            betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay,
                            max_grad_norm=cfg.max_grad_norm)
