"""Personalisation: simulated shoppers with hidden tastes, a taste-driven click model, user
vectors from click history, and contextual bandits (LinUCB, linear Thompson sampling) that pick
a re-ranking policy per query. Chapter 13.

Everything runs on precomputed embeddings (numpy only), so thousands of simulated sessions
take seconds, and every random choice comes from a seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from .catalog import Product
from .experiments import examination
from .metrics import intra_list_diversity
from .reranker import mmr


# --------------------------------------------------------------------------- users and clicks
@dataclass(frozen=True)
class User:
    """A simulated shopper. Everything but ``id`` is hidden from the system.

    ``taste`` in [0, 1] is how much the shopper's own preferences (category, colour, brand,
    price band) weigh against the product they searched for: 0 wants exactly that product,
    1 browses for anything in their style.
    """

    id: int
    category: str
    colour: str
    brand: str
    price_band: tuple[float, float]
    taste: float


def simulate_users(
    products: Sequence[Product], n: int, seed: int = 0, browsers: float = 0.5
) -> list[User]:
    """``n`` users whose preferred category, colour and brand are drawn from the catalog's own
    frequencies, with a price band around a random product's price. A share ``browsers`` of them
    browse (``taste`` ≈ 0.8: they click whatever suits their style); the others search for one
    product (``taste`` ≈ 0.1)."""
    rng = np.random.default_rng(seed)
    users = []
    for uid in range(n):
        a, b, c, d = (products[int(i)] for i in rng.integers(0, len(products), 4))
        centre = d.price
        users.append(
            User(
                uid,
                a.category,
                b.colour,
                c.brand,
                (round(centre * 0.5, 2), round(centre * 1.5, 2)),
                round(
                    float(np.clip(rng.normal(0.8 if rng.random() < browsers else 0.1, 0.08), 0, 1)),
                    3,
                ),
            )
        )
    return users


def preference(user: User, product: Product) -> float:
    """The user's hidden liking of a product in [0, 1]: category 0.4, colour 0.3, brand 0.2,
    price in band 0.1."""
    return float(preference_matrix([user], [product])[0, 0])


@dataclass(frozen=True)
class TasteClickModel:
    """Clicks driven by a simulated shopper's hidden taste: P(click at rank r) = examine(r) ·
    attractiveness.

    examine(r) = 1 / r ** ``position_bias`` for r = 1..k, chapter 07's position-bias model
    (:func:`~image_search.experiments.examination`). Attractiveness blends the product's visual
    relevance to what was searched for (1 for the exact product, up to ``similar_weight`` for
    look-alikes) with the user's hidden preference, weighted by the user's ``taste``; chapter
    07's :class:`~image_search.experiments.GradedClickModel` uses relevance grades instead.
    Chapter 13.
    """

    position_bias: float = 0.8
    similar_weight: float = 0.5
    similar_floor: float = 0.5  # cosines below this count as unrelated

    def examine(self, k: int) -> np.ndarray:
        return examination(k, self.position_bias)

    def relevance(self, cosine_to_target: np.ndarray, is_target: np.ndarray) -> np.ndarray:
        sim = np.clip(
            (np.asarray(cosine_to_target) - self.similar_floor) / (1 - self.similar_floor), 0, 1
        )
        return np.where(is_target, 1.0, self.similar_weight * sim)

    def click_probabilities(
        self, user: User, relevance: np.ndarray, preferences: np.ndarray
    ) -> np.ndarray:
        """Per-rank click probabilities of a shown list (``relevance``, ``preferences`` in rank
        order)."""
        attract = (1 - user.taste) * np.asarray(relevance) + user.taste * np.asarray(preferences)
        return self.examine(len(attract)) * np.clip(attract, 0, 1)


def user_vector(clicked: np.ndarray, decay: float = 0.9) -> np.ndarray | None:
    """A user's taste as one unit vector: the mean of the embeddings of clicked products (oldest
    first), the click ``t`` steps ago weighted ``decay ** t``; ``None`` with no clicks."""
    clicked = np.asarray(clicked, dtype=np.float32)
    if clicked.size == 0:
        return None
    w = decay ** np.arange(len(clicked) - 1, -1, -1, dtype=np.float32)
    v = (w[:, None] * clicked).sum(axis=0)
    return v / max(float(np.linalg.norm(v)), 1e-12)


# --------------------------------------------------------------------------- policies and bandits
@dataclass(frozen=True)
class Policy:
    """A re-ranking policy, one arm of the bandit: ``score = visual + user_weight · affinity``,
    optionally diversified with MMR (``mmr_lambda``)."""

    name: str
    user_weight: float = 0.0
    mmr_lambda: float | None = None


class Bandit(Protocol):
    def select(self, context: np.ndarray) -> int: ...
    def update(self, arm: int, context: np.ndarray, reward: float) -> None: ...


class _RidgeArms:
    """One ridge regression of reward on context per arm: ``A = ridge·I + Σ x xᵀ``,
    ``b = Σ r x``."""

    def __init__(self, n_arms: int, dim: int, ridge: float = 1.0) -> None:
        self.A = np.stack([np.eye(dim) * ridge for _ in range(n_arms)])
        self.b = np.zeros((n_arms, dim))

    def update(self, arm: int, context: np.ndarray, reward: float) -> None:
        x = np.asarray(context, dtype=np.float64)
        self.A[arm] += np.outer(x, x)
        self.b[arm] += reward * x


class LinUCB(_RidgeArms):
    """Disjoint LinUCB (Li et al., WWW 2010): one ridge regression per arm; pick the arm with the
    highest upper confidence bound ``θᵀx + α·sqrt(xᵀA⁻¹x)``."""

    def __init__(self, n_arms: int, dim: int, alpha: float = 1.5, ridge: float = 1.0) -> None:
        super().__init__(n_arms, dim, ridge)
        self.alpha = alpha

    def select(self, context: np.ndarray) -> int:
        x = np.asarray(context, dtype=np.float64)
        A_inv = np.linalg.inv(self.A)
        theta = np.einsum("aij,aj->ai", A_inv, self.b)
        ucb = theta @ x + self.alpha * np.sqrt(np.einsum("i,aij,j->a", x, A_inv, x))
        return int(np.argmax(ucb))


class LinearThompson(_RidgeArms):
    """Linear Thompson sampling (Agrawal & Goyal, ICML 2013): sample θ ~ N(A⁻¹b, v²A⁻¹) per arm
    and play the arm whose sample scores the context highest."""

    def __init__(
        self, n_arms: int, dim: int, v: float = 0.5, ridge: float = 1.0, seed: int = 0
    ) -> None:
        super().__init__(n_arms, dim, ridge)
        self.v = v
        self.rng = np.random.default_rng(seed)

    def select(self, context: np.ndarray) -> int:
        x = np.asarray(context, dtype=np.float64)
        scores = []
        for A, b in zip(self.A, self.b):
            A_inv = np.linalg.inv(A)
            theta = self.rng.multivariate_normal(A_inv @ b, self.v**2 * A_inv, method="cholesky")
            scores.append(theta @ x)
        return int(np.argmax(scores))


@dataclass
class FixedPolicy:
    """Always the same arm (the non-personalised ranker is ``FixedPolicy(0)``)."""

    arm: int

    def select(self, context: np.ndarray) -> int:
        return self.arm

    def update(self, arm: int, context: np.ndarray, reward: float) -> None:
        pass


@dataclass
class Oracle:
    """Knows the hidden tastes: plays the arm with the highest expected clicks each round."""


# --------------------------------------------------------------------------- the simulator
@dataclass(frozen=True)
class SimulationLog:
    """What happened in each round of :func:`simulate`."""

    arm: np.ndarray  # arm played
    reward: np.ndarray  # clicks observed
    expected: np.ndarray  # expected clicks of the arm played
    best_expected: np.ndarray  # expected clicks of the best arm (the oracle's)
    history: np.ndarray  # the user's clicks before the round
    diversity: np.ndarray  # intra-list diversity of the shown top k
    coverage: np.ndarray  # distinct categories in the shown top k
    user: np.ndarray  # user index
    arm_expected: np.ndarray  # (rounds, arms) expected clicks of every arm
    context: np.ndarray  # (rounds, features) what the strategy saw
    clicked_categories: tuple[tuple[str, ...], ...] = field(repr=False, default=())

    @property
    def regret(self) -> np.ndarray:
        """Cumulative expected regret against the oracle."""
        return np.cumsum(self.best_expected - self.expected)


@dataclass(frozen=True)
class ShopEnvironment:
    """Catalog embeddings, users, a click model and the candidate policies. Chapter 13."""

    products: tuple[Product, ...]
    icons: np.ndarray  # (n, d) shop-photo embeddings, unit rows, in ``products`` order
    views: np.ndarray  # (n, v, d) customer-photo embeddings (the queries)
    users: tuple[User, ...]
    policies: tuple[Policy, ...]
    click_model: TasteClickModel = TasteClickModel()
    candidates: int = 50
    k: int = 10
    decay: float = 0.9

    def context(self, n_clicks: int, browse_rate: float) -> np.ndarray:
        """Features the system can see: bias, history length (saturating at 20 clicks), the share of
        past clicks that went to products other than the one searched for."""
        return np.array([1.0, min(n_clicks, 20) / 20, browse_rate])

    def rerank(
        self, cand: np.ndarray, sims: np.ndarray, user_vec: np.ndarray | None, policy: Policy
    ) -> np.ndarray:
        """The top ``k`` of ANN candidates ``cand`` (visual scores ``sims``) under a policy."""
        score = np.asarray(sims, dtype=np.float64)
        if user_vec is not None and policy.user_weight:
            score = score + policy.user_weight * (self.icons[cand] @ user_vec)
        order = np.argsort(-score, kind="stable")
        if policy.mmr_lambda is not None:
            order = order[mmr(score[order], self.icons[cand[order]], self.k, policy.mmr_lambda)]
        return cand[order[: self.k]]

    def query_plan(self, rounds: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Who searches, for which product, with which photo, in each round (the same for every
        strategy compared with one seed). A user searches for a product in their style with
        probability ``taste``, else for any product."""
        rng = np.random.default_rng(seed)
        prefs = preference_matrix(self.users, self.products)
        who = rng.integers(0, len(self.users), rounds)
        target = np.empty(rounds, dtype=np.int64)
        for t, u in enumerate(who):
            if rng.random() < self.users[u].taste:
                w = np.exp(6 * prefs[u])
                target[t] = rng.choice(len(self.products), p=w / w.sum())
            else:
                target[t] = rng.integers(0, len(self.products))
        view = rng.integers(0, self.views.shape[1], rounds)
        return who, target, view


def preference_matrix(users: Sequence[User], products: Sequence[Product]) -> np.ndarray:
    """:func:`preference` of every user (rows) for every product (columns), vectorised."""
    cat = np.array([p.category for p in products])
    col = np.array([p.colour for p in products])
    brand = np.array([p.brand for p in products])
    price = np.array([p.price for p in products])
    return np.stack(
        [
            0.4 * (cat == u.category)
            + 0.3 * (col == u.colour)
            + 0.2 * (brand == u.brand)
            + 0.1 * ((price >= u.price_band[0]) & (price <= u.price_band[1]))
            for u in users
        ]
    )


def simulate(
    env: ShopEnvironment, strategy: Bandit | Oracle, rounds: int, seed: int = 0
) -> SimulationLog:
    """Run ``rounds`` searches: pick a policy with ``strategy`` from the visible context, show its
    top k, draw clicks from the click model, update the user's history and the strategy.
    Chapter 13."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # tiny matrices: BLAS threads only add overhead
        return _simulate(env, strategy, rounds, seed)


def _simulate(
    env: ShopEnvironment, strategy: Bandit | Oracle, rounds: int, seed: int
) -> SimulationLog:
    who, target, view = env.query_plan(rounds, seed)
    rng = np.random.default_rng(seed + 1)
    pref = preference_matrix(env.users, env.products)
    clicks: dict[int, list[int]] = {}
    off_target: dict[int, int] = {}
    cat = np.array([p.category for p in env.products])
    cols = {
        f: np.zeros(rounds)
        for f in ("arm", "reward", "expected", "best", "history", "diversity", "coverage")
    }
    clicked_cats = []
    all_expected = np.zeros((rounds, len(env.policies)))
    contexts = np.zeros((rounds, len(env.context(0, 0.0))))
    for t in range(rounds):
        u, tgt = int(who[t]), int(target[t])
        user = env.users[u]
        hist = clicks.setdefault(u, [])
        x = env.context(len(hist), off_target.get(u, 0) / len(hist) if hist else 0.0)
        uvec = user_vector(env.icons[hist], env.decay) if hist else None
        q = env.views[tgt, view[t]]
        sims = env.icons @ q
        cand = np.argsort(-sims, kind="stable")[: env.candidates]
        shown, expected = [], []
        for policy in env.policies:
            top = env.rerank(cand, sims[cand], uvec, policy)
            rel = env.click_model.relevance(env.icons[top] @ env.icons[tgt], top == tgt)
            p = env.click_model.click_probabilities(user, rel, pref[u, top])
            shown.append((top, p))
            expected.append(float(p.sum()))
        all_expected[t], contexts[t] = expected, x
        arm = int(np.argmax(expected)) if isinstance(strategy, Oracle) else strategy.select(x)
        top, p = shown[arm]
        clicked = top[rng.random(len(p)) < p]
        reward = float(len(clicked))
        if not isinstance(strategy, Oracle):
            strategy.update(arm, x, reward)
        hist.extend(int(c) for c in clicked)
        off_target[u] = off_target.get(u, 0) + int((clicked != tgt).sum())
        for f, v in (
            ("arm", arm),
            ("reward", reward),
            ("expected", expected[arm]),
            ("best", max(expected)),
            ("history", len(hist) - len(clicked)),
            ("diversity", intra_list_diversity(env.icons[top])),
            ("coverage", len(set(cat[top]))),
        ):
            cols[f][t] = v
        clicked_cats.append(tuple(cat[clicked]))
    return SimulationLog(
        cols["arm"].astype(int),
        cols["reward"],
        cols["expected"],
        cols["best"],
        cols["history"].astype(int),
        cols["diversity"],
        cols["coverage"].astype(int),
        who,
        all_expected,
        contexts,
        tuple(clicked_cats),
    )


def category_concentration(log: SimulationLog, last: int = 10, min_clicks: int = 5) -> float:
    """Filter-bubble measure: over users with at least ``min_clicks`` clicks, the mean share of
    their ``last`` clicks that fall in their most-clicked category."""
    per_user: dict[int, list[str]] = {}
    for u, cats in zip(log.user.tolist(), log.clicked_categories):
        per_user.setdefault(u, []).extend(cats)
    shares = []
    for cats in per_user.values():
        if len(cats) >= min_clicks:
            recent = cats[-last:]
            shares.append(max(recent.count(c) for c in set(recent)) / len(recent))
    return float(np.mean(shares)) if shares else 0.0


__all__ = [
    "User",
    "simulate_users",
    "preference",
    "TasteClickModel",
    "user_vector",
    "Policy",
    "LinUCB",
    "LinearThompson",
    "FixedPolicy",
    "Oracle",
    "SimulationLog",
    "ShopEnvironment",
    "simulate",
    "preference_matrix",
    "category_concentration",
]
