"""Tests of image_search.experiments: click model, A/B statistics, peeking, interleaving."""

from __future__ import annotations

import numpy as np
import pytest

from image_search.experiments import (
    GradedClickModel,
    examination,
    expected_credit,
    interleaving_credit,
    peeking_simulation,
    relevance_grades,
    sample_size_per_arm,
    sign_test_p_value,
    simulate_clicks,
    simulate_user_sessions,
    team_draft_all,
    team_draft_interleave,
    two_proportion_p_value,
)


def test_both_click_models_share_the_position_bias_model():
    from image_search.personalization import TasteClickModel

    np.testing.assert_allclose(examination(4, 1.0), [1, 1 / 2, 1 / 3, 1 / 4])
    np.testing.assert_allclose(examination(3, np.array([0.0, 2.0])), [[1, 1, 1], [1, 1 / 4, 1 / 9]])
    assert np.array_equal(
        TasteClickModel(position_bias=0.8).examine(10), GradedClickModel(eta=0.8).examination(10)
    )


def test_click_model_position_bias_and_relevance():
    cm = GradedClickModel(eta=1.0, attractiveness=(0.0, 0.5, 1.0))
    p = cm.click_probabilities(np.array([[2, 2, 1, 0]]))
    np.testing.assert_allclose(p, [[1.0, 0.5, 0.5 / 3, 0.0]])
    assert cm.session_ctr(np.array([[2, 0], [0, 0]])).tolist() == [1.0, 0.0]
    clicks = simulate_clicks(np.full((20000, 2), 0.3), np.random.default_rng(0))
    assert abs(clicks.mean() - 0.3) < 0.01


def test_relevance_grades():
    g = relevance_grades([["a", "b", "c"]], ["b"], {"a": "x", "b": "y", "c": "y"}, k=3)
    assert g.tolist() == [[0, 2, 1]]


def test_sample_size_matches_textbook_value():
    # 10% -> 12% needs about 3,841 per arm at alpha 0.05, power 0.8 (pooled-variance formula)
    assert 3800 <= sample_size_per_arm(0.10, 0.12) <= 3900
    assert sample_size_per_arm(0.10, 0.11) > sample_size_per_arm(0.10, 0.12)
    with pytest.raises(ValueError):
        sample_size_per_arm(0.1, 0.1)


def test_z_test_and_sign_test():
    from scipy.stats import binomtest

    assert two_proportion_p_value(100, 1000, 100, 1000) == pytest.approx(1.0)
    assert two_proportion_p_value(100, 1000, 150, 1000) < 0.01
    assert sign_test_p_value(50, 50) == pytest.approx(1.0) and sign_test_p_value(80, 20) < 1e-6
    assert sign_test_p_value(0, 0) == 1.0
    wins = [
        (0, 1),
        (1, 0),
        (3, 9),
        (9, 3),
        (7, 8),
        (12, 12),
        (0, 15),
        (40, 61),
        (480, 530),
        (1, 2000),
    ]
    vectorised = sign_test_p_value(np.array([a for a, _ in wins]), np.array([b for _, b in wins]))
    exact = [binomtest(a, a + b, 0.5).pvalue for a, b in wins]
    np.testing.assert_allclose(vectorised, exact, rtol=1e-9, atol=1e-300)
    # small samples: the exact test is more conservative than the normal approximation
    # (2 * sf(2.0) = 0.046)
    assert sign_test_p_value(2, 10) > 0.038


def test_peeking_inflates_false_positives():
    r = peeking_simulation(0.1, 20000, looks=20, n_experiments=1000, seed=0)
    assert 0.02 < r.fixed_horizon < 0.08
    assert r.peeking > 2 * r.fixed_horizon


def test_team_draft_interleaving_is_fair_and_complete():
    rng = np.random.default_rng(0)
    merged, teams = team_draft_interleave(list("abcdef"), list("bagfhi"), 6, rng)
    assert len(merged) == len(set(merged)) == 6
    assert abs(teams.count(0) - teams.count(1)) <= 1
    assert merged[0] in ("a", "b")
    # identical rankers: each team contributes half the slots over many draws
    share = np.mean(
        [np.mean(team_draft_interleave(list("abcd"), list("abcd"), 4, rng)[1]) for _ in range(500)]
    )
    assert abs(share - 0.5) < 0.01
    # all coin sequences: 2**3 for k = 5, each random draw is one of them, and they are balanced
    every = team_draft_all(list("abcdef"), list("bagfhi"), 5)
    assert (
        len(every) == 8 and team_draft_interleave(list("abcdef"), list("bagfhi"), 5, rng) in every
    )
    same = np.array([t for _, t in team_draft_all(list("abcd"), list("abcd"), 4)])
    assert same.shape == (4, 4) and same.mean(axis=0).tolist() == [0.5] * 4
    assert interleaving_credit(np.array([[0, 1, 0]]), np.array([[1, 0, 1]])).tolist() == [1]
    assert interleaving_credit(np.array([[0, 1]]), np.array([[1, 1]])).tolist() == [0]


def _grades_and_interleavings(rank_a, rank_b, grade):
    """Grades of A's and B's lists per query, and all team-draft interleavings per query."""
    ga = np.array([[grade[q][i] for i in r] for q, r in enumerate(rank_a)])
    gb = np.array([[grade[q][i] for i in r] for q, r in enumerate(rank_b)])
    inter = [
        (q, m, t)
        for q, (a, b) in enumerate(zip(rank_a, rank_b))
        for m, t in team_draft_all(a, b, len(a))
    ]
    return (
        ga,
        gb,
        np.array([[grade[q][i] for i in m] for q, m, _ in inter]),
        np.array([t for _, _, t in inter]),
    )


def _two_rankers(n_queries=60, k=10):
    """Item 0 of each query is the exact product (grade 2), others grade 0/1; B ranks it first, A
    third."""
    rng = np.random.default_rng(0)
    grade = [[2] + rng.integers(0, 2, k - 1).tolist() for _ in range(n_queries)]
    rank_b = [list(range(k))] * n_queries
    rank_a = [[1, 2, 0] + list(range(3, k))] * n_queries
    return rank_a, rank_b, grade


def test_heterogeneous_users_default_is_homogeneous_and_mean_one():
    cm = GradedClickModel()
    mult, eta = cm.sample_users(5, np.random.default_rng(0))
    assert mult.tolist() == [1.0] * 5 and eta.tolist() == [1.0] * 5
    g = np.array([[2, 1, 0], [0, 2, 1]])
    np.testing.assert_allclose(
        cm.click_probabilities(g, mult[:2], eta[:2]), cm.click_probabilities(g)
    )
    het = GradedClickModel(propensity_sigma=1.0, eta_sigma=0.5)
    mult, eta = het.sample_users(200_000, np.random.default_rng(0))
    assert abs(mult.mean() - 1) < 0.02 and abs(eta.mean() - 1) < 0.01 and mult.std() > 1
    p = het.click_probabilities(
        np.full((3, 4), 2), np.array([0.1, 1.0, 10.0]), np.array([1.0, 1.0, 2.0])
    )
    np.testing.assert_allclose(p[0], 0.06 / np.arange(1, 5))
    assert p[2].max() == 1.0 and p[2, 3] == pytest.approx(min(1.0, 6 / 16))


def test_expected_credit_matches_simulation():
    rng = np.random.default_rng(0)
    teams = rng.integers(0, 2, (4, 5))
    p = rng.uniform(0, 0.8, (4, 5))
    exact = expected_credit(teams, p)
    reps = 100_000
    sim = interleaving_credit(
        np.repeat(teams, reps, axis=0), simulate_clicks(np.repeat(p, reps, axis=0), rng)
    )
    np.testing.assert_allclose(sim.reshape(4, reps).mean(axis=1), exact, atol=0.01)


def test_heterogeneity_inflates_ab_variance_but_interleaving_stays_unbiased():
    rank_a, rank_b, grade = _two_rankers()
    data = _grades_and_interleavings(rank_a, rank_b, grade)
    het_model = GradedClickModel(propensity_sigma=1.0, eta_sigma=0.5)
    kw = dict(n_users=4000, sessions_per_user=10, seed=0)
    homo = simulate_user_sessions(GradedClickModel(), *data, **kw)
    het = simulate_user_sessions(het_model, *data, **kw)
    # between-user variance: clicks per user vary far more with heterogeneous users
    assert het.clicks_a.var() > 3 * homo.clicks_a.var()
    # B is better and both methods see it; the A/B test needs many more sessions with
    # heterogeneous users
    for u in (homo, het):
        assert (
            u.expected_ab_diff.mean() > 0
            and u.expected_il_diff.mean() > 0
            and u.wins_b.sum() > u.wins_a.sum()
        )
    ab_homo, il_homo = homo.sessions_for_power()
    ab_het, il_het = het.sessions_for_power()
    assert ab_het > 3 * ab_homo and il_het < 2 * il_homo and il_het < ab_het / 3
    # identical rankers: interleaving credits A and B equally, whatever the users' traits
    same = simulate_user_sessions(
        het_model, *_grades_and_interleavings(rank_a, rank_a, grade), **kw
    )
    assert sign_test_p_value(same.wins_a.sum(), same.wins_b.sum()) > 0.01
    assert abs(same.expected_il_diff.mean()) < 0.02 * het.expected_il_diff.mean()
    assert same.expected_ab_diff.mean() == 0.0


def test_normal_power_agrees_with_resampling_users():
    u = simulate_user_sessions(
        GradedClickModel(propensity_sigma=1.0),
        *_grades_and_interleavings(*_two_rankers()),
        n_users=4000,
        sessions_per_user=5,
        seed=0,
    )
    rng = np.random.default_rng(2)
    for n_sessions in (u.sessions_for_power()[1], 2 * u.sessions_for_power()[1]):
        users = rng.integers(0, 4000, (1000, n_sessions // 5))
        wa, wb = u.wins_a[users].sum(axis=1), u.wins_b[users].sum(axis=1)
        mc = np.mean((sign_test_p_value(wa, wb) < 0.05) & (wb > wa))
        assert abs(mc - u.interleaving_power(n_sessions)) < 0.06
