"""Feature containers passed from the encoders to the similarity levels, the loss and evaluation."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, Sequence, TypeVar

import torch

F_ = TypeVar("F_", bound="_Features")


class _Features:
    """Row-wise operations shared by the feature dataclasses (every field is a tensor with one row per item)."""

    def map(self: F_, fn: Callable[[torch.Tensor], torch.Tensor]) -> F_:
        return type(self)(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def __len__(self) -> int:
        return getattr(self, fields(self)[0].name).shape[0]

    def __getitem__(self: F_, rows) -> F_:
        """Rows by slice, index tensor or list; an int keeps the row dimension."""
        if isinstance(rows, int):
            rows = slice(rows, rows + 1) if rows != -1 else slice(-1, None)
        return self.map(lambda t: t[rows])

    def to(self: F_, *args, **kwargs) -> F_:
        return self.map(lambda t: t.to(*args, **kwargs))

    def detach(self: F_) -> F_:
        return self.map(torch.Tensor.detach)

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls: type[F_], tensors: dict[str, torch.Tensor]) -> F_:
        return cls(**{f.name: tensors[f.name] for f in fields(cls)})

    @classmethod
    def cat(cls: type[F_], parts: Sequence[F_]) -> F_:
        return cls(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(cls)})


@dataclass
class TextFeatures(_Features):
    """Raw projected text features: sentence [Nt, D] (end token), words [Nt, L, D], word_mask [Nt, L] (bool)."""
    sentence: torch.Tensor
    words: torch.Tensor
    word_mask: torch.Tensor


@dataclass
class VideoFeatures(_Features):
    """Raw projected video features: frames [Nv, F, D] (class tokens), frames_temporal [Nv, F, D],
    frame_mask [Nv, F] (bool), tokens [Nv, F (1+K), D] (per frame: class token, then K selected patches)."""
    frames: torch.Tensor
    frames_temporal: torch.Tensor
    frame_mask: torch.Tensor
    tokens: torch.Tensor
