"""Learning to rank from clicks: the second stage as a learned model. Chapter 09.

A :class:`LinearRanker` scores each ANN candidate from a few features (:func:`ranking_features`: the
ANN score, its gap to the best, the ANN rank, how many of the best matches share the candidate's
type and colour, price, stock) and plugs into the re-ranker (``RerankConfig(model=...)``). It is
trained on a simulated click log: shoppers see the ANN top 10 and click by chapter 07's
position-biased click model. Rank 1 is looked at more often than rank 8, so a model fitted to raw
clicks learns that a high rank is itself attractive; **inverse-propensity weighting** (IPW) divides
each click by the probability that its rank was examined, so the fit estimates how attractive an
item is once seen (Joachims et al., "Unbiased Learning-to-Rank with Biased Feedback", WSDM 2017;
Saito et al., "Unbiased Recommender Learning from Missing-Not-At-Random Implicit Feedback", WSDM
2020).

This module holds the model, its features and its fitting; it never imports the online path.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

import numpy as np
import pandas as pd

from .catalog import Catalog
from .errors import InvalidRequestError

FEATURES = (
    "score",
    "gap",
    "log_rank",
    "type_vote",
    "colour_vote",
    "centrality",
    "log_price",
    "in_stock",
)
VOTE_TOP = 10  # votes and centrality look at the ANN top 10 of the list
VOTE_TEMPERATURE = 0.02  # softmax temperature over those 10 scores: the best matches vote most


# --------------------------------------------------------------------------- features
def ranking_features(
    catalog: Catalog,
    ids: Sequence[str],
    scores: np.ndarray,
    vectors: np.ndarray,
    names: Sequence[str] = FEATURES,
    temperature: float = VOTE_TEMPERATURE,
) -> np.ndarray:
    """Features of one candidate list in ANN order, best first: ``(n, len(names))``.

    ``score`` the ANN cosine; ``gap`` its distance below the best; ``log_rank`` log(1 + ANN rank, 0
    for the top); ``type_vote`` / ``colour_vote`` the share of the ANN top 10 with the candidate's
    type / colour, each weighted by ``softmax(score / temperature)`` so the best matches count most;
    ``centrality`` the same weighted mean of the candidate's cosine to the top 10; ``log_price``
    log(1 + price) (NaN when unknown: the model reads it as average); ``in_stock`` 1 or 0.
    Chapter 09."""
    ids = list(ids)
    s = np.asarray(scores, dtype=np.float64)
    v = np.asarray(vectors, dtype=np.float32)
    if s.ndim != 1 or v.ndim != 2 or not (len(ids) == len(s) == len(v)) or not ids:
        raise InvalidRequestError(
            f"need n ids, n scores and n vectors (n ≥ 1), not {len(ids)}, {s.shape}, {v.shape}"
        )
    products = [catalog[i] for i in ids]
    attrs = {
        "type": np.array([p.type for p in products]),
        "colour": np.array([p.colour for p in products]),
    }
    price = np.array([p.price for p in products], dtype=np.float64)
    stock = np.array([p.in_stock for p in products], dtype=np.float64)
    top = min(VOTE_TOP, len(ids))
    cos_top = (v @ v[:top].T).astype(np.float64)
    return _features(
        s[None],
        cos_top[None],
        {a: x[None] for a, x in attrs.items()},
        price[None],
        stock[None],
        names,
        temperature,
    )[0]


def _features(
    s: np.ndarray,
    cos_top: np.ndarray,
    attrs: Mapping[str, np.ndarray],
    price: np.ndarray,
    stock: np.ndarray,
    names: Sequence[str],
    temperature: float,
) -> np.ndarray:
    """:func:`ranking_features` of ``(q, n)`` lists at once; ``cos_top`` is ``(q, n, top)``."""
    unknown = [n for n in names if n not in FEATURES]
    if unknown or not names:
        raise InvalidRequestError(
            f"ranking features must be some of {list(FEATURES)}, not {list(names)}"
        )
    if not temperature > 0:
        raise InvalidRequestError(f"temperature must be > 0, not {temperature}")
    top = cos_top.shape[2]
    w = np.exp((s[:, :top] - s[:, :1]) / temperature)
    w /= w.sum(axis=1, keepdims=True)

    def vote(a: np.ndarray) -> np.ndarray:
        return ((a[:, :, None] == a[:, None, :top]) * w[:, None, :]).sum(axis=2)

    columns = {
        "score": lambda: s,
        "gap": lambda: s - s[:, :1],
        "log_rank": lambda: np.broadcast_to(np.log1p(np.arange(s.shape[1])), s.shape),
        "type_vote": lambda: vote(attrs["type"]),
        "colour_vote": lambda: vote(attrs["colour"]),
        "centrality": lambda: (cos_top * w[:, None, :]).sum(axis=2),
        "log_price": lambda: np.log1p(price),
        "in_stock": lambda: stock,
    }
    return np.stack([columns[n]() for n in names], axis=-1).astype(np.float64)


# --------------------------------------------------------------------------- the model
def model_json(model) -> str:
    """A linear model's parameters (every dataclass field) as JSON, no pickle: what
    :class:`LinearRanker` and :class:`~image_search.rejection.Rejector` save. Chapter 09."""
    return json.dumps({f: getattr(model, f) for f in model.__dataclass_fields__}, indent=1)


def linear_fields(d: Mapping) -> tuple:
    """``features, weights, bias, mean, scale`` read back from :func:`model_json`'s dict."""
    return (
        tuple(d["features"]),
        tuple(map(float, d["weights"])),
        float(d["bias"]),
        tuple(map(float, d["mean"])),
        tuple(map(float, d["scale"])),
    )


@dataclass(frozen=True)
class LinearRanker:
    """A logistic model of P(click | the item was seen): ``relevance = sigmoid(bias + sum(weights *
    (features - mean) / scale))`` over :func:`ranking_features` ``features`` (computed at
    ``temperature``). An unknown feature value (NaN) counts as the mean. Fit it with
    :func:`fit_ranker`; use it with ``RerankConfig(model=...)``. Chapter 09."""

    features: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    temperature: float = VOTE_TEMPERATURE
    name: str = ""

    def __post_init__(self) -> None:
        n = len(self.features)
        if not n or any(f not in FEATURES for f in self.features):
            raise InvalidRequestError(
                f"ranker features must be some of {list(FEATURES)}, not {list(self.features)}"
            )
        if not (len(self.weights) == len(self.mean) == len(self.scale) == n):
            raise InvalidRequestError(
                f"a ranker needs one weight, mean and scale per feature ({n})"
            )
        values = (*self.weights, *self.mean, *self.scale, self.bias, self.temperature)
        if (
            not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
            or min(self.scale) <= 0
            or self.temperature <= 0
        ):
            raise InvalidRequestError(
                "ranker parameters must be finite numbers, with positive scales and temperature"
            )

    def logits(self, features: np.ndarray) -> np.ndarray:
        """``(..., len(features))`` feature rows -> log-odds of a click once seen."""
        x = np.asarray(features, dtype=np.float64)
        if x.shape[-1:] != (len(self.features),):
            raise InvalidRequestError(
                f"expected {len(self.features)} features per row, not shape {x.shape}"
            )
        z = np.nan_to_num((x - np.asarray(self.mean)) / np.asarray(self.scale), nan=0.0)
        return self.bias + z @ np.asarray(self.weights)

    def relevance(self, features: np.ndarray) -> np.ndarray:
        """Estimated P(click | seen), in (0, 1): the re-ranker's score."""
        return _sigmoid(self.logits(features))

    def score_candidates(
        self, catalog: Catalog, ids: Sequence[str], scores: np.ndarray, vectors: np.ndarray
    ) -> np.ndarray:
        """:meth:`relevance` of one ANN candidate list (as :meth:`Reranker.rerank` receives it)."""
        return self.relevance(
            ranking_features(catalog, ids, scores, vectors, self.features, self.temperature)
        )

    def table(self) -> pd.DataFrame:
        """The weights per feature (on standardised features, so they compare)."""
        return pd.DataFrame({"feature": self.features, "weight": self.weights}).set_index("feature")

    def to_json(self) -> str:
        """The parameters as JSON (no pickle): :meth:`from_json` reads them back."""
        return model_json(self)

    @classmethod
    def from_json(cls, text: str) -> "LinearRanker":
        try:
            d = json.loads(text)
            return cls(
                *linear_fields(d),
                float(d.get("temperature", VOTE_TEMPERATURE)),
                str(d.get("name", "")),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidRequestError(f"not a ranker's JSON: {e}") from None


def _sigmoid(s: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * np.asarray(s, dtype=np.float64)))


def fit_logistic(
    x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None, l2: float = 1e-3
) -> np.ndarray:
    """Weighted logistic regression with soft labels ``y`` (any real numbers: an inverse-propensity
    label may exceed 1) and an L2 penalty on the coefficients (not the intercept), by L-BFGS.
    Returns the coefficients followed by the intercept. Chapters 09 and 10."""
    from scipy.optimize import minimize

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    if x.ndim != 2 or y.shape != (len(x),) or w.shape != y.shape or not len(x):
        raise InvalidRequestError(
            f"need features (n, d) with n labels and n weights, not {x.shape}, {y.shape}, {w.shape}"
        )
    if (
        not (np.isfinite(x).all() and np.isfinite(y).all() and np.isfinite(w).all())
        or (w < 0).any()
    ):
        raise InvalidRequestError("features, labels and weights must be finite, and weights ≥ 0")
    a = np.hstack([x, np.ones((len(x), 1))])
    total = float(w.sum()) or 1.0
    penalty = np.r_[np.full(x.shape[1], l2), 0.0]

    def loss(coef: np.ndarray) -> tuple[float, np.ndarray]:
        s = a @ coef
        value = (
            w @ (y * np.logaddexp(0, -s) + (1 - y) * np.logaddexp(0, s)) / total + penalty @ coef**2
        )
        grad = a.T @ (w * (_sigmoid(s) - y)) / total + 2 * penalty * coef
        return float(value), grad

    return minimize(loss, np.zeros(a.shape[1]), jac=True, method="L-BFGS-B").x


class ExaminationModel(Protocol):
    """What IPW needs from a click model: P(examine rank r) for r = 1..k (chapter 07's models)."""

    def examination(self, k: int) -> np.ndarray: ...


def ipw_weights(
    ranks: np.ndarray, click_model: ExaminationModel, clip: float | None = None
) -> np.ndarray:
    """Inverse-propensity weights of clicks at 1-based ``ranks``: ``1 / P(examine rank)``, at most
    ``clip`` when given (clipping trades a little bias for less variance). Chapter 09."""
    r = np.asarray(ranks)
    if not np.issubdtype(r.dtype, np.integer) or (r.size and r.min() < 1):
        raise InvalidRequestError("ranks must be integers ≥ 1")
    propensity = np.asarray(
        click_model.examination(int(r.max()) if r.size else 1), dtype=np.float64
    )
    if not (propensity > 0).all():
        raise InvalidRequestError("every shown rank needs an examination probability > 0")
    w = 1.0 / propensity[r - 1]
    return np.minimum(w, clip) if clip is not None else w


def fit_linear_ranker(
    features: np.ndarray,
    clicks: np.ndarray,
    impressions: np.ndarray,
    ranks: np.ndarray | None = None,
    click_model: ExaminationModel | None = None,
    names: Sequence[str] = FEATURES,
    temperature: float = VOTE_TEMPERATURE,
    l2: float = 1e-4,
    clip: float | None = None,
    name: str = "",
) -> LinearRanker:
    """Fit a :class:`LinearRanker` to logged impressions: per row, the item's ``features``, how
    often it was shown (``impressions``) and clicked (``clicks``), and the 1-based rank it was shown
    at.

    Without ``click_model`` (naive) the label is the click rate ``clicks / impressions``: it mixes
    how attractive the item is with how often its rank is seen. With ``click_model`` each click is
    weighted by :func:`ipw_weights` of its rank, so the label ``clicks / impressions / P(examine
    rank)`` estimates P(click | seen) without bias, and the model learns attractiveness alone.
    Rows are weighted by impressions. Chapter 09."""
    x = np.asarray(features, dtype=np.float64)
    c, n = np.asarray(clicks, dtype=np.float64), np.asarray(impressions, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(names) or c.shape != (len(x),) or n.shape != c.shape:
        raise InvalidRequestError(
            f"need features (n, {len(names)}) and n clicks and impressions, "
            f"not {x.shape}, {c.shape}, {n.shape}"
        )
    if (n <= 0).any() or (c < 0).any() or (c > n).any():
        raise InvalidRequestError("impressions must be > 0 and clicks between 0 and impressions")
    y = c / n
    if click_model is not None:
        if ranks is None:
            raise InvalidRequestError(
                "inverse-propensity weighting needs the rank each row was shown at"
            )
        y = y * ipw_weights(np.asarray(ranks), click_model, clip)
    mean = np.nanmean(x, axis=0)
    scale = np.nanstd(x, axis=0)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    z = np.nan_to_num((x - mean) / scale, nan=0.0)
    coef = fit_logistic(z, y, n, l2)
    return LinearRanker(
        tuple(names),
        tuple(map(float, coef[:-1])),
        float(coef[-1]),
        tuple(map(float, mean)),
        tuple(map(float, scale)),
        float(temperature),
        name,
    )


# ------------------------------------------------------------------ candidate lists and a click log
@dataclass(frozen=True, eq=False)
class CandidateLists:
    """The ANN candidates of many queries, in ANN order: per query ``q`` the product it shows
    (``true_ids[q]``), the index ``rows[q]`` of its candidates with their ``scores``, their
    ``features`` (``(q, n, len(names))`` at ``temperature``) and relevance ``grades`` (2 the exact
    product, 1 another of its type, 0 other). Chapter 09."""

    true_ids: tuple[str, ...]
    rows: np.ndarray
    scores: np.ndarray
    features: np.ndarray
    grades: np.ndarray
    index_ids: tuple[str, ...]
    index_vectors: np.ndarray
    type_of: Mapping[str, str]
    names: tuple[str, ...] = FEATURES
    temperature: float = VOTE_TEMPERATURE

    def __len__(self) -> int:
        return len(self.true_ids)

    def candidates(self, q: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Query ``q``'s candidate ids, ANN scores and vectors: what ``Reranker.rerank`` takes."""
        rows = self.rows[q]
        return [self.index_ids[r] for r in rows], self.scores[q], self.index_vectors[rows]

    def ids(self, q: int) -> list[str]:
        return [self.index_ids[r] for r in self.rows[q]]


def candidate_lists(
    catalog: Catalog,
    query_embeddings: np.ndarray,
    true_ids: Sequence[str],
    index_embeddings: np.ndarray,
    index_ids: Sequence[str],
    n: int = 50,
    names: Sequence[str] = FEATURES,
    temperature: float = VOTE_TEMPERATURE,
) -> CandidateLists:
    """The exact top ``n`` of each query against an index (as a Flat ANN index returns them), with
    :func:`ranking_features` and type-graded relevance. Chapter 09."""
    from .experiments import relevance_grades
    from .features import top_k

    q = np.asarray(query_embeddings, dtype=np.float32)
    x = np.asarray(index_embeddings, dtype=np.float32)
    if len(q) != len(true_ids) or len(x) != len(index_ids) or not len(q):
        raise InvalidRequestError(
            f"{len(q)} queries for {len(true_ids)} true ids, {len(x)} index rows for "
            f"{len(index_ids)} ids"
        )
    index_ids = tuple(index_ids)
    rows = top_k(q, x, n)
    scores = np.take_along_axis(q @ x.T, rows, axis=1).astype(np.float64)
    top = min(VOTE_TOP, rows.shape[1])
    gram = x @ x.T
    cos_top = np.take_along_axis(gram[rows], rows[:, None, :top], axis=2).astype(np.float64)
    products = [catalog[i] for i in index_ids]
    attrs = {
        "type": np.array([p.type for p in products])[rows],
        "colour": np.array([p.colour for p in products])[rows],
    }
    price = np.array([p.price for p in products], dtype=np.float64)[rows]
    stock = np.array([p.in_stock for p in products], dtype=np.float64)[rows]
    feats = _features(scores, cos_top, attrs, price, stock, names, temperature)
    type_of = {p.id: p.type for p in products}
    for t in true_ids:
        type_of.setdefault(t, catalog[t].type)
    grades = relevance_grades(
        [[index_ids[r] for r in row] for row in rows], list(true_ids), type_of, k=rows.shape[1]
    )
    return CandidateLists(
        tuple(true_ids),
        rows,
        scores,
        feats,
        grades,
        index_ids,
        x,
        type_of,
        tuple(names),
        temperature,
    )


class GradedClicks(ExaminationModel, Protocol):
    """What the simulation needs from a click model (chapter 07's ``GradedClickModel``)."""

    def sample_users(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]: ...
    def click_probabilities(
        self,
        grades: np.ndarray,
        propensity: np.ndarray | None = None,
        eta: np.ndarray | None = None,
    ) -> np.ndarray: ...


@dataclass(frozen=True, eq=False)
class ClickLog:
    """What a search log holds after ``sessions`` searches per query, each showing the ANN top ``k``
    of :class:`CandidateLists`: ``clicks[q, r]`` clicks at rank ``r + 1``. Chapter 09."""

    k: int
    sessions: int
    clicks: np.ndarray

    @property
    def ranks(self) -> np.ndarray:
        """The 1-based rank of each logged ``(query, slot)``, shaped like ``clicks``."""
        return np.broadcast_to(np.arange(1, self.k + 1), self.clicks.shape)


def simulate_click_log(
    lists: CandidateLists, click_model: GradedClicks, sessions: int = 20, k: int = 10, seed: int = 0
) -> ClickLog:
    """``sessions`` simulated searches per query of ``lists``, each showing the ANN top ``k`` (the
    logging ranker) to a shopper drawn from ``click_model.sample_users`` who clicks with
    ``click_model.click_probabilities`` of the relevance grades. Seeded. Chapter 09."""
    if sessions < 1 or not 1 <= k <= lists.rows.shape[1]:
        raise InvalidRequestError(
            f"need sessions ≥ 1 and 1 ≤ k ≤ {lists.rows.shape[1]}, not {sessions} and {k}"
        )
    rng = np.random.default_rng(seed)
    grades = np.repeat(lists.grades[:, :k], sessions, axis=0)
    mult, eta = click_model.sample_users(len(grades), rng)
    clicked = rng.random(grades.shape) < click_model.click_probabilities(grades, mult, eta)
    return ClickLog(k, sessions, clicked.reshape(len(lists), sessions, k).sum(axis=1))


def fit_ranker(
    lists: CandidateLists,
    log: ClickLog,
    click_model: ExaminationModel | None = None,
    l2: float = 1e-4,
    clip: float | None = None,
    name: str = "",
) -> LinearRanker:
    """Fit a :class:`LinearRanker` on the shown slots of a click log: naive without ``click_model``,
    inverse-propensity weighted with it (see :func:`fit_linear_ranker`). Chapter 09."""
    k = log.k
    x = lists.features[:, :k].reshape(-1, lists.features.shape[-1])
    return fit_linear_ranker(
        x,
        log.clicks.reshape(-1),
        np.full(x.shape[0], log.sessions),
        log.ranks.reshape(-1),
        click_model,
        lists.names,
        lists.temperature,
        l2,
        clip,
        name,
    )


# -------------------------------------------------------------------------- comparing second stages
class Reranks(Protocol):
    def rerank(self, ids: Sequence[str], scores: np.ndarray, vectors: np.ndarray, k: int): ...


def rerank_lists(reranker: Reranks, lists: CandidateLists, k: int = 10) -> list[tuple[str, ...]]:
    """Each query's top ``k`` after ``reranker.rerank`` (a
    :class:`~image_search.reranker.Reranker`). BLAS runs on one thread meanwhile: the re-ranker's
    products of 50 vectors are too small to share, and on busy cores waking threads for each made
    this loop 15 times slower."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return [tuple(reranker.rerank(*lists.candidates(q), k).ids) for q in range(len(lists))]


def compare_rankings(
    lists: CandidateLists,
    rankings: Mapping[str, Sequence[Sequence[str]]],
    click_model: GradedClicks,
    sessions: int = 20,
    seed: int = 1,
    reference: str | None = None,
    k: int = 10,
) -> pd.DataFrame:
    """One row per named ranking of the queries of ``lists``: graded ``NDCG@10`` (2 exact, 1 same
    type), exact-product ``R@1``, ``clicks/session`` and ``CTR@1`` (share of sessions with a click
    on the first result) from ``sessions`` simulated sessions per query (seeded, the same shoppers
    and random numbers for every ranking), and ``diversity`` (mean intra-list diversity of the top
    k). With ``reference``, the NDCG difference to it with a 95% bootstrap interval over products.
    Chapter 09."""
    from .experiments import relevance_grades
    from .metrics import bootstrap_ci, intra_list_diversity, type_ndcg

    truth = list(lists.true_ids)
    pos = {pid: i for i, pid in enumerate(lists.index_ids)}
    per_query, rows = {}, []
    for name, ranked in rankings.items():
        ranked = [list(r)[:k] for r in ranked]
        if len(ranked) != len(truth):
            raise InvalidRequestError(
                f"ranking {name!r} has {len(ranked)} lists for {len(truth)} queries"
            )
        ndcg = np.array([type_ndcg([r], [t], lists.type_of, k) for r, t in zip(ranked, truth)])
        grades = relevance_grades(ranked, truth, lists.type_of, k=k)
        rng = np.random.default_rng(seed)
        g = np.repeat(grades, sessions, axis=0)
        mult, eta = click_model.sample_users(len(g), rng)
        clicks = rng.random(g.shape) < click_model.click_probabilities(g, mult, eta)
        per_query[name] = ndcg
        rows.append(
            {
                "ranking": name,
                "NDCG@10": ndcg.mean(),
                "R@1": float(np.mean([bool(r) and r[0] == t for r, t in zip(ranked, truth)])),
                "clicks/session": clicks.sum(axis=1).mean(),
                "CTR@1": clicks[:, 0].mean(),
                "diversity": float(
                    np.mean(
                        [
                            intra_list_diversity(lists.index_vectors[[pos[i] for i in r]])
                            for r in ranked
                        ]
                    )
                ),
            }
        )
    table = pd.DataFrame(rows).set_index("ranking")
    if reference is not None:
        ci = {
            name: bootstrap_ci(v - per_query[reference], groups=truth, seed=0)
            for name, v in per_query.items()
        }
        table[f"ΔNDCG vs {reference}"] = [ci[n].mean for n in table.index]
        table["Δ low"] = [ci[n].low for n in table.index]
        table["Δ high"] = [ci[n].high for n in table.index]
    return table


@dataclass(frozen=True, eq=False)
class LtrExperiment:
    """Learning to rank on the catalog: candidate lists of the ``train`` products' customer photos
    (the click log ``log`` comes from them) and of the ``test`` products' ones, and the two rankers
    fitted on the log: ``naive`` (raw clicks) and ``ipw`` (inverse-propensity weighted).
    Chapter 09."""

    train: CandidateLists
    test: CandidateLists
    log: ClickLog
    click_model: GradedClicks
    naive: LinearRanker
    ipw: LinearRanker


def ltr_experiment(
    catalog: Catalog,
    encoder,
    click_model: GradedClicks | None = None,
    candidates: int = 50,
    k: int = 10,
    sessions: int = 20,
    temperature: float = VOTE_TEMPERATURE,
    seed: int = 0,
) -> LtrExperiment:
    """Index every product's shop photo (icon) with ``encoder`` (cached embeddings; exact search),
    take the top ``candidates`` of every customer photo, simulate ``sessions`` searches per train
    photo shown the ANN top ``k`` under ``click_model`` (default: chapter 07's
    ``GradedClickModel()``, position bias 1/rank), and fit the naive and the IPW ranker. Seeded;
    seconds. Chapter 09."""
    from .embeddings import encode_paths
    from .experiments import GradedClickModel

    click_model = click_model or GradedClickModel()
    index = encode_paths(encoder, [catalog.icon_path(i) for i in catalog.ids], progress=False)
    lists = {}
    for split in ("train", "test"):
        paths, truth = catalog.queries(split)
        lists[split] = candidate_lists(
            catalog,
            encode_paths(encoder, paths, progress=False),
            truth,
            index,
            catalog.ids,
            candidates,
            temperature=temperature,
        )
    log = simulate_click_log(lists["train"], click_model, sessions, k, seed)
    return LtrExperiment(
        lists["train"],
        lists["test"],
        log,
        click_model,
        fit_ranker(lists["train"], log, name="naive (clicks)"),
        fit_ranker(lists["train"], log, click_model, name="IPW"),
    )


__all__ = [
    "FEATURES",
    "VOTE_TOP",
    "VOTE_TEMPERATURE",
    "ranking_features",
    "model_json",
    "linear_fields",
    "LinearRanker",
    "fit_logistic",
    "ipw_weights",
    "fit_linear_ranker",
    "CandidateLists",
    "candidate_lists",
    "ClickLog",
    "simulate_click_log",
    "fit_ranker",
    "rerank_lists",
    "compare_rankings",
    "LtrExperiment",
    "ltr_experiment",
]
