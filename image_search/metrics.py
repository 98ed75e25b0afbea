"""Ranking metrics and an evaluation harness. Chapter 01 defines them; chapter 07 adds intervals.

Every metric takes one ranked list of ids and the set of relevant ids (or, for the ``mean_*``
forms, one of each per query). Gains for NDCG may be graded via a ``{id: gain}`` mapping.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
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
    """Share of the top ``k`` slots holding a relevant item (a short list counts empty slots as
    misses)."""
    _check_k(k)
    relevant = set(relevant)
    return sum(1 for r in ranked[:k] if r in relevant) / k


def average_precision(ranked: Sequence[Hashable], relevant, k: int | None = None) -> float:
    """Mean of precision@i over the ranks i of the relevant items found (divided by all
    relevant)."""
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
    """Normalised discounted cumulative gain with gains ``2**rel - 1`` and ``log2(rank + 1)``
    discounts.

    ``relevant`` is a set (gain 1 each) or a mapping id -> graded relevance.
    """
    _check_k(k)
    grades = dict(relevant) if isinstance(relevant, Mapping) else {r: 1.0 for r in relevant}
    return _ndcg(ranked, {r: 2.0**g - 1 for r, g in grades.items()}, k)


def _ndcg(ranked: Sequence[Hashable], gain: Mapping[Hashable, float], k: int) -> float:
    """DCG@k of ``ranked`` with the given gains over the DCG@k of the best possible ranking."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = sum(gain.get(r, 0.0) * d for r, d in zip(ranked[:k], discounts))
    idcg = sum(g * d for g, d in zip(sorted(gain.values(), reverse=True)[:k], discounts))
    return float(dcg / idcg) if idcg > 0 else 0.0


def _mean(fn: Callable, rankings, relevants, *args) -> float:
    if len(rankings) != len(relevants):
        raise ValueError(f"{len(rankings)} rankings for {len(relevants)} relevance sets")
    return (
        float(np.mean([fn(r, rel, *args) for r, rel in zip(rankings, relevants)]))
        if rankings
        else 0.0
    )


def product_recall(rankings, true_ids: Sequence[Hashable], k: int) -> float:
    """Exact-product Recall@k: the share of queries whose true product is among their first ``k``
    results. Per query, ``rankings`` holds a ranked id list (a row of ``ProductIndex.search``'s ids,
    of :func:`~image_search.features.exact_retrieval`'s rankings) or anything with ``.ids`` (a
    ``SearchResults``). The one recall helper the notebooks need. Chapter 01."""
    _check_k(k)
    rankings = [getattr(r, "ids", r) for r in rankings]
    if len(rankings) != len(true_ids):
        raise ValueError(f"{len(rankings)} rankings for {len(true_ids)} true ids")
    if not rankings:
        return 0.0
    return float(np.mean([t in list(r)[:k] for r, t in zip(rankings, true_ids)]))


def overlap_recall(found, exact, k: int) -> float:
    """Recall@k of an approximate search against exact search: per query, the share of the exact
    top ``k`` that the approximate top ``k`` also holds, averaged. Rows may be id lists or arrays;
    on two full ``(n, k)`` arrays it equals FAISS's
    ``faiss.contrib.evaluation.knn_intersection_measure``. Chapter 08."""
    _check_k(k)
    if len(found) != len(exact):
        raise ValueError(f"{len(found)} approximate rows for {len(exact)} exact rows")
    if not len(found):
        return 0.0
    return float(
        np.mean([len(set(list(f)[:k]) & set(list(e)[:k])) / k for f, e in zip(found, exact)])
    )


def intra_list_diversity(vectors: np.ndarray) -> float:
    """1 − the mean pairwise cosine of a result list's (unit) vectors; 0 for fewer than two.
    Chapter 09."""
    v = np.asarray(vectors, dtype=np.float32)
    if len(v) < 2:
        return 0.0
    s = v @ v.T
    return float(1 - s[np.triu_indices(len(v), 1)].mean())


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


def bootstrap_ci(
    values: Sequence[float],
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    groups: Sequence[Hashable] | None = None,
) -> Interval:
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
    return Interval(
        float(v.mean()),
        float(np.quantile(means, alpha)),
        float(np.quantile(means, 1 - alpha)),
        level,
    )


@dataclass(frozen=True)
class RetrievalReport:
    """Retrieval quality of a set of queries, each showing one known product. With product types:
    ``type_precision[k]``, the share of the top k of the query product's type; its
    ``type_precision_ceiling[k]``, the best any ranking could reach (``min(k, products of that type)
    / k``, so small types are judged fairly); and ``ndcg``, graded NDCG@10 (gain 2 for the exact
    product, 1 for another of its type, 0 otherwise)."""

    n_queries: int
    recall: dict[int, float]  # exact-product recall@k (= hit rate, one relevant item)
    mrr: float
    category_precision: dict[int, float]  # share of the top k in the query product's category
    type_precision: dict[int, float] = field(default_factory=dict)
    type_precision_ceiling: dict[int, float] = field(default_factory=dict)
    ndcg: float | None = None

    def __str__(self) -> str:
        parts = [f"R@{k}={v:.3f}" for k, v in self.recall.items()] + [f"MRR={self.mrr:.3f}"]
        parts += [f"catP@{k}={v:.3f}" for k, v in self.category_precision.items()]
        parts += [
            f"typeP@{k}={v:.3f} (ceiling {self.type_precision_ceiling[k]:.3f})"
            for k, v in self.type_precision.items()
        ]
        parts += [f"NDCG@10={self.ndcg:.3f}"] if self.ndcg is not None else []
        return f"{self.n_queries} queries: " + " ".join(parts)


def retrieval_report(
    rankings: Sequence[Sequence[str]],
    true_ids: Sequence[str],
    category_of: Mapping[str, str] | None = None,
    ks: Sequence[int] = (1, 5, 10),
    type_of: Mapping[str, str] | None = None,
) -> RetrievalReport:
    """Exact-product recall@k and MRR; with ``category_of``, category precision@k; with
    ``type_of`` (every indexed product's type), type precision@k, its ceiling and graded NDCG@10.
    Chapter 09."""
    relevants = [{t} for t in true_ids]
    recall = {k: mean_recall_at_k(rankings, relevants, k) for k in ks}
    cat = {}
    if category_of is not None:
        cat = {k: _attribute_precision(rankings, true_ids, category_of, k) for k in ks}
    typ, ceiling, ndcg = {}, {}, None
    if type_of is not None:
        typ = {k: _attribute_precision(rankings, true_ids, type_of, k) for k in ks}
        size = Counter(type_of.values())
        ceiling = {k: float(np.mean([min(k, size[type_of[t]]) / k for t in true_ids])) for k in ks}
        ndcg = type_ndcg(rankings, true_ids, type_of)
    mrr = mean_reciprocal_rank(rankings, relevants)
    return RetrievalReport(len(true_ids), recall, mrr, cat, typ, ceiling, ndcg)


def _attribute_precision(rankings, true_ids, attribute_of: Mapping[str, str], k: int) -> float:
    """Mean share of the top ``k`` (empty slots are misses) with the true product's attribute."""
    if not len(true_ids):
        return 0.0
    return float(
        np.mean(
            [
                precision_at_k([attribute_of.get(r) for r in ranked], {attribute_of[t]}, k)
                for ranked, t in zip(rankings, true_ids)
            ]
        )
    )


def type_ndcg(
    rankings: Sequence[Sequence[str]],
    true_ids: Sequence[str],
    type_of: Mapping[str, str],
    k: int = 10,
) -> float:
    """Mean graded NDCG@k: gain 2 for the exact product, 1 for another product of its type (from
    ``type_of``, which must list every indexed product), 0 otherwise; the ideal ranking puts the
    exact product first, then as many of its type as exist. Chapter 07."""
    _check_k(k)
    members: dict[str, list[str]] = {}
    for pid, t in type_of.items():
        members.setdefault(t, []).append(pid)
    scores = []
    for ranked, true in zip(rankings, true_ids):
        gain = {pid: 1.0 for pid in members[type_of[true]]}
        gain[true] = 2.0
        scores.append(_ndcg(list(ranked), gain, k))
    return float(np.mean(scores)) if scores else 0.0
