"""Patch selection: the perturbed top-K against the published one-hot estimator, and both patch scorers against
transcriptions of the published ones (layer shapes included, so published checkpoints load)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modules.model import token_selection
from modules.model.published import PREFIX_MAP
from modules.model.token_selection import (
    FramePatchScorer,
    VideoPatchScorer,
    hard_topk,
    perturbed_topk,
    seeded_noise,
    select_patches,
)


class OneHotTopK(torch.autograd.Function):
    """Transcription of the published PerturbedTopKFunction, with the noise passed in instead of drawn."""

    @staticmethod
    def forward(ctx, x, noise, k, sigma):
        b, d = x.shape
        perturbed_x = x.unsqueeze(1) + noise * sigma
        indices = torch.topk(perturbed_x, k=k, dim=-1, sorted=False).indices
        indices = torch.sort(indices, dim=-1).values
        perturbed_output = F.one_hot(indices, num_classes=d).float()        # [b, S, k, d]
        ctx.save_for_backward(perturbed_output, noise)
        ctx.sigma = sigma
        return perturbed_output.mean(dim=1)

    @staticmethod
    def backward(ctx, grad_output):
        perturbed_output, noise = ctx.saved_tensors
        expected = torch.einsum("bnkd,bnd->bkd", perturbed_output, noise) / noise.shape[1] / ctx.sigma
        return torch.einsum("bkd,bkd->bd", grad_output, expected), None, None, None


@pytest.mark.parametrize("k,chunk_bytes", [(1, None), (3, None), (3, 1)])
def test_perturbed_topk_equals_one_hot_estimator(k, chunk_bytes, monkeypatch):
    if chunk_bytes is not None:                                            # one row per chunk
        monkeypatch.setattr(token_selection, "TOPK_CHUNK_BYTES", chunk_bytes)
    scores = torch.randn(24, 49).tanh().requires_grad_()
    noise = torch.randn(24, 100, 49)
    upstream = torch.randn(24, k, 49)
    ours = perturbed_topk(scores, noise, k, 0.05)
    (ours * upstream).sum().backward()
    ours_grad, scores.grad = scores.grad.clone(), None
    reference = OneHotTopK.apply(scores, noise, k, 0.05)
    (reference * upstream).sum().backward()
    assert torch.equal(ours, reference)
    torch.testing.assert_close(ours_grad, scores.grad, rtol=1e-5, atol=1e-5)
    assert torch.allclose(ours.sum(-1), torch.ones(24, k))  # every sample fills every slot once


def test_perturbed_topk_broadcast_noise_and_leading_dims(monkeypatch):
    monkeypatch.setattr(token_selection, "TOPK_CHUNK_BYTES", 1)
    scores = torch.randn(2, 3, 10, requires_grad=True)
    noise = torch.randn(1, 3, 50, 10)                                      # one noise tensor for both videos
    out = perturbed_topk(scores, noise, 2, 0.1)
    assert out.shape == (2, 3, 2, 10)
    flat = perturbed_topk(scores.detach().reshape(6, 10), noise.expand(2, 3, 50, 10).reshape(6, 50, 10), 2, 0.1)
    assert torch.equal(out.reshape(6, 2, 10), flat)
    out.sum().backward()
    assert scores.grad.shape == scores.shape and torch.isfinite(scores.grad).all()


def test_hard_topk_orders_slots_by_position():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7]])
    out = hard_topk(scores, 2)
    assert torch.equal(out, torch.tensor([[[0.0, 1, 0, 0], [0, 0, 0, 1]]]))


def test_topk_rejects_bad_shapes():
    with pytest.raises(ValueError):
        perturbed_topk(torch.randn(4, 10), torch.randn(4, 5, 9), 2, 0.1)
    with pytest.raises(ValueError):
        perturbed_topk(torch.randn(4, 10), torch.randn(4, 5, 10), 11, 0.1)


def test_seeded_noise_depends_only_on_the_seed():
    a = seeded_noise(torch.tensor([5, 7, 9]), (2, 3, 4))
    b = seeded_noise(torch.tensor([9, 5]), (2, 3, 4))
    assert torch.equal(a[2], b[0]) and torch.equal(a[0], b[1]) and not torch.equal(a[0], a[1])


class PublishedVideoScorer(nn.Module):
    """Transcription of the first-release PredictorLG (1024-in, summed video context); published key names."""

    def __init__(self, dim):
        super().__init__()
        self.in_conv = nn.Sequential(nn.LayerNorm(dim * 2), nn.Linear(dim * 2, dim, bias=False), nn.GELU())
        self.out_conv = nn.Sequential(nn.Linear(dim * 2, dim, bias=False), nn.GELU(),
                                      nn.Linear(dim, 1, bias=False), nn.Tanh())

    def forward(self, x, max_frames):
        b, n, c = x.size()
        x = torch.cat([x, x[:, :1, :].expand(b, n, c)], dim=-1)
        x = self.in_conv(x)
        b, n, c = x.size()
        vid_x = x[:, :1, :].squeeze(1).reshape(-1, max_frames, c).sum(dim=1)
        vid_x = vid_x.unsqueeze(1).expand(-1, max_frames, -1).reshape(-1, c).unsqueeze(1)
        return self.out_conv(torch.cat([x, vid_x.expand(b, n, c)], dim=-1))


class PublishedFrameScorer(nn.Module):
    """Transcription of the later TS2-Net-style PredictorLG (frame context only); published key names."""

    def __init__(self, dim):
        super().__init__()
        self.in_conv = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim // 2, bias=False), nn.GELU())
        self.out_conv = nn.Sequential(nn.Linear(dim, dim // 2, bias=False), nn.GELU(),
                                      nn.Linear(dim // 2, 1, bias=False), nn.Tanh())

    def forward(self, x):
        x = self.in_conv(x)
        b, n, c = x.size()
        return self.out_conv(torch.cat([x, x[:, :1, :].expand(b, n, c)], dim=-1))


def _load_published(ours: nn.Module, published: nn.Module) -> None:
    """Copy published weights into ours through the importer's prefix map (so the map is tested too)."""
    prefix = "visual_token_selector.score_predictor."
    mapped = {}
    for key, value in published.state_dict().items():
        full = prefix + key
        source = next(p for p in PREFIX_MAP if full.startswith(p))
        mapped[PREFIX_MAP[source][len("patch_scorer."):] + full[len(source):]] = value
    ours.load_state_dict(mapped, strict=True)


@pytest.mark.parametrize("variant", ["video", "frame"])
def test_scorers_match_published(variant):
    dim, b, f, n = 32, 2, 3, 10
    published = PublishedVideoScorer(dim) if variant == "video" else PublishedFrameScorer(dim)
    ours = VideoPatchScorer(dim) if variant == "video" else FramePatchScorer(dim)
    for p in published.parameters():
        nn.init.normal_(p, std=0.3)
    _load_published(ours, published)
    tokens = torch.randn(b, f, n, dim)
    reference = published(tokens.reshape(b * f, n, dim), f) if variant == "video" else \
        published(tokens.reshape(b * f, n, dim))
    reference = reference.squeeze(-1)[:, 1:].reshape(b, f, n - 1)          # the class token's score is discarded
    torch.testing.assert_close(ours(tokens), reference, rtol=1e-5, atol=1e-6)


def test_masked_video_scorer_ignores_padded_frames():
    scorer = VideoPatchScorer(16)
    tokens = torch.randn(1, 4, 5, 16)
    mask = torch.tensor([[True, True, False, False]])
    other = tokens.clone()
    other[:, 2:] = torch.randn(1, 2, 5, 16)
    assert torch.equal(scorer(tokens, mask)[:, :2], scorer(other, mask)[:, :2])
    assert not torch.equal(scorer(tokens)[:, :2], scorer(other)[:, :2])    # published: padding enters the context


def test_select_patches_prepends_class_token():
    tokens = torch.randn(2, 3, 5, 8)
    indicators = hard_topk(torch.randn(2, 3, 4), 2)                        # [B, F, K, P]
    out = select_patches(tokens, indicators)
    assert out.shape == (2, 3, 3, 8)
    assert torch.equal(out[:, :, 0], tokens[:, :, 0])
    picked = indicators.argmax(-1) + 1                                     # patch index -> token index
    assert torch.equal(out[:, :, 1:], torch.gather(tokens, 2, picked[..., None].expand(-1, -1, -1, 8)))
