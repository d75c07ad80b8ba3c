"""UCoFiA: CLIP encoders -> text and video features -> three similarity levels.

    text  --CLIP text tower-->  sentence (end token) [Nt, D], words [Nt, L, D], word_mask [Nt, L]
    video --CLIP ViT, token shift in the last blocks-->  tokens [B, F, 1+P, D]
          frames = per-frame class token [B, F, D];  frames_temporal = temporal module(frames) [B, F, D]
          tokens = per frame: class token + K patches (scorer + perturbed top-K) [B, F (1+K), D]
    similarity_levels(text, video) -> {video_sentence, frame_sentence, patch_word}, each [Nt, Nv]
    explain(caption, video) -> the selected patches and ISA weights behind one pair's scores (for pictures)

Encoding and scoring are separate so that features can be gathered across ranks, cached and scored in blocks.
The formulas: docs/architecture.md, "The method as the code computes it". Faithful to the released checkpoint,
without the published code's bugs (same file, "Faithful to the published model, without its bugs"): padded words
and frames are masked unless ``mask_padding`` is off, eval-time patch selection is deterministic, and the shift is
parameter-free so checkpoints round-trip exactly.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn

from modules.common.cli import int_list, option, setting, zero_or_one
from modules.common.errors import ConfigError
from modules.model.clip import CLIP
from modules.model.features import TextFeatures, VideoFeatures
from modules.model.losses import symmetric_infonce
from modules.model.similarity import LEVELS, LevelHead, TextSide, VideoSide
from modules.model.temporal import SIM_HEADERS, build_temporal
from modules.model.token_selection import PATCH_SCORERS, hard_topk, perturbed_topk, seeded_noise, select_patches
from modules.model.token_shift import apply_token_shift

EVAL_TOPK = ("perturbed", "hard")
HALF_TYPES = (torch.float16, torch.bfloat16)


@contextmanager
def _fp32(device: torch.device):
    """Run the heads in full precision, as the published code did (it cast CLIP's outputs with ``.float()``):
    the tau = 0.01 softmaxes amplify rounding errors of bf16/fp16 a hundredfold."""
    with torch.autocast(device_type=device.type, enabled=False):
        yield


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.dtype in HALF_TYPES else t


@dataclass
class ModelConfig:
    """The model's own settings; every number of the method is a named field. JSON-serialisable via ``asdict``.

    ``TRAINED`` settings shape the weights or what they learnt: evaluating with other values is refused. The rest are
    choices of how to run a trained model."""
    max_words: int = setting(32, "L: caption tokens; sizes the word ISA matrices (published 32); from --max_words")
    max_frames: int = setting(12, "F: frames per video; sizes the frame ISA matrix and the shift's frame groups")
    sim_header: str = option("seqTransf", "temporal module of the video level: seqTransf (transformer) or meanP",
                             choices=SIM_HEADERS)
    temporal_layers: int = option(4, "depth of the seqTransf module, initialised from CLIP's first text layers",
                                  flag="cross_num_hidden_layers")
    patch_scorer: str = option("video", "patch scorer: video (first release: 1024-in, video context) or frame (later "
                               "release, TS2-Net style)", choices=PATCH_SCORERS)
    topk: int = option(3, "K: patches selected per frame (each frame gives 1 + K tokens)")
    topk_samples: int = setting(500, "noise samples of the perturbed top-K (published)")
    topk_sigma: float = setting(0.05, "noise scale of the perturbed top-K (published)")
    isa_tau: float = setting(0.01, "temperature of both ISA softmaxes (published)")
    shift_layers: tuple[int, ...] = option((-2, -1), "ViT blocks with the temporal token shift, comma-separated "
                                           "(negative: from the end; empty: none)", parse=int_list)
    shift_div: int = setting(7, "shifted positions are every tokens // shift_div (7 for 50 tokens, published)")
    shift_offset: int = setting(3, "positions read from frame t+1 start at 1 + shift_offset (published)")
    mask_padding: bool = option(True, "1: padded words and frames are masked out of ISA; 0: the published behaviour",
                                parse=zero_or_one, metavar="{0,1}")
    eval_topk: str = option("perturbed", "patch selection at evaluation: perturbed (fixed-seed noise) or hard top-K",
                            choices=EVAL_TOPK)
    eval_noise_seed: int = setting(0, "seed of the one eval noise tensor shared by every video")
    score_block_bytes: int = setting(32 << 20, "memory budget of one patch-word block when scoring many pairs")
    scorer_init_std: float = setting(0.02, "std of the scorer's Linear weights (the published init_weights range)")
    temporal_ln_eps: float = setting(1e-12, "LayerNorm eps of the temporal transformer (CLIP4Clip's)")

    def __post_init__(self):
        self.shift_layers = tuple(int(layer) for layer in self.shift_layers)
        checks = [
            (self.sim_header in SIM_HEADERS, f"--sim_header {self.sim_header!r}: choose from {', '.join(SIM_HEADERS)}"),
            (self.patch_scorer in PATCH_SCORERS,
             f"--patch_scorer {self.patch_scorer!r}: choose from {', '.join(PATCH_SCORERS)}"),
            (self.eval_topk in EVAL_TOPK, f"--eval_topk {self.eval_topk!r}: choose from {', '.join(EVAL_TOPK)}"),
            (self.max_words >= 2, f"--max_words {self.max_words}: needs at least the start and end token"),
            (self.max_frames >= 1, f"--max_frames {self.max_frames}: needs at least one frame"),
            (self.topk >= 1 and self.topk_samples >= 1, "--topk and the number of top-K samples must be positive"),
            (self.topk_sigma > 0 and self.isa_tau > 0, "the top-K sigma and the ISA temperature must be positive"),
            (self.score_block_bytes > 0, "the scoring block budget must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)



# Settings a checkpoint was trained with; an evaluation that contradicts one of them is refused.
TRAINED = ("max_words", "max_frames", "sim_header", "temporal_layers", "patch_scorer", "topk", "topk_samples",
           "topk_sigma", "isa_tau", "shift_layers", "shift_div", "shift_offset", "mask_padding", "scorer_init_std",
           "temporal_ln_eps")


@dataclass
class Explanation:
    """The inside of one caption-video score (``UCoFiA.explain``). With ``mask_padding`` every weight vector is a
    distribution over the real frames, words or tokens (0 at padding)."""
    levels: dict[str, torch.Tensor]  # per-level logit (scalar), as ``similarity_levels`` gives for the pair
    selection: torch.Tensor          # [F, K, P] top-K selection weights: slot k of frame f over its P patches
    frame_weights: torch.Tensor      # [F] frame-sentence ISA weights over the frames for this sentence
    token_weights: torch.Tensor      # [F, 1+K] patch-word ISA weights over the visual tokens (class token, K patches)
    word_weights: torch.Tensor       # [L] patch-word ISA weights over the words
    frame_mask: torch.Tensor         # [F] bool, real frames
    word_mask: torch.Tensor          # [L] bool, real tokens (start to end token)


class UCoFiA(nn.Module):
    """The UCoFiA model around a CLIP backbone (kept as ``self.clip``).

    Everything after the CLIP towers (temporal module, scorer, top-K, levels) runs in fp32 even under autocast.

    Args:
        clip: the backbone; token shift is installed in its ViT blocks ``config.shift_layers``.
        config: ``ModelConfig``.
    """

    level_names = LEVELS  # the keys of ``similarity_levels``; evaluation scores whatever levels a model names

    def __init__(self, clip: CLIP, config: ModelConfig):
        super().__init__()
        cfg = clip.config
        self.config = config
        self.n_patches = cfg.grid_size ** 2
        if config.topk > self.n_patches:
            raise ConfigError(f"--topk {config.topk} exceeds the {self.n_patches} patches of a frame")
        if config.max_words > cfg.context_length:
            raise ConfigError(f"--max_words {config.max_words} exceeds CLIP's context of {cfg.context_length}")
        self.clip = clip
        try:
            self.shifted_layers = apply_token_shift(clip, config.shift_layers, config.max_frames, config.shift_div,
                                                    config.shift_offset)
        except ValueError as e:
            raise ConfigError(f"--shift_layers: {e}") from None
        self.temporal = build_temporal(config.sim_header, clip, config.temporal_layers, config.max_frames,
                                       config.temporal_ln_eps)
        self.patch_scorer = PATCH_SCORERS[config.patch_scorer](cfg.embed_dim)
        for module in self.patch_scorer.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=config.scorer_init_std)
        self.levels = LevelHead(cfg.embed_dim, config.max_words, config.max_frames, 1 + config.topk, config.isa_tau,
                                config.mask_padding, config.score_block_bytes)

    @property
    def tokens_per_video(self) -> int:
        return self.config.max_frames * (1 + self.config.topk)

    def encode_text(self, text_ids: torch.Tensor, text_mask: torch.Tensor) -> TextFeatures:
        """Captions -> ``TextFeatures``.

        Args:
            text_ids: [N, max_words] token ids (``modules.tokenizer.tokenize``).
            text_mask: [N, max_words], True/1 from the start to the end token (``modules.tokenizer.text_mask``).
        """
        length = self.config.max_words
        if text_ids.dim() != 2 or text_ids.shape[1] != length or tuple(text_mask.shape) != tuple(text_ids.shape):
            raise ValueError(f"encode_text: expected ids and mask of shape [N, {length}], "
                             f"got {tuple(text_ids.shape)} and {tuple(text_mask.shape)}")
        mask = text_mask.to(torch.bool)
        if not bool(mask.any(dim=1).all()):
            raise ValueError("encode_text: a caption's mask has no real token")
        sentence, words = self.clip.encode_text(text_ids, return_tokens=True)   # [N, D], [N, L, D]
        return TextFeatures(_full(sentence), _full(words), mask)

    def encode_video(self, video: torch.Tensor, video_mask: torch.Tensor,
                     noise_seeds: Optional[torch.Tensor] = None) -> VideoFeatures:
        """Videos -> ``VideoFeatures``.

        Args:
            video: [B, max_frames, 3, R, R] normalised frames; padded frames anywhere, marked in ``video_mask``.
            video_mask: [B, max_frames], True/1 for real frames; every video needs one.
            noise_seeds: [B] ints, training only: video b's top-K noise comes from a generator seeded with
                ``noise_seeds[b]``, so it does not depend on the batch or the number of processes. None draws from
                the global RNG. Ignored in eval mode, where selection follows ``config.eval_topk``.
        """
        return self._encode_video(video, video_mask, noise_seeds)[0]

    def _encode_video(self, video: torch.Tensor, video_mask: torch.Tensor,
                      noise_seeds: Optional[torch.Tensor]) -> tuple[VideoFeatures, torch.Tensor]:
        """``encode_video``, and the top-K selection weights [B, F, K, P] it used (for ``explain``)."""
        cfg, res = self.config, self.clip.config.image_resolution
        if video.dim() != 5 or tuple(video.shape[1:]) != (cfg.max_frames, 3, res, res):
            raise ValueError(f"encode_video: expected video of shape [B, {cfg.max_frames}, 3, {res}, {res}], "
                             f"got {tuple(video.shape)}")
        b = video.shape[0]
        if tuple(video_mask.shape) != (b, cfg.max_frames):
            raise ValueError(f"encode_video: expected video_mask of shape [{b}, {cfg.max_frames}], "
                             f"got {tuple(video_mask.shape)}")
        if noise_seeds is not None and tuple(noise_seeds.shape) != (b,):
            raise ValueError(f"encode_video: expected one noise seed per video ([{b}]), got {tuple(noise_seeds.shape)}")
        mask = video_mask.to(torch.bool)
        if not bool(mask.any(dim=1).all()):
            raise ValueError("encode_video: a video's mask has no real frame")
        padding_mask = mask if cfg.mask_padding else None
        _, tokens = self.clip.encode_image(video.reshape(b * cfg.max_frames, 3, res, res), return_tokens=True,
                                           frame_mask=padding_mask)              # [B F, 1+P, D]
        with _fp32(tokens.device):
            tokens = _full(tokens).view(b, cfg.max_frames, *tokens.shape[1:])  # [B, F, 1+P, D]
            frames = tokens[:, :, 0].contiguous()                                # [B, F, D]
            frames_temporal = frames if self.temporal is None else self.temporal(frames, mask)
            scores = self.patch_scorer(tokens, padding_mask)                     # [B, F, P]
            indicators = self._topk_indicators(scores, noise_seeds)              # [B, F, K, P]
            selected = select_patches(tokens, indicators)                        # [B, F, 1+K, D]
        features = VideoFeatures(frames, frames_temporal, mask, selected.reshape(b, self.tokens_per_video, -1))
        return features, indicators

    def _topk_indicators(self, scores: torch.Tensor, noise_seeds: Optional[torch.Tensor]) -> torch.Tensor:
        """Scores [B, F, P] -> selection weights [B, F, K, P]."""
        cfg = self.config
        b, n_frames, patches = scores.shape
        shape = (n_frames, cfg.topk_samples, patches)
        if not self.training:
            if cfg.eval_topk == "hard":
                return hard_topk(scores, cfg.topk)
            generator = torch.Generator().manual_seed(cfg.eval_noise_seed)
            noise = torch.randn(shape, generator=generator).to(scores.device)[None]  # [1, F, S, P]: every video
        elif noise_seeds is not None:
            noise = seeded_noise(noise_seeds, shape, scores.device)             # [B, F, S, P]
        else:
            noise = torch.randn(b, *shape, device=scores.device)               # [B, F, S, P]
        return perturbed_topk(scores, noise, cfg.topk, cfg.topk_sigma)

    def prepare_text(self, text: TextFeatures) -> TextSide:
        """The per-text work of the levels (normalisation, projections), in fp32; reusable across many
        ``similarity_levels`` calls."""
        if text.words.shape[1] != self.config.max_words:
            raise ValueError(f"similarity: features of another configuration (captions of {text.words.shape[1]} "
                             f"words; this model has {self.config.max_words})")
        with _fp32(text.sentence.device):
            return self.levels.prepare_text(_full(text.sentence), _full(text.words), text.word_mask)

    def prepare_video(self, video: VideoFeatures) -> VideoSide:
        """The per-video work of the levels (masked mean, normalisation, projections), in fp32; reusable."""
        if video.frames.shape[1] != self.config.max_frames or video.tokens.shape[1] != self.tokens_per_video:
            raise ValueError(f"similarity: features of another configuration (videos of {video.frames.shape[1]} "
                             f"frames and {video.tokens.shape[1]} tokens; this model has {self.config.max_frames} "
                             f"and {self.tokens_per_video})")
        with _fp32(video.frames.device):
            return self.levels.prepare_video(_full(video.frames), _full(video.frames_temporal), video.frame_mask,
                                             _full(video.tokens))

    def similarity_levels(self, text: TextFeatures | TextSide, video: VideoFeatures | VideoSide,
                          levels: Sequence[str] = LEVELS) -> dict[str, torch.Tensor]:
        """Logits [Nt, Nv] of each level (``video_sentence``, ``frame_sentence``, ``patch_word``), scored in blocks
        of ``config.score_block_bytes``; per-text and per-video work is done once. ``levels`` picks a subset.

        ``text`` / ``video`` may be features or what ``prepare_text`` / ``prepare_video`` returned for them, so that
        a bank scored chunk by chunk against one gallery prepares the gallery once.
        """
        text_side = text if isinstance(text, TextSide) else self.prepare_text(text)
        video_side = video if isinstance(video, VideoSide) else self.prepare_video(video)
        with _fp32(text_side.sentence.device):
            return self.levels(text_side, video_side, _full(self.clip.logit_scale).exp(), levels)

    def _sides(self, text: TextFeatures, video: VideoFeatures) -> tuple[TextSide, VideoSide]:
        """The per-text and per-video work of the levels, in fp32."""
        return self.prepare_text(text), self.prepare_video(video)

    @torch.no_grad()
    def explain(self, text_ids: torch.Tensor, text_mask: torch.Tensor, video: torch.Tensor,
                video_mask: torch.Tensor) -> Explanation:
        """What the score of one caption and one video is made of, for pictures (``scripts/visualize.py``).

        Runs the forward pass's own encoders, patch selection and levels; call it in eval mode to get the eval-time
        selection (``config.eval_topk``).

        Args:
            text_ids, text_mask: [1, max_words], as for ``encode_text``.
            video, video_mask: [1, max_frames, 3, R, R] and [1, max_frames], as for ``encode_video``.
        Returns:
            ``Explanation`` of the pair (no batch dimension).
        """
        if text_ids.shape[0] != 1 or video.shape[0] != 1:
            raise ValueError(f"explain: one caption and one video expected, got {text_ids.shape[0]} and "
                             f"{video.shape[0]}")
        text = self.encode_text(text_ids, text_mask)
        features, selection = self._encode_video(video, video_mask, None)
        with _fp32(features.frames.device):
            text_side, video_side = self._sides(text, features)
            out = self.levels.explain(text_side, video_side, _full(self.clip.logit_scale).exp())
        n_frames = self.config.max_frames
        return Explanation(levels={name: out[name][0, 0] for name in LEVELS}, selection=selection[0],
                           frame_weights=out["frame_weights"][0, 0],
                           token_weights=out["token_weights"][0, 0].view(n_frames, 1 + self.config.topk),
                           word_weights=out["word_weights"][0, 0], frame_mask=features.frame_mask[0],
                           word_mask=text.word_mask[0])

    def forward(self, text_ids: torch.Tensor, text_mask: torch.Tensor, video: torch.Tensor, video_mask: torch.Tensor,
                noise_seeds: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Encode a batch of pairs and return this process's share of the global-batch contrastive loss
        (``modules.losses.symmetric_infonce``: backward on it; its mean over processes is the global loss).

        Going through ``forward`` lets DistributedDataParallel see the whole step.
        """
        text = self.encode_text(text_ids, text_mask)
        video_features = self.encode_video(video, video_mask, noise_seeds)
        return symmetric_infonce(self.similarity_levels, text, video_features)
