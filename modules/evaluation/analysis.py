"""What an evaluation's saved matrices say beyond its metrics: per-query ranks and top-K lists, R@K curves and hubness,
raw and with SK-norm (read by ``scripts/report.py``).

Inputs are the files ``eval_t2v`` / ``eval_v2t --save_sims`` write: ``results_<d>.json``, ``config_<d>.json``,
``sims_<d>_items.json`` and per level ``sims_<d>_test_<level>.npy`` [Nt, Nv] and ``sims_<d>_bank_<level>.npy``. The
SK-norm scores are rebuilt with the evaluation's own functions, so the ranks here give back the results file's numbers
(``SavedAnalysis.check``).

Queries and gallery follow the metrics: text-to-video ranks videos for each caption; video-to-text ranks caption sets
for each video, a set scored by its best caption (with one caption per video, plain captions).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from modules.common.errors import DataError
from modules.evaluation.encoding import add_bias, combine, sk_biases
from modules.evaluation.metrics import group_max, ranks_of, summarize

KINDS = ("raw", "sk_norm")


@dataclass
class SavedRun:
    """One direction's saved evaluation."""
    direction: str
    results: dict
    config: dict
    items: dict                          # captions, caption_to_video, video_ids, video_paths, windows
    levels: dict[str, torch.Tensor]      # per level [Nt, Nv] raw logits
    bank: dict[str, torch.Tensor]        # per level bank x gallery logits


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable ({e})") from None


def load_saved(run_dir: str, direction: str) -> Optional[SavedRun]:
    """The saved matrices of ``direction`` in ``run_dir``, or None when the run has no ``--save_sims`` output for it.

    Raises:
        DataError: a file of the set is missing or unreadable.
    """
    results_path = os.path.join(run_dir, f"results_{direction}.json")
    items_path = os.path.join(run_dir, f"sims_{direction}_items.json")
    if not os.path.isfile(results_path) or not os.path.isfile(items_path):
        return None
    results = _read_json(results_path)
    config_path = os.path.join(run_dir, f"config_{direction}.json")
    config = _read_json(config_path) if os.path.isfile(config_path) else {}
    levels, bank = {}, {}
    for name in results["levels"]:
        for part, into in (("test", levels), ("bank", bank)):
            path = os.path.join(run_dir, f"sims_{direction}_{part}_{name}.npy")
            if not os.path.isfile(path):
                raise DataError(f"{path}: missing; run the evaluation again with --save_sims")
            into[name] = torch.from_numpy(np.load(path)).float()
    return SavedRun(direction, results, config, _read_json(items_path), levels, bank)


def query_gallery(sim: torch.Tensor, caption_to_video: torch.Tensor, direction: str) -> torch.Tensor:
    """Caption x video scores [Nt, Nv] as the metrics rank them: [Nt, Nv] (text-to-video) or [Nv, Nv sets]
    (video-to-text, each caption set scored by its best caption)."""
    return sim if direction == "t2v" else group_max(sim, caption_to_video, sim.shape[1])


def recall_curve(ranks: torch.Tensor, n_gallery: int) -> np.ndarray:
    """R@K in percent for K = 1 .. n_gallery from 0-based ranks [Nq]."""
    counts = np.bincount(ranks.cpu().numpy(), minlength=n_gallery)[:n_gallery]
    return np.cumsum(counts) / max(1, ranks.numel()) * 100.0


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [Nq, k] of each query's k best gallery items, best first (ties: lower index first)."""
    return torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]


def k_occurrence(scores: torch.Tensor, k: int) -> torch.Tensor:
    """N_k [Ng]: in how many queries' top-k lists each gallery item appears (hubs: large; anti-hubs: 0)."""
    return torch.bincount(top_k(scores, k).flatten(), minlength=scores.shape[1])


def hubness_stats(counts: torch.Tensor, k: int) -> dict[str, float]:
    """Summary of N_k: its skewness (the usual hubness measure; 0 for a symmetric spread), its maximum, the gallery
    items in no top-k list, and the share of all top-k slots taken by the most retrieved 5% of the items."""
    x = counts.double()
    std = float(x.std(unbiased=False))
    skew = float(((x - x.mean()) ** 3).mean() / std ** 3) if std > 0 else 0.0
    top = max(1, int(round(0.05 * x.numel())))
    return {"k": k, "skewness": skew, "max": int(x.max()), "never": int((x == 0).sum()),
            "top5pct_share": float(torch.sort(x, descending=True).values[:top].sum() / max(1.0, float(x.sum())) * 100)}


@dataclass
class SavedAnalysis:
    """Query x gallery scores, ranks and the raw per-level scores of one direction."""
    run: SavedRun
    scores: dict[str, torch.Tensor]        # "raw" / "sk_norm": [Nq, Ng]
    ranks: dict[str, torch.Tensor]         # 0-based rank of each query's correct item [Nq]
    level_ranks: dict[str, dict[str, torch.Tensor]]  # level -> "raw" / "sk_norm" -> ranks [Nq] of that level alone
    caption_to_video: torch.Tensor         # [Nt]
    raw_pairs: torch.Tensor                # [Nt, Nv] raw caption x video scores (picks a set's best caption)

    @property
    def n_gallery(self) -> int:
        return self.scores["raw"].shape[1]

    def check(self) -> list[str]:
        """Differences between the metrics of these ranks (overall and per level) and those in the results file
        (empty: they agree)."""
        pairs = [(kind, self.ranks[kind], self.run.results["metrics"][kind]) for kind in KINDS]
        pairs += [(f"{level} {kind}", ranks, self.run.results["levels"][level][kind])
                  for level, by_kind in self.level_ranks.items() for kind, ranks in by_kind.items()
                  if kind in self.run.results["levels"].get(level, {})]
        out = []
        for what, ranks, saved in pairs:
            for name, value in summarize(ranks).items():
                if abs(value - saved[name]) > 1e-6:
                    out.append(f"{what} {name}: matrices give {value:.4f}, results file {saved[name]:.4f}")
        return out

    def best_caption(self, query: int, video: int) -> int:
        """Video-to-text: the caption of set ``video`` that scores highest for query video ``query`` (raw)."""
        captions = torch.nonzero(self.caption_to_video == video).flatten()
        return int(captions[torch.argmax(self.raw_pairs[captions, query])])

    def level_scores(self, query: int, item: int) -> dict[str, float]:
        """Raw per-level logits of one (query, gallery item) pair; video-to-text: of the set's best caption."""
        if self.run.direction == "t2v":
            return {k: float(v[query, item]) for k, v in self.run.levels.items()}
        caption = self.best_caption(query, item)
        return {k: float(v[caption, query]) for k, v in self.run.levels.items()}


def analyse(run: SavedRun) -> SavedAnalysis:
    """Raw and SK-norm query x gallery scores and ranks of a saved evaluation (SK-norm rebuilt from the bank with the
    results file's number of Sinkhorn iterations)."""
    c2v = torch.as_tensor(run.items["caption_to_video"], dtype=torch.long)
    bias = sk_biases(run.bank, int(run.results["sk_bank"]["iterations"]))
    sims = {"raw": combine(run.levels), "sk_norm": combine(run.levels, bias, run.direction)}   # [Nt, Nv]
    scores = {kind: query_gallery(sim, c2v, run.direction) for kind, sim in sims.items()}
    target = c2v if run.direction == "t2v" else torch.arange(scores["raw"].shape[0])
    ranks = {kind: ranks_of(s, target) for kind, s in scores.items()}
    level_ranks = {name: {kind: ranks_of(query_gallery(s, c2v, run.direction), target)
                          for kind, s in (("raw", sim), ("sk_norm", add_bias(sim, bias[name], run.direction)))}
                   for name, sim in run.levels.items()}
    return SavedAnalysis(run, scores, ranks, level_ranks, c2v, sims["raw"])
