"""Importing checkpoints of the published code: a state dict in its key layout (built here from a model) imports,
strict-loads and scores identically, its parameters mean what the published formulas use them for, and anything
unexpected is an error naming the keys."""
import pytest
import torch

from modules.common.errors import CheckpointError
from modules.model.clip import resolve_clip
from modules.model.features import TextFeatures, VideoFeatures
from modules.model.published import import_published_state_dict, is_published_state_dict
from modules.model.tokenizer import text_mask, tokenize
from modules.model.ucofia import ModelConfig, UCoFiA

CONFIG = dict(max_words=8, max_frames=4, topk=2, topk_samples=30)
# Our name -> the published one, written out independently of modules.published.
TO_PUBLISHED = {
    "levels.sentence_proj": "global_mat_weight", "levels.video_proj": "global_mat_weight_1",
    "levels.frame_isa": "frame_logit_weight", "levels.word_proj": "local_mat_weight",
    "levels.patch_proj": "local_mat_weight1", "levels.word_isa": "word_mat_weight",
    "levels.patch_isa": "pixel_mat_weight", "levels.patch_isa_2": "pixel_mat_weight2",
    "levels.word_isa_2": "word_mat_weight2",
    "patch_scorer.norm.weight": "visual_token_selector.score_predictor.in_conv.0.weight",
    "patch_scorer.norm.bias": "visual_token_selector.score_predictor.in_conv.0.bias",
    "patch_scorer.down.weight": "visual_token_selector.score_predictor.in_conv.1.weight",
    "patch_scorer.hidden.weight": "visual_token_selector.score_predictor.out_conv.0.weight",
    "patch_scorer.out.weight": "visual_token_selector.score_predictor.out_conv.2.weight",
}


def _model(seed=0, **overrides) -> UCoFiA:
    torch.manual_seed(seed)
    model = UCoFiA(resolve_clip("random:tiny"), ModelConfig(**{**CONFIG, **overrides}))
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():  # away from the identity / CLIP copies, so that a swapped key would show
        for module in filter(None, (model.levels, model.patch_scorer, model.temporal)):
            for p in module.parameters():
                p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model


def published_layout(model: UCoFiA) -> dict:
    """The model's weights under the published model's keys, with its 77-row frame position table, the wrapped
    attention of the shifted blocks and the parameters it never uses."""
    out = {}
    for key, value in model.state_dict().items():
        if key in TO_PUBLISHED:
            out[TO_PUBLISHED[key]] = value
        elif key == "temporal.frame_position_embeddings":
            out["frame_position_embeddings.weight"] = torch.cat([value, torch.randn(77 - len(value), value.shape[1])])
        elif key.startswith("temporal.transformer."):
            out["transformerClip." + key[len("temporal.transformer."):]] = value
        elif key.startswith(("clip.visual.transformer.resblocks.2.attn.", "clip.visual.transformer.resblocks.3.attn.")):
            out[key.replace(".attn.", ".attn.net.")] = value
        else:
            assert key.startswith("clip."), key
            out[key] = value
    for name, n in (("word_logit_weight", 8), ("frame_mat_weight", 4), ("frame_mat_weight2", 4),
                    ("word_mat_weight_for_pixel", 8)):
        out[name] = torch.eye(n)
    return out


def _inputs():
    ids = tokenize(["a dog runs on the beach", "a cat", "people cook pasta"], 8)
    video = torch.randn(3, 4, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    return ids, text_mask(ids), video, torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])


def _scores(model):
    ids, tmask, video, vmask = _inputs()
    model.eval()
    with torch.no_grad():
        return model.similarity_levels(model.encode_text(ids, tmask), model.encode_video(video, vmask))


@pytest.mark.parametrize("scorer", ["video", "frame"])
def test_published_layout_imports_and_scores_identically(scorer):
    source = _model(0, patch_scorer=scorer)
    published = published_layout(source)
    assert is_published_state_dict(published) and not is_published_state_dict(source.state_dict())
    target = _model(1, patch_scorer=scorer)
    target.load_state_dict(import_published_state_dict(published, target), strict=True)
    expected, got = _scores(source), _scores(target)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    ddp_saved = {"module." + k: v.half() if k.startswith("clip.") else v for k, v in published.items()}
    imported = import_published_state_dict(ddp_saved, target)              # fp16 CLIP weights, DDP prefix
    assert imported["clip.visual.proj"].dtype == torch.float32


def published_levels(p, sentence, words, frames, frames_temporal, video_mask, tokens, logit_scale):
    """Transcription of the published _loose_similarity's three levels (no masks but the video mean's)."""
    video_output = frames_temporal / frames_temporal.norm(dim=-1, keepdim=True)
    mask_un = video_mask.to(dtype=video_output.dtype).unsqueeze(-1)
    mask_sum = torch.sum(mask_un, dim=1)
    mask_sum[mask_sum == 0.] = 1.
    video_output = torch.sum(video_output * mask_un, dim=1) / mask_sum
    video_output = video_output / video_output.norm(dim=-1, keepdim=True)
    frame_features = frames / frames.norm(dim=-1, keepdim=True)
    sentence_output = sentence / sentence.norm(dim=-1, keepdim=True)
    word_features = words / words.norm(dim=-1, keepdim=True)
    vs = logit_scale * torch.matmul(torch.matmul(sentence_output, p["global_mat_weight"]),
                                    torch.matmul(video_output, p["global_mat_weight_1"]).t())
    sf = torch.matmul(sentence_output, frame_features.permute(0, 2, 1))
    fs = logit_scale * torch.sum(sf * torch.softmax(torch.matmul(torch.softmax(sf / 1e-2, dim=-1),
                                                                 p["frame_logit_weight"]) / 1e-2, dim=-1), dim=-1).t()
    bv, m, d = tokens.shape
    bt, n_words, _ = word_features.shape
    g = torch.matmul(torch.matmul(word_features.view(-1, d), p["local_mat_weight"]),
                     torch.matmul(tokens.view(-1, d), p["local_mat_weight1"]).t()).view(bt, n_words, bv, m)
    word_level = torch.sum(torch.softmax(torch.matmul(torch.softmax(g / 1e-2, dim=1).permute(0, 2, 3, 1),
                                                      p["word_mat_weight"]) / 1e-2, dim=-1).permute(0, 3, 1, 2) * g,
                           dim=1)
    frame_level = torch.sum(torch.softmax(torch.matmul(torch.softmax(g / 1e-2, dim=-1), p["pixel_mat_weight"])
                                          / 1e-2, dim=-1) * g, dim=-1)
    sent2frame = torch.sum(torch.softmax(torch.matmul(torch.softmax(word_level / 1e-2, dim=-1),
                                                      p["pixel_mat_weight2"]) / 1e-2, dim=-1) * word_level, dim=-1)
    video2word = torch.sum(torch.softmax(torch.matmul(torch.softmax(frame_level / 1e-2, dim=1).permute(0, 2, 1),
                                                      p["word_mat_weight2"]) / 1e-2, dim=-1).permute(0, 2, 1)
                           * frame_level, dim=1)
    return {"video_sentence": vs, "frame_sentence": fs, "patch_word": (sent2frame + video2word) / 2}


def test_levels_equal_published_formulas_without_masking():
    model = _model(0, mask_padding=False).double()
    p = published_layout(model)
    g = torch.Generator().manual_seed(5)
    n_text, n_video = 5, 3
    sentence, words = torch.randn(n_text, 64, generator=g), torch.randn(n_text, 8, 64, generator=g)
    frames, frames_temporal = torch.randn(n_video, 4, 64, generator=g), torch.randn(n_video, 4, 64, generator=g)
    video_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    tokens = 2 * torch.randn(n_video, 12, 64, generator=g)
    features = [x.double() for x in (sentence, words, frames, frames_temporal)]
    expected = published_levels(p, features[0], features[1], features[2], features[3], video_mask,
                                tokens.double(), model.clip.logit_scale.exp())
    text = TextFeatures(features[0], features[1], torch.arange(8)[None] < torch.tensor([[3], [8], [2], [5], [4]]))
    video = VideoFeatures(features[2], features[3], video_mask.bool(), tokens.double())
    with torch.no_grad():
        got = model.similarity_levels(text, video)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-9, atol=1e-9, msg=name)


def test_import_errors_name_the_keys():
    model = _model(0)
    published = published_layout(model)
    with pytest.raises(CheckpointError, match="does not have: extra_head.weight"):
        import_published_state_dict({**published, "extra_head.weight": torch.zeros(1)}, model)
    with pytest.raises(CheckpointError, match="missing: levels.frame_isa"):
        import_published_state_dict({k: v for k, v in published.items() if k != "frame_logit_weight"}, model)
    with pytest.raises(CheckpointError, match="--patch_scorer video"):
        import_published_state_dict(published, _model(0, patch_scorer="frame"))
    with pytest.raises(CheckpointError, match="--shift_layers"):
        import_published_state_dict(published, _model(0, shift_layers=(-1,)))
    with pytest.raises(CheckpointError, match="seqTransf"):
        import_published_state_dict(published, _model(0, sim_header="meanP"))
    with pytest.raises(CheckpointError, match="shapes differ"):
        import_published_state_dict(published, _model(0, topk=3))
