"""Feature engineering on top of an encoder: exact retrieval scoring, PCA and whitening,
crops and multi-crop embeddings, and weighted concatenation with attributes. Chapter 05.

Chapters 06 and 08 reuse :func:`exact_retrieval` and :class:`Pca`. Offline work: this module never
imports the online path (``searcher``, ``reranker``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence

import numpy as np
from PIL import Image

from .encoders import Encoder, encode_paths, l2_normalize
from .images import ImageLike, load_image
from .metrics import RetrievalReport, retrieval_report


# --------------------------------------------------------------------------- exact retrieval
def _pair(query_embeddings: np.ndarray, index_embeddings: np.ndarray) -> tuple[np.ndarray, ...]:
    q = np.asarray(query_embeddings, dtype=np.float32)
    x = np.asarray(index_embeddings, dtype=np.float32)
    if q.ndim != 2 or x.ndim != 2 or q.shape[1] != x.shape[1]:
        raise ValueError(
            f"query and index embeddings must be 2-D with equal width, not {q.shape} and {x.shape}"
        )
    return q, x


def top_k(query_embeddings: np.ndarray, index_embeddings: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the ``k`` highest inner products per query, best first (ties: lower index
    first)."""
    q, x = _pair(query_embeddings, index_embeddings)
    k = min(int(k), len(x))
    return np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :k]


def best_photo_scores(
    query_embeddings: np.ndarray, index_embeddings: np.ndarray, owners: Sequence[int]
) -> np.ndarray:
    """Each query's score for each product of an index that holds several rows (photos) per
    product: the inner product of its best row. ``owners[j]`` is row j's product number (0 to
    n - 1); returns ``(queries, n)`` float32. Chapter 09."""
    q, x = _pair(query_embeddings, index_embeddings)
    owners = np.asarray(owners, dtype=np.int64)
    if owners.shape != (len(x),):
        raise ValueError(f"{len(owners)} owners for {len(x)} index rows")
    sims = q @ x.T
    best = np.full((len(q), int(owners.max()) + 1 if len(owners) else 0), -np.inf, np.float32)
    for j, o in enumerate(owners):
        np.maximum(best[:, o], sims[:, j], out=best[:, o])
    return best


def exact_retrieval(
    query_embeddings: np.ndarray,
    true_ids: Sequence[Hashable],
    index_embeddings: np.ndarray,
    index_ids: Sequence[Hashable],
    category_of: Mapping[Hashable, str] | None = None,
    ks: Sequence[int] = (1, 5, 10),
    type_of: Mapping[Hashable, str] | None = None,
) -> tuple[RetrievalReport, list[list[Hashable]]]:
    """Exact (brute-force) inner-product search of every query against an index, scored with
    :func:`~image_search.metrics.retrieval_report` (``category_of`` and ``type_of`` as there);
    returns the report and the top-``max(ks)`` rankings. ``index_ids`` names each row's product:
    a product with several rows (photos) scores its best one (:func:`best_photo_scores`). The
    quick way to compare features without building a FAISS index;
    :func:`~image_search.viz.exact_search` gives the same rankings as ``SearchResults`` for a
    result grid. Chapter 05."""
    if len(query_embeddings) != len(true_ids):
        raise ValueError(f"{len(query_embeddings)} queries for {len(true_ids)} true ids")
    if len(index_embeddings) != len(index_ids):
        raise ValueError(f"{len(index_embeddings)} index rows for {len(index_ids)} ids")
    products = list(dict.fromkeys(index_ids))  # in order of first row
    row = {p: n for n, p in enumerate(products)}
    scores = best_photo_scores(query_embeddings, index_embeddings, [row[i] for i in index_ids])
    top = np.argsort(-scores, axis=1, kind="stable")[:, : max(ks)]
    rankings = [[products[j] for j in r] for r in top.tolist()]
    return retrieval_report(rankings, list(true_ids), category_of, ks=ks, type_of=type_of), rankings


# --------------------------------------------------------------------------- PCA and whitening
@dataclass(frozen=True)
class Pca:
    """A fitted PCA projection (optionally whitening). ``apply`` centres, projects, scales and
    L2-normalises, so its output drops into an inner-product index. Fit with :func:`fit_pca`."""

    mean: np.ndarray  # (d,)
    components: np.ndarray  # (dim, d), rows are principal directions
    variances: np.ndarray  # (dim,), variance along each kept direction
    whiten: bool = False
    eps: float = 1e-6

    @property
    def dim(self) -> int:
        return int(self.components.shape[0])

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Project ``(n, d)`` vectors to ``(n, dim)`` unit vectors."""
        z = (np.asarray(x, dtype=np.float32) - self.mean) @ self.components.T
        if self.whiten:
            z = z / np.sqrt(self.variances + self.eps)
        return l2_normalize(z)


def fit_pca(x: np.ndarray, dim: int, whiten: bool = False, eps: float | None = None) -> Pca:
    """Fit a PCA of ``dim`` components on ``x`` (fit it on training data only). With ``whiten``,
    each component is scaled to unit variance; ``eps`` (default: 1e-3 of the top variance)
    keeps tiny, noisy directions from being blown up. Chapter 05."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need a 2-D array of at least two rows, not shape {x.shape}")
    if not 1 <= dim <= min(x.shape):
        raise ValueError(f"dim must be between 1 and {min(x.shape)}, not {dim}")
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    variances = s[:dim] ** 2 / (len(x) - 1)
    vt = vt[:dim] * np.sign(vt[:dim, :1] + 1e-30)  # fix each direction's sign: deterministic output
    eps = float(variances[0] * 1e-3) if eps is None else float(eps)
    return Pca(
        mean.astype(np.float32), vt.astype(np.float32), variances.astype(np.float32), whiten, eps
    )


# --------------------------------------------------------------------------- crops
@dataclass(frozen=True)
class Crop:
    """A square-ish crop: ``scale`` of the image's width and height, centred at (``cx``, ``cy``)
    in fractions of the image (clipped to stay inside). ``Crop(1.0)`` is the full image."""

    scale: float = 1.0
    cx: float = 0.5
    cy: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.scale <= 1:
            raise ValueError(f"crop scale must be in (0, 1], not {self.scale}")

    @property
    def name(self) -> str:
        return f"crop{self.scale:g}@{self.cx:g},{self.cy:g}"

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        w, h = max(1, round(width * self.scale)), max(1, round(height * self.scale))
        left = min(max(0, round(self.cx * width - w / 2)), width - w)
        top = min(max(0, round(self.cy * height - h / 2)), height - h)
        return left, top, left + w, top + h

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if self.scale == 1 else image.crop(self.box(*image.size))


@dataclass
class CropEncoder:
    """An encoder that crops each image first. Its ``name`` includes the crop, so
    :func:`~image_search.encoders.encode_paths` caches each crop's embeddings separately.
    Chapter 05."""

    base: Encoder
    crop: Crop

    @property
    def name(self) -> str:
        return f"{self.base.name}+{self.crop.name}"

    @property
    def dim(self) -> int:
        return self.base.dim

    def encode_images(
        self, images: Sequence[ImageLike], batch_size: int = 32, progress: bool = False
    ) -> np.ndarray:
        return self.base.encode_images(
            [self.crop(load_image(im)) for im in images], batch_size=batch_size, progress=progress
        )


def multi_crop_embeddings(
    encoder: Encoder,
    paths: Sequence,
    crops: Sequence[Crop],
    weights: Sequence[float] | None = None,
    progress: bool = False,
) -> np.ndarray:
    """The (weighted) mean of the embeddings of several crops of each image, re-normalised: a cheap
    test-time augmentation for queries whose product fills only part of the photo. Each crop's
    embeddings are cached on disk. Chapter 05."""
    if not crops:
        raise ValueError("give at least one crop")
    weights = np.ones(len(crops)) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(weights) != len(crops):
        raise ValueError(f"{len(weights)} weights for {len(crops)} crops")
    total = np.zeros((len(paths), encoder.dim), dtype=np.float64)
    for crop, w in zip(crops, weights):
        enc = (
            encoder
            if crop.scale == 1 and crop.cx == 0.5 and crop.cy == 0.5
            else CropEncoder(encoder, crop)
        )
        total += w * encode_paths(enc, paths, progress=progress)
    return l2_normalize(total)


# --------------------------------------------------------------------------- concatenation
def weighted_concat(parts: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
    """Concatenate feature blocks, each L2-normalised and multiplied by its weight, then normalise
    the whole. The inner product of two results is ``sum(w_i**2 * cos_i) / sum(w_i**2)``: a
    weighted vote of the blocks' cosines, so one index serves the combined feature. Chapter 05."""
    if not parts:
        raise ValueError("give at least one (features, weight) pair")
    n = len(parts[0][0])
    if any(len(x) != n for x, _ in parts):
        raise ValueError("all feature blocks need the same number of rows")
    return l2_normalize(np.concatenate([l2_normalize(x) * np.float32(w) for x, w in parts], axis=1))


__all__ = [
    "top_k",
    "best_photo_scores",
    "exact_retrieval",
    "Pca",
    "fit_pca",
    "Crop",
    "CropEncoder",
    "multi_crop_embeddings",
    "weighted_concat",
]
