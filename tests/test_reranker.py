import numpy as np
import pytest

from image_search import InvalidRequestError, RerankConfig, Reranker
from image_search.reranker import mmr, remove_near_duplicates, type_consensus


def candidates(catalog, n=8):
    ids = catalog.ids[:n]
    rng = np.random.default_rng(0)
    v = rng.normal(size=(n, 16)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    scores = np.linspace(0.9, 0.5, n).astype(np.float32)
    return ids, scores, v


def test_default_config_keeps_ann_order(catalog):
    ids, scores, v = candidates(catalog)
    r = Reranker(catalog).rerank(ids, scores, v, k=5)
    assert r.ids == tuple(ids[:5])


def test_the_reranker_keeps_every_candidate_filters_are_the_ann_search_s_job(catalog):
    ids, scores, v = candidates(catalog, 30)
    r = Reranker(catalog, RerankConfig(boosts=(("in_stock", "False", -1.0),))).rerank(
        ids, scores, v, k=30
    )
    assert sorted(r.ids) == sorted(ids)  # a boost reorders, never drops
    assert [catalog[i].in_stock for i in r.ids] == sorted(
        (catalog[i].in_stock for i in ids), reverse=True
    )


def test_attribute_boost_moves_matches_up(catalog):
    ids, scores, v = candidates(catalog, 20)
    colour = catalog[ids[-1]].colour
    r = Reranker(catalog, RerankConfig(boosts=(("colour", colour, 1.0),))).rerank(
        ids, scores, v, k=3
    )
    assert all(catalog[i].colour == colour for i in r.ids[:1])


def test_near_duplicates_removed():
    v = np.eye(4, dtype=np.float32)
    v = np.vstack([v[0], v[0] * 0.999 + v[1] * 0.01, v[2]])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    assert remove_near_duplicates(v, 0.95) == [0, 2]


def test_mmr_trades_relevance_for_diversity():
    v = np.array([[1, 0], [0.99, 0.14], [0, 1]], dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    scores = np.array([0.9, 0.89, 0.5], dtype=np.float32)
    assert mmr(scores, v, 2, 1.0) == [0, 1]
    assert mmr(scores, v, 2, 0.5) == [0, 2]


def test_user_vector_personalises(catalog):
    ids, scores, v = candidates(catalog)
    user = v[-1]
    r = Reranker(catalog, RerankConfig(user_weight=2.0)).rerank(
        ids, scores, v, k=1, user_vector=user
    )
    assert r.ids == (ids[-1],)


def test_type_consensus_is_the_weighted_share_of_the_best_candidates_types():
    types = ["chair", "sofa", "chair", "lamp", "unspecified"]
    scores = np.array([0.80, 0.79, 0.78, 0.50, 0.79])
    share = type_consensus(types, scores, votes=3, temperature=0.01)
    w = np.exp(np.array([0.0, -0.01, -0.01]) / 0.01)  # the 3 best: chair, sofa, unspecified
    assert share == pytest.approx([w[0] / w.sum(), w[1] / w.sum(), w[0] / w.sum(), 0, 0])
    assert type_consensus(types, scores, votes=1).tolist() == [1, 0, 1, 0, 0]  # the best decides
    assert len(type_consensus([], np.zeros(0))) == 0
    with pytest.raises(InvalidRequestError):
        type_consensus(types, scores[:2])


def test_type_consensus_moves_the_best_match_s_kind_up_and_drops_nothing(catalog):
    ids = catalog.ids[:40]
    best_type = catalog[ids[0]].type
    scores = np.linspace(0.9, 0.5, len(ids)).astype(np.float32)
    v = np.eye(len(ids), dtype=np.float32)
    plain = Reranker(catalog).rerank(ids, scores, v, k=40)
    typed = Reranker(catalog, RerankConfig(type_weight=1.0, type_votes=1)).rerank(
        ids, scores, v, k=40
    )
    same = [i for i in ids if catalog[i].type == best_type]
    assert len(same) >= 2 and plain.ids[: len(same)] != tuple(same)
    assert typed.ids[: len(same)] == tuple(same)  # that kind first, in ANN order
    assert sorted(typed.ids) == sorted(ids)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(mmr_lambda=1.5),
        dict(mmr_lambda=-0.1),
        dict(dedupe_threshold=1.5),
        dict(type_weight=-1.0),
        dict(type_votes=0),
        dict(type_temperature=0.0),
    ],
)
def test_bad_config_is_a_request_error(kwargs):
    with pytest.raises(InvalidRequestError):
        RerankConfig(**kwargs)
    with pytest.raises(TypeError):
        RerankConfig(in_stock_only=True)  # filters belong to Filters, applied inside the ANN search
