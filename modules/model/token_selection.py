"""Patch selection: a scorer rates every patch of a frame, a perturbed top-K picks K of them.

Each frame contributes its class token plus K soft-selected patches, ``[B, F, 1+K, D]``.

The perturbed top-K (Berthet et al. 2020, as used by Cordonnier et al. 2021 and the published code) takes the top-K
of ``scores + sigma * noise`` for ``S`` noise samples, one-hots the K indices (sorted by patch position, so slot k holds
the k-th selected patch in raster order) and averages them: ``Y [rows, K, P]``. Its gradient estimate is the published
one, ``dL/dscores[r, p] = 1/(S sigma) sum_{s,k} dL/dY[r, k, p] [idx[r, s, k] = p] noise[r, s, p]``.
``perturbed_topk`` computes both from the ``[rows, S, K]`` indices alone, never the ``[rows, S, K, P]`` one-hot tensor
the published code builds: the forward counts indices with ``scatter_add``, the backward gathers the upstream gradient
and the noise at the selected indices and scatters their products back.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

# Bytes of the perturbed-score temporary [chunk, ..., S, P] per chunk of the first dimension: it is the largest
# tensor of the operator, and a few MB keep it small and in cache.
TOPK_CHUNK_BYTES = 4 << 20


class _PerturbedTopK(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores: torch.Tensor, noise: torch.Tensor, k: int, sigma: float) -> torch.Tensor:
        lead, patches = scores.shape[:-1], scores.shape[-1]                      # scores [..., P]
        samples = noise.shape[-2]
        noise = noise.expand(*lead, samples, patches)                             # a view: noise may be shared
        idx = torch.empty(*lead, samples, k, dtype=torch.long, device=scores.device)
        noise_at = torch.empty(*lead, samples, k, dtype=noise.dtype, device=scores.device)
        per_row = max(1, noise[:1].numel() * noise.element_size())
        step = max(1, TOPK_CHUNK_BYTES // per_row)
        for start in range(0, lead[0], step):
            rows = slice(start, start + step)
            perturbed = scores[rows].unsqueeze(-2) + noise[rows] * sigma         # [chunk, ..., S, P]
            chosen = torch.topk(perturbed, k, dim=-1, sorted=False).indices       # [chunk, ..., S, K]
            idx[rows] = torch.sort(chosen, dim=-1).values                         # slots in patch order
            # Only the noise at the selected positions enters the gradient estimate.
            noise_at[rows] = torch.gather(noise[rows], -1, idx[rows])
        n_rows = lead.numel()
        idx, noise_at = idx.view(n_rows, samples, k), noise_at.view(n_rows, samples, k)   # [R, S, K]
        slots = idx.transpose(1, 2)                                               # [R, K, S]
        counts = torch.zeros(n_rows, k, patches, dtype=torch.float32, device=scores.device)
        counts.scatter_add_(2, slots, torch.ones((), dtype=torch.float32, device=scores.device).expand(slots.shape))
        ctx.save_for_backward(idx, noise_at)
        ctx.sigma, ctx.score_shape, ctx.score_dtype = sigma, scores.shape, scores.dtype
        return (counts / samples).view(*lead, k, patches)                         # [..., K, P]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        idx, noise_at = ctx.saved_tensors                                          # [R, S, K]
        rows, samples, k = idx.shape
        patches = ctx.score_shape[-1]
        grad = grad.reshape(rows, k, patches)                                      # [R, K, P]
        grad_at = torch.gather(grad, 2, idx.transpose(1, 2))                       # [R, K, S]: dL/dY[r, k, idx]
        contrib = grad_at.transpose(1, 2) * noise_at                               # [R, S, K]
        grad_scores = torch.zeros(rows, patches, dtype=contrib.dtype, device=contrib.device)
        grad_scores.scatter_add_(1, idx.reshape(rows, samples * k), contrib.reshape(rows, samples * k))  # [R, P]
        grad_scores = grad_scores / samples / ctx.sigma
        return grad_scores.view(ctx.score_shape).to(ctx.score_dtype), None, None, None


def perturbed_topk(scores: torch.Tensor, noise: torch.Tensor, k: int, sigma: float) -> torch.Tensor:
    """Differentiable top-K indicator of ``scores`` under Gaussian perturbation.

    Args:
        scores: [R, ..., P] patch scores (at least one leading dimension).
        noise: [..., S, P] standard normal noise, broadcastable over the leading dims (one noise tensor can serve
            every video); S is the number of samples.
        k: patches to select.
        sigma: noise scale.
    Returns:
        float32 [..., K, P]: for each of the K slots, the fraction of samples that put each patch in it.
    """
    if scores.dim() < 2 or noise.dim() != scores.dim() + 1 or noise.shape[-1] != scores.shape[-1]:
        raise ValueError(f"perturbed top-K: scores [..., P] and noise [..., S, P] expected, "
                         f"got {tuple(scores.shape)} and {tuple(noise.shape)}")
    if not 0 < k <= scores.shape[-1]:
        raise ValueError(f"perturbed top-K: cannot select {k} of {scores.shape[-1]} patches")
    return _PerturbedTopK.apply(scores, noise.to(scores.dtype), k, sigma)


def hard_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Plain top-K indicator [..., K, P] (float32, no gradient), slots in patch order like the perturbed one."""
    idx = torch.sort(torch.topk(scores, k, dim=-1, sorted=False).indices, dim=-1).values  # [..., K]
    out = torch.zeros(*scores.shape[:-1], k, scores.shape[-1], dtype=torch.float32, device=scores.device)
    return out.scatter_(-1, idx.unsqueeze(-1), 1.0)                                # [..., K, P]


def seeded_noise(seeds: torch.Tensor, shape: tuple[int, ...], device: torch.device | str = "cpu") -> torch.Tensor:
    """Standard normal noise ``[len(seeds), *shape]`` on ``device``, row i from a generator seeded with ``seeds[i]``.

    Each video's noise depends on its own seed only, not on the batch it is in or the number of processes. The
    generator lives on ``device`` (drawing on the CPU and copying would cost a GPU step tens of milliseconds), so the
    values are reproducible per device type.
    """
    out = torch.empty(len(seeds), *shape, device=device)
    for i, seed in enumerate(seeds.tolist()):
        generator = torch.Generator(device=device).manual_seed(int(seed))
        out[i] = torch.randn(shape, generator=generator, device=device)
    return out


class VideoPatchScorer(nn.Module):
    """The first-release scorer (``--patch_scorer video``): frame and video context, 2D-wide input.

    u_n = GELU(down(LN([x_n; x_cls]))), g = sum over the video's frames of u_cls,
    score_n = tanh(out(GELU(hidden([u_n; g])))). Linear layers have no bias, as published.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(2 * dim)
        self.down = nn.Linear(2 * dim, dim, bias=False)
        self.hidden = nn.Linear(2 * dim, dim, bias=False)
        self.out = nn.Linear(dim, 1, bias=False)

    def forward(self, tokens: torch.Tensor, frame_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Tokens [B, F, 1+P, D] -> patch scores [B, F, P]; padded frames leave the video context if masked."""
        cls = tokens[:, :, :1].expand_as(tokens)                                   # [B, F, 1+P, D]
        u = F.gelu(self.down(self.norm(torch.cat([tokens, cls], dim=-1))))        # [B, F, 1+P, D]
        u_cls = u[:, :, 0]                                                         # [B, F, D]
        if frame_mask is not None:
            u_cls = u_cls * frame_mask.to(u_cls.dtype).unsqueeze(-1)
        context = u_cls.sum(dim=1)                                                 # [B, D]
        patches = u[:, :, 1:]                                                      # [B, F, P, D]
        context = context[:, None, None].expand_as(patches)                        # [B, F, P, D]
        h = F.gelu(self.hidden(torch.cat([patches, context], dim=-1)))            # [B, F, P, D]
        return torch.tanh(self.out(h)).squeeze(-1)                                 # [B, F, P]


class FramePatchScorer(nn.Module):
    """The later TS2-Net-style scorer (``--patch_scorer frame``): frame context only.

    h_n = GELU(down(LN(x_n))), score_n = tanh(out(GELU(hidden([h_n; h_cls])))), half-width hidden layers.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.down = nn.Linear(dim, dim // 2, bias=False)
        self.hidden = nn.Linear(2 * (dim // 2), dim // 2, bias=False)
        self.out = nn.Linear(dim // 2, 1, bias=False)

    def forward(self, tokens: torch.Tensor, frame_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Tokens [B, F, 1+P, D] -> patch scores [B, F, P]; frames are scored independently, the mask is unused."""
        h = F.gelu(self.down(self.norm(tokens)))                                  # [B, F, 1+P, D/2]
        patches = h[:, :, 1:]                                                      # [B, F, P, D/2]
        cls = h[:, :, :1].expand_as(patches)                                       # [B, F, P, D/2]
        z = F.gelu(self.hidden(torch.cat([patches, cls], dim=-1)))                # [B, F, P, D/2]
        return torch.tanh(self.out(z)).squeeze(-1)                                 # [B, F, P]


PATCH_SCORERS = {"video": VideoPatchScorer, "frame": FramePatchScorer}


def select_patches(tokens: torch.Tensor, indicators: torch.Tensor) -> torch.Tensor:
    """Each frame's class token followed by its K soft-selected patches.

    Args:
        tokens: [B, F, 1+P, D] projected frame tokens, class token first.
        indicators: [B, F, K, P] selection weights from ``perturbed_topk`` or ``hard_topk``.
    Returns:
        [B, F, 1+K, D].
    """
    weights = indicators.to(tokens.dtype)                                          # [B, F, K, P]
    selected = torch.einsum("bfkp,bfpd->bfkd", weights, tokens[:, :, 1:])         # [B, F, K, D]
    return torch.cat([tokens[:, :, :1], selected], dim=2)                          # [B, F, 1+K, D]
