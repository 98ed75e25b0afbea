"""Online evaluation by simulation: a position-biased click model driven by relevance grades, A/B
test statistics (sample size, z-test, the peeking problem) and team-draft interleaving. Chapter 07.

Everything is vectorised NumPy with seeded generators, so simulations of hundreds of thousands of
impressions take seconds and reproduce exactly.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import numpy as np
from scipy import stats


def examination(k: int, eta: float | np.ndarray = 1.0) -> np.ndarray:
    """The position-bias model both click models share: P(examine rank r) = ``1 / r**eta`` for
    r = 1..k: ``(k,)``, or ``(n, k)`` for per-user exponents ``eta`` of shape ``(n,)``.
    Chapter 07."""
    return 1.0 / np.arange(1, k + 1) ** np.asarray(eta, dtype=np.float64)[..., None]


@dataclass(frozen=True)
class GradedClickModel:
    """Clicks driven by relevance grades, for offline A/B and interleaving simulations. Examination
    hypothesis: P(click at rank r) = P(examine r) x P(click | examined, item).

    P(examine r) = ``1 / r**eta`` (:func:`examination`); the attractiveness of an item depends on
    its relevance grade: ``attractiveness[g]`` for grade g (e.g. 0 = other, 1 = same category,
    2 = the exact product). Chapter 13's :class:`~image_search.personalization.TasteClickModel`
    replaces grades by a simulated shopper's hidden taste. Chapter 07.

    Heterogeneous users (off by default): each user gets a click-propensity multiplier
    ``m ~ LogNormal(-s**2 / 2, s)`` with ``s = propensity_sigma`` (mean 1) that scales all their
    click probabilities (capped at 1), and a position-bias exponent
    ``eta * LogNormal(-t**2 / 2, t)`` with ``t = eta_sigma``. With both at 0 every user behaves the
    same."""

    eta: float = 1.0
    attractiveness: tuple[float, ...] = (0.02, 0.1, 0.6)
    propensity_sigma: float = 0.0
    eta_sigma: float = 0.0

    def examination(self, k: int, eta: float | np.ndarray | None = None) -> np.ndarray:
        """``(k,)`` examination probabilities; with per-user ``eta`` of shape ``(n,)``:
        ``(n, k)``."""
        return examination(k, self.eta if eta is None else eta)

    def sample_users(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Per-user ``(propensity multiplier, position-bias exponent)``, each of shape ``(n,)``."""
        s, t = self.propensity_sigma, self.eta_sigma
        mult = np.exp(rng.normal(-s * s / 2, s, n)) if s > 0 else np.ones(n)
        eta = (
            self.eta * np.exp(rng.normal(-t * t / 2, t, n))
            if t > 0
            else np.full(n, float(self.eta))
        )
        return mult, eta

    def click_probabilities(
        self,
        grades: np.ndarray,
        propensity: np.ndarray | None = None,
        eta: np.ndarray | None = None,
    ) -> np.ndarray:
        """``(n, k)`` integer relevance grades of ranked lists -> per-slot click probabilities;
        optional per-list user traits ``propensity`` and ``eta`` of shape ``(n,)`` (see
        ``sample_users``)."""
        grades = np.asarray(grades)
        p = np.asarray(self.attractiveness)[grades] * self.examination(grades.shape[-1], eta)
        if propensity is not None:
            p = np.minimum(1.0, p * np.asarray(propensity, dtype=np.float64)[..., None])
        return p

    def session_ctr(self, grades: np.ndarray) -> np.ndarray:
        """Probability that a session (one ranked list) gets at least one click, per list (average
        user)."""
        return 1.0 - np.prod(1.0 - self.click_probabilities(grades), axis=-1)


def simulate_clicks(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Independent Bernoulli clicks with the given per-slot probabilities (same shape, bool)."""
    return rng.random(np.shape(probabilities)) < probabilities


def relevance_grades(
    rankings: Sequence[Sequence[Hashable]],
    true_ids: Sequence[Hashable],
    category_of: dict,
    k: int = 10,
) -> np.ndarray:
    """Grades of ranked lists for the click model: 2 = the query's product, 1 = same group, 0 =
    other. ``category_of`` maps every id to its group: its category, or its type (``Product.type``),
    as chapter 09's learning to rank grades relevance."""
    out = np.zeros((len(rankings), k), dtype=np.int64)
    for i, (ranked, t) in enumerate(zip(rankings, true_ids)):
        for j, r in enumerate(list(ranked)[:k]):
            out[i, j] = 2 if r == t else int(category_of[r] == category_of[t])
    return out


# --------------------------------------------------------------------------- A/B statistics
def sample_size_per_arm(p_a: float, p_b: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Users per arm for a two-sided two-proportion z-test to detect ``p_a`` vs ``p_b``.
    Chapter 07."""
    if p_a == p_b:
        raise ValueError("the two proportions are equal: no sample size detects no difference")
    z_a, z_b = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    p_bar = (p_a + p_b) / 2
    n = (
        z_a * np.sqrt(2 * p_bar * (1 - p_bar)) + z_b * np.sqrt(p_a * (1 - p_a) + p_b * (1 - p_b))
    ) ** 2 / (p_a - p_b) ** 2
    return int(np.ceil(n))


def two_proportion_p_value(x_a, n_a, x_b, n_b) -> np.ndarray:
    """Two-sided p-value of the pooled two-proportion z-test (vectorised over arrays of counts)."""
    x_a, n_a, x_b, n_b = (np.asarray(v, dtype=np.float64) for v in (x_a, n_a, x_b, n_b))
    pooled = (x_a + x_b) / (n_a + n_b)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (x_b / n_b - x_a / n_a) / se, 0.0)
    return 2 * stats.norm.sf(np.abs(z))


@dataclass(frozen=True)
class PeekingResult:
    """False-positive rates of an A/A test: looked at once at the end vs after every batch."""

    fixed_horizon: float
    peeking: float
    looks: int
    n_experiments: int


def peeking_simulation(
    p: float,
    n_per_arm: int,
    looks: int,
    n_experiments: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> PeekingResult:
    """Simulate A/A tests (no true difference, conversion ``p``): the share that a z-test calls
    significant at the end only, and the share that is called significant at *any* of ``looks``
    equally spaced interim looks (stopping at the first "win"). Chapter 07."""
    rng = np.random.default_rng(seed)
    step = n_per_arm // looks
    a = rng.binomial(step, p, (n_experiments, looks)).cumsum(axis=1)
    b = rng.binomial(step, p, (n_experiments, looks)).cumsum(axis=1)
    n = step * np.arange(1, looks + 1)
    pv = two_proportion_p_value(a, n, b, n)
    return PeekingResult(
        float((pv[:, -1] < alpha).mean()),
        float((pv < alpha).any(axis=1).mean()),
        looks,
        n_experiments,
    )


# --------------------------------------------------------------------------- interleaving
def team_draft_interleave(
    a: Sequence[Hashable], b: Sequence[Hashable], k: int, rng: np.random.Generator
) -> tuple[list[Hashable], list[int]]:
    """Team-draft interleaving (Radlinski et al., CIKM 2008): in each round a coin decides which
    ranker picks first; each adds its best item not yet shown. Returns the merged list and, per
    slot, the team that contributed it (0 = A, 1 = B). Chapter 07."""
    return _team_draft(a, b, k, lambda: int(rng.integers(2)))


def team_draft_all(
    a: Sequence[Hashable], b: Sequence[Hashable], k: int
) -> list[tuple[list[Hashable], list[int]]]:
    """All ``2 ** ceil(k / 2)`` coin sequences of team-draft interleaving (one coin per round), each
    equally likely: averaging over them gives exact expectations instead of a random sample of
    interleavings. Chapter 07."""
    rounds = (k + 1) // 2
    out = []
    for coins in itertools.product((0, 1), repeat=rounds):
        out.append(_team_draft(a, b, k, functools.partial(next, iter(coins), 0)))
    return out


def _team_draft(
    a: Sequence[Hashable], b: Sequence[Hashable], k: int, coin: Callable[[], int]
) -> tuple[list[Hashable], list[int]]:
    merged: list[Hashable] = []
    teams: list[int] = []
    lists, pos, count = (list(a), list(b)), [0, 0], [0, 0]

    def next_item(team: int):
        src = lists[team]
        while pos[team] < len(src) and src[pos[team]] in merged:
            pos[team] += 1
        return src[pos[team]] if pos[team] < len(src) else None

    while len(merged) < k:
        team = coin() if count[0] == count[1] else int(count[1] < count[0])
        item = next_item(team)
        if item is None:
            team = 1 - team
            item = next_item(team)
            if item is None:
                break
        merged.append(item)
        teams.append(team)
        count[team] += 1
    return merged, teams


def interleaving_credit(teams: np.ndarray, clicks: np.ndarray) -> np.ndarray:
    """Per impression: +1 if team A's items got more clicks, -1 if B's did, 0 for a tie."""
    teams, clicks = np.asarray(teams), np.asarray(clicks, dtype=np.int64)
    a = (clicks * (teams == 0)).sum(axis=-1)
    b = (clicks * (teams == 1)).sum(axis=-1)
    return np.sign(a - b)


def sign_test_p_value(wins_a, wins_b) -> np.ndarray:
    """Two-sided p-value that A and B win equally often: the exact binomial sign test, equal to
    ``scipy.stats.binomtest(wins_a, wins_a + wins_b).pvalue``, vectorised over arrays of counts
    (1 when there are no wins at all). Chapter 07."""
    wa, wb = np.asarray(wins_a), np.asarray(wins_b)
    return np.minimum(1.0, 2 * stats.binom.cdf(np.minimum(wa, wb), wa + wb, 0.5))


# ------------------------------------------------------------------------- users with many sessions
@dataclass(frozen=True, eq=False)
class UserSessions:
    """Per-user totals from ``simulate_user_sessions``: each of ``n_users`` users runs
    ``sessions_per_user`` sessions. ``clicks_a`` / ``clicks_b``: the user's clicks when served
    ranker A / B (the two arms of an A/B test); ``wins_a`` / ``wins_b``: the user's interleaved
    sessions credited to A / B. ``expected_ab_diff`` / ``expected_il_diff``: the user's expected
    ``clicks_b - clicks_a`` and ``wins_b - wins_a`` given their traits and queries (no click noise);
    the effects are estimated from these, the variances from the simulated clicks. Chapter 07."""

    sessions_per_user: int
    clicks_a: np.ndarray
    clicks_b: np.ndarray
    wins_a: np.ndarray
    wins_b: np.ndarray
    expected_ab_diff: np.ndarray
    expected_il_diff: np.ndarray

    def ab_power(self, n_sessions, alpha: float = 0.05) -> np.ndarray:
        """Power of an A/B test randomised by user (``n_sessions`` in both arms together) that
        compares clicks per user with a two-sample z-test (normal approximation, moments from the
        simulation)."""
        n = np.asarray(n_sessions, dtype=np.float64) / (2 * self.sessions_per_user)
        effect = float(self.expected_ab_diff.mean())
        sd = float(np.sqrt(self.clicks_a.var() + self.clicks_b.var()))
        return _normal_power(n, effect, sd, sd, alpha)

    def interleaving_power(self, n_sessions, alpha: float = 0.05) -> np.ndarray:
        """Power of team-draft interleaving with a sign test over all non-tied sessions; the
        variance of B's net wins is taken per user, so the correlation of sessions of one user is
        included."""
        n = np.asarray(n_sessions, dtype=np.float64) / self.sessions_per_user
        net = self.wins_b - self.wins_a
        return _normal_power(
            n,
            float(self.expected_il_diff.mean()),
            float(net.std()),
            float(np.sqrt(np.mean(self.wins_a + self.wins_b))),
            alpha,
        )

    def sessions_for_power(self, power: float = 0.8, alpha: float = 0.05) -> tuple[int, int]:
        """Sessions (all arms together) for the A/B test and for interleaving to reach ``power``."""
        z_a, z_b = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
        sd_ab = np.sqrt(self.clicks_a.var() + self.clicks_b.var())
        n_ab = ((z_a + z_b) * sd_ab / self.expected_ab_diff.mean()) ** 2
        sd_il = (self.wins_b - self.wins_a).std()
        n_il = (
            (z_a * np.sqrt(np.mean(self.wins_a + self.wins_b)) + z_b * sd_il)
            / self.expected_il_diff.mean()
        ) ** 2
        s = self.sessions_per_user
        return int(np.ceil(2 * n_ab * s)), int(np.ceil(n_il * s))


def _normal_power(n, effect: float, sd_alt: float, sd_null: float, alpha: float) -> np.ndarray:
    """P(reject) of a two-sided z-test whose per-unit statistic has mean ``effect`` and sd
    ``sd_alt``, standardised with the null sd ``sd_null``, with ``n`` units (upper rejection region
    only)."""
    z = stats.norm.ppf(1 - alpha / 2)
    return stats.norm.cdf((np.sqrt(n) * abs(effect) - z * sd_null) / sd_alt)


def simulate_user_sessions(
    click_model: GradedClickModel,
    grades_a: np.ndarray,
    grades_b: np.ndarray,
    grades_interleaved: np.ndarray,
    teams_interleaved: np.ndarray,
    n_users: int,
    sessions_per_user: int,
    seed: int = 0,
) -> UserSessions:
    """Simulate ``n_users`` users (traits from ``click_model.sample_users``), each running
    ``sessions_per_user`` sessions on queries in random order, under ranker A, under ranker B and
    under an interleaved list. Rows of ``grades_a``/``grades_b`` are queries; rows of
    ``grades_interleaved`` / ``teams_interleaved`` are pre-drawn interleavings,
    ``len(grades_interleaved) // len(grades_a)`` consecutive rows per query. A user's traits and
    queries are shared by the three conditions (common random numbers: differences are estimated
    precisely); clicks are drawn independently. Chapter 07."""
    rng = np.random.default_rng(seed)
    mult, eta = click_model.sample_users(n_users, rng)
    user = np.repeat(np.arange(n_users), sessions_per_user)
    variants = len(grades_interleaved) // len(grades_a)
    # balanced: every (query, interleaving) row equally often, in random order: no sampling noise
    row_i = rng.permutation(np.resize(np.arange(len(grades_a) * variants), user.size))
    query = row_i // variants

    def probs(grades: np.ndarray) -> np.ndarray:
        return click_model.click_probabilities(grades, mult[user], eta[user])

    per_user = lambda x: np.bincount(user, weights=x, minlength=n_users)  # noqa: E731
    p_a, p_b, p_i = probs(grades_a[query]), probs(grades_b[query]), probs(grades_interleaved[row_i])
    teams = np.asarray(teams_interleaved)[row_i]
    credit = interleaving_credit(teams, simulate_clicks(p_i, rng))
    clicks_a, clicks_b = (
        simulate_clicks(p_a, rng).sum(axis=1),
        simulate_clicks(p_b, rng).sum(axis=1),
    )
    return UserSessions(
        sessions_per_user,
        per_user(clicks_a),
        per_user(clicks_b),
        per_user(credit == 1),
        per_user(credit == -1),
        per_user(p_b.sum(axis=1) - p_a.sum(axis=1)),
        per_user(-expected_credit(teams, p_i)),
    )


def expected_credit(teams: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Exact expectation of ``interleaving_credit`` (P(A wins) - P(B wins)) per interleaved list,
    given per-slot click probabilities: the distribution of (A's clicks - B's clicks), slot by
    slot."""
    teams, p = np.asarray(teams), np.asarray(probabilities, dtype=np.float64)
    n, k = p.shape
    dist = np.zeros((n, 2 * k + 1))
    dist[:, k] = 1.0
    for j in range(k):
        up, down = np.roll(dist, 1, axis=1), np.roll(dist, -1, axis=1)  # a click for A / for B
        shifted = np.where((teams[:, j] == 0)[:, None], up, down)
        dist = dist * (1 - p[:, j, None]) + shifted * p[:, j, None]
    return dist[:, k + 1 :].sum(axis=1) - dist[:, :k].sum(axis=1)


__all__ = [
    "examination",
    "GradedClickModel",
    "simulate_clicks",
    "relevance_grades",
    "sample_size_per_arm",
    "two_proportion_p_value",
    "PeekingResult",
    "peeking_simulation",
    "team_draft_interleave",
    "team_draft_all",
    "interleaving_credit",
    "sign_test_p_value",
    "expected_credit",
    "UserSessions",
    "simulate_user_sessions",
]
