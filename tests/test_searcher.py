import io
import time

import numpy as np
import pytest
from PIL import Image

from image_search import (
    Filters,
    InvalidImageError,
    InvalidRequestError,
    RerankConfig,
    Reranker,
    Searcher,
    SearchRequest,
)
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
    """Wraps an encoder or an index: ``method`` sleeps ``seconds`` first, everything else is passed
    on."""

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
    assert (
        all(r.timings.embed_ms == batch[0].timings.embed_ms for r in batch)
        and 25 <= batch[0].timings.embed_ms < 100
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(k=0),
        dict(k=10_001),
        dict(k=2.5),
        dict(filters=Filters(categories=("Garage",))),
    ],
)
def test_bad_requests_are_refused(searcher, catalog, kwargs):
    with pytest.raises(InvalidRequestError):
        searcher.search(catalog.icon_path(catalog.ids[0]), **kwargs)


@pytest.mark.parametrize(
    "kwargs", [dict(min_price=-1), dict(min_price=50, max_price=10), dict(max_price=float("nan"))]
)
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


# -------------------------------------------------------- streaming batch search (issue 19, item 8)
class CountingEncoder:
    """Stands in for the real encoder of ``searcher``: records how many decoded images are alive
    (not yet freed) each time it is called, and returns the real encoder's vectors."""

    def __init__(self, real, alive):
        self.name, self.dim, self.real, self.alive = real.name, real.dim, real, alive
        self.calls, self.peak_alive = [], 0

    def encode_images(self, images, batch_size=32, progress=False):
        self.calls.append(len(images))
        self.peak_alive = max(self.peak_alive, sum(r() is not None for r in self.alive))
        return self.real.encode_images(images, batch_size=batch_size)


@pytest.fixture()
def counting(searcher, catalog, monkeypatch):
    """A searcher whose decoded images are counted while alive (weak references)."""
    import weakref

    import image_search.searcher as module

    alive, real_load = [], module.load_image

    def load_and_track(image):
        img = real_load(image)
        alive.append(weakref.ref(img))
        return img

    monkeypatch.setattr(module, "load_image", load_and_track)
    enc = CountingEncoder(searcher.encoder, alive)
    return Searcher(searcher.index, catalog, enc, searcher.reranker), enc


def test_batch_search_streams_with_bounded_memory(counting, catalog):
    s, enc = counting
    produced = []

    def photos(n):  # a generator: the batch is never a list in memory
        for i in range(n):
            produced.append(i)
            yield np.full((600, 800, 3), (i * 7) % 256, np.uint8)

    results = s.search_batch(photos(100), k=3, batch_size=8)
    assert len(results) == 100 and all(len(r) == 3 for r in results)
    assert enc.calls == [8] * 12 + [4]  # decoded, embedded and searched chunk by chunk
    assert enc.peak_alive <= 8  # never more decoded images alive than one chunk (was: all 100)
    flat = np.full((600, 800, 3), 7 * 5 % 256, np.uint8)
    assert results[5].ids == s.search(flat, k=3).ids


def test_batch_search_reads_a_generator_lazily(counting):
    s, enc = counting
    seen = []

    def photos():
        for i in range(20):
            seen.append(
                (i, len(enc.calls))
            )  # how many chunks were embedded before image i was read
            yield np.full((32, 32, 3), i, np.uint8)

    s.search_batch(photos(), k=2, batch_size=5)
    assert [calls for _, calls in seen] == [i // 5 for i in range(20)]


def test_a_bad_image_in_a_batch_is_named_or_reported(searcher, catalog):
    paths = [catalog.view_paths(i)[0] for i in catalog.ids[:7]]
    batch = [*paths[:3], b"not an image", *paths[3:5], b"", *paths[5:]]
    with pytest.raises(InvalidImageError, match=r"batch image 3: .*not an image"):
        searcher.search_batch(batch, k=4, batch_size=2)
    results = searcher.search_batch(batch, k=4, batch_size=2, errors="report")
    assert len(results) == len(batch)
    assert [r.error is not None for r in results] == [
        False,
        False,
        False,
        True,
        False,
        False,
        True,
        False,
        False,
    ]
    assert "not an image" in results[3].error and "empty" in results[6].error
    assert len(results[3]) == 0 and results[3].products == () and results[3].timings.decode_ms > 0
    good = [r for r in results if r.error is None]
    assert [r.ids for r in good] == [searcher.search(p, k=4).ids for p in paths]
    all_bad = searcher.search_batch([b"x", b"y"], k=2, errors="report")
    assert [r.error is not None for r in all_bad] == [True, True]


def test_batch_timings_are_per_query(searcher, catalog):
    paths = [catalog.view_paths(i)[0] for i in catalog.ids[:5]]
    results = searcher.search_batch(paths, k=3, batch_size=2)
    for r in results:
        t = r.timings
        assert t.decode_ms > 0 and t.embed_ms > 0 and t.ann_ms > 0 and t.rerank_ms > 0
        assert t.total_ms == pytest.approx(t.decode_ms + t.embed_ms + t.ann_ms + t.rerank_ms)
    assert results[0].timings.embed_ms == results[1].timings.embed_ms  # one chunk: equal shares
    assert results[0].timings.decode_ms != results[1].timings.decode_ms  # decode: each image's own


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(batch_size=0),
        dict(batch_size=2.5),
        dict(batch_size=True),
        dict(errors="skip"),
        dict(k=0),
        dict(filters=Filters(categories=("Garage",))),
    ],
)
def test_bad_batch_arguments_are_refused(searcher, catalog, kwargs):
    with pytest.raises(InvalidRequestError):
        searcher.search_batch([catalog.icon_path(catalog.ids[0])], **kwargs)


def test_a_single_image_is_not_mistaken_for_a_batch(searcher, catalog):
    path = catalog.icon_path(catalog.ids[0])
    for one in (str(path), path, path.read_bytes(), np.zeros((32, 32, 3), np.uint8), 42):
        with pytest.raises(InvalidRequestError, match="list or iterable"):
            searcher.search_batch(one, k=2)
    assert searcher.search_batch([], k=2) == []
    stacked = np.stack([np.asarray(Image.open(path).convert("RGB"))] * 3)  # (n, H, W, 3) is a batch
    assert [r.ids for r in searcher.search_batch(stacked, k=2)] == [
        searcher.search(path, k=2).ids
    ] * 3


def test_text_needs_an_encoder_with_a_text_tower(searcher, catalog):
    with pytest.raises(InvalidRequestError, match="no text tower"):
        searcher.search(text="a green armchair", k=3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(), "give an image, a text"),
        (dict(embedding=np.ones(4), text="chair"), "embedding alone"),
        (dict(text=""), "empty"),
        (dict(text="x" * 5000), "limit"),
        (dict(text="chair", alpha=1.0), "composed query"),
    ],
)
def test_bad_text_requests_are_refused(kwargs, match):
    with pytest.raises(InvalidRequestError, match=match):
        SearchRequest(**kwargs)


def test_text_and_composed_queries_search_the_joint_space(catalog):
    from image_search import load_encoder

    enc = load_encoder("minilm-lit")
    s = Searcher.from_catalog(enc, catalog=catalog, progress=False)
    beds = s.search(text="a bed to sleep in", k=5)
    assert sum(p.type == "bed" for p in beds.products) >= 3
    chair = next(p for p in catalog.products if p.type == "chair")
    photo = catalog.icon_path(chair.id)
    alone, composed = s.search(photo, k=5), s.search(photo, text="a lamp", k=5)
    assert composed.ids != alone.ids and any(p.type == "lamp" for p in composed.products)
    assert (
        s.search(photo, text="a lamp", alpha=0.0, k=5).ids == alone.ids
    )  # alpha 0: the photo alone


def test_a_rejector_turns_a_weak_match_into_no_match(searcher, catalog):
    from image_search.rejection import Rejector

    strict = Rejector(
        ("top1",), (1.0,), 0.0, (0.0,), (1.0,), threshold=2.0, encoder=searcher.encoder.name
    )
    s = Searcher(searcher.index, catalog, searcher.encoder, rejector=strict)
    res = s.search(catalog.icon_path(catalog.ids[0]), k=3)
    assert len(res) == 0 and res.no_match
    assert s.search(
        embedding=searcher.index.vectors([catalog.ids[0]])[0], k=3
    ).no_match  # a photo's embedding too
    assert all(
        r.no_match for r in s.search_batch([catalog.icon_path(i) for i in catalog.ids[:3]], k=3)
    )
    with pytest.raises(InvalidRequestError, match="calibrated for"):
        Searcher(
            searcher.index,
            catalog,
            searcher.encoder,
            rejector=Rejector(
                ("top1",), (1.0,), 0.0, (0.0,), (1.0,), threshold=0.5, encoder="another"
            ),
        )


def test_the_crop_is_reported_as_the_searched_box(searcher, catalog):
    res = searcher.search(catalog.icon_path(catalog.ids[0]), k=3, crop=(0, 0, 64, 64))
    assert res.box == (0, 0, 64, 64)
    assert searcher.search(catalog.icon_path(catalog.ids[0]), k=3).box is None


def test_a_cnn_without_a_text_tower_refuses_text(lite0_searcher):
    with pytest.raises(InvalidRequestError, match="no text tower"):
        lite0_searcher.search(text="a green armchair")


def test_type_consensus_fills_the_list_with_the_voted_kind_inside_the_filters(searcher, catalog):
    """With ``type_weight`` the searcher also fetches the voted type's best products, so that kind
    fills the list though the first candidates held few of it; the filters still hold, and the
    batch path agrees."""
    typed = Searcher(
        searcher.index,
        catalog,
        searcher.encoder,
        Reranker(catalog, RerankConfig(type_weight=5.0)),
        candidates=10,
    )
    f = Filters(in_stock=True)
    paths = [catalog.view_paths(i)[0] for i in catalog.ids[:40:8]]
    for path in paths:
        plain, res = searcher.search(path, k=10, filters=f), typed.search(path, k=10, filters=f)
        kind = res.products[0].type
        n_kind = sum(p.in_stock and p.type == kind for p in catalog.products)
        assert [p.type for p in res.products[: min(10, n_kind)]] == [kind] * min(10, n_kind)
        assert all(p.in_stock for p in res.products)
        assert sum(p.type == kind for p in res.products) >= sum(
            p.type == kind for p in plain.products
        )
    assert [r.ids for r in typed.search_batch(paths, k=10, filters=f)] == [
        typed.search(p, k=10, filters=f).ids for p in paths
    ]
