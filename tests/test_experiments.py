"""Tests of image_search.experiments: click model, A/B statistics, peeking, interleaving."""
from __future__ import annotations

import numpy as np
import pytest

from image_search.experiments import (ClickModel, interleaving_credit, peeking_simulation, relevance_grades,
                                      sample_size_per_arm, sign_test_p_value, simulate_clicks,
                                      team_draft_interleave, two_proportion_p_value)


def test_click_model_position_bias_and_relevance():
    cm = ClickModel(eta=1.0, attractiveness=(0.0, 0.5, 1.0))
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
    assert two_proportion_p_value(100, 1000, 100, 1000) == pytest.approx(1.0)
    assert two_proportion_p_value(100, 1000, 150, 1000) < 0.01
    assert sign_test_p_value(50, 50) == pytest.approx(1.0) and sign_test_p_value(80, 20) < 1e-6


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
    share = np.mean([np.mean(team_draft_interleave(list("abcd"), list("abcd"), 4, rng)[1]) for _ in range(500)])
    assert abs(share - 0.5) < 0.01
    assert interleaving_credit(np.array([[0, 1, 0]]), np.array([[1, 0, 1]])).tolist() == [1]
    assert interleaving_credit(np.array([[0, 1]]), np.array([[1, 1]])).tolist() == [0]
