"""Filters that scale (chapter 12): vectorised masks over attribute columns, FAISS bitmap selectors
cached per Filters, and min(k, allowed) results from every index type, however selective."""

from __future__ import annotations

import itertools

import faiss
import numpy as np
import pytest

from image_search import Filters, InvalidRequestError, ProductIndex
from image_search.__main__ import _parser
from image_search.stores.filters import Attributes

from conftest import unit_vectors

CATEGORIES = ("rare", "some", "half", "rest")


def synthetic_attributes(n: int, seed: int = 0) -> Attributes:
    """``rare`` 0.5% of products, ``some`` 5%, ``half`` 50%; random prices and stock."""
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    category = np.select([u < 0.005, u < 0.055, u < 0.555], ["rare", "some", "half"], "rest")
    return Attributes(
        category,
        np.where(rng.random(n) < 0.3, "chair", "lamp"),
        rng.uniform(5, 500, n).round(2),
        rng.random(n) < 0.7,
        np.ones(n, bool),
    )


def brute_force(x, attrs, q, f, k):
    allowed = np.flatnonzero(attrs.mask(f))
    sims = q @ x[allowed].T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return allowed[order], np.take_along_axis(sims, order, 1)


# ------------------------------------------------------------------ the Filters value
def test_filters_normalise_and_refuse_bad_values():
    assert Filters(categories=["Kitchen"] * 20_000).categories == (
        "Kitchen",
    )  # a set: copies cost nothing
    assert Filters(types="chair").types == ("chair",)
    assert Filters(types=("lamp", "chair", "lamp")).types == ("chair", "lamp")
    assert Filters(types=("chair",)).active and not Filters().active
    for bad in (
        dict(types=()),
        dict(types=("",)),
        dict(types=(3,)),
        dict(types=5),
        dict(categories=[None]),
        dict(min_price=-1),
        dict(max_price=float("nan")),
        dict(in_stock="yes"),
        dict(min_price=10, max_price=5),
    ):
        with pytest.raises(InvalidRequestError):
            Filters(**bad)


def test_unknown_categories_and_types_are_refused_by_the_catalog_check(catalog):
    Filters(categories=(catalog.categories[0],)).check(catalog)
    with pytest.raises(InvalidRequestError, match="unknown categories"):
        Filters(categories=("Garage",)).check(catalog)
    with pytest.raises(InvalidRequestError, match="unknown types"):
        Filters(types=("spaceship",)).check(catalog)
    many = Filters(categories=tuple(f"C{i}" for i in range(20_000)))
    with pytest.raises(InvalidRequestError) as e:
        many.check(catalog)
    assert (
        "19995 more" in str(e.value) and len(str(e.value)) < 400
    )  # the message stays one short line


def test_vectorised_mask_equals_the_scalar_rule_on_the_catalog(catalog):
    attrs = Attributes.from_catalog(catalog)
    cats = catalog.categories
    prices = [None, 50.0, 150.0, 400.0]
    for c, lo, hi, stock in itertools.product(
        [None, cats[:1], cats[1:4]], prices, prices, [None, True, False]
    ):
        if lo is not None and hi is not None and lo > hi:
            continue
        f = Filters(categories=c, min_price=lo, max_price=hi, in_stock=stock)
        want = np.array([f.accepts(p) for p in catalog.products])
        np.testing.assert_array_equal(attrs.mask(f), want)
        allowed = f.allowed_ids(catalog)
        assert (
            allowed is None
            if not f.active
            else allowed == [p.id for p in catalog.products if f.accepts(p)]
        )


def test_unknown_attributes_pass_no_active_filter():
    attrs = Attributes.unknown(3)
    assert not attrs.mask(Filters(in_stock=False)).any()  # "unknown" is not "out of stock"
    assert not attrs.mask(Filters(max_price=1e9)).any()
    assert attrs.mask(Filters()).all()


def test_twenty_thousand_category_flags_collapse_before_argparse():
    args = _parser().parse_args(
        [
            "search",
            "x.jpg",
            *["--category", "Kitchen"] * 20_000,
            "--category=Office",
            "--type",
            "chair",
            "--type=chair",
        ]
    )
    assert args.category == ["Kitchen", "Office"] and args.type == ["chair"]
    with pytest.raises(
        SystemExit
    ):  # 20,000 different names: refused in one pass, not parsed for 40 s
        _parser().parse_args(
            [
                "search",
                "x.jpg",
                *itertools.chain.from_iterable(("--category", f"C{i}") for i in range(20_000)),
            ]
        )


# ------------------------------------------------------------------ filtered search in FAISS
@pytest.fixture(scope="module")
def data():
    n, dim = 20_000, 32
    return unit_vectors(n, dim, seed=5), synthetic_attributes(n), unit_vectors(30, dim, seed=6)


def build(factory, x, attrs):
    index = ProductIndex(x.shape[1], "enc", factory=factory)
    index.add([f"p{i}" for i in range(len(x))], x, attrs)
    return index


@pytest.fixture(scope="module")
def built(data):
    x, attrs, _ = data
    cache = {}

    def get(factory):
        if factory not in cache:
            cache[factory] = build(factory, x, attrs)
        return cache[factory]

    return get


@pytest.mark.parametrize("factory", ["Flat", "IVF64,Flat", "HNSW16", "IVF64,PQ8x4np"])
@pytest.mark.parametrize("category", ["rare", "some"])
def test_selective_filters_return_min_k_allowed_results_on_every_index_type(
    data, built, factory, category
):
    faiss.omp_set_num_threads(1)
    x, attrs, q = data
    index = built(factory)
    f = Filters(categories=(category,))
    n_allowed = int(attrs.mask(f).sum())
    assert (70 < n_allowed < 130) if category == "rare" else (900 < n_allowed < 1100)  # 0.5% and 5%
    for k in (10, n_allowed + 5):
        scores, got = index.search(
            q, k, f, params={"nprobe": 1, "efSearch": 16}
        )  # the narrowest search
        assert all(len(row) == min(k, n_allowed) for row in got), factory
        ok = {f"p{i}" for i in np.flatnonzero(attrs.mask(f))}
        assert all(set(row) <= ok for row in got)
    want, want_scores = brute_force(x, attrs, q, f, 10)
    scores, got = index.search(q, 10, f)
    if "PQ" in factory:  # exact over the decoded vectors: the scores are those of the stored codes
        stored = index.vectors([g for row in got for g in row]).reshape(len(q), 10, -1)
        np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", q, stored), atol=1e-5)
    else:  # exact over the allowed vectors, whatever the index type
        assert got == [[f"p{i}" for i in row] for row in want]
        np.testing.assert_allclose(scores, want_scores, atol=1e-5)


@pytest.mark.parametrize("factory", ["IVF64,Flat", "HNSW16"])
def test_broad_filter_rows_an_ann_search_leaves_short_are_searched_wider(
    data, factory, monkeypatch
):
    """Half the products, all on one side of a hyperplane, queried from the other side with one
    probed list: the first ANN pass finds few allowed vectors, the retry fills every row."""
    x, attrs, _ = data
    side = np.where(x[:, 0] > 0, "north", "south")
    attrs = Attributes(side, attrs.type, attrs.price, attrs.in_stock, attrs.known)
    index = build(factory, x, attrs)
    q = -np.abs(unit_vectors(20, 32, seed=9))  # pointing south
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    f = Filters(categories=("north",))
    monkeypatch.setattr(
        "image_search.indexer.EXACT_MAX_BYTES", 0
    )  # no float copy: the ANN search with a bitmap
    assert int(attrs.mask(f).sum()) > 4096 and not index._selection(f, None).exact
    calls = []
    real = index._faiss_search
    index._faiss_search = lambda *a: calls.append(len(a[0])) or real(*a)
    _, got = index.search(q, 25, f, params={"nprobe": 1, "efSearch": 8})
    assert all(len(row) == 25 and all(x[int(i[1:]), 0] > 0 for i in row) for row in got)
    if factory.startswith("IVF"):  # one probed list left rows short; only those were searched again
        assert len(calls) >= 2 and calls[1] < calls[0]


def test_selections_are_cached_per_filters_and_dropped_on_change(data):
    x, attrs, q = data
    index = build("Flat", x[:2000], attrs.take(np.arange(2000)))
    f = Filters(categories=("half",))
    index.search(q[:1], 5, f)
    first = index._selection(f, None)
    assert (
        index._selection(Filters(categories=["half", "half"]), None) is first
    )  # equal Filters, one entry
    assert index._selection(Filters(categories=("rest",)), None) is not first
    index.add(["new"], x[2000], attrs.take(np.array([0])))
    assert index._selection(f, None) is not first  # the index changed: a fresh selection


def test_filters_and_an_allow_list_combine(data):
    x, attrs, q = data
    index = build("Flat", x[:500], attrs.take(np.arange(500)))
    f = Filters(categories=("half",))
    allowed = {f"p{i}" for i in range(0, 500, 2)} | {"ghost"}
    _, got = index.search(q, 500, f, allowed=allowed)
    want = {f"p{i}" for i in np.flatnonzero(attrs.take(np.arange(500)).mask(f)) if i % 2 == 0}
    assert all(set(row) == want for row in got)
    _, none = index.search(q[:2], 5, Filters(categories=("no such category",)))
    assert none == [[], []]


def test_products_added_without_attributes_get_them_from_set_attributes(data):
    x, attrs, q = data
    index = ProductIndex(32, "enc")
    index.add([f"p{i}" for i in range(100)], x[:100])
    assert not index.has_attributes and index.search(q[:1], 5, Filters(in_stock=True))[1] == [[]]
    index.set_attributes([f"p{i}" for i in range(100)], attrs.take(np.arange(100)))
    assert index.has_attributes
    _, got = index.search(q[:1], 100, Filters(in_stock=True))
    assert set(got[0]) == {f"p{i}" for i in range(100) if attrs.in_stock[i]}
