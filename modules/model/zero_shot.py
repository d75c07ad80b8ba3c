"""Zero-shot CLIP: the baseline of the CLIP4Clip family, plain CLIP with no UCoFiA head and no training.

    text  --CLIP text tower--> sentence (end token) [Nt, D]
    video --CLIP image tower per frame, no token shift--> frames [Nv, F, D]
    score  = CLIP's logit scale x cos(sentence, normalised mean of the normalised real frames)   [Nt, Nv]

One level, ``mean_frames_sentence``. The class speaks the evaluation's model interface (``encode_text``,
``encode_video``, ``prepare_text``, ``prepare_video``, ``similarity_levels``, ``level_names``), so ``eval_t2v`` /
``eval_v2t --zero_shot`` run it through the same protocol, SK-norm and results file as UCoFiA. Features carry no
word or patch tokens (zero-width ``words`` / ``tokens``).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from modules.common.errors import ConfigError
from modules.model.clip import CLIP
from modules.model.features import TextFeatures, VideoFeatures
from modules.model.similarity import mean_pooled

ZERO_SHOT_LEVEL = "mean_frames_sentence"


class ZeroShotCLIP(nn.Module):
    """CLIP scored as the zero-shot video-text baseline.

    Args:
        clip: the backbone, used as it is.
        max_words: caption tokens L (start and end token included).
        max_frames: frames per video F.
    """

    level_names = (ZERO_SHOT_LEVEL,)

    def __init__(self, clip: CLIP, max_words: int, max_frames: int):
        super().__init__()
        if max_words > clip.config.context_length:
            raise ConfigError(f"--max_words {max_words} exceeds CLIP's context of {clip.config.context_length}")
        self.clip = clip
        self.max_words, self.max_frames = max_words, max_frames

    def encode_text(self, text_ids: torch.Tensor, text_mask: torch.Tensor) -> TextFeatures:
        """Token ids and mask [N, L] -> ``TextFeatures`` with the sentence embedding [N, D] and no words [N, 0, D]."""
        sentence = self.clip.encode_text(text_ids).float()                       # [N, D]
        return TextFeatures(sentence, sentence.new_zeros(sentence.shape[0], 0, sentence.shape[1]),
                            text_mask.to(torch.bool))

    def encode_video(self, video: torch.Tensor, video_mask: torch.Tensor) -> VideoFeatures:
        """Frames [B, F, 3, R, R] and mask [B, F] -> ``VideoFeatures`` with per-frame embeddings [B, F, D]."""
        b, n_frames = video.shape[:2]
        frames = self.clip.encode_image(video.flatten(0, 1)).float().view(b, n_frames, -1)  # [B, F, D]
        return VideoFeatures(frames, frames, video_mask.to(torch.bool), frames.new_zeros(b, 0, frames.shape[-1]))

    def prepare_text(self, text: TextFeatures) -> torch.Tensor:
        """Unit sentence vectors [Nt, D]."""
        return F.normalize(text.sentence.float(), dim=-1)

    def prepare_video(self, video: VideoFeatures) -> torch.Tensor:
        """Unit video vectors [Nv, D]: the normalised mean of the normalised real frames."""
        return mean_pooled(video.frames.float(), video.frame_mask)

    def similarity_levels(self, text: TextFeatures | torch.Tensor, video: VideoFeatures | torch.Tensor,
                          levels: Sequence[str] = level_names) -> dict[str, torch.Tensor]:
        """{``mean_frames_sentence``: logits [Nt, Nv]}; ``text`` / ``video`` may be features or prepared vectors."""
        unknown = set(levels) - set(self.level_names)
        if unknown:
            raise ValueError(f"unknown similarity levels {sorted(unknown)}; zero-shot CLIP has {ZERO_SHOT_LEVEL}")
        t = text if isinstance(text, torch.Tensor) else self.prepare_text(text)     # [Nt, D]
        v = video if isinstance(video, torch.Tensor) else self.prepare_video(video)  # [Nv, D]
        return {ZERO_SHOT_LEVEL: self.clip.logit_scale.float().exp() * t @ v.t()}   # [Nt, Nv]
