"""SK-norm: a gallery-side prior from Sinkhorn-Knopp balancing of a query-bank x gallery similarity matrix.

Published algorithm: K = exp(B - max B); b = 1 / column-sums(K); then ``n_iters`` times
a = 1 / (K b), b = 1 / (a^T K); the bias is log-softmax(log b) over the gallery. A gallery item that every bank query
scores highly ("hub") gets a large negative bias. Here the iteration runs in log space (same values, no overflow or
underflow for logits of any scale) and in row blocks, so a 180,000-query bank never needs more than one extra
[block, Ng] buffer beyond the bank matrix itself.
"""
from __future__ import annotations

import torch

SK_ITERS = 4  # published number of Sinkhorn-Knopp iterations


def _row_logsumexp(log_k: torch.Tensor, log_b: torch.Tensor, block: int) -> torch.Tensor:
    """log (K b) per bank row: [Nq]."""
    return torch.cat([torch.logsumexp(rows + log_b, dim=1) for rows in log_k.split(block)])


def _col_logsumexp(log_k: torch.Tensor, log_a: torch.Tensor, block: int) -> torch.Tensor:
    """log (a^T K) per gallery column: [Ng], accumulated over row blocks."""
    acc = None
    for rows, la in zip(log_k.split(block), log_a.split(block)):
        part = torch.logsumexp(rows + la[:, None], dim=0)                         # [Ng]
        acc = part if acc is None else torch.logaddexp(acc, part)
    return acc


@torch.no_grad()
def sk_bias(bank_logits: torch.Tensor, n_iters: int = SK_ITERS, block_rows: int = 8192) -> torch.Tensor:
    """Gallery-side log bias of SK-norm.

    Args:
        bank_logits: [Nq, Ng] logits of bank queries (rows) against the test gallery (columns), at the scale the
            model scores with (no extra temperature).
        n_iters: Sinkhorn-Knopp iterations (4 as published).
        block_rows: rows processed at once (memory bound only; results do not depend on it).
    Returns:
        [Ng] float32 bias to add to every query's scores for that gallery item.
    """
    if bank_logits.dim() != 2 or min(bank_logits.shape) == 0:
        raise ValueError(f"bank_logits must be a non-empty [Nq, Ng] matrix, got {tuple(bank_logits.shape)}")
    if not torch.isfinite(bank_logits).all():
        raise ValueError("bank_logits has non-finite entries")
    log_k = bank_logits.float() - bank_logits.max().float()                    # log K, [Nq, Ng]
    zeros_q = torch.zeros(log_k.shape[0], device=log_k.device)
    log_b = -_col_logsumexp(log_k, zeros_q, block_rows)                         # b = 1 / colsum(K)
    for _ in range(n_iters):
        log_a = -_row_logsumexp(log_k, log_b, block_rows)                       # a = 1 / (K b)
        log_b = -_col_logsumexp(log_k, log_a, block_rows)                       # b = 1 / (a^T K)
    return torch.log_softmax(log_b, dim=0)
