"""Ranking metrics and an evaluation harness. Chapter 01 defines them; chapter 07 adds intervals.

Every metric takes one ranked list of ids and the set of relevant ids (or, for the ``mean_*``
forms, one of each per query). Gains for NDCG may be graded via a ``{id: gain}`` mapping.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Mapping, Sequence

import numpy as np



def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")


def recall_at_k(ranked: Sequence[Hashable], relevant, k: int) -> float:
    """Share of the relevant items found in the top ``k`` (0 when nothing is relevant)."""
    _check_k(k)
    relevant = set(relevant)
    return len(set(ranked[:k]) & relevant) / len(relevant) if relevant else 0.0


def hit_at_k(ranked: Sequence[Hashable], relevant, k: int) -> float:
    """1 if any relevant item is in the top ``k`` (for one relevant item this is recall@k)."""
    _check_k(k)
    return float(bool(set(ranked[:k]) & set(relevant)))


def precision_at_k(ranked: Sequence[Hashable], relevant, k: int) -> float:
    """Share of the top ``k`` slots holding a relevant item (a short list counts empty slots as misses)."""
    _check_k(k)
    relevant = set(relevant)
    return sum(1 for r in ranked[:k] if r in relevant) / k


def average_precision(ranked: Sequence[Hashable], relevant, k: int | None = None) -> float:
    """Mean of precision@i over the ranks i of the relevant items found (divided by all relevant)."""
    relevant = set(relevant)
    if not relevant:
        return 0.0
    hits, total = 0, 0.0
    for i, r in enumerate(ranked[:k] if k else ranked, start=1):
        if r in relevant:
            hits += 1
            total += hits / i
    return total / (min(len(relevant), k) if k else len(relevant))


def reciprocal_rank(ranked: Sequence[Hashable], relevant, k: int | None = None) -> float:
    """1 / rank of the first relevant item (0 if none in the top ``k``)."""
    relevant = set(relevant)
    for i, r in enumerate(ranked[:k] if k else ranked, start=1):
        if r in relevant:
            return 1.0 / i
    return 0.0


def ndcg_at_k(ranked: Sequence[Hashable], relevant, k: int) -> float:
    """Normalised discounted cumulative gain with gains ``2**rel - 1`` and ``log2(rank + 1)`` discounts.

    ``relevant`` is a set (gain 1 each) or a mapping id -> graded relevance.
    """
    _check_k(k)
    gains = dict(relevant) if isinstance(relevant, Mapping) else {r: 1.0 for r in relevant}
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = sum((2 ** gains.get(r, 0.0) - 1) * d for r, d in zip(ranked[:k], discounts))
    ideal = sorted(gains.values(), reverse=True)[:k]
    idcg = sum((2 ** g - 1) * d for g, d in zip(ideal, discounts))
    return float(dcg / idcg) if idcg > 0 else 0.0


def _mean(fn: Callable, rankings, relevants, *args) -> float:
    if len(rankings) != len(relevants):
        raise ValueError(f"{len(rankings)} rankings for {len(relevants)} relevance sets")
    return float(np.mean([fn(r, rel, *args) for r, rel in zip(rankings, relevants)])) if rankings else 0.0


def mean_recall_at_k(rankings, relevants, k: int) -> float:
    return _mean(recall_at_k, rankings, relevants, k)


def mean_precision_at_k(rankings, relevants, k: int) -> float:
    return _mean(precision_at_k, rankings, relevants, k)


def mean_average_precision(rankings, relevants, k: int | None = None) -> float:
    """mAP: the mean of :func:`average_precision` over queries."""
    return _mean(average_precision, rankings, relevants, k)


def mean_reciprocal_rank(rankings, relevants, k: int | None = None) -> float:
    """MRR: the mean of :func:`reciprocal_rank` over queries."""
    return _mean(reciprocal_rank, rankings, relevants, k)


def mean_ndcg_at_k(rankings, relevants, k: int) -> float:
    return _mean(ndcg_at_k, rankings, relevants, k)


@dataclass(frozen=True)
class Interval:
    """A point estimate with a bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    level: float

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap_ci(values: Sequence[float], n_resamples: int = 2000, level: float = 0.95, seed: int = 0,
                 groups: Sequence[Hashable] | None = None) -> Interval:
    """Percentile bootstrap interval of the mean of per-query ``values``. Chapter 07.

    With ``groups`` (e.g. the product each query photo shows) whole groups are resampled, so
    correlated queries of one product do not narrow the interval falsely.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), not {level}")
    rng = np.random.default_rng(seed)
    if groups is None:
        means = v[rng.integers(0, len(v), (n_resamples, len(v)))].mean(axis=1)
    else:
        keys, inverse = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
        sums, counts = np.bincount(inverse, v), np.bincount(inverse)
        pick = rng.integers(0, len(keys), (n_resamples, len(keys)))
        means = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    alpha = (1 - level) / 2
    return Interval(float(v.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha)), level)


@dataclass(frozen=True)
class RetrievalReport:
    """Exact-product retrieval quality of a set of queries (each shows one known product)."""

    n_queries: int
    recall: dict[int, float]              # exact-product recall@k (= hit rate, one relevant item)
    mrr: float
    category_precision: dict[int, float]  # share of the top k in the query product's category

    def __str__(self) -> str:
        parts = [f"R@{k}={v:.3f}" for k, v in self.recall.items()] + [f"MRR={self.mrr:.3f}"]
        parts += [f"catP@{k}={v:.3f}" for k, v in self.category_precision.items()]
        return f"{self.n_queries} queries: " + " ".join(parts)


def retrieval_report(rankings: Sequence[Sequence[str]], true_ids: Sequence[str],
                     category_of: Mapping[str, str] | None = None, ks: Sequence[int] = (1, 5, 10)) -> RetrievalReport:
    """Exact-product recall@k, MRR and (with ``category_of``) category precision@k. Chapter 09."""
    relevants = [{t} for t in true_ids]
    recall = {k: mean_recall_at_k(rankings, relevants, k) for k in ks}
    cat = {}
    if category_of is not None:
        for k in ks:
            cat[k] = float(np.mean([precision_at_k([category_of[r] for r in ranked], {category_of[t]}, k)
                                    for ranked, t in zip(rankings, true_ids)]))
    return RetrievalReport(len(true_ids), recall, mean_reciprocal_rank(rankings, relevants), cat)
