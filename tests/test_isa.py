"""Interactive Similarity Aggregation on hand-computed cases, with masks and along inner dimensions."""
import math

import pytest
import torch

from modules.model.isa import isa


def _softmax(values):
    exps = [math.exp(v - max(values)) for v in values]
    return [e / sum(exps) for e in exps]


def _isa_by_hand(x, w, tau):
    a = _softmax([v / tau for v in x])
    mixed = [sum(a[j] * w[j][k] for j in range(len(x))) / tau for k in range(len(x))]
    alpha = _softmax(mixed)
    return sum(al * v for al, v in zip(alpha, x))


def test_identity_weight_two_units():
    # softmax([2, 1]) = [0.7311, 0.2689]; / 0.1 -> softmax([7.311, 2.689]) = [0.99025, 0.00975]
    a1 = math.exp(2) / (math.exp(2) + math.exp(1))
    alpha1 = 1 / (1 + math.exp(-(a1 - (1 - a1)) / 0.1))
    expected = alpha1 * 0.2 + (1 - alpha1) * 0.1
    out = isa(torch.tensor([0.2, 0.1], dtype=torch.float64), torch.eye(2, dtype=torch.float64), 0.1)
    assert out.item() == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.199025, abs=1e-6)


def test_mixing_weight_three_units():
    x = [0.3, -0.1, 0.25]
    w = [[0.2, 1.0, 0.0], [0.5, 0.1, 0.4], [0.0, 0.3, 0.9]]
    out = isa(torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64), 0.05)
    assert out.item() == pytest.approx(_isa_by_hand(x, w, 0.05), rel=1e-12)


def test_swap_weight_prefers_the_other_unit():
    # W swaps the attention of two units, so the weight goes to the less similar one.
    out = isa(torch.tensor([0.9, 0.1]), torch.tensor([[0.0, 1.0], [1.0, 0.0]]), 0.01)
    assert out.item() == pytest.approx(0.1, abs=1e-6)


def test_mask_equals_isa_on_real_units():
    torch.manual_seed(0)
    x = torch.randn(5, 6, dtype=torch.float64) * 0.3
    w = torch.eye(6, dtype=torch.float64) + 0.2 * torch.randn(6, 6, dtype=torch.float64)
    mask = torch.tensor([True, False, True, True, False, True])
    out = isa(x, w, 0.01, mask=mask)
    real = mask.nonzero().squeeze(1)
    expected = isa(x[:, real], w[real][:, real], 0.01)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    garbage = x.clone()
    garbage[:, ~mask] = 1e3
    torch.testing.assert_close(isa(garbage, w, 0.01, mask=mask), out, rtol=0, atol=0)


@pytest.mark.parametrize("dim", [0, 1, 2])
def test_inner_dimension_equals_last(dim):
    torch.manual_seed(1)
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    n = x.shape[dim]
    w = torch.eye(n, dtype=torch.float64) + 0.1 * torch.randn(n, n, dtype=torch.float64)
    expected = isa(x.movedim(dim, -1).contiguous(), w, 0.05)
    torch.testing.assert_close(isa(x, w, 0.05, dim=dim), expected, rtol=1e-12, atol=1e-12)


def test_rejects_wrong_weight_size():
    with pytest.raises(ValueError):
        isa(torch.randn(2, 4), torch.eye(3), 0.01)
