"""Retrieval metrics against a brute-force reference, and SK-norm against an independent numpy implementation."""
import numpy as np
import pytest
import torch

from modules.common.errors import UCoFiAError
from modules.evaluation.metrics import group_max, t2v_metrics, v2t_metrics
from modules.evaluation.sinkhorn import sk_bias


def _brute_metrics(ranks: list[int]) -> dict:
    n = len(ranks)
    return {"R1": 100 * sum(r < 1 for r in ranks) / n, "R5": 100 * sum(r < 5 for r in ranks) / n,
            "R10": 100 * sum(r < 10 for r in ranks) / n, "MdR": float(np.median(np.array(ranks) + 1)),
            "MnR": sum(r + 1 for r in ranks) / n}


def _brute_t2v(sim: np.ndarray, c2v: list[int]) -> dict:
    ranks = []
    for t, v in enumerate(c2v):
        ranks.append(sum(1 for g in range(sim.shape[1]) if g != v and sim[t, g] >= sim[t, v]))
    return _brute_metrics(ranks)


def _brute_v2t(sim: np.ndarray, c2v: list[int]) -> dict:
    n_videos = sim.shape[1]
    # score of caption set s for video query q: best caption of s
    best = [[max(sim[t, q] for t in range(len(c2v)) if c2v[t] == s) for s in range(n_videos)] for q in range(n_videos)]
    ranks = [sum(1 for s in range(n_videos) if s != q and best[q][s] >= best[q][q]) for q in range(n_videos)]
    return _brute_metrics(ranks)


def _close(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=1e-9), k


@pytest.mark.parametrize("n_texts,n_videos", [(30, 30), (57, 13), (40, 40)])
def test_metrics_match_brute_force(n_texts, n_videos):
    rng = np.random.default_rng(n_texts)
    if n_texts == n_videos:
        c2v = list(rng.permutation(n_videos))                     # one caption per video, shuffled order
    else:
        c2v = list(range(n_videos)) + list(rng.integers(0, n_videos, n_texts - n_videos))  # several per video
    c2v = [int(v) for v in c2v]
    sim = rng.normal(size=(n_texts, n_videos))
    sim[np.arange(n_texts), c2v] += 1.5                            # some signal, so recalls are not all tiny
    sim = np.round(sim, 1)                                         # force ties
    _close(t2v_metrics(torch.tensor(sim), c2v), _brute_t2v(sim, c2v))
    _close(v2t_metrics(torch.tensor(sim), c2v), _brute_v2t(sim, c2v))


def test_hand_computed_case():
    sim = torch.tensor([[0.9, 0.1, 0.3],    # caption 0 -> video 0: rank 0
                        [0.8, 0.2, 0.5],    # caption 1 -> video 1: rank 2
                        [0.1, 0.7, 0.4],    # caption 2 -> video 2: rank 1
                        [0.0, 0.0, 0.6]])   # caption 3 -> video 2: rank 0
    c2v = [0, 1, 2, 2]
    m = t2v_metrics(sim, c2v)
    assert m["R1"] == 50.0 and m["R5"] == 100.0 and m["MdR"] == 1.5 and m["MnR"] == 1.75
    # video 0: sets score (0.9, 0.8, 0.1) -> rank 0; video 1: (0.1, 0.2, 0.7) -> rank 1; video 2: (0.3, 0.5, 0.6)
    m = v2t_metrics(sim, c2v)
    assert m["R1"] == pytest.approx(200 / 3) and m["MnR"] == pytest.approx(4 / 3)
    assert group_max(sim, torch.tensor(c2v), 3)[2].tolist() == pytest.approx([0.3, 0.5, 0.6])


def test_constant_scores_get_worst_rank_and_nan_is_an_error():
    m = t2v_metrics(torch.zeros(10, 10), list(range(10)))
    assert m["R1"] == 0.0 and m["MdR"] == 10.0
    with pytest.raises(UCoFiAError, match="non-finite"):
        t2v_metrics(torch.tensor([[float("nan"), 0.0], [0.0, 1.0]]), [0, 1])


def _numpy_sk(bank: np.ndarray, n_iters: int = 4) -> np.ndarray:
    """The published algorithm, written directly in float64 numpy."""
    k = np.exp(bank - bank.max())
    b = 1.0 / k.sum(axis=0)
    for _ in range(n_iters):
        a = 1.0 / (k @ b)
        b = 1.0 / (a @ k)
    log_b = np.log(b)
    return log_b - np.log(np.exp(log_b - log_b.max()).sum()) - log_b.max()


@pytest.mark.parametrize("scale", [1.0, 10.0, 40.0])
def test_sk_bias_matches_numpy(scale):
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(300, 17)) * scale / 10
    ours = sk_bias(torch.tensor(bank, dtype=torch.float32), block_rows=64).double().numpy()
    assert np.allclose(ours, _numpy_sk(bank), atol=1e-4)


def test_sk_bias_block_independent_and_stable_at_clip_scale():
    torch.manual_seed(0)
    bank = torch.randn(1000, 50) * 100                 # CLIP logits: lambda=100 times cosine differences
    ref = sk_bias(bank, block_rows=1000)
    assert torch.isfinite(ref).all()
    assert torch.allclose(sk_bias(bank, block_rows=37), ref, atol=1e-5)


def test_hub_candidate_is_pushed_down():
    torch.manual_seed(0)
    bank = torch.randn(2000, 5)
    bank[:, 3] += 3.0                                   # every bank query likes gallery item 3
    bias = sk_bias(bank)
    assert bias.argmin().item() == 3
    others = torch.cat([bias[:3], bias[4:]])
    assert (others - bias[3]).min() > 2.0               # penalised by about the size of its offset
    # The prior removes the hub: after adding it, no gallery item dominates the bank's top-1 choices.
    counts = torch.bincount((bank + bias).argmax(dim=1), minlength=5)
    assert counts.max() < 0.4 * len(bank)
