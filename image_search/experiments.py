"""Online evaluation by simulation: a position-biased click model, A/B test statistics (sample
size, z-test, the peeking problem) and team-draft interleaving. Chapter 07.

Everything is vectorised NumPy with seeded generators, so simulations of hundreds of thousands of
impressions take seconds and reproduce exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class ClickModel:
    """Examination hypothesis: P(click at rank r) = P(examine r) x P(click | examined, item).

    P(examine r) = ``1 / r**eta`` (position bias); the attractiveness of an item depends on its
    relevance grade: ``attractiveness[g]`` for grade g (e.g. 0 = other, 1 = same category,
    2 = the exact product). Chapter 07."""

    eta: float = 1.0
    attractiveness: tuple[float, ...] = (0.02, 0.1, 0.6)

    def examination(self, k: int) -> np.ndarray:
        return 1.0 / np.arange(1, k + 1) ** self.eta

    def click_probabilities(self, grades: np.ndarray) -> np.ndarray:
        """``(n, k)`` integer relevance grades of ranked lists -> per-slot click probabilities."""
        grades = np.asarray(grades)
        return np.asarray(self.attractiveness)[grades] * self.examination(grades.shape[-1])

    def session_ctr(self, grades: np.ndarray) -> np.ndarray:
        """Probability that a session (one ranked list) gets at least one click, per list."""
        return 1.0 - np.prod(1.0 - self.click_probabilities(grades), axis=-1)


def simulate_clicks(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Independent Bernoulli clicks with the given per-slot probabilities (same shape, bool)."""
    return rng.random(np.shape(probabilities)) < probabilities


def relevance_grades(rankings: Sequence[Sequence[Hashable]], true_ids: Sequence[Hashable],
                     category_of: dict, k: int = 10) -> np.ndarray:
    """Grades of ranked lists for the click model: 2 = the query's product, 1 = same category, 0 = other."""
    out = np.zeros((len(rankings), k), dtype=np.int64)
    for i, (ranked, t) in enumerate(zip(rankings, true_ids)):
        for j, r in enumerate(list(ranked)[:k]):
            out[i, j] = 2 if r == t else int(category_of[r] == category_of[t])
    return out


# --------------------------------------------------------------------------- A/B statistics
def sample_size_per_arm(p_a: float, p_b: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Users per arm for a two-sided two-proportion z-test to detect ``p_a`` vs ``p_b``. Chapter 07."""
    if p_a == p_b:
        raise ValueError("the two proportions are equal: no sample size detects no difference")
    z_a, z_b = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    p_bar = (p_a + p_b) / 2
    n = (z_a * np.sqrt(2 * p_bar * (1 - p_bar)) + z_b * np.sqrt(p_a * (1 - p_a) + p_b * (1 - p_b))) ** 2 / (p_a - p_b) ** 2
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


def peeking_simulation(p: float, n_per_arm: int, looks: int, n_experiments: int = 2000,
                       alpha: float = 0.05, seed: int = 0) -> PeekingResult:
    """Simulate A/A tests (no true difference, conversion ``p``): the share that a z-test calls
    significant at the end only, and the share that is called significant at *any* of ``looks``
    equally spaced interim looks (stopping at the first "win"). Chapter 07."""
    rng = np.random.default_rng(seed)
    step = n_per_arm // looks
    a = rng.binomial(step, p, (n_experiments, looks)).cumsum(axis=1)
    b = rng.binomial(step, p, (n_experiments, looks)).cumsum(axis=1)
    n = step * np.arange(1, looks + 1)
    pv = two_proportion_p_value(a, n, b, n)
    return PeekingResult(float((pv[:, -1] < alpha).mean()), float((pv < alpha).any(axis=1).mean()), looks, n_experiments)


# --------------------------------------------------------------------------- interleaving
def team_draft_interleave(a: Sequence[Hashable], b: Sequence[Hashable], k: int,
                          rng: np.random.Generator) -> tuple[list[Hashable], list[int]]:
    """Team-draft interleaving (Radlinski et al., CIKM 2008): in each round a coin decides which
    ranker picks first; each adds its best item not yet shown. Returns the merged list and, per
    slot, the team that contributed it (0 = A, 1 = B). Chapter 07."""
    merged: list[Hashable] = []
    teams: list[int] = []
    lists, pos, count = (list(a), list(b)), [0, 0], [0, 0]

    def next_item(team: int):
        src = lists[team]
        while pos[team] < len(src) and src[pos[team]] in merged:
            pos[team] += 1
        return src[pos[team]] if pos[team] < len(src) else None

    while len(merged) < k:
        team = int(rng.integers(2)) if count[0] == count[1] else int(count[1] < count[0])
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
    """Two-sided p-value that A and B win equally often (normal approximation to the binomial)."""
    wa, wb = np.asarray(wins_a, dtype=np.float64), np.asarray(wins_b, dtype=np.float64)
    n = wa + wb
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(n > 0, (wa - wb) / np.sqrt(n), 0.0)
    return 2 * stats.norm.sf(np.abs(z))


__all__ = ["ClickModel", "simulate_clicks", "relevance_grades", "sample_size_per_arm", "two_proportion_p_value",
           "PeekingResult", "peeking_simulation", "team_draft_interleave", "interleaving_credit",
           "sign_test_p_value"]
