import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, ndcg_score

from image_search import metrics as m


def test_hand_worked_example():
    ranked = ["a", "x", "b", "y", "c"]
    relevant = {"a", "b", "c", "d"}
    assert m.recall_at_k(ranked, relevant, 3) == pytest.approx(2 / 4)
    assert m.precision_at_k(ranked, relevant, 3) == pytest.approx(2 / 3)
    # AP: hits at ranks 1, 3, 5 -> (1/1 + 2/3 + 3/5) / 4 relevant
    assert m.average_precision(ranked, relevant) == pytest.approx((1 + 2 / 3 + 3 / 5) / 4)
    assert m.reciprocal_rank(["x", "y", "a"], {"a"}) == pytest.approx(1 / 3)
    assert m.reciprocal_rank(["x", "y"], {"a"}) == 0.0
    # NDCG@3 with binary gains: DCG = 1 + 1/log2(4); IDCG = 1 + 1/log2(3) + 1/log2(4)
    assert m.ndcg_at_k(ranked, relevant, 3) == pytest.approx((1 + 0.5) / (1 + 1 / math.log2(3) + 0.5))


def test_perfect_and_empty_rankings():
    assert m.ndcg_at_k(["a", "b"], {"a", "b"}, 2) == pytest.approx(1.0)
    assert m.recall_at_k([], {"a"}, 5) == 0.0
    assert m.precision_at_k(["a"], {"a"}, 5) == pytest.approx(0.2)  # empty slots count as misses
    assert m.recall_at_k(["a"], set(), 5) == 0.0
    with pytest.raises(ValueError):
        m.recall_at_k(["a"], {"a"}, 0)


def test_average_precision_matches_sklearn():
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = 30
        labels = rng.random(n) < 0.3
        labels[rng.integers(n)] = True
        scores = rng.random(n)
        order = np.argsort(-scores)
        ranked = order.tolist()
        relevant = set(np.flatnonzero(labels).tolist())
        assert m.average_precision(ranked, relevant) == pytest.approx(average_precision_score(labels, scores))


def test_ndcg_matches_sklearn_with_graded_gains():
    rng = np.random.default_rng(2)
    for _ in range(20):
        n, k = 20, 7
        rel = rng.integers(0, 4, n).astype(float)
        scores = rng.random(n)
        ranked = np.argsort(-scores).tolist()
        # sklearn uses linear gains; ours are 2**rel - 1, so feed sklearn the exponential gains.
        ours = m.ndcg_at_k(ranked, {i: r for i, r in enumerate(rel)}, k)
        theirs = ndcg_score([2 ** rel - 1], [scores], k=k)
        assert ours == pytest.approx(theirs)


def test_means_and_report():
    rankings = [["a", "b"], ["c", "d"], ["e", "f"]]
    truth = ["b", "c", "z"]
    r = m.retrieval_report(rankings, truth, {x: "A" if x in "abc" else "B" for x in "abcdefz"}, ks=(1, 2))
    assert r.recall == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3)}
    assert r.mrr == pytest.approx((0.5 + 1 + 0) / 3)
    assert r.category_precision[2] == pytest.approx((1 + 0.5 + 1) / 3)  # z and e, f are all "B"
    with pytest.raises(ValueError):
        m.mean_recall_at_k(rankings, [{"a"}], 1)


def test_bootstrap_interval_covers_mean_and_groups_widen_it():
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(50), 4)
    per_group = rng.random(50) < 0.5
    values = per_group[groups].astype(float)  # four identical queries per product
    plain = m.bootstrap_ci(values, seed=0)
    grouped = m.bootstrap_ci(values, seed=0, groups=groups)
    assert plain.low <= values.mean() <= plain.high
    assert grouped.high - grouped.low > 1.5 * (plain.high - plain.low)
    with pytest.raises(ValueError):
        m.bootstrap_ci([])
