"""How realistic are the synthetic embeddings? Real EfficientNet-Lite0 catalog embeddings against
the generators of ``image_search.synthetic`` at matched size: PCA spectrum, cosine of each vector to
its 1st and 10th nearest neighbour, and a plot of both
(``benchmarks/figures/synthetic_vs_real.png``).

Every generator is fitted on the 432 train products (shop photo + 4 customer photos each) and
compared with the 930 photos of the 186 held-out products: at matched size (nearest-neighbour
cosines at the encoder's 1280-d and after the benchmarks' PCA to 128-d, the share of exact zeros,
and how close each vector is to its nearest fitted photo: a memorisation check), and at scale: with
``--scale`` synthetic vectors indexed, are the real held-out photos as close to them as fresh draws
of the generator are? (A large gap means real queries are off the generator's distribution at
scale.)

    python benchmarks/bench_synthetic.py
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pandas as pd

from image_search import load_catalog, load_encoder
from image_search.features import fit_pca
from image_search.synthetic import fit_realistic, near_copy_embeddings, neighbour_cosines
from image_search.training import catalog_features

from _common import header, table

FIGURE = Path(__file__).resolve().parent / "figures" / "synthetic_vs_real.png"


def diagonal_gaussian(features: np.ndarray, n: int, seed: int) -> np.ndarray:
    """The simplest model, for comparison: product centres and photo residuals both Gaussian with
    diagonal covariance in the real PCA basis (one component, no copula, no real residuals)."""
    from image_search.encoders import l2_normalize

    x = features.astype(np.float64)
    p, per, d = x.shape
    flat = x.reshape(-1, d)
    mean = flat.mean(axis=0)
    _, vectors = np.linalg.eigh((flat - mean).T @ (flat - mean))
    vt = vectors[:, ::-1].T
    z = ((flat - mean) @ vt.T).reshape(p, per, -1)
    c = z.mean(axis=1)
    within = ((z - c[:, None]) ** 2).sum(axis=(0, 1)) / (p * (per - 1))
    between = np.maximum(c.var(axis=0, ddof=1) - within / per, 0)
    rng = np.random.default_rng(seed)
    products = -(-n // per)
    centres = rng.standard_normal((products, 1, len(between))) * np.sqrt(between)
    photos = centres + rng.standard_normal((products, per, len(within))) * np.sqrt(within)
    return l2_normalize(photos.reshape(-1, len(within))[:n] @ vt + mean)


def stats(name: str, x: np.ndarray, pca, fitted: np.ndarray) -> dict:
    row = {"data": name, "n": len(x), "zeros": float((x <= 1e-7).mean())}
    for label, v in (("1280-d", x), ("PCA-128", pca.apply(x))):
        nc = neighbour_cosines(v, 10)
        row[f"{label} NN1"] = nc[:, 0].mean()
        row[f"{label} NN1 p10-p90"] = (
            f"{np.quantile(nc[:, 0], 0.1):.3f}-{np.quantile(nc[:, 0], 0.9):.3f}"
        )
        row[f"{label} NN10"] = nc[:, 9].mean()
    row["to nearest fitted photo"] = (x @ fitted.T).max(axis=1).mean()
    return row


def scale_control(draw, real_queries: np.ndarray, n: int) -> dict:
    """Index ``n`` draws; how close are real photos of new products (nearest-neighbour cosine)
    compared with fresh draws of the same generator? A realistic generator: about as close."""
    big, fresh = draw(n, 2), draw(len(real_queries), 3)
    real_nn, fresh_nn = (
        (real_queries @ big.T).max(axis=1).mean(),
        (fresh @ big.T).max(axis=1).mean(),
    )
    return {
        f"real photos: NN in {n // 1000}k": real_nn,
        f"fresh draws: NN in {n // 1000}k": fresh_nn,
        "gap": fresh_nn - real_nn,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--scale", type=int, default=20_000, help="size of the scale control's synthetic set"
    )
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    header("bench_synthetic: real vs synthetic embeddings at matched size, and at scale")
    catalog = load_catalog()
    features = catalog_features(catalog, load_encoder())  # (618, 5, 1280), cached
    split = np.array([p.split for p in catalog.products])
    train, test = features[split == "train"], features[split == "test"]
    real_train, real_test = train.reshape(-1, train.shape[-1]), test.reshape(-1, test.shape[-1])
    pca = fit_pca(real_train, 128)
    n = len(real_test)

    generators = {}
    for k, shrink in ((32, 0.5), (32, 0.0), (8, 0.5)):
        t = time.perf_counter()
        model = fit_realistic(train, components=k, shrinkage=shrink, seed=args.seed)
        label = f"realistic K={k} shrinkage={shrink}" + (
            " (default)" if (k, shrink) == (32, 0.5) else ""
        )
        generators[label] = lambda m, seed, model=model: model.sample(m, seed=seed)
        print(f"fitted {label} in {time.perf_counter() - t:.1f} s", flush=True)
    generators["diagonal Gaussian"] = lambda m, seed: diagonal_gaussian(train, m, seed)
    generators["near-copy (noise 0.5)"] = lambda m, seed: near_copy_embeddings(
        real_train, m, seed=seed
    )

    rows = [
        {
            **stats("real (186 held-out products)", real_test, pca, real_train),
            f"real photos: NN in {args.scale // 1000}k": np.nan,
        }
    ]
    curves = {"real": (neighbour_cosines(pca.apply(real_test), 1)[:, 0], spectrum(real_test, 200))}
    for name, draw in generators.items():
        x = draw(n, args.seed)
        rows.append(
            {**stats(name, x, pca, real_train), **scale_control(draw, real_test, args.scale)}
        )
        if "shrinkage=0.0" not in name and "K=8" not in name:
            curves[name] = (neighbour_cosines(pca.apply(x), 1)[:, 0], spectrum(x, 200))
        print(f"  {name} done", flush=True)
    table(
        pd.DataFrame(rows),
        f"1. Fitted on the 432 train products; compared with the {n} photos of the 186 held-out "
        f"products at matched size, and at scale ({args.scale:,} synthetic vectors)",
        floatfmt=".3f",
    )
    plot(curves)
    print(f"figure: {FIGURE.relative_to(FIGURE.parents[2])}")


def spectrum(x: np.ndarray, k: int) -> np.ndarray:
    c = x - x.mean(axis=0)
    s = np.linalg.svd(c, compute_uv=False)
    return (s**2 / (len(x) - 1))[:k]


def plot(curves: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    bins = np.linspace(0.2, 1.0, 61)
    for name, (nn, spec) in curves.items():
        style = {"color": "black", "lw": 2.5} if name == "real" else {"lw": 1.5}
        a.hist(nn, bins=bins, histtype="step", density=True, label=name.split(" (")[0], **style)
        b.semilogy(np.arange(1, len(spec) + 1), spec, label=name.split(" (")[0], **style)
    a.set(
        xlabel="cosine to nearest neighbour (PCA-128)",
        ylabel="density",
        title="930 real held-out photos vs 930 synthetic",
    )
    b.set(xlabel="principal component", ylabel="variance", title="PCA spectrum (1280-d), top 200")
    a.legend(fontsize=8)
    b.legend(fontsize=8)
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=110)


if __name__ == "__main__":
    main()
