"""Interactive Similarity Aggregation (ISA), as the published code computes it.

For similarities x over n units (frames, words or patches) and a learnable [n, n] matrix W initialised to the identity:

    ISA_W(x) = sum_k alpha_k x_k,   alpha = softmax( softmax(x / tau) W / tau ),

softmax(x / tau) being a row vector. W mixes the sharp attention weights across units before a second sharp softmax.
Padded units are masked out of both softmaxes (``mask``), so their values never matter.

``isa`` is the readable entry point; ``isa_scaled`` is the same computation on inputs already divided by tau, which the
patch-word level uses to avoid a pass over its large [texts, words, videos, patches] tensor. ``isa_scaled_weights``
returns the weights alpha themselves, for explanations and pictures (``UCoFiA.explain``).
"""
from __future__ import annotations

from typing import Optional

import torch


def mask_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive softmax bias from a bool mask: 0 where True (a real unit), -inf where False."""
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return bias.masked_fill_(~mask.to(torch.bool), float("-inf"))


def _mix(a: torch.Tensor, weight: torch.Tensor, dim: int) -> torch.Tensor:
    """(a W) along ``dim``: out[..., k, ...] = sum_j a[..., j, ...] W[j, k], without moving ``dim`` in memory."""
    n = a.shape[dim]
    if dim == a.dim() - 1:
        return a @ weight                                                     # [..., n]
    pre = a.shape[:dim].numel()
    folded = a.reshape(pre, n, -1)                                            # [pre, n, post]
    return (weight.t() @ folded).view(a.shape)                                # [pre, n, post] -> a.shape


def isa_scaled_weights(xs: torch.Tensor, weight: torch.Tensor, dim: int = -1,
                       inner_bias: Optional[torch.Tensor] = None,
                       outer_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The ISA weights alpha = softmax(softmax(xs + b1) weight + b2) of ``isa_scaled`` (same arguments).

    Returns:
        alpha, ``xs.shape``: along ``dim`` a distribution over the units, 0 where a bias is -inf.
    """
    dim = dim % xs.dim()
    inner = xs if inner_bias is None else xs + inner_bias
    mixed = _mix(torch.softmax(inner, dim=dim), weight, dim)                  # xs.shape
    if outer_bias is not None:
        mixed = mixed + outer_bias
    return torch.softmax(mixed, dim=dim)                                      # xs.shape


def isa_scaled(xs: torch.Tensor, weight: torch.Tensor, dim: int = -1, inner_bias: Optional[torch.Tensor] = None,
               outer_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """ISA on scaled inputs: returns sum_k alpha_k xs_k with alpha = softmax(softmax(xs + b1) weight + b2).

    Args:
        xs: similarities divided by tau, [..., n, ...].
        weight: the ISA matrix divided by tau, [n, n].
        dim: the unit dimension.
        inner_bias, outer_bias: additive biases (0 or -inf, broadcastable to ``xs``) of the two softmaxes; the inner
            one may be None when ``xs`` already holds a large negative value at padded units.
    Returns:
        ``xs`` with ``dim`` reduced (still divided by tau).
    """
    alpha = isa_scaled_weights(xs, weight, dim, inner_bias, outer_bias)      # xs.shape
    return (alpha * xs).sum(dim % xs.dim())


def isa(x: torch.Tensor, weight: torch.Tensor, tau: float, mask: Optional[torch.Tensor] = None,
        dim: int = -1) -> torch.Tensor:
    """Interactive Similarity Aggregation of ``x`` over ``dim``.

    Args:
        x: similarities [..., n, ...].
        weight: the learnable ISA matrix [n, n].
        tau: temperature of both softmaxes (0.01 in the paper's code).
        mask: bool, broadcastable to ``x``, True at real units; None uses every unit (the published behaviour).
            Every slice along ``dim`` needs at least one real unit.
        dim: the unit dimension.
    Returns:
        ``x`` with ``dim`` reduced.
    """
    if x.shape[dim] != weight.shape[0] or weight.shape[0] != weight.shape[1]:
        raise ValueError(f"ISA over {x.shape[dim]} units needs a square weight of that size, got {tuple(weight.shape)}")
    bias = None if mask is None else mask_bias(mask, x.dtype)
    return isa_scaled(x / tau, weight / tau, dim, bias, bias) * tau
