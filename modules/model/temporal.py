"""The temporal module of the video level (``--sim_header``).

``seqTransf``: f~ = Transformer(f + P) + f over the frames of a video, padded frames masked out of attention. The
transformer has CLIP's block layout and is initialised from the first ``layers`` blocks of CLIP's text transformer,
the frame position embeddings P from CLIP's text positional embedding (CLIP4Clip's initialisation trick).
``meanP``: no temporal module (f~ = f); the video level then mean-pools the frames.

It is text-independent, so ``UCoFiA.encode_video`` runs it once per video.
"""
from __future__ import annotations

import torch
from torch import nn

from modules.common.errors import ConfigError
from modules.model.clip import CLIP, Transformer

SIM_HEADERS = ("seqTransf", "meanP")


class TemporalTransformer(nn.Module):
    """Transformer over the frames of each video, with learnt frame position embeddings and a residual.

    Args:
        width: feature width D (CLIP's embedding size, which must equal its text width to copy its blocks).
        layers, heads: transformer depth and heads.
        max_frames: number of frame positions.
        ln_eps: LayerNorm epsilon; 1e-12 as in CLIP4Clip's cross-module LayerNorm the published model trained with.
    """

    def __init__(self, width: int, layers: int, heads: int, max_frames: int, ln_eps: float):
        super().__init__()
        self.frame_position_embeddings = nn.Parameter(torch.zeros(max_frames, width))
        self.transformer = Transformer(width, layers, heads)
        for block in self.transformer.resblocks:
            block.ln_1.eps = ln_eps
            block.ln_2.eps = ln_eps

    @classmethod
    def from_clip(cls, clip: CLIP, layers: int, max_frames: int, ln_eps: float) -> "TemporalTransformer":
        """Build and initialise from the first ``layers`` text blocks and the text positional embedding of ``clip``."""
        cfg = clip.config
        if cfg.embed_dim != cfg.transformer_width:
            raise ConfigError(f"--sim_header seqTransf copies CLIP's text blocks, which needs embed_dim "
                              f"({cfg.embed_dim}) == text width ({cfg.transformer_width}); use --sim_header meanP")
        if not 0 < layers <= cfg.transformer_layers:
            raise ConfigError(f"--cross_num_hidden_layers {layers}: CLIP's text transformer has "
                              f"{cfg.transformer_layers} layers to copy")
        if max_frames > cfg.context_length:
            raise ConfigError(f"--max_frames {max_frames} exceeds the {cfg.context_length} text positions that "
                              f"initialise the frame position embeddings")
        module = cls(cfg.transformer_width, layers, cfg.transformer_heads, max_frames, ln_eps)
        with torch.no_grad():
            module.frame_position_embeddings.copy_(clip.positional_embedding[:max_frames])
            for ours, text_block in zip(module.transformer.resblocks, clip.transformer.resblocks):
                ours.load_state_dict(text_block.state_dict())
        return module

    def forward(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """Frames [B, F, D], mask [B, F] (True = real) -> temporally contextualised frames [B, F, D]."""
        n_frames = frames.shape[1]
        x = frames + self.frame_position_embeddings[:n_frames].to(frames.dtype)   # [B, F, D]
        attend = frame_mask.to(torch.bool)[:, None, None, :]                        # [B, 1, 1, F]: keys to attend
        return self.transformer(x, attn_mask=attend) + frames                      # [B, F, D]


def build_temporal(sim_header: str, clip: CLIP, layers: int, max_frames: int, ln_eps: float) -> nn.Module | None:
    """The temporal module of ``sim_header``: a ``TemporalTransformer`` for seqTransf, None for meanP."""
    if sim_header == "seqTransf":
        return TemporalTransformer.from_clip(clip, layers, max_frames, ln_eps)
    if sim_header == "meanP":
        return None
    raise ConfigError(f"--sim_header {sim_header!r}: choose from {', '.join(SIM_HEADERS)}")
