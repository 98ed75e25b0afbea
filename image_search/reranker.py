"""Second stage: business rules, attribute boosts, near-duplicate removal, MMR diversity, a hook for
personalisation and an optional learned ranker. Chapter 09 introduces it; chapter 13 personalises
it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .catalog import UNSPECIFIED, Catalog
from .errors import InvalidRequestError
from .ltr import LinearRanker


@dataclass(frozen=True)
class RerankConfig:
    """How to re-rank the ANN candidates. Which products may appear at all (stock, price,
    category) is not the re-ranker's business: :class:`~image_search.searcher.Filters` apply
    inside the ANN search, so a filter never empties the candidate list.

    ``boosts`` are ``(attribute, value, weight)`` triples added to the score of matching products,
    e.g. ``("colour", "green", 0.05)``. ``dedupe_threshold`` drops a candidate whose cosine
    similarity to a better one is at least that. ``mmr_lambda`` < 1 trades relevance for
    diversity (1 = relevance only). ``user_weight`` scales the affinity to a user vector.
    ``model``, a :class:`~image_search.ltr.LinearRanker` learned from clicks, replaces the ANN
    score by its estimated click probability before the rest applies (then boosts, MMR's λ and
    the user weight act on that 0–1 scale).

    ``type_weight`` > 0 re-ranks by **type consensus**: each candidate gains ``type_weight`` times
    the share of the top ``type_votes`` candidates that have its product type, each vote weighted
    by ``exp((score - best score) / type_temperature)`` on the ANN cosine (see
    :func:`type_consensus`). The nearest matches, usually led by the exact product, thus decide
    which kind of object the shopper photographed, and products of that kind move up. It trades
    exact-product recall for results of the right kind (chapter 09 measures both).
    """

    boosts: tuple[tuple[str, str, float], ...] = ()
    dedupe_threshold: float | None = None
    mmr_lambda: float | None = None
    user_weight: float = 0.0
    model: LinearRanker | None = None
    type_weight: float = 0.0
    type_votes: int = 10
    type_temperature: float = 0.01

    def __post_init__(self) -> None:
        if self.type_weight < 0 or self.type_votes < 1 or not self.type_temperature > 0:
            raise InvalidRequestError(
                "type_weight must be >= 0, type_votes >= 1 and type_temperature > 0, not "
                f"{self.type_weight}, {self.type_votes}, {self.type_temperature}"
            )
        if self.model is not None and not isinstance(self.model, LinearRanker):
            raise InvalidRequestError(
                f"model must be a LinearRanker, not {type(self.model).__name__}"
            )
        if self.mmr_lambda is not None and not 0.0 <= self.mmr_lambda <= 1.0:
            raise InvalidRequestError(f"mmr_lambda must be in [0, 1], not {self.mmr_lambda}")
        if self.dedupe_threshold is not None and not -1.0 <= self.dedupe_threshold <= 1.0:
            raise InvalidRequestError(
                f"dedupe_threshold must be a cosine in [-1, 1], not {self.dedupe_threshold}"
            )


@dataclass(frozen=True)
class Ranked:
    """A ranked list: product ids and their final scores, best first."""

    ids: tuple[str, ...]
    scores: np.ndarray


class Reranker:
    """Applies a :class:`RerankConfig` to ANN candidates. Chapter 09."""

    def __init__(self, catalog: Catalog, config: RerankConfig = RerankConfig()) -> None:
        self.catalog, self.config = catalog, config

    def rerank(
        self,
        ids: Sequence[str],
        scores: np.ndarray,
        vectors: np.ndarray,
        k: int,
        user_vector: np.ndarray | None = None,
    ) -> Ranked:
        """Re-rank candidates (``ids`` with ANN ``scores`` and stored ``vectors``) down to ``k``."""
        cfg = self.config
        ids = list(ids)
        scores = np.asarray(scores, dtype=np.float32)[: len(ids)]
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(scores) != len(ids) or len(vectors) != len(ids):
            raise InvalidRequestError(
                f"{len(ids)} candidates with {len(scores)} scores and {len(vectors)} vectors"
            )
        base = (
            scores
            if cfg.model is None or not ids
            else cfg.model.score_candidates(self.catalog, ids, scores, vectors).astype(np.float32)
        )
        adjusted = base + attribute_boost(self.catalog, ids, cfg.boosts)
        if cfg.type_weight and ids:
            types = [self.catalog[i].type for i in ids]
            adjusted = adjusted + cfg.type_weight * type_consensus(
                types, scores, cfg.type_votes, cfg.type_temperature
            )
        if user_vector is not None and cfg.user_weight:
            adjusted = adjusted + cfg.user_weight * (
                vectors @ np.asarray(user_vector, dtype=np.float32)
            )
        order = list(np.argsort(-adjusted, kind="stable"))
        if cfg.dedupe_threshold is not None:
            order = [order[j] for j in remove_near_duplicates(vectors[order], cfg.dedupe_threshold)]
        if cfg.mmr_lambda is not None and cfg.mmr_lambda < 1.0:
            order = [order[j] for j in mmr(adjusted[order], vectors[order], k, cfg.mmr_lambda)]
        order = order[:k]
        return Ranked(tuple(ids[i] for i in order), adjusted[order])


def attribute_boost(
    catalog: Catalog, ids: Sequence[str], boosts: Sequence[tuple[str, str, float]]
) -> np.ndarray:
    """Score added to each candidate by the ``(attribute, value, weight)`` boosts it matches."""
    out = np.zeros(len(ids), dtype=np.float32)
    for attribute, value, weight in boosts:
        out += weight * np.array(
            [_matches(getattr(catalog[i], attribute), value) for i in ids], dtype=np.float32
        )
    return out


def type_consensus(
    types: Sequence[str], scores: np.ndarray, votes: int = 10, temperature: float = 0.01
) -> np.ndarray:
    """For each candidate, the weighted share of the ``votes`` best-scoring candidates that have
    its type: the best one's vote weighs 1, another's ``exp((score - best) / temperature)``. A
    candidate of type ``"unspecified"`` (a shop's CSV without types) gets 0. Chapter 09."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(types) != len(scores):
        raise InvalidRequestError(f"{len(types)} types for {len(scores)} scores")
    if not len(scores):
        return np.zeros(0, dtype=np.float32)
    top = np.argsort(-scores, kind="stable")[:votes]
    weights = np.exp((scores[top] - scores[top[0]]) / temperature)
    share: dict[str, float] = {}
    for i, w in zip(top, weights):
        share[types[i]] = share.get(types[i], 0.0) + float(w)
    share.pop(UNSPECIFIED, None)
    total = float(weights.sum())
    return np.array([share.get(t, 0.0) / total for t in types], dtype=np.float32)


def _matches(field, value: str) -> bool:
    return value in field if isinstance(field, tuple) else str(field) == value


def remove_near_duplicates(vectors: np.ndarray, threshold: float) -> list[int]:
    """Indices to keep, in order: each row is dropped if its cosine to a kept earlier row ≥
    threshold."""
    kept: list[int] = []
    for i in range(len(vectors)):
        if not kept or float(np.max(vectors[kept] @ vectors[i])) < threshold:
            kept.append(i)
    return kept


def mmr(scores: np.ndarray, vectors: np.ndarray, k: int, lam: float) -> list[int]:
    """Maximal Marginal Relevance (Carbonell & Goldstein, 1998): greedily pick the candidate that
    maximises ``lam * score - (1 - lam) * max cosine to those already picked``."""
    chosen: list[int] = []
    left = list(range(len(scores)))
    sims = vectors @ vectors.T
    while left and len(chosen) < k:
        penalty = sims[np.ix_(left, chosen)].max(axis=1) if chosen else np.zeros(len(left))
        best = int(np.argmax(lam * scores[left] - (1 - lam) * penalty))
        chosen.append(left.pop(best))
    return chosen
