"""``--datatype`` names -> dataset readers, and the rule for datasets without a validation split."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from modules.common.errors import ConfigError
from modules.data import activitynet, didemo, msrvtt, msvd, vatex
from modules.data.base import RetrievalSplit
from modules.data.config import DataConfig

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: its reader and whether it has a validation split of its own."""
    build: Callable[[DataConfig, str], RetrievalSplit]
    has_val: bool
    description: str


DATASETS: dict[str, DatasetEntry] = {
    "msrvtt": DatasetEntry(msrvtt.build, False, "MSR-VTT 9k/7k train, JSFusion 1k-A test (also the synthetic set)"),
    "msvd": DatasetEntry(msvd.build, True, "MSVD train/val/test lists, several captions per video"),
    "activity": DatasetEntry(activitynet.build, False, "ActivityNet Captions paragraph-to-video, val_1 as test"),
    "didemo": DatasetEntry(didemo.build, True, "DiDeMo paragraph-to-video"),
    "vatex": DatasetEntry(vatex.build, False, "VATEX (TS2-Net split), several captions per video"),
}


def dataset_entry(datatype: str) -> DatasetEntry:
    """The registered dataset of ``--datatype``, or a one-line error listing the valid names."""
    if datatype not in DATASETS:
        raise ConfigError(f"unknown --datatype {datatype!r}; valid: {', '.join(DATASETS)}")
    return DATASETS[datatype]


def has_val_split(datatype: str) -> bool:
    """Whether the dataset has a validation split distinct from its test split."""
    return dataset_entry(datatype).has_val


def build_split(cfg: DataConfig, split: str) -> RetrievalSplit:
    """Read one split of ``cfg.datatype``.

    Args:
        cfg: data configuration.
        split: "train", "val" or "test". For a dataset without a validation split, "val" returns the test split
            with ``is_test_fallback = True`` so results can be labelled as test numbers.
    Returns:
        RetrievalSplit.
    """
    entry = dataset_entry(cfg.datatype)
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if split == "val" and not entry.has_val:
        dataset = entry.build(cfg, "test")
        dataset.is_test_fallback = True
        return dataset
    return entry.build(cfg, split)
