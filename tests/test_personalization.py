"""Tests of chapter 13's simulated users, click model, user vectors and bandits."""
import numpy as np
import pytest

from image_search.personalization import (ClickModel, FixedPolicy, LinearThompson, LinUCB, Oracle, Policy,
                                          ShopEnvironment, category_concentration, intra_list_diversity,
                                          preference, preference_matrix, simulate, simulate_users, user_vector)

from conftest import unit_vectors


def test_users_are_seeded_and_preferences_match_matrix(catalog):
    a, b = simulate_users(catalog.products, 20, seed=1), simulate_users(catalog.products, 20, seed=1)
    assert a == b and all(0 <= u.taste <= 1 for u in a)
    m = preference_matrix(a, catalog.products[:50])
    assert m.shape == (20, 50)
    assert np.allclose(m[3], [preference(a[3], p) for p in catalog.products[:50]])
    assert m.min() >= 0 and m.max() <= 1


def test_preference_weights_hand_worked(catalog):
    from dataclasses import replace

    from image_search.personalization import User

    p = catalog.products[0]
    user = User(0, p.category, p.colour, "no-such-brand", (p.price + 1, p.price + 2), taste=0.5)
    assert preference(user, p) == pytest.approx(0.4 + 0.3)  # category and colour; not brand, not price
    assert preference(replace(user, brand=p.brand, price_band=(0, p.price)), p) == pytest.approx(1.0)


def test_click_model_position_bias_and_bounds():
    cm = ClickModel()
    ex = cm.examine(10)
    assert ex[0] == 1 and np.all(np.diff(ex) < 0)
    rel = cm.relevance(np.array([0.9, 0.4, 0.99]), np.array([False, False, True]))
    assert rel[1] == 0 and rel[2] == 1 and 0 < rel[0] < cm.similar_weight + 1e-9


def test_user_vector_decays_towards_recent_clicks():
    e = np.eye(3, dtype=np.float32)
    assert user_vector(np.zeros((0, 3))) is None
    v = user_vector(e[[0, 1]], decay=0.5)
    assert v[1] > v[0] > 0 and np.isclose(np.linalg.norm(v), 1)
    assert intra_list_diversity(e) == pytest.approx(1.0) and intra_list_diversity(e[[0, 0]]) == pytest.approx(0.0)


@pytest.mark.parametrize("make", [lambda: LinUCB(2, 2), lambda: LinearThompson(2, 2, seed=0)])
def test_bandits_learn_the_better_arm_per_context(make):
    rng = np.random.default_rng(0)
    bandit = make()
    picks = []
    for t in range(1500):
        b = rng.random()
        x = np.array([1.0, b])
        arm = bandit.select(x)
        mean = (0.9 - 0.6 * b, 0.2 + 0.7 * b)[arm]   # arm 0 best for b < 0.54, arm 1 above
        bandit.update(arm, x, float(rng.random() < mean))
        picks.append((arm, b))
    late = np.array(picks[-500:])
    assert late[late[:, 1] < 0.3, 0].mean() < 0.2
    assert late[late[:, 1] > 0.8, 0].mean() > 0.8


def test_simulation_is_deterministic_and_oracle_has_no_regret(catalog):
    products = catalog.products[:80]
    icons = unit_vectors(80, 16, seed=0)
    views = np.stack([icons + 0.1 * unit_vectors(80, 16, seed=s) for s in (1, 2)], axis=1)
    views /= np.linalg.norm(views, axis=2, keepdims=True)
    env = ShopEnvironment(products, icons, views, tuple(simulate_users(products, 10, seed=0)),
                          (Policy("visual"), Policy("blend", 0.5)), candidates=20, k=5)
    a, b = simulate(env, FixedPolicy(1), 200, seed=3), simulate(env, FixedPolicy(1), 200, seed=3)
    assert np.array_equal(a.reward, b.reward) and np.array_equal(a.arm, b.arm)
    oracle = simulate(env, Oracle(), 200, seed=3)
    assert oracle.regret[-1] == 0 and np.all(oracle.expected >= oracle.arm_expected.max(axis=1) - 1e-12)
    assert a.regret[-1] >= 0 and a.arm_expected.shape == (200, 2)
    assert 0 <= category_concentration(a) <= 1
