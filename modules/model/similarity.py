"""The three similarity levels of UCoFiA, scored in memory-bounded blocks.

    video_sentence  S_vs = lambda (s A1) . (v A2),        v = normalize(masked mean of normalize(f~))
    frame_sentence  S_fs = lambda ISA_Wf(s . f_j)
    patch_word      S_pw = (ISA_Wp2(c) + ISA_Ww2(d)) / 2, G_im = (w_i B1) . (p_m B2),
                    c_m = ISA_Ww(G[:, m]) over words,  d_i = ISA_Wp(G[i, :]) over patches

s, f, w are L2-normalised; the selected tokens p are not and the patch-word level has no lambda (both kept from the
released checkpoint: docs/architecture.md, "Kept on purpose"). With ``mask_padding`` padded words and frames (and the
tokens of padded frames) are masked out of every ISA softmax; without it they enter them, as in the published code.

All text-independent work (normalisation, A2 and B2 projections, the masked mean) is done once per video by
``prepare_video`` and all video-independent work once per text by ``prepare_text``; the block loop then only runs the
text x video products. The patch-word level works on ``G / tau`` throughout (the 1/tau is folded into the projected
words), which saves a pass over its [texts, words, videos, tokens] block.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from modules.model.isa import isa_scaled, isa_scaled_weights, mask_bias

LEVELS = ("video_sentence", "frame_sentence", "patch_word")
# Tensors of the patch-word block's size alive at once (G / tau, two softmax outputs, the mixed weights, a product).
LIVE_BLOCK_TENSORS = 5


@dataclass
class TextSide:
    """Per-text work, done once: ``sentence`` = s A1 [Nt, D], ``sentence_scaled`` = s / tau [Nt, D],
    ``words`` = w B1 / tau [Nt, L, D], ``word_bias`` [Nt, L] (0 or -inf) or None."""
    sentence: torch.Tensor
    sentence_scaled: torch.Tensor
    words: torch.Tensor
    word_bias: Optional[torch.Tensor]

    def rows(self, start: int, stop: int) -> "TextSide":
        return TextSide(self.sentence[start:stop], self.sentence_scaled[start:stop], self.words[start:stop],
                        None if self.word_bias is None else self.word_bias[start:stop])


@dataclass
class VideoSide:
    """Per-video work, done once: ``video`` = v A2 [Nv, D], ``frames`` = normalised f [Nv, F, D],
    ``tokens`` = p B2 [Nv, M, D], ``frame_bias`` [Nv, F] and ``token_bias`` [Nv, M] (0 or -inf) or None."""
    video: torch.Tensor
    frames: torch.Tensor
    tokens: torch.Tensor
    frame_bias: Optional[torch.Tensor]
    token_bias: Optional[torch.Tensor]

    def rows(self, start: int, stop: int) -> "VideoSide":
        def cut(t):
            return None if t is None else t[start:stop]
        return VideoSide(self.video[start:stop], self.frames[start:stop], self.tokens[start:stop],
                         cut(self.frame_bias), cut(self.token_bias))


def mean_pooled(frames: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """Unit video vector [Nv, D]: the L2-normalised mean of the normalised real frames [Nv, F, D] (CLIP4Clip's meanP,
    also the zero-shot baseline's video embedding); ``frame_mask`` [Nv, F] marks the real frames."""
    weight = frame_mask.to(frames.dtype).unsqueeze(-1)                             # [Nv, F, 1]
    pooled = (F.normalize(frames, dim=-1) * weight).sum(1) / weight.sum(1).clamp(min=1)  # [Nv, D]
    return F.normalize(pooled, dim=-1)


def _eye(n: int) -> nn.Parameter:
    return nn.Parameter(torch.eye(n))


class LevelHead(nn.Module):
    """Learnable parts of the three levels, all initialised to the identity, and the blockwise scorer.

    Args:
        dim: feature width D.
        max_words: L, size of the word ISA matrices.
        max_frames: F, size of the frame ISA matrix.
        tokens_per_frame: 1 + K; the patch ISA matrices are (F (1+K)) x (F (1+K)).
        tau: ISA temperature.
        mask_padding: mask padded words and frames out of the ISA softmaxes.
        block_bytes: memory budget of one patch-word block.
    """

    def __init__(self, dim: int, max_words: int, max_frames: int, tokens_per_frame: int, tau: float,
                 mask_padding: bool, block_bytes: int):
        super().__init__()
        self.tau, self.mask_padding, self.block_bytes = tau, mask_padding, block_bytes
        self.tokens_per_frame = tokens_per_frame
        self.sentence_proj = _eye(dim)                       # A1
        self.video_proj = _eye(dim)                          # A2
        self.word_proj = _eye(dim)                           # B1
        self.patch_proj = _eye(dim)                          # B2
        self.frame_isa = _eye(max_frames)                    # W_f: frames, per sentence
        self.word_isa = _eye(max_words)                      # W_w: words, per token (gives c)
        self.patch_isa = _eye(max_frames * tokens_per_frame)  # W_p: tokens, per word (gives d)
        self.patch_isa_2 = _eye(max_frames * tokens_per_frame)  # W_p2: ISA of c over tokens
        self.word_isa_2 = _eye(max_words)                    # W_w2: ISA of d over words

    def prepare_text(self, sentence: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor) -> TextSide:
        """Raw sentence [Nt, D], words [Nt, L, D], word_mask [Nt, L] -> ``TextSide``."""
        unit = F.normalize(sentence, dim=-1)                                       # [Nt, D]
        words = F.normalize(words, dim=-1) @ (self.word_proj / self.tau)           # [Nt, L, D]
        bias = mask_bias(word_mask, words.dtype) if self.mask_padding else None    # [Nt, L]
        return TextSide(unit @ self.sentence_proj, unit / self.tau, words, bias)

    def prepare_video(self, frames: torch.Tensor, frames_temporal: torch.Tensor, frame_mask: torch.Tensor,
                      tokens: torch.Tensor) -> VideoSide:
        """Raw frames, frames_temporal [Nv, F, D], frame_mask [Nv, F], tokens [Nv, F(1+K), D] -> ``VideoSide``."""
        video = mean_pooled(frames_temporal, frame_mask) @ self.video_proj          # [Nv, D]
        frame_bias = token_bias = None
        if self.mask_padding:
            frame_bias = mask_bias(frame_mask, frames.dtype)                       # [Nv, F]
            token_bias = frame_bias.repeat_interleave(self.tokens_per_frame, dim=1)  # [Nv, F(1+K)]
        return VideoSide(video, F.normalize(frames, dim=-1), tokens @ self.patch_proj, frame_bias, token_bias)

    def video_sentence(self, text: TextSide, video: VideoSide, logit_scale: torch.Tensor) -> torch.Tensor:
        """[Nt, Nv] video-sentence logits."""
        return logit_scale * text.sentence @ video.video.t()

    def _frame_terms(self, text: TextSide, video: VideoSide) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Sentence-frame similarities / tau [bt, bv, F] of a block and the padded-frame bias [1, bv, F] or None."""
        bv, n_frames, dim = video.frames.shape
        x = (text.sentence_scaled @ video.frames.reshape(bv * n_frames, dim).t()).view(-1, bv, n_frames)  # [bt,bv,F]
        bias = None if video.frame_bias is None else video.frame_bias.unsqueeze(0)  # [1, bv, F]
        return x, bias

    def frame_sentence(self, text: TextSide, video: VideoSide, logit_scale: torch.Tensor) -> torch.Tensor:
        """[bt, bv] frame-sentence logits of a block."""
        x, bias = self._frame_terms(text, video)
        return logit_scale * self.tau * isa_scaled(x, self.frame_isa / self.tau, -1, bias, bias)

    def _patch_word_terms(self, text: TextSide, video: VideoSide
                          ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """The inputs of the patch-word level's two final ISAs for a block: c / tau [bt, bv, M] (per token, over
        words), d / tau [bt, L, bv] (per word, over tokens), and their biases [1, bv, M] and [bt, L, 1] or None."""
        bt, n_words, dim = text.words.shape
        bv, n_tokens, _ = video.tokens.shape
        g = text.words.reshape(bt * n_words, dim) @ video.tokens.reshape(bv * n_tokens, dim).t()  # [bt L, bv M]
        g = g.view(bt, n_words, bv, n_tokens)                                       # [bt, L, bv, M]: G / tau
        word_b = tok_b = None
        if text.word_bias is not None:
            word_b = text.word_bias[:, :, None, None]                               # [bt, L, 1, 1]
            tok_b = video.token_bias[None, None]                                    # [1, 1, bv, M]
        per_token = isa_scaled(g, self.word_isa / self.tau, 1, word_b, word_b)      # [bt, bv, M]: c / tau
        per_word = isa_scaled(g, self.patch_isa / self.tau, 3, tok_b, tok_b)        # [bt, L, bv]: d / tau
        tok_b = None if tok_b is None else tok_b[0]                                 # [1, bv, M]
        word_b = None if word_b is None else word_b[..., 0]                         # [bt, L, 1]
        return per_token, per_word, tok_b, word_b

    def patch_word(self, text: TextSide, video: VideoSide) -> torch.Tensor:
        """[bt, bv] patch-word logits of a block."""
        per_token, per_word, tok_b, word_b = self._patch_word_terms(text, video)
        video_score = isa_scaled(per_token, self.patch_isa_2 / self.tau, 2, tok_b, tok_b)  # [bt, bv]
        text_score = isa_scaled(per_word, self.word_isa_2 / self.tau, 1, word_b, word_b)   # [bt, bv]
        return self.tau * (video_score + text_score) / 2

    def explain(self, text: TextSide, video: VideoSide, logit_scale: torch.Tensor) -> dict[str, torch.Tensor]:
        """The ISA weights behind every pair of a (small) block, and the logits they give.

        Returns:
            ``video_sentence``, ``frame_sentence``, ``patch_word`` [bt, bv] (equal to ``forward``'s);
            ``frame_weights`` [bt, bv, F]: frame-sentence ISA over frames;
            ``token_weights`` [bt, bv, M]: patch-word ISA of c over the visual tokens;
            ``word_weights`` [bt, bv, L]: patch-word ISA of d over the words.
            Each weight vector sums to 1 and is 0 at padding when ``mask_padding`` is on.
        """
        x, bias = self._frame_terms(text, video)                                    # [bt, bv, F]
        frame_w = isa_scaled_weights(x, self.frame_isa / self.tau, -1, bias, bias)  # [bt, bv, F]
        per_token, per_word, tok_b, word_b = self._patch_word_terms(text, video)
        token_w = isa_scaled_weights(per_token, self.patch_isa_2 / self.tau, 2, tok_b, tok_b)  # [bt, bv, M]
        word_w = isa_scaled_weights(per_word, self.word_isa_2 / self.tau, 1, word_b, word_b)   # [bt, L, bv]
        video_score = (token_w * per_token).sum(2)                                  # [bt, bv]
        text_score = (word_w * per_word).sum(1)                                     # [bt, bv]
        return {"video_sentence": self.video_sentence(text, video, logit_scale),
                "frame_sentence": logit_scale * self.tau * (frame_w * x).sum(-1),
                "patch_word": self.tau * (video_score + text_score) / 2,
                "frame_weights": frame_w, "token_weights": token_w, "word_weights": word_w.transpose(1, 2)}

    def block_shape(self, n_text: int, n_video: int, n_words: int, n_tokens: int, itemsize: int) -> tuple[int, int]:
        """Texts and videos per block so that the patch-word block stays within ``block_bytes``."""
        pairs = max(1, self.block_bytes // (n_words * n_tokens * itemsize * LIVE_BLOCK_TENSORS))
        bt = min(n_text, max(1, math.isqrt(pairs)))
        bv = min(n_video, max(1, pairs // bt))
        bt = min(n_text, max(bt, pairs // bv))  # give a short side's unused share to the other
        return bt, bv

    def forward(self, text: TextSide, video: VideoSide, logit_scale: torch.Tensor,
                levels: Sequence[str] = LEVELS) -> dict[str, torch.Tensor]:
        """Logits [Nt, Nv] of each requested level, keyed by level name."""
        unknown = set(levels) - set(LEVELS)
        if unknown:
            raise ValueError(f"unknown similarity levels {sorted(unknown)}; choose from {', '.join(LEVELS)}")
        out = {}
        if "video_sentence" in levels:
            out["video_sentence"] = self.video_sentence(text, video, logit_scale)  # [Nt, Nv]
        blockwise = [name for name in ("frame_sentence", "patch_word") if name in levels]
        if not blockwise:
            return out
        n_text, n_words = text.words.shape[:2]
        n_video, n_tokens = video.tokens.shape[:2]
        if n_text == 0 or n_video == 0:
            out.update({name: text.words.new_zeros(n_text, n_video) for name in blockwise})
            return {name: out[name] for name in LEVELS if name in out}
        bt, bv = self.block_shape(n_text, n_video, n_words, n_tokens, text.words.element_size())
        rows: dict[str, list[torch.Tensor]] = {name: [] for name in blockwise}
        for t0 in range(0, n_text, bt):
            t = text.rows(t0, t0 + bt)
            row: dict[str, list[torch.Tensor]] = {name: [] for name in blockwise}
            for v0 in range(0, n_video, bv):
                v = video.rows(v0, v0 + bv)
                if "frame_sentence" in row:
                    row["frame_sentence"].append(self.frame_sentence(t, v, logit_scale))
                if "patch_word" in row:
                    row["patch_word"].append(self.patch_word(t, v))
            for name in blockwise:
                rows[name].append(torch.cat(row[name], dim=1))                      # [bt, Nv]
        out.update({name: torch.cat(rows[name], dim=0) for name in blockwise})     # [Nt, Nv]
        return {name: out[name] for name in LEVELS if name in out}
