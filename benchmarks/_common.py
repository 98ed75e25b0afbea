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
            model = next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{model}, {os.cpu_count()} cores visible, load average {load} (1/5/15 min); "
        f"Python {platform.python_version()}. Other processes share these cores: compare ratios "
        f"measured side by side in one run, not absolute numbers across runs."
    )


def header(title: str) -> None:
    print(f"# {title}\n\n{machine()}\n", flush=True)


def table(df: pd.DataFrame, title: str, floatfmt: str = ".3g") -> None:
    """Print a table as Markdown (so it can be pasted into benchmarks/README.md)."""
    print(f"\n## {title}\n")
    print(df.to_markdown(index=False, floatfmt=floatfmt))
    print(flush=True)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


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
    """EfficientNet-Lite0 embeddings from the on-disk cache:
    ``(catalog, encoder, icons, train, test, test_ids)`` where ``train`` holds the icons and
    customer photos of the train products (the "catalog distribution" the synthetic vectors are
    drawn from) and ``test`` the customer photos of the held-out products (the queries)."""
    from image_search import load_catalog, load_encoder
    from image_search.encoders import encode_paths

    catalog, encoder = load_catalog(), load_encoder()
    icons = encode_paths(encoder, [catalog.icon_path(i) for i in catalog.ids], progress=False)
    train_ids = [p.id for p in catalog.split("train")]
    train = encode_paths(
        encoder,
        [catalog.icon_path(i) for i in train_ids]
        + [v for i in train_ids for v in catalog.view_paths(i)],
        progress=False,
    )
    test_paths, test_ids = catalog.queries("test")
    test = encode_paths(encoder, test_paths, progress=False)
    return catalog, encoder, icons, train, test, test_ids


def exact_recall_at_10(
    index_vectors: np.ndarray,
    index_ids: Sequence[str],
    queries: np.ndarray,
    true_ids: Sequence[str],
) -> float:
    """Exact-product Recall@10 by brute force (:func:`image_search.features.exact_retrieval`)."""
    from image_search.features import exact_retrieval

    return exact_retrieval(queries, true_ids, index_vectors, index_ids, ks=(10,))[0].recall[10]


# --------------------------------------------------------------------------- Fashion-MNIST
FASHION_DIR = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist (MIT)
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def fashion_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The 70k Fashion-MNIST thumbnails from the Debian package: ``(train_images, train_labels,
    test_images, test_labels)``, images ``(n, 28, 28)`` uint8 (white garment on black)."""
    import gzip
    from pathlib import Path

    folder = Path(FASHION_DIR)
    if not (folder / "train-images-idx3-ubyte.gz").exists():
        raise FileNotFoundError(
            f"Fashion-MNIST is not in {folder}: apt-get install dataset-fashion-mnist"
        )

    def read(name: str, offset: int) -> np.ndarray:
        with gzip.open(folder / name, "rb") as f:
            return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)

    out = []
    for split in ("train", "t10k"):
        out.append(read(f"{split}-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28))
        out.append(read(f"{split}-labels-idx1-ubyte.gz", 8).copy())
    return tuple(out)


def fashion_mnist_embeddings(
    chunk: int = 2048, progress: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fashion-MNIST embedded once with the default encoder (EfficientNet-Lite0 through the
    package's own ``encode_images``): ``(train, train_labels, test, test_labels)``, float32 unit
    rows.

    Each 28x28 thumbnail is inverted (a dark garment on white, like a shop photo), made RGB and goes
    through the encoder's usual preprocessing (bicubic upscale to 256, centre crop 224). 70k forward
    passes take about an hour on 2 cores, so the vectors are cached under the cache folder, chunk by
    chunk (an interrupted run resumes), keyed by the encoder and a checksum of the data files.
    """
    import hashlib

    from PIL import Image
    from tqdm.auto import tqdm

    from image_search import load_encoder
    from image_search.encoders import cache_dir

    xtr, ytr, xte, yte = fashion_mnist()
    images = np.concatenate([xtr, xte])
    encoder = load_encoder()
    key = hashlib.sha256(images.tobytes()).hexdigest()[:12]
    folder = cache_dir() / "fashion-mnist"
    final = folder / f"{encoder.name}-{encoder.dim}-{key}.npy"
    if not final.exists():
        parts = folder / f"{final.stem}.parts"
        parts.mkdir(parents=True, exist_ok=True)
        starts = range(0, len(images), chunk)
        for s in tqdm(starts, desc="embed Fashion-MNIST", unit="chunk", disable=not progress):
            part = parts / f"{s:06d}.npy"
            if part.exists():
                continue
            pil = [Image.fromarray(255 - im).convert("RGB") for im in images[s : s + chunk]]
            _save_atomic(part, encoder.encode_images(pil, batch_size=64))
        _save_atomic(final, np.concatenate([np.load(parts / f"{s:06d}.npy") for s in starts]))
        for p in parts.iterdir():
            p.unlink()
        parts.rmdir()
    x = np.load(final)
    return x[: len(xtr)], ytr, x[len(xtr) :], yte


def _save_atomic(path, array: np.ndarray) -> None:
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy")
    with os.fdopen(fd, "wb") as f:
        np.save(f, np.asarray(array, dtype=np.float32))
    os.replace(tmp, path)


def median_range(values: Sequence[float], fmt: str = ".1f") -> str:
    """``"median (min-max)"`` of repeated measurements, for tables."""
    v = np.asarray(values, dtype=float)
    return f"{np.median(v):{fmt}} ({v.min():{fmt}}-{v.max():{fmt}})"
