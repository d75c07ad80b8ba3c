"""The symmetric InfoNCE loss on one process against the published formulation (CrossEn on S and S^T)."""
import pytest
import torch
import torch.nn.functional as F

from modules.model.clip import resolve_clip
from modules.model.features import TextFeatures, VideoFeatures
from modules.model.losses import combine_levels, symmetric_infonce
from modules.model.ucofia import ModelConfig, UCoFiA


def _model():
    torch.manual_seed(0)
    return UCoFiA(resolve_clip("random:tiny"), ModelConfig(max_words=8, max_frames=4, topk=2, topk_samples=10))


def _features(n):
    g = torch.Generator().manual_seed(3)
    text = TextFeatures(torch.randn(n, 64, generator=g), torch.randn(n, 8, 64, generator=g),
                        torch.arange(8)[None] < torch.randint(2, 9, (n, 1), generator=g))
    video = VideoFeatures(torch.randn(n, 4, 64, generator=g), torch.randn(n, 4, 64, generator=g),
                          torch.arange(4)[None] < torch.randint(1, 5, (n, 1), generator=g),
                          torch.randn(n, 12, 64, generator=g))
    return text, video


def _cross_en(sim):
    return (-torch.diag(F.log_softmax(sim, dim=-1))).mean()


def test_loss_matches_published_formulation():
    model = _model()
    text, video = _features(6)
    out = symmetric_infonce(model.similarity_levels, text, video)
    levels = model.similarity_levels(text, video)
    sim = (levels["video_sentence"] + levels["frame_sentence"] + levels["patch_word"]) / 3
    torch.testing.assert_close(combine_levels(levels), sim)
    expected = (_cross_en(sim) + _cross_en(sim.t())) / 2
    torch.testing.assert_close(out, expected)
    out.backward()
    assert torch.isfinite(model.levels.frame_isa.grad).all()


def test_loss_needs_pairs():
    model = _model()
    text, video = _features(4)
    with pytest.raises(ValueError, match="pairs"):
        symmetric_infonce(model.similarity_levels, text, video[:3])
