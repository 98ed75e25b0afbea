"""Synthetic embeddings for scale tests: millions of vectors shaped like the catalog's real ones.

Two generators. :func:`fit_realistic` fits a :class:`RealisticModel` to real per-product photo
groups and samples catalogues of any size with the real data's marginals, spectrum and cluster
sizes, and nearest-neighbour cosines close to the real ones (``benchmarks/bench_synthetic.py``
checks how close). :func:`near_copy_embeddings` is the older, simpler generator (noisy copies of
real vectors), kept for comparison. Chapter 12.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .encoders import l2_normalize
from .errors import InvalidRequestError


@dataclass(frozen=True)
class RealisticModel:
    """A generative model of product photo embeddings: a Gaussian mixture in a latent space, mapped
    through the real data's marginals (a Gaussian copula).

    Each coordinate of the real vectors is mapped to a standard normal by its rank (ties, such as
    the ~50% exact zeros of EfficientNet's pooled ReLU features, share their mid-rank); everything
    else happens in the PCA basis of that latent space. A product's centre is drawn from a Gaussian
    mixture (diagonal covariances) over the top ``gmm_dim`` components and an independent Gaussian
    over the rest. Its ``photos_per_product`` photos (shop photo first, then customer photos) add a
    Gaussian residual whose covariance blends the empirical within-product covariance of the real
    products of the same mixture component (low rank: a chair-like centre gets a chair's kind of
    spread) with the global diagonal one (weight ``shrinkage``), shop and customer photos
    separately; no real residual is ever copied. Each coordinate then goes back through the real
    marginal (its empirical quantiles) and the vector is L2-normalised. Fit it with
    :func:`fit_realistic`. Chapter 12.
    """

    quantiles: np.ndarray  # (m, d) each coordinate's sorted real values (the marginals)
    mean: np.ndarray  # (d,) latent mean
    basis: np.ndarray  # (d, d) latent principal directions, rows
    weights: np.ndarray  # (K,) mixture weights
    means: np.ndarray  # (K, gmm_dim) component means of the product centres
    stds: np.ndarray  # (K, gmm_dim) component standard deviations
    tail_std: np.ndarray  # (d - gmm_dim,) std of the centres beyond the mixture's components
    within_std: np.ndarray  # (d,) global within-product std per latent component
    residuals: (
        np.ndarray
    )  # (P, photos_per_product, d) real within-product residuals (photo - product mean)
    residual_component: np.ndarray  # (P,) the mixture component of each real product
    shrinkage: float = 0.5

    @property
    def dim(self) -> int:
        return int(self.basis.shape[1])

    @property
    def photos_per_product(self) -> int:
        return int(self.residuals.shape[1])

    def sample(
        self,
        n: int,
        seed: int = 0,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
        batch: int = 32_768,
    ) -> np.ndarray:
        """``n`` unit vectors, ``(n, dim)`` float32: ``ceil(n / photos_per_product)`` products, each
        product's photos consecutive (the last product may be cut short). ``transform`` (e.g. a
        PCA's ``apply``) is applied batch by batch, so a million vectors never exist at full size.
        The same seed gives the same vectors."""
        if n < 1:
            raise InvalidRequestError(f"n must be at least 1, not {n}")
        rng = np.random.default_rng(seed)
        per = self.photos_per_product
        parts, done = [], 0
        while done < n:
            p = min(max(1, batch // per), -(-(n - done) // per))
            comp = rng.choice(len(self.weights), size=p, p=self.weights)
            head = (
                self.means[comp]
                + rng.standard_normal((p, self.means.shape[1]), dtype=np.float32) * self.stds[comp]
            )
            tail = rng.standard_normal((p, len(self.tail_std)), dtype=np.float32) * self.tail_std
            z = np.repeat(np.hstack([head, tail])[:, None, :], per, axis=1)
            z += (
                np.sqrt(self.shrinkage)
                * rng.standard_normal(z.shape, dtype=np.float32)
                * self.within_std
            )
            for k in np.unique(comp):
                rows = np.flatnonzero(comp == k)
                pool = self.residuals[self.residual_component == k]
                for slots in (slice(0, 1), slice(1, per)):
                    z[rows, slots] += _gaussian_like(
                        pool[:, slots], len(rows), rng, 1 - self.shrinkage
                    )
            latent = z.reshape(p * per, -1)[: n - done] @ self.basis + self.mean
            x = l2_normalize(self._marginals(latent))
            parts.append(transform(x) if transform is not None else x)
            done += len(x)
        return np.concatenate(parts).astype(np.float32)

    def _marginals(self, latent: np.ndarray) -> np.ndarray:
        """Latent standard-normal coordinates -> the real data's values (empirical quantiles)."""
        from scipy.special import ndtr

        m = len(self.quantiles)
        rank = np.clip(np.rint(ndtr(latent) * m - 0.5).astype(np.int64), 0, m - 1)
        return self.quantiles[rank, np.arange(latent.shape[1])]


def _gaussian_like(
    pool: np.ndarray, count: int, rng: np.random.Generator, scale: float
) -> np.ndarray:
    """``(count, slots, d)`` Gaussian draws with the mean and ``scale`` x the covariance of the
    ``(m, slots, d)`` real residuals in ``pool`` (slots pooled): random combinations, never a
    copy."""
    slots = pool.shape[1]
    r = pool.reshape(-1, pool.shape[2])
    centre = r.mean(axis=0)
    g = rng.standard_normal((count * slots, len(r)), dtype=np.float32) * np.float32(
        np.sqrt(scale / max(len(r) - 1, 1))
    )
    return (centre + g @ (r - centre)).reshape(count, slots, -1)


def fit_realistic(
    features: np.ndarray,
    components: int = 32,
    shrinkage: float = 0.5,
    gmm_dim: int = 128,
    seed: int = 0,
) -> RealisticModel:
    """Fit a :class:`RealisticModel` to real embeddings grouped by product,
    ``(products, photos, d)`` (e.g. :func:`image_search.training.catalog_features`: the shop photo,
    then the customer photos). Fit it on the products you will not query with. ``components``:
    mixture components of the product centres; ``shrinkage``: weight of the global diagonal
    within-product covariance against each component's own (``benchmarks/bench_synthetic.py`` shows
    how both trade nearest-neighbour statistics at matched size against realism at scale).
    Chapter 12."""
    from scipy.special import ndtri
    from scipy.stats import rankdata
    from sklearn.mixture import GaussianMixture

    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 3 or x.shape[0] < 2 * components or x.shape[1] < 2:
        raise InvalidRequestError(
            f"need (products, photos, dim) with at least {2 * components} products and "
            f"2 photos each, not shape {x.shape}"
        )
    if not 0 <= shrinkage <= 1:
        raise InvalidRequestError(f"shrinkage must be between 0 and 1, not {shrinkage}")
    n_products, per, d = x.shape
    flat = x.reshape(-1, d)
    latent = ndtri((rankdata(flat, axis=0) - 0.5) / len(flat))  # Gaussian copula: ranks -> N(0, 1)
    mean = latent.mean(axis=0)
    centred = latent - mean
    _, vectors = np.linalg.eigh(
        centred.T @ centred
    )  # principal directions (faster than an SVD here)
    vt = vectors[:, ::-1].T
    vt = vt * np.sign(vt[:, :1] + 1e-30)  # deterministic signs
    z = (centred @ vt.T).reshape(n_products, per, -1)
    centres = z.mean(axis=1)
    residuals = z - centres[:, None, :]
    within = (residuals**2).sum(axis=(0, 1)) / (
        n_products * (per - 1)
    )  # per-component within-product variance
    gmm_dim = min(gmm_dim, d)
    gmm = GaussianMixture(
        components, covariance_type="diag", reg_covar=1e-6, random_state=seed, n_init=2
    )
    gmm.fit(centres[:, :gmm_dim])
    # The observed centres are means of `per` photos: remove that averaging noise from the spread.
    head_var = np.maximum(gmm.covariances_ - within[:gmm_dim] / per, 1e-6)
    tail_var = np.maximum(centres[:, gmm_dim:].var(axis=0, ddof=1) - within[gmm_dim:] / per, 0.0)
    label = gmm.predict(centres[:, :gmm_dim])
    weights = np.array(
        [(label == k).mean() for k in range(components)]
    )  # components with no product drop out
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return RealisticModel(
        f32(np.sort(flat, axis=0)),
        f32(mean),
        f32(vt),
        weights / weights.sum(),
        f32(gmm.means_),
        f32(np.sqrt(head_var)),
        f32(np.sqrt(tail_var)),
        f32(np.sqrt(within)),
        f32(residuals),
        label.astype(np.int64),
        float(shrinkage),
    )


def realistic_embeddings(features: np.ndarray, n: int, seed: int = 0, **fit_options) -> np.ndarray:
    """``n`` unit vectors from a :class:`RealisticModel` fitted to ``features``
    ``(products, photos, d)`` (see :func:`fit_realistic`). Chapter 12."""
    return fit_realistic(features, seed=seed, **fit_options).sample(n, seed=seed)


def near_copy_embeddings(
    real: np.ndarray, n: int, noise: float = 0.5, seed: int = 0, batch: int = 65_536
) -> np.ndarray:
    """``n`` noisy copies of ``real`` embeddings: each a random real vector plus Gaussian noise
    shaped like the real data's spread (its principal components, scaled by ``noise``),
    renormalised.

    The older generator: at a million vectors around a few thousand real ones, each real vector gets
    hundreds of near-identical copies, whose exact top 10 is mostly the noise's order; prefer
    :func:`fit_realistic` for index benchmarks. Chapters 08 and 12.
    """
    real = np.asarray(real, dtype=np.float32)
    if real.ndim != 2 or len(real) < 2:
        raise InvalidRequestError(
            f"need a 2-D array of at least two real embeddings, not shape {real.shape}"
        )
    rng = np.random.default_rng(seed)
    centred = real - real.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    scale = (s / np.sqrt(len(real) - 1) * noise).astype(np.float32)
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    for start in range(0, n, batch):
        b = min(batch, n - start)
        z = rng.standard_normal((b, len(scale)), dtype=np.float32) * scale
        x = real[rng.integers(0, len(real), b)] + z @ vt
        out[start : start + b] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


synthetic_embeddings = near_copy_embeddings  # its former name (image_search.indexer)


def neighbour_cosines(x: np.ndarray, k: int = 10, batch: int = 4096) -> np.ndarray:
    """Cosine of each row of ``x`` (unit vectors) to its 1st … ``k``-th nearest other row,
    ``(n, k)``, by exact search. Chapter 12 compares real and synthetic data with it."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) <= k:
        raise InvalidRequestError(f"need a 2-D array of more than k={k} rows, not shape {x.shape}")
    out = np.empty((len(x), k), dtype=np.float32)
    for s in range(0, len(x), batch):
        sims = x[s : s + batch] @ x.T
        sims[np.arange(len(sims)), np.arange(s, s + len(sims))] = -np.inf  # not itself
        top = np.partition(sims, -k, axis=1)[:, -k:]
        out[s : s + len(sims)] = -np.sort(-top, axis=1)
    return out
