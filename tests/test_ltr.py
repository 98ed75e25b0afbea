import numpy as np
import pytest

from image_search import Filters, InvalidRequestError, RerankConfig, Reranker, Searcher, build_index
from image_search.experiments import GradedClickModel
from image_search.ltr import (
    FEATURES,
    LinearRanker,
    candidate_lists,
    compare_rankings,
    fit_linear_ranker,
    fit_ranker,
    ipw_weights,
    ranking_features,
    rerank_lists,
    simulate_click_log,
)


def test_ipw_weights_are_one_over_the_examination_probability():
    ranks = np.array([1, 2, 5, 10])
    assert np.allclose(ipw_weights(ranks, GradedClickModel(eta=1.0)), [1, 2, 5, 10])
    model = GradedClickModel(eta=0.5)
    assert np.allclose(ipw_weights(ranks, model), 1 / model.examination(10)[ranks - 1])
    assert np.allclose(ipw_weights(ranks, model), np.sqrt(ranks))
    assert ipw_weights(ranks, GradedClickModel(eta=1.0), clip=4.0).max() == 4.0


def planted_log(seed=0, lists=3000, k=10, sessions=5):
    """Lists of k items shown in an order that ignores relevance; the chance of a click once seen is
    sigmoid(1.5 * relevance - 1); rank r is seen with probability 1/r."""
    rng = np.random.default_rng(seed)
    relevance = rng.normal(size=(lists, k))
    ranks = np.tile(np.arange(1, k + 1), (lists, 1))
    seen_click = 1 / (1 + np.exp(-(1.5 * relevance - 1)))
    clicks = rng.binomial(sessions, seen_click * GradedClickModel(eta=1.0).examination(k))
    features = np.stack([relevance, np.log(ranks)], axis=-1).reshape(-1, 2)
    return features, clicks.ravel(), np.full(lists * k, sessions), ranks.ravel()


def test_weighted_model_recovers_a_planted_ordering_that_raw_clicks_get_wrong():
    names = ("type_vote", "log_rank")  # the planted relevance, and the rank the item was shown at
    x, clicks, shown, ranks = planted_log()
    naive = fit_linear_ranker(x, clicks, shown, ranks, None, names)
    ipw = fit_linear_ranker(x, clicks, shown, ranks, GradedClickModel(eta=1.0), names)
    # raw clicks say that a high rank itself attracts clicks; weighted clicks say it does not
    assert naive.weights[1] < -0.5
    assert abs(ipw.weights[1]) < 0.05
    assert ipw.weights[0] / ipw.scale[0] == pytest.approx(1.5, abs=0.15)  # the planted slope
    # a list whose most relevant item was shown last: IPW puts it first, raw clicks keep it last
    relevance = np.linspace(-0.3, 0.3, 10)
    planted = np.stack([relevance, np.log(np.arange(1, 11))], axis=-1)
    truth = list(np.argsort(-relevance))
    assert list(np.argsort(-ipw.logits(planted))) == truth
    assert list(np.argsort(-naive.logits(planted))) == truth[::-1]


def toy_ranker(feature="in_stock", weight=1.0):
    return LinearRanker((feature,), (weight,), 0.0, (0.0,), (1.0,))


def test_learned_ranker_plugs_into_the_reranker(catalog):
    ids = catalog.ids[:30]
    scores = np.linspace(0.9, 0.6, 30)
    v = np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    r = Reranker(catalog, RerankConfig(model=toy_ranker("in_stock"))).rerank(ids, scores, v, k=30)
    assert sorted(r.ids) == sorted(ids)
    stock = [catalog[i].in_stock for i in r.ids]
    assert stock == sorted(stock, reverse=True)  # in stock first: the model's order
    assert np.all((r.scores > 0) & (r.scores < 1))  # estimated click probabilities
    in_stock_in_ann_order = [i for i in ids if catalog[i].in_stock]
    assert (
        list(r.ids[: len(in_stock_in_ann_order)]) == in_stock_in_ann_order
    )  # ties keep the ANN order
    cheap_first = Reranker(catalog, RerankConfig(model=toy_ranker("log_price", -1.0))).rerank(
        ids, scores, v, k=5
    )
    assert [catalog[i].price for i in cheap_first.ids] == sorted(catalog[i].price for i in ids)[:5]


def test_learned_ranker_in_the_searcher_keeps_filters_and_k(catalog, lite0):
    index = build_index(catalog, lite0, progress=False)
    searcher = Searcher(
        index, catalog, lite0, Reranker(catalog, RerankConfig(model=toy_ranker("log_price", -1.0)))
    )
    query = index.vectors([catalog.queries("test")[1][0]])[0]
    filters = Filters(categories=("Kitchen", "Bedroom"), max_price=400.0, in_stock=True)
    for k in (1, 7, 25):
        res = searcher.search(embedding=query, k=k, filters=filters)
        assert len(res) == k
        assert all(filters.accepts(p) for p in res.products)
        assert [p.price for p in res.products] == sorted(p.price for p in res.products)


def test_features_of_a_candidate_list(catalog):
    ids = catalog.ids[:12]
    v = np.eye(12, 16, dtype=np.float32)
    x = ranking_features(catalog, ids, np.linspace(0.9, 0.6, 12), v)
    assert x.shape == (12, len(FEATURES))
    col = dict(zip(FEATURES, x.T))
    assert col["gap"][0] == 0 and np.all(np.diff(col["gap"]) < 0)
    assert np.allclose(col["log_rank"], np.log1p(np.arange(12)))
    # the best match dominates the votes (temperature 0.02): a candidate of its type gets most of it
    same_type = np.array([catalog[i].type == catalog[ids[0]].type for i in ids])
    assert np.all(col["type_vote"][same_type] > 0.7) and np.all(col["type_vote"][~same_type] < 0.3)
    w = np.exp((np.linspace(0.9, 0.6, 12)[:10] - 0.9) / 0.02)
    assert np.allclose(
        col["centrality"], np.r_[w / w.sum(), 0, 0]
    )  # orthogonal vectors: its own vote
    assert np.allclose(col["in_stock"], [catalog[i].in_stock for i in ids])


def test_unknown_price_reads_as_average():
    ranker = LinearRanker(("log_price", "in_stock"), (2.0, 1.0), 0.5, (3.0, 0.5), (1.0, 0.5))
    x = np.array([[np.nan, 1.0], [3.0, 1.0]])
    assert ranker.logits(x)[0] == ranker.logits(x)[1]


def test_click_log_and_fit_on_the_catalog(catalog, lite0):
    from image_search import encode_paths

    products = catalog.split("train")[:60]
    paths = [p for prod in products for p in catalog.view_paths(prod.id)]
    truth = [prod.id for prod in products for _ in catalog.view_paths(prod.id)]
    index = encode_paths(lite0, [catalog.icon_path(i) for i in catalog.ids], progress=False)
    lists = candidate_lists(
        catalog, encode_paths(lite0, paths, progress=False), truth, index, catalog.ids, n=20
    )
    assert lists.features.shape == (len(truth), 20, len(FEATURES)) and lists.grades.shape == (
        len(truth),
        20,
    )
    exact = np.array([[i == t for i in lists.ids(q)] for q, t in enumerate(truth)])
    assert np.array_equal(lists.grades == 2, exact)
    model = GradedClickModel()
    log = simulate_click_log(lists, model, sessions=10, k=10, seed=3)
    assert log.clicks.shape == (len(truth), 10) and log.clicks.max() <= 10
    assert np.array_equal(
        log.clicks, simulate_click_log(lists, model, sessions=10, k=10, seed=3).clicks
    )
    ipw = fit_ranker(lists, log, model)
    assert ipw == fit_ranker(lists, log, model)  # deterministic
    assert ipw != fit_ranker(lists, log)  # weighting changes the fit
    ranked = rerank_lists(Reranker(catalog, RerankConfig(model=ipw)), lists, k=10)
    assert all(len(r) == 10 and set(r) <= set(lists.ids(q)) for q, r in enumerate(ranked))
    table = compare_rankings(
        lists,
        {"ANN": [lists.ids(q) for q in range(len(lists))], "IPW": ranked},
        model,
        reference="ANN",
    )
    assert list(table.index) == ["ANN", "IPW"] and table.loc["ANN", "ΔNDCG vs ANN"] == 0
    assert (
        table[["NDCG@10", "R@1", "CTR@1", "diversity"]].apply(lambda c: c.between(0, 1).all()).all()
    )


def test_json_round_trip():
    r = LinearRanker(
        FEATURES[:3], (0.5, -1.0, 2.0), 0.1, (0.0, 1.0, 2.0), (1.0, 2.0, 3.0), 0.05, "m"
    )
    assert LinearRanker.from_json(r.to_json()) == r


@pytest.mark.parametrize(
    "make",
    [
        lambda: RerankConfig(model="ranker.json"),
        lambda: LinearRanker(("colour",), (1.0,), 0.0, (0.0,), (1.0,)),
        lambda: LinearRanker(("score",), (1.0, 2.0), 0.0, (0.0,), (1.0,)),
        lambda: LinearRanker(("score",), (float("nan"),), 0.0, (0.0,), (1.0,)),
        lambda: LinearRanker(("score",), (1.0,), 0.0, (0.0,), (0.0,)),
        lambda: LinearRanker.from_json("{not json"),
        lambda: LinearRanker.from_json('{"features": ["score"]}'),
        lambda: toy_ranker().logits(np.zeros((3, 2))),
        lambda: ipw_weights(np.array([0, 1]), GradedClickModel()),
        lambda: ipw_weights(np.array([1.5]), GradedClickModel()),
        lambda: fit_linear_ranker(
            np.zeros((2, 1)), np.array([3, 0]), np.array([2, 2]), names=("score",)
        ),
        lambda: fit_linear_ranker(
            np.zeros((2, 1)),
            np.array([1, 0]),
            np.array([2, 2]),
            None,
            GradedClickModel(),
            names=("score",),
        ),
        lambda: fit_linear_ranker(
            np.zeros((2, 2)), np.array([1, 0]), np.array([2, 2]), names=("score",)
        ),
    ],
)
def test_bad_input_is_a_request_error(make):
    with pytest.raises(InvalidRequestError):
        make()


def test_reranker_refuses_mismatched_candidates(catalog):
    with pytest.raises(InvalidRequestError, match="3 candidates"):
        Reranker(catalog, RerankConfig(model=toy_ranker())).rerank(
            catalog.ids[:3], np.ones(3), np.ones((2, 4)), k=2
        )
    with pytest.raises(InvalidRequestError):
        ranking_features(catalog, catalog.ids[:3], np.ones(2), np.ones((3, 4)))
