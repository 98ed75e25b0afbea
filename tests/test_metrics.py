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
    assert m.ndcg_at_k(ranked, relevant, 3) == pytest.approx(
        (1 + 0.5) / (1 + 1 / math.log2(3) + 0.5)
    )


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
        assert m.average_precision(ranked, relevant) == pytest.approx(
            average_precision_score(labels, scores)
        )


def test_ndcg_matches_sklearn_with_graded_gains():
    rng = np.random.default_rng(2)
    for _ in range(20):
        n, k = 20, 7
        rel = rng.integers(0, 4, n).astype(float)
        scores = rng.random(n)
        ranked = np.argsort(-scores).tolist()
        # sklearn uses linear gains; ours are 2**rel - 1, so feed sklearn the exponential gains.
        ours = m.ndcg_at_k(ranked, {i: r for i, r in enumerate(rel)}, k)
        theirs = ndcg_score([2**rel - 1], [scores], k=k)
        assert ours == pytest.approx(theirs)


def test_means_and_report():
    rankings = [["a", "b"], ["c", "d"], ["e", "f"]]
    truth = ["b", "c", "z"]
    r = m.retrieval_report(
        rankings, truth, {x: "A" if x in "abc" else "B" for x in "abcdefz"}, ks=(1, 2)
    )
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


def test_average_precision_at_k_is_normalised_by_what_k_slots_can_hold():
    relevant = {"a", "b", "c", "d", "e"}
    # five relevant items, three slots: a perfect top 3 scores 1, not 3/5
    assert m.average_precision(["a", "b", "c", "d", "e"], relevant, k=3) == pytest.approx(1.0)
    # hits at ranks 1 and 3 of 3: (1/1 + 2/3) / min(5, 3)
    assert m.average_precision(["a", "x", "b", "c"], relevant, k=3) == pytest.approx(
        (1 + 2 / 3) / 3
    )
    # one relevant item: AP@k is the reciprocal rank within the top k
    assert m.average_precision(["x", "y", "a"], {"a"}, k=3) == pytest.approx(1 / 3)
    assert m.average_precision(["x", "y", "a"], {"a"}, k=2) == 0.0
    assert m.mean_average_precision([["a", "x"], ["x", "b"]], [{"a"}, {"b"}], k=2) == pytest.approx(
        0.75
    )


def test_product_recall_takes_id_lists_arrays_and_search_results():
    class Results:  # anything with .ids, as SearchResults
        def __init__(self, ids):
            self.ids = ids

    rankings = [["a", "b", "c"], ["x", "y", "b"], ["z"]]
    truth = ["b", "b", "q"]
    assert m.product_recall(rankings, truth, 1) == 0.0
    assert m.product_recall(rankings, truth, 2) == pytest.approx(1 / 3)
    assert m.product_recall(rankings, truth, 3) == pytest.approx(2 / 3)
    assert m.product_recall([Results(tuple(r)) for r in rankings], truth, 3) == pytest.approx(2 / 3)
    assert m.product_recall(np.array([[3, 1], [2, 0]]), [1, 5], 2) == 0.5
    assert m.product_recall(rankings, truth, 3) == m.mean_recall_at_k(
        rankings, [{t} for t in truth], 3
    )
    with pytest.raises(ValueError):
        m.product_recall(rankings, truth[:2], 3)
    with pytest.raises(ValueError):
        m.product_recall(rankings, truth, 0)


def test_overlap_recall_equals_faiss_knn_intersection():
    from faiss.contrib.evaluation import knn_intersection_measure

    rng = np.random.default_rng(4)
    exact = np.stack([rng.permutation(50)[:10] for _ in range(30)])
    found = exact.copy()
    found[:, 6:] = rng.integers(50, 100, (30, 4))  # the last four of each row are misses
    found[::3] = np.roll(found[::3], 2, axis=1)  # order within the top k does not matter
    assert m.overlap_recall(found, exact, 10) == pytest.approx(0.6)
    assert m.overlap_recall(found, exact, 10) == pytest.approx(
        knn_intersection_measure(found, exact)
    )
    # id lists, a short row (the index returned fewer than k) and top-k cut-off
    assert m.overlap_recall([["a", "b"], ["c"]], [["b", "a"], ["c", "d"]], 2) == pytest.approx(0.75)
    assert m.overlap_recall([["a", "x", "b"]], [["a", "b", "c"]], 1) == 1.0


def test_intra_list_diversity_is_one_minus_mean_pairwise_cosine():
    v = np.array([[1, 0, 0], [0.6, 0.8, 0], [0, 0, 1]], dtype=np.float32)
    # cosines 0.6, 0, 0 -> mean 0.2
    assert m.intra_list_diversity(v) == pytest.approx(0.8)
    assert m.intra_list_diversity(v[:1]) == 0.0
    assert m.intra_list_diversity(np.repeat(v[:1], 4, axis=0)) == pytest.approx(0.0)


TYPES = {"c1": "chair", "c2": "chair", "c3": "chair", "s1": "sofa", "s2": "sofa", "l1": "lamp"}


def test_type_precision_and_its_ceiling_hand_worked():
    rankings = [["c1", "s1", "c2"], ["s1", "c1", "l1"], ["l1", "s1", "c3"]]
    truth = ["c2", "s2", "l1"]
    r = m.retrieval_report(rankings, truth, ks=(1, 3), type_of=TYPES)
    # P@1: chair ok, sofa ok, lamp ok; P@3: 2/3 chairs, 1/3 sofas, 1/3 lamps
    assert r.type_precision == {
        1: pytest.approx(1.0),
        3: pytest.approx((2 / 3 + 1 / 3 + 1 / 3) / 3),
    }
    # a chair query can fill 3 slots with chairs, a sofa query 2, the lamp query only 1
    assert r.type_precision_ceiling == {1: 1.0, 3: pytest.approx((1 + 2 / 3 + 1 / 3) / 3)}
    assert r.category_precision == {} and "typeP@3=0.444 (ceiling 0.667)" in str(r)
    assert m.retrieval_report(rankings, truth, ks=(1,)).ndcg is None


def test_graded_ndcg_hand_worked():
    d = 1 / np.log2(np.arange(2, 12))
    # query c2: ranked c1 (same type, 1), s1 (0), c2 (exact, 2); ideal: c2, c1, c3 -> 2, 1, 1
    got = m.type_ndcg([["c1", "s1", "c2"]], ["c2"], TYPES)
    assert got == pytest.approx((1 * d[0] + 2 * d[2]) / (2 * d[0] + d[1] + d[2]))
    assert m.type_ndcg([["c2", "c3", "c1"]], ["c2"], TYPES) == pytest.approx(1.0)
    assert (
        m.type_ndcg([["c3", "c1", "c2"]], ["c2"], TYPES) < 1.0
    )  # the exact product should be first
    assert m.type_ndcg([["s1", "l1"]], ["c1"], TYPES) == 0.0
    # graded beats exact-only: a same-type miss still earns credit
    report = m.retrieval_report([["c1", "s1"]], ["c2"], ks=(1,), type_of=TYPES)
    assert report.ndcg > 0 and report.recall[1] == 0.0


def test_graded_ndcg_matches_sklearn_with_linear_gains():
    rng = np.random.default_rng(5)
    ids = [f"p{i}" for i in range(60)]
    type_of = {p: f"t{rng.integers(6)}" for p in ids}
    for _ in range(10):
        true = ids[rng.integers(60)]
        ranked = [ids[j] for j in rng.permutation(60)[:10]]
        gains = [2.0 if p == true else float(type_of[p] == type_of[true]) for p in ids]
        scores = [10.0 - ranked.index(p) if p in ranked else 0.0 for p in ids]
        assert m.type_ndcg([ranked], [true], type_of) == pytest.approx(
            ndcg_score([gains], [scores], k=10)
        )
