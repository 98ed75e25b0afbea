"""Tests of chapter 13's simulated users, click model, user vectors and bandits."""

import numpy as np
import pytest

from image_search.metrics import intra_list_diversity
from image_search.personalization import (
    FixedPolicy,
    LinearThompson,
    LinUCB,
    Policy,
    ShopEnvironment,
    TasteClickModel,
    category_concentration,
    preference,
    simulate,
    simulate_users,
    user_vector,
)


def test_simulated_users_are_seeded_and_follow_the_catalog(catalog):
    from collections import Counter

    a = simulate_users(catalog.products, 1500, seed=1, browsers=0.3)
    assert a == simulate_users(catalog.products, 1500, seed=1, browsers=0.3)
    assert a != simulate_users(catalog.products, 1500, seed=2, browsers=0.3)
    taste = np.array([u.taste for u in a])
    assert abs((taste > 0.45).mean() - 0.3) < 0.04  # the share of browsers asked for
    assert (
        abs(np.median(taste[taste > 0.45]) - 0.8) < 0.03
        and abs(np.median(taste[taste <= 0.45]) - 0.1) < 0.03
    )
    # preferred categories are drawn with the catalog's own frequencies
    users, shop = Counter(u.category for u in a), Counter(p.category for p in catalog.products)
    distance = sum(abs(users[c] / len(a) - shop[c] / len(catalog)) for c in shop) / 2
    assert distance < 0.08  # a uniform choice would be 0.25 away
    prices = {round(p.price * 0.5, 2) for p in catalog.products}
    assert all(
        u.price_band[0] in prices
        and u.price_band[1] == pytest.approx(3 * u.price_band[0], abs=0.03)
        for u in a[:100]
    )


def test_preference_weights_hand_worked(catalog):
    from dataclasses import replace

    from image_search.personalization import User

    p = catalog.products[0]
    user = User(0, p.category, p.colour, "no-such-brand", (p.price + 1, p.price + 2), taste=0.5)
    assert preference(user, p) == pytest.approx(
        0.4 + 0.3
    )  # category and colour; not brand, not price
    assert preference(replace(user, brand=p.brand, price_band=(0, p.price)), p) == pytest.approx(
        1.0
    )


def test_click_model_position_bias_and_bounds():
    cm = TasteClickModel()
    ex = cm.examine(10)
    assert ex[0] == 1 and np.all(np.diff(ex) < 0)
    rel = cm.relevance(np.array([0.9, 0.4, 0.99]), np.array([False, False, True]))
    assert rel[1] == 0 and rel[2] == 1 and 0 < rel[0] < cm.similar_weight + 1e-9


def test_user_vector_decays_towards_recent_clicks():
    e = np.eye(3, dtype=np.float32)
    assert user_vector(np.zeros((0, 3))) is None
    v = user_vector(e[[0, 1]], decay=0.5)
    assert v[1] > v[0] > 0 and np.isclose(np.linalg.norm(v), 1)
    assert intra_list_diversity(e) == pytest.approx(1.0) and intra_list_diversity(
        e[[0, 0]]
    ) == pytest.approx(0.0)


@pytest.mark.parametrize("make", [lambda: LinUCB(2, 2), lambda: LinearThompson(2, 2, seed=0)])
def test_bandits_learn_the_better_arm_per_context(make):
    rng = np.random.default_rng(0)
    bandit = make()
    picks = []
    for _ in range(1500):
        b = rng.random()
        x = np.array([1.0, b])
        arm = bandit.select(x)
        mean = (0.9 - 0.6 * b, 0.2 + 0.7 * b)[arm]  # arm 0 best for b < 0.54, arm 1 above
        bandit.update(arm, x, float(rng.random() < mean))
        picks.append((arm, b))
    late = np.array(picks[-500:])
    assert late[late[:, 1] < 0.3, 0].mean() < 0.2
    assert late[late[:, 1] > 0.8, 0].mean() > 0.8


def _shop(catalog, seed=0):
    """120 products whose shop photos cluster by category (so a user vector carries taste), 20
    users."""
    products = catalog.products[:120]
    categories = sorted({p.category for p in products})
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(categories), 16))
    icons = np.stack(
        [centres[categories.index(p.category)] + 0.8 * rng.normal(size=16) for p in products]
    )
    icons /= np.linalg.norm(icons, axis=1, keepdims=True)
    views = np.stack([icons + 0.3 * rng.normal(size=icons.shape) for _ in range(2)], axis=1)
    views /= np.linalg.norm(views, axis=2, keepdims=True)
    return ShopEnvironment(
        products,
        icons.astype(np.float32),
        views.astype(np.float32),
        tuple(simulate_users(products, 20, seed=seed)),
        (Policy("visual"), Policy("blend", 1.0)),
        candidates=30,
        k=5,
    )


@pytest.fixture(scope="module")
def shop_log(catalog):
    env = _shop(catalog)
    return env, simulate(env, FixedPolicy(0), 800, seed=0)


def test_simulation_is_seeded_and_clicks_follow_the_click_model(shop_log):
    env, log = shop_log
    a, b = simulate(env, FixedPolicy(0), 100, seed=3), simulate(env, FixedPolicy(0), 100, seed=3)
    assert np.array_equal(a.reward, b.reward) and np.array_equal(a.user, b.user)
    assert not np.array_equal(a.user, simulate(env, FixedPolicy(0), 100, seed=4).user)
    # the drawn clicks average what the click model expects of the lists shown
    assert abs(log.reward.mean() - log.expected.mean()) < 0.08 and log.reward.mean() > 0.5
    assert (
        np.array_equal(log.expected, log.arm_expected[:, 0])
        and 0 <= category_concentration(log) <= 1
    )


def test_personalising_pays_for_browsers_and_costs_searchers(shop_log):
    """Blending in the user vector earns browsers (taste ~0.8) clicks once they have a history, and
    costs searchers (taste ~0.1) clicks; with no history both policies show the same list."""
    env, log = shop_log
    taste = np.array([env.users[u].taste for u in log.user])
    gain = log.arm_expected[:, 1] - log.arm_expected[:, 0]
    late = log.history >= 5
    assert gain[late & (taste > 0.5)].mean() > 0.05
    assert gain[late & (taste < 0.5)].mean() < -0.1
    assert np.all(gain[log.history == 0] == 0)
