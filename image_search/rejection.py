"""Saying "no confident match": a rejector decides from the ANN scores of a query whether the
catalog holds what the photo shows, calibrated on out-of-catalogue queries. Chapter 10.

The out-of-catalogue queries are customer photos of products held out of the index and images of no
product at all (noise, solid colours, gradients, crops of photo backgrounds). The rejector is fitted
on the train products' photos and evaluated on the test products' photos, so its threshold never
sees a test photo. :class:`Rejector` is all the searcher needs at query time: ``reject(scores)``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from .catalog import Catalog
from .embeddings import EmbeddingCache, encode_paths
from .errors import InvalidRequestError
from .ltr import fit_logistic, linear_fields, model_json

FEATURES = ("top1", "margin", "entropy")
NON_PRODUCT_KINDS = ("noise", "solid colour", "gradient", "background")
ENTROPY_TOP = 10  # the entropy feature looks at the top 10 scores
ENTROPY_TEMPERATURE = 0.02  # softmax temperature of those scores (cosines 0.02 apart differ by e)


# ------------------------------------------------------------------------- features of a score list
def score_features(scores: np.ndarray, names: Sequence[str] = FEATURES) -> np.ndarray:
    """Features of ANN score lists, ``(n, k)`` best first (or one list ``(k,)``) ->
    ``(n, len(names))``: ``top1`` the best cosine; ``margin`` the best minus the second; ``entropy``
    the entropy of the softmax of the top 10 scores at temperature 0.02, divided by its maximum (1:
    ten equally good candidates, 0: one stands out). Chapter 10."""
    s = _score_lists(scores, _min_scores(names))
    out = []
    for name in names:
        if name == "top1":
            out.append(s[:, 0])
        elif name == "margin":
            out.append(s[:, 0] - s[:, 1])
        elif name == "entropy":
            top = s[:, :ENTROPY_TOP].astype(np.float64)
            z = (top - top[:, :1]) / ENTROPY_TEMPERATURE
            p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
            out.append(-(p * np.log(np.maximum(p, 1e-300))).sum(axis=1) / math.log(top.shape[1]))
    return np.stack(out, axis=1).astype(np.float64)


def _min_scores(names: Sequence[str]) -> int:
    unknown = [n for n in names if n not in FEATURES]
    if unknown or not names:
        raise InvalidRequestError(
            f"rejection features must be some of {list(FEATURES)}, not {list(names)}"
        )
    return 2 if set(names) & {"margin", "entropy"} else 1


def _score_lists(scores, need: int) -> np.ndarray:
    try:
        s = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidRequestError(f"scores must be numbers, not {type(scores).__name__}") from None
    s = s[None, :] if s.ndim == 1 else s
    if s.ndim != 2 or s.shape[1] < need:
        raise InvalidRequestError(
            f"scores must be a list of at least {need} ANN scores per query, "
            f"not shape {np.shape(scores)}"
        )
    if not np.isfinite(s).all():
        raise InvalidRequestError("scores must be finite numbers")
    if np.any(np.diff(s, axis=1) > 1e-6):
        raise InvalidRequestError("scores must be the ANN scores in rank order, best first")
    return s


# --------------------------------------------------------------------------- the rejector
@dataclass(frozen=True)
class Rejector:
    """Says "no confident match" when a query's confidence is below ``threshold``. The confidence is
    ``bias + sum(weights * (features - mean) / scale)`` of :func:`score_features`; with the single
    feature ``top1``, weight 1, bias 0, mean 0 and scale 1 it is the best cosine itself. Fitted with
    :func:`fit_rejector` for one encoder and query pipeline (``encoder`` names it); give it the ANN
    scores of the query, best first, before any re-ranking. Chapter 10."""

    features: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    threshold: float
    encoder: str = ""

    def __post_init__(self) -> None:
        _min_scores(self.features)
        n = len(self.features)
        if not (len(self.weights) == len(self.mean) == len(self.scale) == n):
            raise InvalidRequestError(
                f"a rejector needs one weight, mean and scale per feature ({n})"
            )
        values = (*self.weights, *self.mean, *self.scale, self.bias, self.threshold)
        if not all(math.isfinite(v) for v in values) or min(self.scale) <= 0:
            raise InvalidRequestError("rejector parameters must be finite, with positive scales")

    @property
    def min_scores(self) -> int:
        """How many ANN scores per query it needs (1 for ``top1`` only, else 2; entropy uses up to
        10)."""
        return _min_scores(self.features)

    def confidence(self, scores: np.ndarray) -> np.ndarray:
        """Confidence that the catalog holds the photo's product: ``(n,)`` for ``(n, k)`` score
        lists."""
        z = (score_features(scores, self.features) - np.asarray(self.mean)) / np.asarray(self.scale)
        return self.bias + z @ np.asarray(self.weights)

    def reject(self, scores: np.ndarray) -> bool | np.ndarray:
        """True when there is no confident match: for one query's ANN scores ``(k,)`` a bool, for
        ``(n, k)`` a bool array."""
        out = self.confidence(scores) < self.threshold
        return bool(out[0]) if np.ndim(scores) == 1 else out

    def reason(self, scores: np.ndarray) -> str | None:
        """``None`` when one query's ANN scores ``(k,)`` hold a confident match, else a one-line
        reason to show the user."""
        conf = float(self.confidence(scores)[0])
        if conf >= self.threshold:
            return None
        what = "best match scores" if self.features == ("top1",) else "confidence"
        return f"no confident match: {what} {conf:.3f}, below the threshold {self.threshold:.3f}"

    def to_json(self) -> str:
        """The parameters as JSON (no pickle): :meth:`from_json` reads them back."""
        return model_json(self)

    @classmethod
    def from_json(cls, text: str) -> "Rejector":
        try:
            d = json.loads(text)
            return cls(
                *linear_fields(d),
                float(d["threshold"]),
                str(d.get("encoder", "")),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidRequestError(f"not a rejector's JSON: {e}") from None


def fit_rejector(
    in_scores: np.ndarray,
    out_scores: np.ndarray,
    features: Sequence[str] = ("top1",),
    max_false_rejection: float = 0.05,
    encoder: str = "",
    l2: float = 1e-3,
) -> Rejector:
    """Fit a rejector on ANN score lists of in-catalogue queries (``in_scores``) and of
    out-of-catalogue ones (``out_scores``), each ``(n, k)`` best first. With one feature ``top1``
    the confidence is the best cosine; with several, a logistic regression (classes weighted
    equally) learns how to combine them. Either way the threshold is then set so that a share
    ``max_false_rejection`` of the in-catalogue queries is rejected: the calibration. Fit it on
    training queries only. Chapter 10."""
    features = tuple(features)
    need = _min_scores(features)
    if not 0 < max_false_rejection < 1:
        raise InvalidRequestError(
            f"max_false_rejection must be in (0, 1), not {max_false_rejection}"
        )
    x_in, x_out = (
        score_features(_score_lists(in_scores, need), features),
        score_features(_score_lists(out_scores, need), features),
    )
    if len(x_in) < 2 or len(x_out) < 2:
        raise InvalidRequestError(
            "fit_rejector needs at least two in-catalogue and two out-of-catalogue queries"
        )
    if features == ("top1",):
        weights, bias, mean, scale = (1.0,), 0.0, (0.0,), (1.0,)
    else:
        x = np.vstack([x_in, x_out])
        mu, sd = x.mean(axis=0), x.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        y = np.r_[np.ones(len(x_in)), np.zeros(len(x_out))]
        w = np.r_[np.full(len(x_in), 0.5 / len(x_in)), np.full(len(x_out), 0.5 / len(x_out))]
        coef = fit_logistic((x - mu) / sd, y, w, l2)
        weights, bias, mean, scale = tuple(coef[:-1]), float(coef[-1]), tuple(mu), tuple(sd)
    r = Rejector(
        features,
        tuple(map(float, weights)),
        bias,
        tuple(map(float, mean)),
        tuple(map(float, scale)),
        0.0,
        encoder,
    )
    threshold = float(np.quantile(r.confidence(in_scores), max_false_rejection))
    return Rejector(r.features, r.weights, r.bias, r.mean, r.scale, threshold, encoder)


# ------------------------------------------------------------------------- out-of-catalogue queries
def non_product_images(
    catalog: Catalog, product_ids: Sequence[str], per_kind: int, seed: int = 0, size: int = 128
) -> tuple[list[Image.Image], list[str]]:
    """``per_kind`` images of each kind in :data:`NON_PRODUCT_KINDS` and their kinds: random noise
    (pixels or coarser blocks), one solid colour, a linear gradient between two colours, and crops
    of the background (where the object mask is empty) of the customer photos of ``product_ids``, at
    most one per photo.
    Seeded: the same arguments give the same images. Chapter 10."""
    if per_kind < 0:
        raise InvalidRequestError(f"per_kind must be ≥ 0, not {per_kind}")
    rng = np.random.default_rng(seed)
    images: list[Image.Image] = []
    for _ in range(per_kind):
        cells = int(rng.choice([size, size // 4, size // 16, size // 32]))
        block = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
        images.append(Image.fromarray(block).resize((size, size), Image.Resampling.NEAREST))
    for _ in range(per_kind):
        images.append(
            Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(0, 256, 3)))
        )
    for _ in range(per_kind):
        a, b = rng.integers(0, 256, (2, 3)).astype(np.float64)
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
        t = xx * np.cos(angle) + yy * np.sin(angle)
        t = (t - t.min()) / (t.max() - t.min())
        images.append(Image.fromarray((a + t[..., None] * (b - a)).round().astype(np.uint8)))
    images += _background_crops(catalog, product_ids, per_kind, rng, size)
    kinds = [k for k in NON_PRODUCT_KINDS for _ in range(per_kind)]
    return images, kinds


def _background_crops(
    catalog: Catalog, product_ids: Sequence[str], n: int, rng: np.random.Generator, size: int
) -> list[Image.Image]:
    """Square crops, a quarter of the photo's side, of customer photos where the object mask is
    empty (objects fill most photos, so larger crops are rarely free), scaled up to ``size``."""
    views = [v for pid in product_ids for v in catalog.view_paths(pid)]
    if n and not views:
        raise InvalidRequestError("background crops need products with customer photos")
    out: list[Image.Image] = []
    for view in (views[int(i)] for i in rng.permutation(len(views))):
        if len(out) == n:
            break
        mask = catalog.object_mask(view)
        side = mask.shape[0] // 4
        inside = np.pad(
            mask.cumsum(axis=0).cumsum(axis=1), ((1, 0), (1, 0))
        )  # object pixels in any box
        count = (
            inside[side:, side:]
            - inside[:-side, side:]
            - inside[side:, :-side]
            + inside[:-side, :-side]
        )
        free = np.argwhere(count == 0)
        if len(free):
            top, left = (int(v) for v in free[int(rng.integers(len(free)))])
            with Image.open(view) as im:
                crop = im.convert("RGB").crop((left, top, left + side, top + side))
            out.append(crop.resize((size, size), Image.Resampling.BICUBIC))
    if len(out) < n:
        raise InvalidRequestError(
            f"found only {len(out)} of {n} customer photos with background free of the object"
        )
    return out


def embed_images(encoder, images: Sequence[Image.Image]) -> np.ndarray:
    """Embeddings of in-memory images, cached on disk like
    :func:`~image_search.encoders.encode_paths` (keyed by a SHA-256 of the pixels). Chapter 10."""
    keys = [
        hashlib.sha256(f"rgb{im.size}".encode() + im.convert("RGB").tobytes()).hexdigest()
        for im in images
    ]
    return EmbeddingCache.of(encoder).fetch(
        keys, lambda missing: encoder.encode_images([images[i] for i in missing])
    )


@dataclass(frozen=True, eq=False)
class RejectionQueries:
    """Queries for fitting or evaluating a rejector: each one's top ``k`` ANN ``scores`` (best
    first), its top-1 product, the product it shows (``""`` for a non-product image) and its
    ``kind``: ``"catalog"`` (its product is indexed), ``"removed product"`` (held out of the index)
    or a kind of :data:`NON_PRODUCT_KINDS`. Chapter 10."""

    scores: np.ndarray
    top_ids: tuple[str, ...]
    true_ids: tuple[str, ...]
    kinds: tuple[str, ...]

    @property
    def in_catalog(self) -> np.ndarray:
        return np.array([k == "catalog" for k in self.kinds])

    def __len__(self) -> int:
        return len(self.kinds)


@dataclass(frozen=True, eq=False)
class RejectionExperiment:
    """Products ``indexed`` and ``removed`` (held out of the index, from both splits alike), and the
    queries to ``fit`` a rejector on (train products, non-product images of one seed, backgrounds of
    train photos) and to ``test`` it on (test products, another seed, test photos). Chapter 10."""

    indexed: tuple[str, ...]
    removed: tuple[str, ...]
    fit: RejectionQueries
    test: RejectionQueries


def rejection_experiment(
    catalog: Catalog,
    encoder,
    removed_share: float = 0.3,
    per_kind: int = 50,
    k: int = 10,
    seed: int = 0,
    query_encoder=None,
) -> RejectionExperiment:
    """Hold ``removed_share`` of each split's products out of the index (seeded), index the shop
    photos (icons) of the rest with ``encoder`` (cached embeddings, exact search), and build the
    fitting queries from the train split and the evaluation queries from the test split: every
    customer photo of the split's products, and ``per_kind`` non-product images of each kind.
    Queries are embedded with ``query_encoder`` when the searcher's query path differs from the
    index's (e.g. it crops first; default: ``encoder``). Chapter 10."""
    query_encoder = query_encoder or encoder
    if not 0 < removed_share < 1:
        raise InvalidRequestError(f"removed_share must be in (0, 1), not {removed_share}")
    rng = np.random.default_rng(seed)
    removed: set[str] = set()
    for split in ("train", "test"):
        ids = [p.id for p in catalog.split(split)]
        removed.update(
            ids[int(i)]
            for i in rng.choice(len(ids), round(removed_share * len(ids)), replace=False)
        )
    indexed = [i for i in catalog.ids if i not in removed]
    index = encode_paths(encoder, [catalog.icon_path(i) for i in indexed], progress=False)

    def queries(split: str, noise_seed: int) -> RejectionQueries:
        products = [p.id for p in catalog.split(split)]
        paths, true = catalog.queries(split)
        images, kinds = non_product_images(catalog, products, per_kind, noise_seed)
        q = np.vstack(
            [
                encode_paths(query_encoder, paths, progress=False),
                embed_images(query_encoder, images),
            ]
        )
        sims = q @ index.T
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return RejectionQueries(
            np.take_along_axis(sims, top, axis=1),
            tuple(indexed[j] for j in top[:, 0]),
            tuple(true) + ("",) * len(images),
            tuple("removed product" if t in removed else "catalog" for t in true) + tuple(kinds),
        )

    return RejectionExperiment(
        tuple(indexed),
        tuple(sorted(removed)),
        queries("train", seed + 1),
        queries("test", seed + 2),
    )


def calibrate_rejector(
    catalog: Catalog,
    encoder,
    max_false_rejection: float = 0.05,
    features: Sequence[str] = ("top1",),
    query_encoder=None,
    per_kind: int = 50,
    seed: int = 0,
) -> Rejector:
    """The rejector a searcher over the whole catalog uses: fitted on the train products' queries of
    :func:`rejection_experiment` (seconds once their embeddings are cached). With every product
    indexed, a query's best score can only be higher than in the experiment, so in-catalogue queries
    like the calibration ones are rejected at most at the ``max_false_rejection`` rate.
    Chapter 10."""
    fit = rejection_experiment(
        catalog, encoder, per_kind=per_kind, seed=seed, query_encoder=query_encoder
    ).fit
    return fit_rejector(
        fit.scores[fit.in_catalog],
        fit.scores[~fit.in_catalog],
        features,
        max_false_rejection,
        getattr(query_encoder or encoder, "name", ""),
    )


# --------------------------------------------------------------------------- how well it rejects
@dataclass(frozen=True)
class RejectionReport:
    """How a rejector does on a set of queries. The positive class is "out of catalogue":
    ``precision`` is the share of rejected queries that were out of catalogue (1 when none is
    rejected), ``recall`` the share of out-of-catalogue queries rejected (also per kind),
    ``false_rejection`` the share of in-catalogue queries wrongly rejected. ``auc``: the chance that
    an in-catalogue query gets a higher confidence than an out-of-catalogue one (threshold-free; 0.5
    is chance), also per kind of out-of-catalogue query (``auc_by_kind``). ``recall_at_1`` is the
    exact-product Recall@1 of all in-catalogue queries, ``accepted_recall_at_1`` of those not
    rejected. Chapter 10."""

    queries: int
    out_of_catalog: int
    threshold: float
    precision: float
    recall: float
    false_rejection: float
    auc: float
    recall_by_kind: Mapping[str, float]
    auc_by_kind: Mapping[str, float]
    recall_at_1: float
    accepted_recall_at_1: float

    def __str__(self) -> str:
        kinds = ", ".join(f"{k} {v:.3f}" for k, v in self.recall_by_kind.items())
        return (
            f"{self.queries} queries ({self.out_of_catalog} out of catalogue): precision "
            f"{self.precision:.3f}, recall {self.recall:.3f} ({kinds}), false rejection "
            f"{self.false_rejection:.3f}, AUC {self.auc:.3f}; R@1 of in-catalogue queries "
            f"{self.recall_at_1:.3f}, of accepted ones {self.accepted_recall_at_1:.3f}"
        )


def evaluate_rejector(rejector: Rejector, queries: RejectionQueries) -> RejectionReport:
    """Precision and recall of the rejection, false rejections, AUC and R@1 before and after.
    Chapter 10."""
    rejected = np.asarray(rejector.reject(queries.scores))
    inside = queries.in_catalog
    if inside.all() or not inside.any():
        raise InvalidRequestError(
            "evaluating a rejector needs both in- and out-of-catalogue queries"
        )
    kinds = np.array(queries.kinds)
    hit = np.array([t == p for t, p in zip(queries.true_ids, queries.top_ids)])
    accepted_in = inside & ~rejected
    conf = rejector.confidence(queries.scores)
    out_kinds = [k for k in dict.fromkeys(queries.kinds) if k != "catalog"]
    return RejectionReport(
        len(queries),
        int((~inside).sum()),
        rejector.threshold,
        float((~inside & rejected).sum() / rejected.sum()) if rejected.any() else 1.0,
        float(rejected[~inside].mean()),
        float(rejected[inside].mean()),
        _auc(conf[inside], conf[~inside]),
        {k: float(rejected[kinds == k].mean()) for k in out_kinds},
        {k: _auc(conf[inside], conf[kinds == k]) for k in out_kinds},
        float(hit[inside].mean()),
        float(hit[accepted_in].mean()) if accepted_in.any() else 0.0,
    )


def _auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counting half (the Mann-Whitney statistic)."""
    from scipy.stats import rankdata

    ranks = rankdata(np.r_[positive, negative])
    return float(
        (ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2)
        / (len(positive) * len(negative))
    )


def rejection_curve(rejector: Rejector, queries: RejectionQueries) -> pd.DataFrame:
    """Every threshold the queries allow, with the ``false_rejection`` (in-catalogue queries
    rejected), ``recall`` and ``precision`` of the rejection there: one row per distinct confidence,
    ascending. Chapter 10."""
    conf = rejector.confidence(queries.scores)
    inside = queries.in_catalog
    thresholds = np.unique(conf)
    # rejected at threshold t: confidence < t
    order_in, order_out = np.sort(conf[inside]), np.sort(conf[~inside])
    fr = np.searchsorted(order_in, thresholds, side="left")
    tp = np.searchsorted(order_out, thresholds, side="left")
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(fr + tp > 0, tp / (fr + tp), 1.0)
    return pd.DataFrame(
        {
            "threshold": thresholds,
            "false_rejection": fr / inside.sum(),
            "recall": tp / (~inside).sum(),
            "precision": precision,
        }
    )


__all__ = [
    "FEATURES",
    "NON_PRODUCT_KINDS",
    "score_features",
    "Rejector",
    "fit_rejector",
    "non_product_images",
    "embed_images",
    "RejectionQueries",
    "RejectionExperiment",
    "rejection_experiment",
    "calibrate_rejector",
    "RejectionReport",
    "evaluate_rejector",
    "rejection_curve",
]
