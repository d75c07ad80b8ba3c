"""Temporal token shift (TS2-Net's patch shift, used by UCoFiA in the last two ViT blocks).

Inside a shifted block the attention input of some patch positions is taken from the neighbouring frame of the same
video: positions 1, 1+s, 1+2s, ... read frame t-1 and positions 1+o, 1+o+s, ... read frame t+1, with stride
s = tokens // n_div and offset o (s = 7 and o = 3 for the 50 tokens of ViT-B/32, as in the published
``PatchShiftModule``). The class token never moves, the first and last frame keep their own tokens at the positions
that would read outside the video, and the residual stream is not shifted.

Given a frame mask, padded frames count as outside the video too: a real frame next to a padded one keeps its own
tokens, so the content of padding never reaches a real frame. Without a mask (``--mask_padding 0``) padded frames are
read like real ones, as in the published code.

The module has no parameters, so a model's state dict is the same with or without it.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from modules.model.clip import CLIP


class TemporalTokenShift(nn.Module):
    """Shift patch tokens between consecutive frames; frames of one video are consecutive in the batch.

    Args:
        n_frames: frames per video (``max_frames``); the batch holds videos of exactly this many frames.
        n_div: the stride between shifted positions is ``tokens // n_div``.
        backward_offset: position offset of the tokens read from frame t+1 (3 in the published code).
    """

    def __init__(self, n_frames: int, n_div: int = 7, backward_offset: int = 3):
        super().__init__()
        self.n_frames = n_frames
        self.n_div = n_div
        self.backward_offset = backward_offset

    def forward(self, x: torch.Tensor, frame_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Tokens [B*F, T, W] -> shifted tokens [B*F, T, W]; ``frame_mask`` [B, F] (True = real frame) or None."""
        n, tokens, width = x.shape                                              # [B*F, T, W]
        if n % self.n_frames:
            raise ValueError(f"token shift: batch of {n} frames is not a multiple of {self.n_frames} frames per video")
        if frame_mask is not None and tuple(frame_mask.shape) != (n // self.n_frames, self.n_frames):
            raise ValueError(f"token shift: frame mask of shape {tuple(frame_mask.shape)} for {n} frames "
                             f"of {self.n_frames} per video")
        stride = max(1, tokens // self.n_div)
        from_prev = torch.arange(1, tokens, stride, device=x.device)             # read frame t-1
        from_next = torch.arange(1 + self.backward_offset, tokens, stride, device=x.device)  # read frame t+1
        x = x.view(n // self.n_frames, self.n_frames, tokens, width)            # [B, F, T, W]
        out = x.clone()
        prev = x[:, :-1, from_prev]                                              # [B, F-1, |prev|, W]
        nxt = x[:, 1:, from_next]                                                # [B, F-1, |next|, W]
        if frame_mask is not None:
            real = frame_mask.to(torch.bool)
            # A padded neighbour is outside the video: keep the frame's own tokens.
            prev = torch.where(real[:, :-1, None, None], prev, x[:, 1:, from_prev])
            nxt = torch.where(real[:, 1:, None, None], nxt, x[:, :-1, from_next])
        out[:, 1:, from_prev] = prev
        out[:, :-1, from_next] = nxt
        return out.view(n, tokens, width)

    def extra_repr(self) -> str:
        return f"n_frames={self.n_frames}, n_div={self.n_div}, backward_offset={self.backward_offset}"


def apply_token_shift(clip: CLIP, layers: tuple[int, ...], n_frames: int, n_div: int = 7,
                      backward_offset: int = 3) -> list[int]:
    """Install ``TemporalTokenShift`` in the given image-tower blocks (negative indices count from the end).

    Returns the non-negative block indices. Parameters and state-dict keys are untouched, so checkpoints saved with
    the shift load into a model without it and vice versa.
    """
    blocks = clip.visual.transformer.resblocks
    resolved = []
    for layer in layers:
        if not -len(blocks) <= layer < len(blocks):
            raise ValueError(f"shift layer {layer} out of range for a ViT with {len(blocks)} blocks")
        resolved.append(layer % len(blocks))
    for i, block in enumerate(blocks):
        block.token_shift = TemporalTokenShift(n_frames, n_div, backward_offset) if i in resolved else None
    return sorted(set(resolved))
