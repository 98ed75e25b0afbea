"""Shared helpers of the benchmarks: machine description, timing, tables, the real embeddings.

Not part of the package: benchmarks print tables, they are never timed unit tests.
"""
from __future__ import annotations

import os
import platform
import resource
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd


def machine() -> str:
    """CPU model, cores, load average and library versions: printed at the top of every run."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{model}, {os.cpu_count()} cores visible, load average {load} (1/5/15 min); "
            f"Python {platform.python_version()}. Other processes share these cores: compare ratios "
            f"measured side by side in one run, not absolute numbers across runs.")


def header(title: str) -> None:
    print(f"# {title}\n\n{machine()}\n", flush=True)


def table(df: pd.DataFrame, title: str, floatfmt: str = ".3g") -> None:
    """Print a table as Markdown (so it can be pasted into benchmarks/README.md)."""
    print(f"\n## {title}\n")
    print(df.to_markdown(index=False, floatfmt=floatfmt))
    print(flush=True)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


@dataclass(frozen=True)
class Latency:
    """Milliseconds per call: median and 95th percentile over ``n`` calls."""

    p50: float
    p95: float
    n: int


def latency(samples_s: Sequence[float]) -> Latency:
    ms = np.asarray(samples_s) * 1000.0
    return Latency(float(np.median(ms)), float(np.percentile(ms, 95)), len(ms))


def time_each(fn: Callable[[object], object], items: Sequence[object], warmup: int = 3) -> Latency:
    """Call ``fn(item)`` for every item (after a few warm-up calls) and time each call."""
    for it in items[:warmup]:
        fn(it)
    out = []
    for it in items:
        t = time.perf_counter()
        fn(it)
        out.append(time.perf_counter() - t)
    return latency(out)


def real_embeddings():
    """EfficientNet-Lite0 embeddings from the on-disk cache: ``(catalog, encoder, icons, train, test,
    test_ids)`` where ``train`` holds the icons and customer photos of the train products (the
    "catalog distribution" the synthetic vectors are drawn from) and ``test`` the customer photos of
    the held-out products (the queries)."""
    from image_search import load_catalog, load_encoder
    from image_search.encoders import encode_paths

    catalog, encoder = load_catalog(), load_encoder()
    icons = encode_paths(encoder, [catalog.icon_path(i) for i in catalog.ids], progress=False)
    train_ids = [p.id for p in catalog.split("train")]
    train = encode_paths(encoder, [catalog.icon_path(i) for i in train_ids]
                         + [v for i in train_ids for v in catalog.view_paths(i)], progress=False)
    test_paths, test_ids = catalog.queries("test")
    test = encode_paths(encoder, test_paths, progress=False)
    return catalog, encoder, icons, train, test, test_ids


def exact_recall_at_10(index_vectors: np.ndarray, index_ids: Sequence[str], queries: np.ndarray,
                       true_ids: Sequence[str]) -> float:
    """Exact-product Recall@10 by brute force (:func:`image_search.features.exact_retrieval`)."""
    from image_search.features import exact_retrieval

    return exact_retrieval(queries, true_ids, index_vectors, index_ids, ks=(10,))[0].recall[10]
