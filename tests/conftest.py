"""Shared fixtures: the real catalog, a temporary cache folder per session."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

from image_search import load_catalog


@pytest.fixture(autouse=True, scope="session")
def _private_cache():
    """The whole test session caches embeddings, indexes and models in a fresh temporary folder,
    never in the user's ``~/.cache``: tests see what a new machine sees."""
    old = os.environ.get("IMAGE_SEARCH_CACHE")
    with tempfile.TemporaryDirectory(prefix="image_search_test_cache_") as folder:
        os.environ["IMAGE_SEARCH_CACHE"] = folder
        yield folder
    if old is None:
        os.environ.pop("IMAGE_SEARCH_CACHE", None)
    else:
        os.environ["IMAGE_SEARCH_CACHE"] = old


@pytest.fixture(scope="session")
def catalog():
    return load_catalog()


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(0)


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(autouse=True, scope="session")
def _quiet_tqdm():
    os.environ.setdefault("TQDM_DISABLE", "1")
    yield


@pytest.fixture(scope="session")
def lite0():
    """The default encoder, EfficientNet-Lite0, loaded once per test session (loading takes
    seconds). Tests must not change it."""
    from image_search import load_encoder

    return load_encoder("efficientnet-lite0")
