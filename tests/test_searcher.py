import io
import time

import numpy as np
import pytest
from PIL import Image

from image_search import Filters, InvalidRequestError, Searcher, SearchRequest
from image_search.evaluation import evaluate


@pytest.fixture(scope="module")
def searcher(catalog):
    return Searcher.from_catalog("colour-histogram", catalog=catalog, progress=False)


@pytest.fixture(scope="module")
def lite0_searcher(catalog, lite0):
    return Searcher.from_catalog(lite0, catalog=catalog, progress=False)


def test_shop_photo_finds_itself_first(lite0_searcher, catalog):
    for pid in catalog.ids[::97]:
        res = lite0_searcher.search(catalog.icon_path(pid), k=5)
        assert res.ids[0] == pid
        assert len(res) == 5 and list(res.scores) == sorted(res.scores, reverse=True)


def test_all_input_kinds_give_the_same_answer(searcher, catalog):
    path = catalog.view_paths(catalog.ids[5])[0]
    pil = Image.open(path)
    by_path = searcher.search(path, k=5).ids
    assert searcher.search(path.read_bytes(), k=5).ids == by_path
    assert searcher.search(pil, k=5).ids == by_path
    assert searcher.search(np.asarray(pil), k=5).ids == by_path
    emb = searcher.encoder.encode_images([path])[0]
    assert searcher.search(embedding=emb, k=5).ids == by_path


def test_rgba_and_grayscale_queries_work(searcher):
    rgba = Image.new("RGBA", (64, 64), (0, 128, 0, 0))
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    assert len(searcher.search(buf.getvalue(), k=3)) == 3
    assert len(searcher.search(Image.new("L", (50, 80), 128), k=3)) == 3


def test_filters_are_applied_inside_the_search(searcher, catalog):
    f = Filters(categories=("Lights",), max_price=80.0, in_stock=True)
    allowed = [p for p in catalog.products if f.accepts(p)]
    res = searcher.search(catalog.icon_path(catalog.ids[0]), k=10, filters=f)
    assert len(res) == min(10, len(allowed))  # k results although most products are filtered out
    assert all(p.category == "Lights" and p.price <= 80 and p.in_stock for p in res.products)


def test_batch_search_matches_single_search(searcher, catalog):
    paths = [catalog.view_paths(i)[1] for i in catalog.ids[:6]]
    batch = searcher.search_batch(paths, k=4)
    assert [r.ids for r in batch] == [searcher.search(p, k=4).ids for p in paths]


class _Slow:
    """Wraps an encoder or an index: ``method`` sleeps ``seconds`` first, everything else is passed on."""

    def __init__(self, inner, method: str, seconds: float):
        self._inner, self._method, self._seconds = inner, method, seconds

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if name != self._method:
            return attr

        def slow(*args, **kwargs):
            time.sleep(self._seconds)
            return attr(*args, **kwargs)
        return slow


def test_timings_are_reported(searcher, catalog):
    """Each stage's time lands in its own field: slow down one stage, and only its field grows."""
    path = catalog.icon_path(catalog.ids[0])
    slow_embed = Searcher(searcher.index, catalog, _Slow(searcher.encoder, "encode_images", 0.1))
    t = slow_embed.search(path, k=3).timings
    assert t.embed_ms >= 100 and max(t.decode_ms, t.ann_ms, t.rerank_ms) < 100
    slow_ann = Searcher(_Slow(searcher.index, "search", 0.1), catalog, searcher.encoder)
    t = slow_ann.search(path, k=3).timings
    assert t.ann_ms >= 100 and max(t.decode_ms, t.embed_ms, t.rerank_ms) < 100
    # a batch of four shares one slow embedding call: a quarter of it per query
    batch = slow_embed.search_batch([path] * 4, k=3)
    assert all(r.timings == batch[0].timings for r in batch) and 25 <= batch[0].timings.embed_ms < 100


@pytest.mark.parametrize("kwargs", [
    dict(k=0), dict(k=10_001), dict(k=2.5),
    dict(filters=Filters(categories=("Garage",))),
])
def test_bad_requests_are_refused(searcher, catalog, kwargs):
    with pytest.raises(InvalidRequestError):
        searcher.search(catalog.icon_path(catalog.ids[0]), **kwargs)


@pytest.mark.parametrize("kwargs", [dict(min_price=-1), dict(min_price=50, max_price=10), dict(max_price=float("nan"))])
def test_bad_filters_are_refused(kwargs):
    with pytest.raises(InvalidRequestError):
        Filters(**kwargs)


def test_request_needs_exactly_one_query():
    with pytest.raises(InvalidRequestError):
        SearchRequest()
    with pytest.raises(InvalidRequestError):
        SearchRequest(image=b"x", embedding=np.ones(3))
    with pytest.raises(InvalidRequestError):
        SearchRequest(embedding=np.array([1.0, np.nan]))


def test_evaluation_of_the_default_encoder_beats_the_baseline(lite0_searcher, searcher, catalog):
    paths, ids = catalog.queries("test")
    paths, ids = paths[::8], ids[::8]
    deep, _ = evaluate(lite0_searcher, paths, ids, progress=False)
    base, _ = evaluate(searcher, paths, ids, progress=False)
    assert deep.recall[10] > 0.6 and deep.recall[10] > base.recall[10] + 0.3
