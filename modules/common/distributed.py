"""Rank helpers and gathering with gradient; everything works without a process group (world size 1)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def gather_sizes(n: int, device: Optional[torch.device] = None) -> list[int]:
    """Every rank's ``n``, in rank order ([n] without a process group)."""
    if not is_distributed():
        return [n]
    mine = torch.tensor([n], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(mine) for _ in range(get_world_size())]
    dist.all_gather(sizes, mine)
    return [int(s.item()) for s in sizes]


def _all_gather_rows(tensor: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along dim 0 in rank order; ranks may hold different numbers of rows."""
    longest = max(sizes)
    padded = tensor
    if tensor.shape[0] < longest:
        padded = torch.cat([tensor, tensor.new_zeros(longest - tensor.shape[0], *tensor.shape[1:])])
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:n] for part, n in zip(parts, sizes)])


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
        ctx.sizes = sizes
        return _all_gather_rows(tensor, sizes)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # Every rank used every slice; the owner of a slice needs the sum of all ranks' gradients for it.
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[:get_rank()])
        return grad[start:start + ctx.sizes[get_rank()]], None


def all_gather_with_grad(tensor: torch.Tensor, sizes: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Rows of ``tensor`` from every rank, concatenated in rank order, differentiable.

    The backward pass hands each rank the gradient of its own rows summed over all ranks' uses of them. Tensors that
    do not require grad (masks) are gathered the same way. Identity without a process group.

    Args:
        tensor: [n_rank, ...]; ranks may differ in n_rank.
        sizes: every rank's n_rank, if already known (saves one collective).
    Returns:
        [sum of n_rank, ...].
    """
    if not is_distributed():
        return tensor
    sizes = tuple(sizes) if sizes is not None else tuple(gather_sizes(tensor.shape[0], tensor.device))
    if tensor.dtype == torch.bool:  # not every backend reduces bools
        return _all_gather_rows(tensor.to(torch.uint8), sizes).to(torch.bool)
    if not tensor.requires_grad:
        return _all_gather_rows(tensor, sizes)
    return _AllGatherWithGrad.apply(tensor, sizes)


def all_gather_rows(local: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Concatenate every rank's slices along ``dim`` in rank order, without gradient; sizes may differ between ranks."""
    if not is_distributed():
        return local
    rows = local.movedim(dim, 0).contiguous()
    return _all_gather_rows(rows, gather_sizes(rows.shape[0], rows.device)).movedim(0, dim)
