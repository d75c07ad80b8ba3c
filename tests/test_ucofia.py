"""The UCoFiA model on a tiny random CLIP: shapes, gradients, masking, blockwise scoring, determinism, round trip."""
import json
from collections import OrderedDict
from dataclasses import asdict

import pytest
import torch
from torch import nn

from modules.common.errors import ConfigError
from modules.model.clip import resolve_clip
from modules.model.features import TextFeatures, VideoFeatures
from modules.model.tokenizer import text_mask, tokenize
from modules.model.ucofia import ModelConfig, UCoFiA

CAPTIONS = ["a dog runs on the beach", "a cat", "people are cooking pasta in a kitchen"]
SMALL = dict(max_words=8, max_frames=4, topk=2, topk_samples=30)


def tiny_model(seed: int = 0, **overrides) -> UCoFiA:
    torch.manual_seed(seed)
    return UCoFiA(resolve_clip("random:tiny"), ModelConfig(**{**SMALL, **overrides}))


def perturb_head(model: UCoFiA, seed: int = 1) -> None:
    """Move the identity-initialised matrices away from the identity, so that tests see every one of them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.levels.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))


def inputs(n_videos: int = 3):
    ids = tokenize(CAPTIONS[:n_videos] if n_videos <= 3 else CAPTIONS * 2, 8)[:n_videos]
    video = torch.randn(n_videos, 4, 3, 224, 224)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]] * 2)[:n_videos]
    return ids, text_mask(ids), video, mask


def test_forward_backward_tiny():
    model = tiny_model()
    ids, tmask, video, vmask = inputs()
    text, vid = model.encode_text(ids, tmask), model.encode_video(video, vmask, torch.tensor([1, 2, 3]))
    assert text.sentence.shape == (3, 64) and text.words.shape == (3, 8, 64) and text.word_mask.dtype == torch.bool
    assert vid.frames.shape == vid.frames_temporal.shape == (3, 4, 64) and vid.tokens.shape == (3, 4 * 3, 64)
    levels = model.similarity_levels(text, vid)
    assert list(levels) == ["video_sentence", "frame_sentence", "patch_word"]
    assert all(v.shape == (3, 3) and torch.isfinite(v).all() for v in levels.values())
    loss = model(ids, tmask, video, vmask, torch.tensor([1, 2, 3]))
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss)
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing                                                     # DDP needs every parameter used


@pytest.mark.parametrize("overrides", [dict(sim_header="meanP"), dict(patch_scorer="frame"), dict(shift_layers=())])
def test_variants_run(overrides):
    model = tiny_model(**overrides).eval()
    ids, tmask, video, vmask = inputs()
    with torch.no_grad():
        levels = model.similarity_levels(model.encode_text(ids, tmask), model.encode_video(video, vmask))
    assert all(torch.isfinite(v).all() for v in levels.values())


def scores(model, ids, tmask, video, vmask):
    with torch.no_grad():
        return model.similarity_levels(model.encode_text(ids, tmask), model.encode_video(video, vmask))


def test_padding_changes_nothing_when_masked():
    model = tiny_model().eval()
    perturb_head(model)
    ids, tmask, video, vmask = inputs()
    padded_video = video.clone()
    padded_video[~vmask.bool()] = torch.randn(int((~vmask.bool()).sum()), 3, 224, 224)
    padded_ids = torch.where(tmask, ids, torch.randint(1, 40000, ids.shape))
    reference = scores(model, ids, tmask, video, vmask)
    changed = scores(model, padded_ids, tmask, padded_video, vmask)
    for name in reference:
        torch.testing.assert_close(changed[name], reference[name], rtol=1e-5, atol=1e-5)
    model.config.mask_padding = model.levels.mask_padding = False         # the published behaviour
    published = scores(model, padded_ids, tmask, padded_video, vmask)
    assert not torch.allclose(published["patch_word"], reference["patch_word"], atol=1e-3)


def _features(n_text, n_video, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 9, (n_text,), generator=g)
    frames = torch.randint(1, 5, (n_video,), generator=g)
    text = TextFeatures(torch.randn(n_text, 64, generator=g), torch.randn(n_text, 8, 64, generator=g),
                        torch.arange(8)[None] < lengths[:, None])
    video = VideoFeatures(torch.randn(n_video, 4, 64, generator=g), torch.randn(n_video, 4, 64, generator=g),
                          torch.arange(4)[None] < frames[:, None], 3 * torch.randn(n_video, 12, 64, generator=g))
    return text, video


def test_blockwise_equals_all_at_once_and_permutes():
    model = tiny_model()
    perturb_head(model)
    text, video = _features(13, 7)
    with torch.no_grad():
        whole = model.similarity_levels(text, video)
        model.levels.block_bytes = 1                                       # one text x one video per block
        blocks = model.similarity_levels(text, video)
        model.levels.block_bytes = 8 * 12 * 4 * 5 * 6                      # a few pairs per block
        assert model.levels.block_shape(13, 7, 8, 12, 4) == (2, 3)
        some = model.similarity_levels(text, video)
        pt, pv = torch.randperm(13), torch.randperm(7)
        permuted = model.similarity_levels(text[pt], video[pv])
    for name in whole:
        assert whole[name].shape == (13, 7)
        torch.testing.assert_close(blocks[name], whole[name], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(some[name], whole[name], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(permuted[name], whole[name][pt][:, pv], rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        only = model.similarity_levels(text, video, levels=("patch_word",))
    assert list(only) == ["patch_word"]


def test_blockwise_gradients_match():
    model = tiny_model()
    text, video = _features(5, 6)
    text = text.map(lambda t: t.requires_grad_() if t.is_floating_point() else t)
    sum(model.similarity_levels(text, video).values()).sum().backward()
    whole = [p.grad.clone() for p in model.levels.parameters()] + [text.words.grad.clone()]
    model.zero_grad()
    text.words.grad = None
    model.levels.block_bytes = 1
    sum(model.similarity_levels(text, video).values()).sum().backward()
    for a, b in zip(whole, [p.grad for p in model.levels.parameters()] + [text.words.grad]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_eval_selection_is_fixed_and_per_video():
    model = tiny_model()
    scores_ = torch.randn(5, 4, 49)
    model.eval()
    once = model._topk_indicators(scores_, None)
    assert torch.equal(once, model._topk_indicators(scores_, None))
    assert torch.equal(once[3:], model._topk_indicators(scores_[3:], None))   # independent of batch grouping
    model.config.eval_topk = "hard"
    hard = model._topk_indicators(scores_, None)
    assert set(hard.unique().tolist()) == {0.0, 1.0}
    model.train()
    seeds = torch.tensor([11, 12, 13, 14, 15])
    seeded = model._topk_indicators(scores_, seeds)
    assert torch.equal(seeded[[4, 1]], model._topk_indicators(scores_[[4, 1]], seeds[[4, 1]]))
    assert not torch.equal(seeded, model._topk_indicators(scores_, seeds + 100))


def test_save_load_is_bit_exact(tmp_path):
    model = tiny_model(seed=0)
    with torch.no_grad():                                                  # fine-tuned shifted blocks
        for p in model.clip.visual.transformer.resblocks[-1].attn.parameters():
            p.add_(0.05)
    perturb_head(model)
    torch.save(model.state_dict(), tmp_path / "model.bin")
    other = tiny_model(seed=1)
    other.load_state_dict(torch.load(tmp_path / "model.bin", weights_only=True), strict=True)
    model.eval(), other.eval()
    ids, tmask, video, vmask = inputs()
    a, b = scores(model, ids, tmask, video, vmask), scores(other, ids, tmask, video, vmask)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_temporal_module_matches_clip4clip_formulation():
    model = tiny_model()
    temporal = model.temporal
    text_blocks = model.clip.transformer.resblocks
    assert torch.equal(temporal.frame_position_embeddings, model.clip.positional_embedding[:4])
    assert all(torch.equal(a, b) for a, b in zip(temporal.transformer.state_dict().values(),
                                                 nn.ModuleList(text_blocks).state_dict().values()))
    with torch.no_grad():
        for p in temporal.parameters():
            p.add_(0.02 * torch.randn(p.shape))
    frames = torch.randn(3, 4, 64)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    # CLIP4Clip's TransformerClip: sequence-first, nn.MultiheadAttention with an additive -1e6 mask, LN eps 1e-12.
    x = (frames + temporal.frame_position_embeddings).permute(1, 0, 2)
    heads = 1                                                              # width 64 // 64
    additive = ((1.0 - mask[:, None].float()) * -1000000.0).expand(-1, 4, -1).repeat_interleave(heads, dim=0)
    for block in temporal.transformer.resblocks:
        attn = nn.MultiheadAttention(64, heads)
        attn.load_state_dict(block.attn.state_dict())
        ln_1 = nn.LayerNorm(64, eps=1e-12)
        ln_1.load_state_dict(block.ln_1.state_dict())
        ln_2 = nn.LayerNorm(64, eps=1e-12)
        ln_2.load_state_dict(block.ln_2.state_dict())
        h = ln_1(x)
        x = x + attn(h, h, h, need_weights=False, attn_mask=additive)[0]
        x = x + block.mlp(ln_2(x))
    expected = x.permute(1, 0, 2) + frames
    torch.testing.assert_close(temporal(frames, mask), expected, rtol=1e-5, atol=1e-5)


def test_bad_inputs_raise():
    model = tiny_model()
    ids, tmask, video, vmask = inputs()
    with pytest.raises(ValueError, match="video of shape"):
        model.encode_video(video[:, :3], vmask[:, :3])
    with pytest.raises(ValueError, match="video_mask"):
        model.encode_video(video, vmask[:2])
    with pytest.raises(ValueError, match="no real frame"):
        model.encode_video(video, torch.zeros_like(vmask))
    with pytest.raises(ValueError, match="noise seed"):
        model.encode_video(video, vmask, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="encode_text"):
        model.encode_text(tokenize(CAPTIONS, 9), text_mask(tokenize(CAPTIONS, 9)))
    text, vid = _features(2, 2)
    with pytest.raises(ValueError, match="another configuration"):
        model.similarity_levels(text, VideoFeatures(vid.frames, vid.frames_temporal, vid.frame_mask, vid.tokens[:, :8]))


def test_config_json_round_trip_and_errors():
    config = ModelConfig(shift_layers=(10, 11))
    restored = ModelConfig(**json.loads(json.dumps(asdict(config))))
    assert restored == config and restored.shift_layers == (10, 11)
    with pytest.raises(ConfigError):
        ModelConfig(sim_header="tightTransf")
    with pytest.raises(ConfigError):
        UCoFiA(resolve_clip("random:tiny"), ModelConfig(topk=50))
    with pytest.raises(ConfigError):
        UCoFiA(resolve_clip("random:tiny"), ModelConfig(temporal_layers=5))


def test_features_rows_cat_and_dict():
    text, video = _features(5, 4)
    assert len(text) == 5 and len(video[1:3]) == 2 and len(video[2]) == 1
    joined = VideoFeatures.cat([video[:1], video[1:]])
    assert all(torch.equal(a, b) for a, b in zip(joined.to_dict().values(), video.to_dict().values()))
    restored = TextFeatures.from_dict(OrderedDict(text.to_dict()))
    assert torch.equal(restored.words, text.words) and restored.word_mask.dtype == torch.bool


def test_heads_run_in_fp32_under_autocast_and_empty_sets():
    model = tiny_model().eval()
    ids, tmask, video, vmask = inputs()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        text, vid = model.encode_text(ids, tmask), model.encode_video(video, vmask)
        levels = model.similarity_levels(text, vid)
        empty = model.similarity_levels(text[:0], vid)
    assert text.words.dtype == vid.tokens.dtype == vid.frames_temporal.dtype == torch.float32
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in levels.values())
    assert all(v.shape == (0, 3) for v in empty.values())
