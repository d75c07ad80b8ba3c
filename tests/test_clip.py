"""The CLIP port against open_clip (an independent implementation of OpenAI's architecture), with random weights."""
import os

import open_clip
import pytest
import torch
from open_clip.model import CLIPTextCfg, CLIPVisionCfg

from modules.common.errors import CheckpointError
from modules.model.clip import (
    ARCHITECTURES,
    CLIP,
    build_clip,
    build_random_clip,
    config_from_state_dict,
    load_clip,
    resolve_clip,
)
from modules.model.tokenizer import tokenize

CAPTIONS = ["a red circle moves left over a blue background", "two dogs", "x", "a man is cooking pasta in a kitchen"]


def _tiny_reference() -> torch.nn.Module:
    """open_clip model with the sizes of our ``tiny`` architecture."""
    cfg = ARCHITECTURES["tiny"]
    vision = CLIPVisionCfg(layers=cfg.vision_layers, width=cfg.vision_width, head_width=64,
                           patch_size=cfg.vision_patch_size, image_size=cfg.image_resolution)
    text = CLIPTextCfg(context_length=cfg.context_length, vocab_size=cfg.vocab_size, width=cfg.transformer_width,
                       heads=cfg.transformer_heads, layers=cfg.transformer_layers)
    return open_clip.model.CLIP(embed_dim=cfg.embed_dim, vision_cfg=vision, text_cfg=text, quick_gelu=True)


def _write_torchscript(state_dict: dict, path: str) -> None:
    """Write a TorchScript archive with OpenAI's parameter names and fp16 weights, as OpenAI's ``ViT-B-32.pt``."""
    model = build_clip(state_dict).eval()
    images = torch.zeros(1, 3, model.config.image_resolution, model.config.image_resolution)
    ids = tokenize(["a"], model.context_length)
    with torch.no_grad(), pytest.warns(Warning):
        traced = torch.jit.trace(model, (images, ids), check_trace=False)
    traced.half().save(path)


@pytest.fixture(scope="module", params=[pytest.param("ViT-B-32-quickgelu", marks=pytest.mark.slow), "tiny"])
def reference(request, tmp_path_factory):
    """(open_clip model, plain state-dict file, TorchScript archive), weights rounded to fp16 like OpenAI's files."""
    torch.manual_seed(0)
    model = open_clip.create_model(request.param, pretrained=None) if request.param != "tiny" else _tiny_reference()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    model.eval()
    folder = tmp_path_factory.mktemp(request.param)
    plain, archive = str(folder / "weights.pt"), str(folder / "archive.pt")
    torch.save({k: v.half() for k, v in model.state_dict().items()}, plain)
    _write_torchscript(model.state_dict(), archive)
    return model, plain, archive


def test_encoders_match_open_clip(reference):
    """The plain file's model against open_clip; the TorchScript archive, read as data, gives that model bit for bit
    (same architecture, same weights), so it matches open_clip as that one does."""
    model, plain, archive = reference
    ours = load_clip(plain).eval()
    assert next(ours.parameters()).dtype == torch.float32
    torch.manual_seed(1)
    images = torch.randn(3, 3, 224, 224)
    ids = tokenize(CAPTIONS, 77)
    with torch.no_grad():
        image_diff = (ours.encode_image(images) - model.encode_image(images)).abs().max().item()
        text_diff = (ours.encode_text(ids) - model.encode_text(ids)).abs().max().item()
    assert image_diff <= 1e-5, image_diff
    assert text_diff <= 1e-5, text_diff
    from_archive = load_clip(archive)
    assert from_archive.config == ours.config and from_archive.context_length == ours.context_length
    sa, sb = ours.state_dict(), from_archive.state_dict()
    assert sa.keys() == sb.keys()
    for key, value in sa.items():
        assert sb[key].dtype == torch.float32 and torch.equal(value, sb[key]), key


def test_tokens_agree_with_pooled_embeddings():
    torch.manual_seed(2)
    model = build_random_clip("tiny").eval()
    images = torch.randn(2, 3, 224, 224)
    ids = tokenize(CAPTIONS, 32)
    with torch.no_grad():
        pooled, tokens = model.encode_image(images, return_tokens=True)
        assert tokens.shape == (2, 1 + 49, model.config.embed_dim)
        assert torch.equal(pooled, tokens[:, 0])
        assert torch.equal(pooled, model.encode_image(images))
        pooled, tokens = model.encode_text(ids, return_tokens=True)
        assert tokens.shape == (len(CAPTIONS), 32, model.config.embed_dim)
        eot = ids.argmax(-1)
        assert torch.equal(pooled, tokens[torch.arange(len(CAPTIONS)), eot])
        # The causal mask makes a shorter context an exact prefix of the 77-token computation.
        _, full = model.encode_text(tokenize(CAPTIONS, 77), return_tokens=True)
        assert torch.allclose(tokens, full[:, :32], atol=1e-6)


def test_architecture_inferred_from_state_dict():
    for arch in ("ViT-B/32", "ViT-B/16", "tiny"):
        shapes = {k: torch.empty(v.shape, device="meta") for k, v in _meta_state_dict(arch).items()}
        assert config_from_state_dict(shapes) == ARCHITECTURES[arch]


def _meta_state_dict(arch: str) -> dict:
    with torch.device("meta"):
        return CLIP(ARCHITECTURES[arch]).state_dict()


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(3)
    model = build_random_clip("tiny")
    images = torch.randn(2, 3, 224, 224)
    ids = tokenize(CAPTIONS[:2], 16)

    def grads():
        model.zero_grad()
        (model.encode_image(images).sum() + model.encode_text(ids).sum()).backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    plain = grads()
    model.set_grad_checkpointing(True, True)
    checkpointed = grads()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, checkpointed))


def test_resolve_names(tmp_path):
    assert resolve_clip("random:tiny").config == ARCHITECTURES["tiny"]
    with pytest.raises(CheckpointError, match="unknown CLIP architecture"):
        resolve_clip("random:ViT-H/99")
    with pytest.raises(CheckpointError, match=r"wget -P .* https://openaipublic.azureedge.net/.*/ViT-B-32.pt"):
        resolve_clip("ViT-B/32", weights_dir=str(tmp_path))
    with pytest.raises(CheckpointError, match="expected one of"):
        resolve_clip("clip-base")


def test_bad_weight_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_clip(str(tmp_path / "absent.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_clip(str(junk))
    sd = build_random_clip("tiny").state_dict()
    broken = dict(sd)
    del broken["visual.ln_post.weight"]
    torch.save(broken, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"missing 1 \(e.g. visual.ln_post.weight\)"):
        load_clip(str(tmp_path / "missing.pt"))
    resnet = {k: v for k, v in sd.items() if not k.startswith("visual.")}
    resnet["visual.attnpool.positional_embedding"] = torch.zeros(50, 64)
    resnet["visual.conv1.weight"] = torch.zeros(32, 3, 3, 3)
    torch.save(resnet, tmp_path / "resnet.pt")
    with pytest.raises(CheckpointError, match="not a ViT CLIP state dict"):
        load_clip(str(tmp_path / "resnet.pt"))
    torch.save({"weights": [1, 2, 3]}, tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="state dict of tensors"):
        load_clip(str(tmp_path / "list.pt"))
