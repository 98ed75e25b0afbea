"""The online query path: decode → embed → ANN (with filters) → re-rank, timed per stage.

Chapter 02 defines the request/response contract; chapter 09 builds the searcher.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from .catalog import Catalog, Product, load_catalog
from .encoders import DEFAULT_ENCODER, Encoder, encode_paths, load_encoder
from .errors import IndexMismatchError, InvalidImageError, InvalidRequestError
from .images import ImageLike, load_image
from .indexer import ProductIndex
from .localizer import PIPELINE
from .paths import cache_dir, safe_name
from .rejection import Rejector
from .reranker import RerankConfig, Reranker, type_consensus
from .stores import VectorStore, catalog_fingerprint, indexed_photos
from .stores.filters import Attributes, Filters
from .text import DEFAULT_ALPHA, check_text, compose_query

MAX_K = 1000


@dataclass(frozen=True)
class SearchRequest:
    """One query: an image (path, bytes, PIL image or array), a text, both (a composed query: the
    photo changed as the text says, e.g. "in green"), or a precomputed embedding. ``alpha`` weighs
    the text of a composed query (default: the encoder's). Chapter 02."""

    image: ImageLike | None = None
    embedding: np.ndarray | None = None
    k: int = 10
    filters: Filters = field(default_factory=Filters)
    user_vector: np.ndarray | None = None
    crop: tuple[int, int, int, int] | None = (
        None  # (left, top, right, bottom) px of the decoded image
    )
    text: str | None = None
    alpha: float | None = None

    def __post_init__(self) -> None:
        if self.embedding is not None and (self.image is not None or self.text is not None):
            raise InvalidRequestError(
                "give an embedding alone, or an image and/or a text, not both"
            )
        if self.embedding is None and self.image is None and self.text is None:
            raise InvalidRequestError("give an image, a text, both, or an embedding")
        if self.text is not None:
            object.__setattr__(self, "text", check_text(self.text))
        if self.alpha is not None:
            if self.image is None or self.text is None:
                raise InvalidRequestError(
                    "alpha weighs the text of a composed query: give an image and a text"
                )
            compose_query(
                np.ones(1, np.float32), np.ones(1, np.float32), self.alpha
            )  # validates alpha
        if self.crop is not None:
            object.__setattr__(self, "crop", _check_crop(self.crop, self.image is not None))
        if (
            not isinstance(self.k, (int, np.integer))
            or isinstance(self.k, bool)
            or not 1 <= self.k <= MAX_K
        ):
            raise InvalidRequestError(f"k must be an integer from 1 to {MAX_K}, not {self.k!r}")
        if not isinstance(self.filters, Filters):
            raise InvalidRequestError(
                f"filters must be a Filters, not {type(self.filters).__name__}"
            )
        for name in ("embedding", "user_vector"):
            v = getattr(self, name)
            if v is not None:
                arr = _as_float32(v)
                if arr is None or arr.ndim != 1 or arr.size == 0 or not np.isfinite(arr).all():
                    what = f"shape {arr.shape}" if arr is not None else type(v).__name__
                    raise InvalidRequestError(
                        f"{name} must be a finite 1-D vector of numbers, not {what}"
                    )
                if name == "embedding" and not np.any(arr):
                    raise InvalidRequestError(
                        "embedding is all zeros: it has no direction to search in"
                    )
                object.__setattr__(self, name, arr)


def _check_crop(crop, has_image: bool) -> tuple[int, int, int, int]:
    """A region of interest as four integer pixels ``(left, top, right, bottom)``, right/bottom
    exclusive."""
    if not has_image:
        raise InvalidRequestError("crop needs an image; an embedding cannot be cropped")
    if (
        not isinstance(crop, (tuple, list))
        or len(crop) != 4
        or not all(
            isinstance(c, (int, np.integer)) and not isinstance(c, (bool, np.bool_)) for c in crop
        )
    ):
        raise InvalidRequestError(
            f"crop must be four integers (left, top, right, bottom), not {crop!r}"
        )
    left, top, right, bottom = (int(c) for c in crop)
    if left < 0 or top < 0 or right <= left or bottom <= top:
        raise InvalidRequestError(
            f"crop {crop!r} is not a box: need 0 <= left < right and 0 <= top < bottom"
        )
    return left, top, right, bottom


def _as_float32(v) -> np.ndarray | None:
    """``v`` as a float32 array, or ``None`` when it is not numeric (1e300 becomes inf, refused by
    the caller)."""
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            return np.asarray(v, dtype=np.float32)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Timings:
    """Milliseconds spent in each stage of one query."""

    decode_ms: float = 0.0
    embed_ms: float = 0.0
    ann_ms: float = 0.0
    rerank_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        return self.decode_ms + self.embed_ms + self.ann_ms + self.rerank_ms


@dataclass(frozen=True)
class SearchResults:
    """Ranked products for one query, with their scores and the time each stage took.

    ``box`` is the region of the photo that was searched (``left, top, right, bottom`` pixels of
    the decoded image), ``None`` for the whole photo. ``no_match`` says why there are no products
    when the searcher's rejector found no confident match (chapter 10). ``error`` is set only by
    :meth:`Searcher.search_batch` with ``errors="report"``: the image could not be decoded, the
    reason is there and the result has no products. ``candidates`` lists every box a localising
    encoder proposed, best first (``box`` is the first): a photo of two products gives two, and
    the shopper searches another one with ``crop=`` (chapter 05)."""

    ids: tuple[str, ...]
    scores: np.ndarray
    products: tuple[Product, ...]
    timings: Timings
    error: str | None = None
    box: tuple[int, int, int, int] | None = None
    no_match: str | None = None
    candidates: tuple[tuple[int, int, int, int], ...] = ()

    def __len__(self) -> int:
        return len(self.ids)

    def table(self) -> pd.DataFrame:
        """The results as a table: rank, id, name, type, category, price, in stock, score."""
        return pd.DataFrame(
            [
                {
                    "rank": r + 1,
                    "id": p.id,
                    "name": p.name,
                    "type": p.type,
                    "category": p.category,
                    "price": p.price,
                    "in_stock": p.in_stock,
                    "score": round(float(s), 4),
                }
                for r, (p, s) in enumerate(zip(self.products, self.scores))
            ]
        )


class Searcher:
    """Image in, ranked products out. Build one with :meth:`from_catalog`, or over any
    :class:`~image_search.stores.VectorStore` (FAISS, Qdrant, Milvus). Chapter 09."""

    def __init__(
        self,
        index: VectorStore,
        catalog: Catalog,
        encoder: Encoder,
        reranker: Reranker | None = None,
        candidates: int = 50,
        rejector: Rejector | None = None,
    ) -> None:
        if (
            index.encoder not in (encoder.name, index_encoder(encoder).name)
            or index.dim != encoder.dim
        ):
            raise IndexMismatchError(
                f"index was built with {index.encoder} ({index.dim}-d), "
                f"not {encoder.name} ({encoder.dim}-d)"
            )
        if rejector is not None and rejector.encoder not in ("", encoder.name, index.encoder):
            raise InvalidRequestError(
                f"the rejector was calibrated for {rejector.encoder}, not {encoder.name}"
            )
        self.index, self.catalog, self.encoder, self.rejector = index, catalog, encoder, rejector
        if isinstance(index, ProductIndex) and not index.has_attributes:  # filters need them
            ids = index.ids
            index.set_attributes(ids, Attributes.from_catalog(catalog, ids))
        self.reranker = reranker or Reranker(catalog)
        self.candidates = candidates

    @classmethod
    def from_catalog(
        cls,
        encoder: str | Encoder = PIPELINE,
        factory: str = "Flat",
        catalog: Catalog | None = None,
        rerank: RerankConfig = RerankConfig(),
        progress: bool = True,
    ) -> "Searcher":
        """Index every product's shop photos (embeddings cached on disk) and return a searcher.
        The default encoder is the book's best pipeline, ``"product-search"`` (chapters 05 and
        06): the shopper's photo is cropped to the product and embedded by the query tower, the
        shop photos are embedded whole by its catalog encoder (EfficientNet-Lite0)."""
        catalog = catalog or load_catalog()
        enc = load_encoder(encoder) if isinstance(encoder, str) else encoder
        index = build_index(catalog, index_encoder(enc), factory, progress=progress)
        return cls(index, catalog, enc, Reranker(catalog, rerank))

    def search(
        self,
        image: ImageLike | None = None,
        k: int = 10,
        filters: Filters | None = None,
        embedding: np.ndarray | None = None,
        user_vector: np.ndarray | None = None,
        crop: tuple[int, int, int, int] | None = None,
        text: str | None = None,
        alpha: float | None = None,
    ) -> SearchResults:
        """Search with an image (optionally a ``crop`` box of it), a ``text``, both (a composed
        query), or a precomputed embedding. Text needs an encoder with a text tower
        (``minilm-lit``, chapter 06)."""
        return self.run(
            SearchRequest(
                image=image,
                embedding=embedding,
                k=k,
                filters=filters or Filters(),
                user_vector=user_vector,
                crop=crop,
                text=text,
                alpha=alpha,
            )
        )

    def run(self, request: SearchRequest) -> SearchResults:
        """Answer a validated :class:`SearchRequest`."""
        t0 = time.perf_counter()
        box = None
        t1 = t0
        if request.image is not None:
            image = load_image(request.image)
            image, box = self._region(image, request.crop)
            t1 = time.perf_counter()
        query, found, candidates = self._query(
            request, image if request.image is not None else None, box is None
        )
        box = box or found
        if request.user_vector is not None and request.user_vector.shape[0] != self.index.dim:
            raise InvalidRequestError(
                f"user_vector must have {self.index.dim} values, not {request.user_vector.shape[0]}"
            )
        t2 = time.perf_counter()
        request.filters.check(self.catalog)
        scores, ids = self.index.search(
            query[None, :], max(request.k, self.candidates), filters=request.filters
        )
        t3 = time.perf_counter()
        ms = 1000.0
        why = self._no_match(scores[0][: len(ids[0])]) if request.text is None else None
        if why is not None:
            return SearchResults(
                (),
                np.zeros(0, np.float32),
                (),
                Timings((t1 - t0) * ms, (t2 - t1) * ms, (t3 - t2) * ms),
                box=box,
                no_match=why,
                candidates=candidates,
            )
        cand_ids, cand_scores = self._with_voted_type(
            query, ids[0], scores[0][: len(ids[0])], request.filters
        )
        ranked = self.reranker.rerank(
            cand_ids, cand_scores, self.index.vectors(cand_ids), request.k, request.user_vector
        )
        t4 = time.perf_counter()
        return SearchResults(
            ranked.ids,
            ranked.scores,
            tuple(self.catalog[i] for i in ranked.ids),
            Timings((t1 - t0) * ms, (t2 - t1) * ms, (t3 - t2) * ms, (t4 - t3) * ms),
            box=box,
            candidates=candidates,
        )

    def _region(self, image, crop) -> tuple[object, tuple[int, int, int, int] | None]:
        """The part of a decoded photo to search: the caller's ``crop`` box, else the whole
        photo."""
        if crop is None:
            return image, None
        if crop[2] > image.width or crop[3] > image.height:
            raise InvalidRequestError(
                f"crop {crop} reaches outside the decoded {image.width}x{image.height} image"
            )
        return image.crop(crop), crop

    def _query(self, request: SearchRequest, image, locate: bool = True):
        """The query vector of a request (an image's, a text's, both composed, or the embedding
        given), the box of the photo that was embedded when the encoder found the product in it
        (a localising encoder, chapter 05; ``locate=False`` after the caller's own crop: the
        caller's box wins), and every box that encoder proposed."""
        image_vector, box, candidates = (
            self._embed(image, locate) if image is not None else (None, None, ())
        )
        return self._compose(request, image_vector), box, candidates

    def _embed(self, image, locate: bool):
        """One photo's vector and, from a localising encoder (``encode_located``, chapter 05),
        the box it was cropped to (``None`` for the whole photo) and every box it proposed."""
        if not hasattr(self.encoder, "encode_located"):
            return self.encoder.encode_images([image])[0], None, ()
        if not locate:
            return self.encoder.base.encode_images([image])[0], None, ()
        vectors, found = self.encoder.encode_located([image])
        return (vectors[0], *reported_boxes(found[0], image.width, image.height))

    def _compose(self, request: SearchRequest, image_vector: np.ndarray | None) -> np.ndarray:
        """The query of a request from its image vector: the vector itself, a text's, or both."""
        if request.embedding is not None:
            query = request.embedding
            if query.shape[0] != self.index.dim:
                raise InvalidRequestError(
                    f"embedding must have {self.index.dim} values, not {query.shape[0]}"
                )
            query = query / float(
                np.abs(query).max()
            )  # first to [-1, 1]: huge values cannot overflow the norm
            return query / float(np.linalg.norm(query))
        if request.text is None:
            return image_vector
        if getattr(self.encoder, "encode_text_fn", True) is None or not hasattr(
            self.encoder, "encode_texts"
        ):
            raise InvalidRequestError(
                f"the {self.encoder.name} encoder has no text tower: search text with "
                f"the minilm-lit encoder"
            )
        text_vector = self.encoder.encode_texts([request.text])[0]
        if image_vector is None:
            return text_vector
        alpha = (
            request.alpha
            if request.alpha is not None
            else getattr(self.encoder, "alpha", DEFAULT_ALPHA)
        )
        return compose_query(image_vector, text_vector, alpha)

    def _with_voted_type(
        self, query: np.ndarray, ids: Sequence[str], scores: np.ndarray, filters: Filters
    ) -> tuple[list[str], np.ndarray]:
        """The candidates, and with the re-ranker's ``type_weight`` set, the best products of the
        type the best candidates vote for (:func:`~image_search.reranker.type_consensus`), from a
        second ANN search inside the request's filters: the voted kind can then fill the list
        even where few of its products were among the first candidates. Chapter 09."""
        cfg, ids = self.reranker.config, list(ids)
        if not cfg.type_weight or not ids:
            return ids, scores
        types = [self.catalog[i].type for i in ids]
        share = type_consensus(types, scores, cfg.type_votes, cfg.type_temperature)
        if share.max() <= 0:  # no candidate has a type (a shop's CSV without one)
            return ids, scores
        kind = replace(filters, types=(types[int(np.argmax(share))],))
        more_scores, more_ids = self.index.search(query[None, :], len(ids), filters=kind)
        seen = set(ids)
        extra = [(i, sc) for i, sc in zip(more_ids[0], more_scores[0]) if i not in seen]
        return ids + [i for i, _ in extra], np.concatenate(
            [scores, np.array([sc for _, sc in extra], dtype=np.float32)]
        )

    def _no_match(self, ann_scores: np.ndarray) -> str | None:
        """The rejector's reason when a photo's query (an image, or the embedding of one) has no
        confident match (chapter 10), else ``None``. Text queries are never rejected: the rejector
        was calibrated on photos."""
        if self.rejector is None or len(ann_scores) < self.rejector.min_scores:
            return None
        return self.rejector.reason(ann_scores)

    def search_batch(
        self,
        images: Iterable[ImageLike],
        k: int = 10,
        filters: Filters | None = None,
        batch_size: int = 32,
        errors: str = "raise",
    ) -> list[SearchResults]:
        """Search many images, streamed: each chunk of ``batch_size`` images is decoded, embedded
        and searched before the next is read, so memory does not grow with the batch (``images`` may
        be a generator).

        A bad image raises :class:`InvalidImageError` naming its position (``errors="raise"``), or,
        with ``errors="report"``, gets a result with no products and the reason in ``error``, so the
        results stay aligned with the images. Decode and re-rank times are each image's own; embed
        and ANN times are its share of its chunk's. Chapter 09.
        """
        filters = filters or Filters()
        SearchRequest(
            embedding=np.ones(self.index.dim), k=k, filters=filters
        )  # validate k and filters
        if (
            not isinstance(batch_size, (int, np.integer))
            or isinstance(batch_size, bool)
            or batch_size < 1
        ):
            raise InvalidRequestError(f"batch_size must be a positive integer, not {batch_size!r}")
        if errors not in ("raise", "report"):
            raise InvalidRequestError(f'errors must be "raise" or "report", not {errors!r}')
        if (
            isinstance(images, (str, Path, bytes, bytearray))
            or (isinstance(images, np.ndarray) and images.ndim != 4)
            or not hasattr(images, "__iter__")
        ):
            raise InvalidRequestError(
                f"images must be a list or iterable of images, not one {type(images).__name__}"
            )
        filters.check(self.catalog)
        items, out = iter(images), []
        while chunk := list(itertools.islice(items, batch_size)):
            out += self._search_chunk(chunk, len(out), k, filters, batch_size, errors)
            del chunk  # before the next chunk is read
        return out

    def _search_chunk(
        self, chunk: list, start: int, k: int, filters: Filters, batch_size: int, errors: str
    ) -> list[SearchResults]:
        """One chunk of :meth:`search_batch`; its decoded images are released when it returns."""
        decoded, decode_ms, failed = [], [], {}
        for i, item in enumerate(chunk):
            t0 = time.perf_counter()
            try:
                decoded.append(load_image(item))
            except InvalidImageError as e:
                if errors == "raise":
                    raise InvalidImageError(f"batch image {start + i}: {e}") from None
                failed[i] = str(e)
            decode_ms.append((time.perf_counter() - t0) * 1000.0)
        rows, embed_ms, ann_ms, n = iter(()), 0.0, 0.0, len(decoded)
        if n:
            t1 = time.perf_counter()
            queries = self.encoder.encode_images(decoded, batch_size=batch_size)
            del decoded
            t2 = time.perf_counter()
            scores, ids = self.index.search(queries, max(k, self.candidates), filters=filters)
            t3 = time.perf_counter()
            rows, embed_ms, ann_ms = (
                zip(ids, scores, queries),
                (t2 - t1) * 1000.0 / n,
                (t3 - t2) * 1000.0 / n,
            )
        out = []
        for i, ms in enumerate(decode_ms):
            if i in failed:
                out.append(
                    SearchResults((), np.zeros(0, np.float32), (), Timings(ms), error=failed[i])
                )
                continue
            row_ids, row_scores, row_query = next(rows)
            why = self._no_match(row_scores[: len(row_ids)])
            if why is not None:
                out.append(
                    SearchResults(
                        (), np.zeros(0, np.float32), (), Timings(ms, embed_ms, ann_ms), no_match=why
                    )
                )
                continue
            t4 = time.perf_counter()
            row_ids, row_scores = self._with_voted_type(
                row_query, row_ids, row_scores[: len(row_ids)], filters
            )
            r = self.reranker.rerank(row_ids, row_scores, self.index.vectors(row_ids), k)
            products = tuple(self.catalog[p] for p in r.ids)
            out.append(
                SearchResults(
                    r.ids,
                    r.scores,
                    products,
                    Timings(ms, embed_ms, ann_ms, (time.perf_counter() - t4) * 1000.0),
                )
            )
        return out


def reported_boxes(
    found: Sequence, width: int, height: int
) -> tuple[tuple[int, int, int, int] | None, tuple[tuple[int, int, int, int], ...]]:
    """What a response says of a localiser's boxes (best first) in a ``width`` x ``height``
    photo: the box searched (``None`` when it is the whole photo) and the candidates (none when
    the localiser found nothing). Chapter 05."""
    boxes = tuple(tuple(int(v) for v in b.as_tuple()) for b in found)
    if not boxes:
        return None, ()
    whole = (0, 0, width, height)
    return (None if boxes[0] == whole else boxes[0]), (() if boxes == (whole,) else boxes)


def index_encoder(encoder: Encoder) -> Encoder:
    """The encoder that embeds the catalog for ``encoder``'s queries: a localising encoder's
    ``catalog_encoder``, else its ``base`` (shop photos are clean and whole; only the shopper's
    photo is cropped), else the encoder itself. Chapter 05."""
    return getattr(encoder, "catalog_encoder", None) or getattr(encoder, "base", encoder)


def build_index(
    catalog: Catalog,
    encoder: Encoder,
    factory: str = "Flat",
    progress: bool = True,
    photos: Callable[[str], Sequence[Path]] | None = None,
) -> ProductIndex:
    """Embed every product's photos (cached by checksum) into a new :class:`ProductIndex` with the
    catalog's filterable attributes and fingerprint. ``photos(product_id)`` lists a product's
    images (default: :func:`~image_search.stores.indexed_photos`, every shop photo). Chapter 09."""
    photos = photos or (lambda pid: indexed_photos(catalog, pid))
    owners, paths = [], []
    for pid in catalog.ids:
        for path in photos(pid):
            owners.append(pid)
            paths.append(Path(path))
    index = ProductIndex(encoder.dim, encoder.name, factory=factory)
    index.check_training_size(len(paths))  # before minutes of embedding
    embeddings = encode_paths(encoder, paths, progress=progress)
    index.add(owners, embeddings, Attributes.from_catalog(catalog, owners))
    index.catalog_fingerprint = catalog_fingerprint(catalog, paths)
    return index


def default_index_path(encoder_name: str = DEFAULT_ENCODER) -> Path:
    """Where the CLI keeps the catalog index of an encoder."""
    return cache_dir() / "indexes" / f"catalog-{safe_name(encoder_name)}.index"


__all__ = [
    "Filters",
    "SearchRequest",
    "SearchResults",
    "Searcher",
    "Timings",
    "build_index",
    "catalog_fingerprint",
    "default_index_path",
    "InvalidImageError",
]
