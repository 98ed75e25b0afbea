"""image_search: the visual product search system built in *Visual Product Search — the executable
book*.

Three stages: embed the query image (:mod:`.encoders`), retrieve approximate nearest neighbours
from a FAISS index of the catalog (:mod:`.indexer`, :mod:`.searcher`), re-rank with business rules,
attribute boosts, diversity and personalisation (:mod:`.reranker`).

Importing the package sets one environment variable, and only if the user has not:
``OMP_WAIT_POLICY=PASSIVE``. OpenMP threads of PyTorch and FAISS that spin while waiting for work
steal the cores they share with other processes and with each other (benchmarks/bench_encoder.py
measures it); the variable must be set before either library starts its thread pool, which is why it
is set here, once, rather than where threads start.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from .catalog import Catalog, Product, load_catalog, load_catalog_csv
from .encoders import DEFAULT_ENCODER, Encoder, encode_paths, l2_normalize, load_encoder
from .errors import (
    BackendUnavailableError,
    CatalogError,
    ImageSearchError,
    IndexMismatchError,
    InvalidImageError,
    InvalidRequestError,
    ModelUnavailableError,
    UnsafePathError,
)
from .images import load_image
from .indexer import ProductIndex
from .reranker import RerankConfig, Reranker
from .searcher import Filters, Searcher, SearchRequest, SearchResults, Timings, build_index

# isort: split
from . import localizer, text, training  # noqa: F401 (register "product-search", "minilm-lit", "lit")

__version__ = "0.1.0"
__all__ = [
    "Catalog",
    "Product",
    "load_catalog",
    "load_catalog_csv",
    "CatalogError",
    "BackendUnavailableError",
    "DEFAULT_ENCODER",
    "Encoder",
    "encode_paths",
    "l2_normalize",
    "load_encoder",
    "ImageSearchError",
    "IndexMismatchError",
    "InvalidImageError",
    "InvalidRequestError",
    "ModelUnavailableError",
    "UnsafePathError",
    "load_image",
    "ProductIndex",
    "Reranker",
    "RerankConfig",
    "Filters",
    "SearchRequest",
    "SearchResults",
    "Searcher",
    "Timings",
    "build_index",
]
