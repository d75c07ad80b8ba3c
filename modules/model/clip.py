"""CLIP (ViT image tower + text transformer) with OpenAI's architecture and state-dict layout.

``build_clip(state_dict)`` infers every size from an OpenAI-format state dict, ``load_clip(path)`` reads OpenAI's
TorchScript archive (``ViT-B-32.pt``) or a plain state dict, and ``build_random_clip(arch)`` makes a randomly
initialised backbone by name. Parameter names equal OpenAI's, so weights load strictly in both directions.

Unlike OpenAI's code the transformers run batch-first with ``scaled_dot_product_attention``, can checkpoint
activations per tower, and return every projected token on request (UCoFiA scores words and patches). The residual
blocks of the image tower expose one seam, ``ResidualAttentionBlock.token_shift``: a parameter-free module applied to
the attention input (after ``ln_1``), which UCoFiA uses to shift patch tokens between the frames of a video.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from modules.common.errors import CheckpointError
from modules.common.io import read_checkpoint
from modules.common.state_dicts import check_compatible
from modules.common.torchscript import (
    is_torchscript_archive,
    read_torchscript_state_dict,
)

DEFAULT_WEIGHTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # modules/, where the README puts it
OPENAI_URLS = {
    "ViT-B/32": "https://openaipublic.azureedge.net/clip/models/"
                "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    "ViT-B/16": "https://openaipublic.azureedge.net/clip/models/"
                "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
    "ViT-L/14": "https://openaipublic.azureedge.net/clip/models/"
                "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
}
# Keys that OpenAI's TorchScript archives carry besides the weights.
ARCHIVE_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


@dataclass(frozen=True)
class CLIPConfig:
    """Sizes of a CLIP model; attention heads are width // 64 in both towers, as in OpenAI's models."""
    embed_dim: int
    image_resolution: int
    vision_layers: int
    vision_width: int
    vision_patch_size: int
    context_length: int
    vocab_size: int
    transformer_width: int
    transformer_layers: int

    @property
    def vision_heads(self) -> int:
        return max(1, self.vision_width // 64)

    @property
    def transformer_heads(self) -> int:
        return max(1, self.transformer_width // 64)

    @property
    def grid_size(self) -> int:
        return self.image_resolution // self.vision_patch_size


ARCHITECTURES = {
    "ViT-B/32": CLIPConfig(512, 224, 12, 768, 32, 77, 49408, 512, 12),
    "ViT-B/16": CLIPConfig(512, 224, 12, 768, 16, 77, 49408, 512, 12),
    "ViT-L/14": CLIPConfig(768, 224, 24, 1024, 14, 77, 49408, 768, 12),
    # Tests and the demo: 224 px input and 32 px patches like ViT-B/32 (so UCoFiA sees 7x7 patches), but narrow and
    # shallow enough to train on two CPU cores; 4 text layers, the depth UCoFiA's temporal module copies.
    "tiny": CLIPConfig(64, 224, 4, 128, 32, 77, 49408, 64, 4),
}


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 and returned in the input's dtype (OpenAI's fp16-weight recipe relies on it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter names, run through SDPA."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, causal: bool = False, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``attn_mask``: bool [N, 1, T, T] (True = attend) or additive, for padded sequences; not with ``causal``."""
        n, length, width = x.shape                                                  # [N, T, W]
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)                   # [N, T, 3W]
        qkv = qkv.view(n, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)  # [3, N, H, T, W/H]
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2],
                                             attn_mask=attn_mask, is_causal=causal)  # [N, H, T, W/H]
        return self.out_proj(out.transpose(1, 2).reshape(n, length, width))


class ResidualAttentionBlock(nn.Module):
    """Pre-LayerNorm block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = Attention(width, heads)
        self.ln_1 = LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, width * 4)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(width * 4, width)),
        ]))
        self.ln_2 = LayerNorm(width)
        # Seam for UCoFiA: a parameter-free module applied to the attention input only (the residual stays unshifted),
        # called as token_shift(h, frame_mask); frame_mask [B, F] marks real frames, or is None.
        self.token_shift: Optional[nn.Module] = None

    def forward(self, x: torch.Tensor, causal: bool = False, attn_mask: Optional[torch.Tensor] = None,
                frame_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.ln_1(x)
        if self.token_shift is not None:
            h = self.token_shift(h, frame_mask)
        x = x + self.attn(h, causal=causal, attn_mask=attn_mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads) for _ in range(layers)])
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor, causal: bool = False, attn_mask: Optional[torch.Tensor] = None,
                frame_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        for block in self.resblocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, causal, attn_mask, frame_mask, use_reentrant=False)
            else:
                x = block(x, causal, attn_mask, frame_mask)
        return x


class VisionTransformer(nn.Module):
    def __init__(self, resolution: int, patch_size: int, width: int, layers: int, heads: int, output_dim: int):
        super().__init__()
        self.input_resolution = resolution
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((resolution // patch_size) ** 2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x: torch.Tensor, frame_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Images [N, 3, R, R] -> projected tokens [N, 1+P, D] (class token first); ``frame_mask`` goes to the shift."""
        x = self.conv1(x.to(self.conv1.weight.dtype))                        # [N, W, g, g]
        x = x.flatten(2).transpose(1, 2)                                     # [N, P, W]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)     # [N, 1, W]
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)  # [N, 1+P, W]
        x = self.transformer(self.ln_pre(x), frame_mask=frame_mask)
        return self.ln_post(x) @ self.proj                                   # [N, 1+P, D]


class CLIP(nn.Module):
    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.config = config
        self.context_length = config.context_length
        self.visual = VisionTransformer(config.image_resolution, config.vision_patch_size, config.vision_width,
                                        config.vision_layers, config.vision_heads, config.embed_dim)
        self.transformer = Transformer(config.transformer_width, config.transformer_layers, config.transformer_heads)
        self.token_embedding = nn.Embedding(config.vocab_size, config.transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(config.context_length, config.transformer_width))
        self.ln_final = LayerNorm(config.transformer_width)
        self.text_projection = nn.Parameter(torch.empty(config.transformer_width, config.embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]) * torch.log(torch.tensor(1 / 0.07)))
        self.initialize_parameters()

    def initialize_parameters(self) -> None:
        """OpenAI's initialisation, so ``random:<arch>`` backbones start like an untrained CLIP."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        for tower in (self.transformer, self.visual.transformer):
            proj_std = (tower.width ** -0.5) * ((2 * tower.layers) ** -0.5)
            attn_std = tower.width ** -0.5
            fc_std = (2 * tower.width) ** -0.5
            for block in tower.resblocks:
                nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
                nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
                nn.init.zeros_(block.attn.out_proj.bias)
                nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
                nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=self.transformer.width ** -0.5)

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def set_grad_checkpointing(self, vision: bool = True, text: bool = True) -> None:
        """Recompute block activations in the backward pass, per tower, to trade compute for memory."""
        self.visual.transformer.grad_checkpointing = vision
        self.transformer.grad_checkpointing = text

    def encode_image(self, images: torch.Tensor, return_tokens: bool = False,
                     frame_mask: Optional[torch.Tensor] = None):
        """Images [N, 3, R, R] -> pooled embedding [N, D] (the projected class token), as OpenAI's model.

        With ``return_tokens`` also returns every projected token [N, 1+P, D] (``ln_post`` and ``proj`` on all).
        ``frame_mask`` [B, F] (B*F = N, real frames True) is handed to the token-shift seam of shifted blocks.
        """
        tokens = self.visual(images, frame_mask)                             # [N, 1+P, D]
        return (tokens[:, 0], tokens) if return_tokens else tokens[:, 0]

    def encode_text(self, ids: torch.Tensor, return_tokens: bool = False):
        """Token ids [N, L] (L <= context_length) -> pooled embedding [N, D] at the end token, as OpenAI's model.

        With ``return_tokens`` also returns every projected position [N, L, D] (``ln_final`` and
        ``text_projection`` on all). The mask is causal, so positions after the end token never affect it.
        """
        length = ids.shape[1]
        if length > self.context_length:
            raise ValueError(f"text of {length} tokens exceeds the model's context of {self.context_length}")
        x = self.token_embedding(ids).to(self.dtype) + self.positional_embedding[:length].to(self.dtype)  # [N, L, W]
        x = self.transformer(x, causal=True)
        tokens = self.ln_final(x) @ self.text_projection.to(x.dtype)         # [N, L, D]
        pooled = tokens[torch.arange(ids.shape[0], device=ids.device), ids.argmax(dim=-1)]  # [N, D]
        return (pooled, tokens) if return_tokens else pooled

    def forward(self, images: torch.Tensor, ids: torch.Tensor):
        """CLIP logits, image-to-text [Ni, Nt] and text-to-image [Nt, Ni]."""
        image = F.normalize(self.encode_image(images), dim=-1)
        text = F.normalize(self.encode_text(ids), dim=-1)
        logits = self.logit_scale.exp() * image @ text.t()
        return logits, logits.t()


def config_from_state_dict(state_dict: dict) -> CLIPConfig:
    """Infer a ViT CLIP's sizes from its OpenAI-format state dict."""
    try:
        vision_width = state_dict["visual.conv1.weight"].shape[0]
        vision_patch_size = state_dict["visual.conv1.weight"].shape[-1]
        vision_layers = len({k.split(".")[3] for k in state_dict
                             if k.startswith("visual.transformer.resblocks.") and k.endswith(".attn.in_proj_weight")})
        grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        transformer_width = state_dict["ln_final.weight"].shape[0]
        transformer_layers = len({k.split(".")[2] for k in state_dict
                                  if k.startswith("transformer.resblocks.") and k.endswith(".attn.in_proj_weight")})
        return CLIPConfig(
            embed_dim=state_dict["text_projection"].shape[1],
            image_resolution=vision_patch_size * grid,
            vision_layers=vision_layers,
            vision_width=vision_width,
            vision_patch_size=vision_patch_size,
            context_length=state_dict["positional_embedding"].shape[0],
            vocab_size=state_dict["token_embedding.weight"].shape[0],
            transformer_width=transformer_width,
            transformer_layers=transformer_layers,
        )
    except (KeyError, IndexError, AttributeError) as e:
        raise CheckpointError(f"not a ViT CLIP state dict in OpenAI's layout (missing or malformed {e})") from None


def build_clip(state_dict: dict, source: str = "state dict") -> CLIP:
    """Build a CLIP whose sizes are inferred from ``state_dict`` and load it strictly (fp32 parameters)."""
    state_dict = {k: v for k, v in state_dict.items() if k not in ARCHIVE_EXTRA_KEYS}
    model = CLIP(config_from_state_dict(state_dict))
    check_compatible(model.state_dict(), state_dict, source, "the CLIP architecture it describes")
    model.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True)
    return model


def _read_state_dict(path: str) -> dict:
    if is_torchscript_archive(path):
        return read_torchscript_state_dict(path)  # read as data: the archive's code never runs
    obj = read_checkpoint(path)
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: does not hold a state dict of tensors")
    return obj


def load_clip(path: str) -> CLIP:
    """Load OpenAI's TorchScript archive (e.g. ``ViT-B-32.pt``, read as data: its code never runs) or a plain
    state-dict file, strictly."""
    return build_clip(_read_state_dict(_existing(path)), source=path)


def _existing(path: str) -> str:
    if not os.path.isfile(path):
        name = os.path.basename(path)
        hint = next((f"; download it with: wget -P {os.path.dirname(path) or '.'} {url}"
                     for arch, url in OPENAI_URLS.items() if url.endswith("/" + name)), "")
        raise CheckpointError(f"CLIP weights not found: {path}{hint}")
    return path


def build_random_clip(arch: str) -> CLIP:
    """A randomly initialised CLIP of an OpenAI architecture (``ViT-B/32``, ...) or ``tiny``."""
    return CLIP(_architecture(arch))


def _architecture(arch: str):
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"unknown CLIP architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch]


def clip_weights_file(name: str, weights_dir: str = DEFAULT_WEIGHTS_DIR) -> Optional[str]:
    """The file ``--pretrained_clip_name name`` reads (None for ``random:<arch>``), checked without reading it, so
    that a missing download or an unknown name stops a run before any work."""
    if name.startswith("random:"):
        _architecture(name[len("random:"):])
        return None
    if name in OPENAI_URLS:
        return _existing(os.path.join(weights_dir, name.replace("/", "-") + ".pt"))
    if os.path.sep in name or name.endswith((".pt", ".pth", ".bin")):
        return _existing(name)
    raise CheckpointError(f"--pretrained_clip_name {name!r}: expected one of {', '.join(OPENAI_URLS)}, "
                          f"a path to a weights file, or random:<{'|'.join(ARCHITECTURES)}>")


def resolve_clip(name: str, weights_dir: str = DEFAULT_WEIGHTS_DIR) -> CLIP:
    """``--pretrained_clip_name``: an OpenAI name (weights read from ``weights_dir``), a file, or ``random:<arch>``."""
    path = clip_weights_file(name, weights_dir)
    return build_random_clip(name[len("random:"):]) if path is None else load_clip(path)
