"""The HTTP search service (image_search.serve), in process with FastAPI's TestClient, and its
micro-batcher with the instant colour-histogram encoder (or a gated wrapper that holds it)."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import io
import json
import re
import socket
import threading
from concurrent.futures import CancelledError, ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from image_search import InvalidRequestError, Searcher, load_image
from image_search.serve import MicroBatcher, ServeConfig, ServerBusyError, create_app, listen_socket
from image_search.serve.app import SearchResponse


class GatedEncoder:
    """The real encoder behind a gate the test opens and closes; records every batch size."""

    def __init__(self, inner, fail_on: set[int] | None = None) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.gate, self.entered = threading.Event(), threading.Event()
        self.gate.set()
        self.batches: list[int] = []
        self.seen: list[tuple[int, int]] = []
        self.fail_on = fail_on or set()

    def encode_images(self, images, batch_size=32, progress=False):
        self.batches.append(len(images))
        self.seen.extend(im.size for im in images)
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"
        if any(im.size[0] in self.fail_on for im in images):
            raise RuntimeError("encoder failed on purpose")
        return self.inner.encode_images(images, batch_size=batch_size)


@pytest.fixture(scope="module")
def searcher(catalog):
    return Searcher.from_catalog("colour-histogram", catalog=catalog, progress=False)


@pytest.fixture(scope="module")
def client(searcher):
    with TestClient(create_app(searcher)) as c:
        yield c


@contextmanager
def serving(searcher, encoder=None, **config):
    s = Searcher(searcher.index, searcher.catalog, encoder or searcher.encoder)
    with TestClient(create_app(s, ServeConfig(**config))) as c:
        yield c


def icon_bytes(catalog, product_id: str) -> bytes:
    return catalog.icon_path(product_id).read_bytes()


def upload(client, data: bytes, name: str = "photo.png", **fields):
    form = {
        k: [str(x) for x in v] if isinstance(v, (list, tuple)) else str(v)
        for k, v in fields.items()
    }
    return client.post("/search", files={"image": (name, data, "image/png")}, data=form)


def ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [r["id"] for r in response.json()["results"]]


# ----------------------------------------------------------------------------- search
def test_upload_finds_the_exact_product_with_timings_and_image_urls(client, catalog):
    pid = catalog.ids[7]
    r = upload(client, icon_bytes(catalog, pid), k=5)
    body = r.json()
    assert ids(r)[0] == pid and body["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert len(body["results"]) == 5 and [h["rank"] for h in body["results"]] == [1, 2, 3, 4, 5]
    scores = [h["score"] for h in body["results"]]
    assert scores == sorted(scores, reverse=True)
    SearchResponse.model_validate(
        body
    )  # the documented shape (the app sends it without re-validating)
    t = body["timings_ms"]
    assert set(t) == {"decode", "queue", "embed", "ann", "rerank", "total"}
    assert all(v >= 0 for v in t.values()) and t["decode"] > 0 and t["embed"] > 0
    assert t["total"] >= t["decode"] + t["queue"] + t["ann"] + t["rerank"]
    assert body["batch_size"] >= 1
    first = body["results"][0]
    assert first["name"] == catalog[pid].name and first["price"] == catalog[pid].price
    photo = client.get(first["image_url"])
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/png"
    assert photo.content == icon_bytes(catalog, pid)
    assert client.get(first["product_url"]).json()["id"] == pid


def test_base64_json_gives_the_same_results_as_an_upload(client, catalog):
    data = catalog.view_paths(catalog.ids[3])[0].read_bytes()
    by_upload = ids(upload(client, data, "view.jpg", k=8))
    b64 = base64.b64encode(data).decode()
    assert ids(client.post("/search", json={"image_base64": b64, "k": 8})) == by_upload
    data_url = "data:image/jpeg;base64," + b64
    assert ids(client.post("/search", json={"image_base64": data_url, "k": 8})) == by_upload
    assert (
        ids(client.post("/search", files={"image_base64": (None, b64)}, data={"k": "8"}))
        == by_upload
    )


def test_filters_and_k(client, catalog):
    data = icon_bytes(catalog, catalog.ids[0])
    kitchen = upload(client, data, k=7, categories=["Kitchen"]).json()["results"]
    assert len(kitchen) == 7 and {h["category"] for h in kitchen} == {"Kitchen"}
    two = {"Kitchen", "Bathroom"}
    r = client.post(
        "/search",
        json={
            "image_base64": base64.b64encode(data).decode(),
            "k": 20,
            "categories": sorted(two),
            "min_price": 50,
            "max_price": 400,
            "in_stock": True,
        },
    )
    hits = r.json()["results"]
    assert hits and all(
        h["category"] in two and 50 <= h["price"] <= 400 and h["in_stock"] for h in hits
    )
    expected = sum(
        1 for p in catalog.products if p.category in two and 50 <= p.price <= 400 and p.in_stock
    )
    assert len(hits) == min(20, expected)
    assert len(ids(upload(client, data, k=100))) == 100
    assert (
        ids(upload(client, data, k=3, max_price=0.01)) == []
    )  # nothing that cheap: an empty list, not an error


@pytest.mark.parametrize("k", [0, -1, 101, "many", 2.5])
def test_k_out_of_bounds_is_422(client, catalog, k):
    r = upload(client, icon_bytes(catalog, catalog.ids[0]), k=k)
    assert r.status_code == 422 and r.json()["detail"].startswith("k:")
    r = client.post(
        "/search",
        json={
            "image_base64": base64.b64encode(icon_bytes(catalog, catalog.ids[0])).decode(),
            "k": k,
        },
    )
    assert r.status_code == 422


BAD_REQUESTS = {
    # name: (how to send it, expected status, a word the message must hold)
    "text file named .jpg": (
        lambda c, img: c.post(
            "/search", files={"image": ("photo.jpg", b"just some notes\n", "image/jpeg")}
        ),
        415,
        "not an image",
    ),
    "html page": (
        lambda c, img: c.post(
            "/search", files={"image": ("a.png", b"<html><body>hi</body></html>", "image/png")}
        ),
        415,
        "HTML",
    ),
    "truncated png": (
        lambda c, img: c.post(
            "/search", files={"image": ("a.png", img[: len(img) // 2], "image/png")}
        ),
        415,
        "truncated",
    ),
    "empty file": (
        lambda c, img: c.post("/search", files={"image": ("a.png", b"", "image/png")}),
        415,
        "empty",
    ),
    "plain text body": (
        lambda c, img: c.post("/search", content=img, headers={"content-type": "image/png"}),
        415,
        "multipart",
    ),
    "no content type": (lambda c, img: c.post("/search", content=b"x"), 415, "multipart"),
    "broken json": (
        lambda c, img: c.post(
            "/search", content=b'{"k": 3', headers={"content-type": "application/json"}
        ),
        400,
        "JSON",
    ),
    "bad base64": (
        lambda c, img: c.post("/search", json={"image_base64": "not base64 at all!"}),
        400,
        "base64",
    ),
    "base64 not a string": (
        lambda c, img: c.post("/search", json={"image_base64": 123}),
        422,
        "image_base64",
    ),
    "json not an object": (lambda c, img: c.post("/search", json=[1, 2]), 422, "body"),
    "no photo (json)": (lambda c, img: c.post("/search", json={"k": 3}), 422, "photo"),
    "no photo (form)": (lambda c, img: c.post("/search", files={"k": (None, "3")}), 422, "photo"),
    "image as a text field": (
        lambda c, img: c.post("/search", files={"image": (None, "photo.png")}),
        422,
        "file",
    ),
    "a second file": (
        lambda c, img: c.post(
            "/search",
            files={"image": ("a.png", img, "image/png"), "k": ("k.txt", b"3", "text/plain")},
        ),
        400,
        "files",
    ),
    "two photos": (
        lambda c, img: c.post(
            "/search",
            files={"image": ("a.png", img, "image/png")},
            data={"image_base64": base64.b64encode(img).decode()},
        ),
        422,
        "not both",
    ),
    "unknown category": (lambda c, img: upload(c, img, categories=["Garage"]), 422, "Garage"),
    "inverted price range": (
        lambda c, img: upload(c, img, min_price=300, max_price=100),
        422,
        "inverted",
    ),
    "negative price": (lambda c, img: upload(c, img, max_price=-5), 422, "max_price"),
    "unknown field": (lambda c, img: upload(c, img, colour="red"), 422, "colour"),
    "crop outside the photo": (lambda c, img: upload(c, img, crop="0,0,5000,5000"), 422, "outside"),
    "crop not a box": (lambda c, img: upload(c, img, crop="50,50,10,10"), 422, "box"),
    "crop of three numbers": (
        lambda c, img: c.post(
            "/search", json={"image_base64": base64.b64encode(img).decode(), "crop": [1, 2, 3]}
        ),
        422,
        "crop",
    ),
    "text too long": (lambda c, img: upload(c, img, text="x" * 501), 422, "text"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_a_json_error_with_the_right_status(client, catalog, case):
    send, status, word = BAD_REQUESTS[case]
    r = send(client, icon_bytes(catalog, catalog.ids[0]))
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and word.lower() in detail.lower(), detail
    assert ids(upload(client, icon_bytes(catalog, catalog.ids[1]), k=1)) == [
        catalog.ids[1]
    ]  # nothing was lost


def test_crop_searches_the_box(client, catalog):
    pid = catalog.ids[11]
    im = load_image(catalog.icon_path(pid))
    canvas = Image.new("RGB", (im.width * 3, im.height), (255, 0, 0))  # the product on a red strip
    canvas.paste(im, (im.width, 0))
    buf = io.BytesIO()
    canvas.save(buf, "PNG")
    box = f"{im.width},0,{2 * im.width},{im.height}"
    cropped = upload(client, buf.getvalue(), k=3, crop=box)
    assert ids(cropped)[0] == pid
    assert cropped.json()["box"] == [im.width, 0, 2 * im.width, im.height]  # where it looked
    assert cropped.json()["candidates"] == []  # no localiser here
    assert pid not in ids(upload(client, buf.getvalue(), k=1))


def test_a_localising_encoder_reports_its_box_and_candidates_over_http(catalog):
    """``product-search`` behind the batcher: the response says which box it searched and offers
    the other products it found; sending one back as ``crop`` searches it, unlocalised."""
    located = Searcher.from_catalog("product-search", catalog=catalog, progress=False)
    test_ids = [p.id for p in catalog.split("test")]
    room = Image.new("RGB", (256, 128))
    for x, pid in zip((0, 128), test_ids[:2]):
        room.paste(load_image(catalog.view_paths(pid)[0]), (x, 0))
    buf = io.BytesIO()
    room.save(buf, "PNG")
    with TestClient(create_app(located)) as c:
        found = upload(c, buf.getvalue(), k=5).json()
        box = found["box"]
        assert len(found["candidates"]) >= 2 and found["candidates"][0] == box
        assert found["image_size"] == [256, 128]  # the pixels the boxes are in
        assert [r["id"] for r in found["results"]] == list(located.search(room, k=5).ids)
        other = found["candidates"][1]
        again = upload(c, buf.getvalue(), k=5, crop=",".join(map(str, other))).json()
        assert again["box"] == other and again["candidates"] == []
        assert again["image_size"] == [256, 128]  # the whole photo's, not the crop's
        assert [r["id"] for r in again["results"]] == list(
            located.search(room, k=5, crop=other).ids
        )


def test_types_filter_and_text_without_a_text_encoder_is_501(client, catalog):
    img = icon_bytes(catalog, catalog.ids[0])
    chair = upload(client, img, k=5, types=["chair"])
    assert chair.status_code == 200 and {h["type"] for h in chair.json()["results"]} == {"chair"}
    assert upload(client, img, types=["spaceship"]).status_code == 422
    r = upload(client, img, text="a green armchair")
    assert r.status_code == 501 and "text" in r.json()["detail"]
    assert client.post("/search", json={"text": "a green armchair"}).status_code == 501
    facets = client.get("/facets").json()
    assert facets["type_filter"] is True and facets["text_search"] is False
    assert facets["categories"] == list(catalog.categories) and facets["types"] == list(
        catalog.types
    )


def test_text_and_composed_searches_with_a_text_encoder(searcher, catalog):
    from image_search import load_encoder

    text = Searcher.from_catalog(load_encoder("minilm-lit"), catalog=catalog, progress=False)
    with TestClient(create_app(searcher, ServeConfig(), text_searcher=text)) as c:
        beds = c.post("/search", json={"text": "a bed to sleep in", "k": 5})
        assert (
            beds.status_code == 200 and sum(h["type"] == "bed" for h in beds.json()["results"]) >= 3
        )
        chair = next(p for p in catalog.products if p.type == "chair")
        composed = upload(c, icon_bytes(catalog, chair.id), k=5, text="a lamp")
        assert composed.status_code == 200 and any(
            h["type"] == "lamp" for h in composed.json()["results"]
        )
        assert c.get("/facets").json()["text_search"] is True
        assert c.post("/search", json={"text": "", "k": 5}).status_code == 422


# ----------------------------------------------------------------------------- limits
def test_uploads_over_the_limit_are_413(searcher, catalog):
    big = icon_bytes(catalog, catalog.ids[0])  # a 128 px PNG shop photo, ~15 KB
    small = catalog.view_paths(catalog.ids[0])[
        0
    ].read_bytes()  # a 128 px JPEG customer photo, ~2 KB
    limit_mb = (len(big) - 100) / 2**20
    assert len(small) < len(big) - 100, "the test needs a photo smaller than the other"
    with serving(searcher, max_upload_mb=limit_mb) as c:
        assert upload(c, big, "big.png").status_code == 413
        r = c.post("/search", json={"image_base64": base64.b64encode(big).decode()})
        assert r.status_code == 413 and "limit" in r.json()["detail"]
        huge = b"\0" * (ServeConfig(max_upload_mb=limit_mb).max_body_bytes + 1)
        r = c.post(
            "/search", content=huge, headers={"content-type": "application/json"}
        )  # declared length
        assert r.status_code == 413
        r = c.post(
            "/search",
            content=iter([huge[:1000]] * (len(huge) // 1000 + 1)),  # chunked, no length
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 413
        assert upload(c, small).status_code == 200


def test_a_full_queue_answers_503_at_once(searcher, catalog):
    gated = GatedEncoder(searcher.encoder)
    with serving(searcher, gated, batching=False, queue=2) as c:
        batcher = c.app.state.batcher
        gated.gate.clear()
        gated.entered.clear()
        photo = load_image(catalog.icon_path(catalog.ids[0]))
        first = batcher.submit(photo)
        assert gated.entered.wait(10)  # the batcher thread holds the first photo in the encoder
        queued = [batcher.submit(photo), batcher.submit(photo)]  # the queue of 2 is full
        r = upload(c, icon_bytes(catalog, catalog.ids[2]))
        assert (
            r.status_code == 503
            and r.headers["retry-after"] == "1"
            and "busy" in r.json()["detail"]
        )
        gated.gate.set()
        for f in (first, *queued):
            assert f.result(10).vector.shape == (searcher.index.dim,)
        assert ids(upload(c, icon_bytes(catalog, catalog.ids[2]), k=1)) == [catalog.ids[2]]


def test_a_search_over_the_time_budget_answers_504_and_the_server_recovers(searcher, catalog):
    gated = GatedEncoder(searcher.encoder)
    with serving(searcher, gated, timeout_s=1.0) as c:
        gated.gate.clear()
        r = upload(c, icon_bytes(catalog, catalog.ids[4]))
        assert r.status_code == 504 and "time budget" in r.json()["detail"]
        gated.gate.set()
        assert ids(upload(c, icon_bytes(catalog, catalog.ids[4]), k=1)) == [catalog.ids[4]]


def test_concurrent_requests_each_get_their_own_results_in_shared_batches(searcher, catalog):
    chosen = catalog.ids[20:36]
    with serving(searcher, max_batch=8, batch_wait_ms=100) as c:
        with ThreadPoolExecutor(len(chosen)) as pool:
            responses = list(pool.map(lambda pid: upload(c, icon_bytes(catalog, pid), k=5), chosen))
        for pid, r in zip(chosen, responses):
            hits = r.json()["results"]
            assert pid in [h["id"] for h in hits if h["score"] > 0.9999], (pid, hits[:2])
        sizes = [r.json()["batch_size"] for r in responses]
        stats = c.get("/healthz").json()["batcher"]
        assert max(sizes) > 1 and stats["largest_batch"] <= 8 and max(sizes) <= 8
        assert stats["images"] == len(chosen) + 1  # + the warm-up photo


def test_an_encoder_failure_is_a_json_500_and_the_server_goes_on(searcher, catalog):
    broken = GatedEncoder(searcher.encoder, fail_on={128})  # the catalog's icons are 128 px wide
    app = create_app(Searcher(searcher.index, searcher.catalog, broken))
    with TestClient(app, raise_server_exceptions=False) as c:
        r = upload(c, icon_bytes(catalog, catalog.ids[0]))
        assert r.status_code == 500 and r.json()["detail"].startswith(
            "internal error (RuntimeError)"
        )
        assert "on purpose" not in r.text  # no internals leak
        smaller = io.BytesIO()
        load_image(catalog.icon_path(catalog.ids[0])).resize((96, 96)).save(smaller, "PNG")
        assert upload(c, smaller.getvalue()).status_code == 200


# ----------------------------------------------------------------------------- products and photos
def test_product_record_and_photos(client, catalog):
    pid = catalog.ids[5]
    r = client.get(f"/products/{pid}")
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == pid and body["name"] == catalog[pid].name and body["image_urls"]
    assert client.get(body["image_urls"][0]).content == icon_bytes(catalog, pid)
    assert client.get(f"/products/{pid}/images/{len(body['image_urls'])}").status_code == 404
    assert client.get(f"/products/{pid}/images/-1").status_code == 404
    assert client.get(f"/products/{pid}/images/first").status_code == 422
    r = client.get("/products/no-such-product")
    assert r.status_code == 404 and "no-such-product" in r.json()["detail"]


@pytest.mark.parametrize(
    "path",
    [
        "/products/../../../../etc/passwd",
        "/products/..%2F..%2F..%2F..%2Fetc%2Fpasswd/images/0",
        "/products/%2e%2e/images/0",
        "/products/..%2Fproducts.csv/images/0",
        "/products/{pid}/images/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/products/{pid}/images/0%2F..%2F..%2Fproducts.csv",
        "/products/{pid}/images/0/../../../products.csv",
        "/products/%2Fetc%2Fpasswd/images/0",
        "/static/../../../../etc/passwd",
        "/static/..%2F..%2Fapp.py",
        "/static/%2e%2e/%2e%2e/app.py",
        "/products/{pid}/images/0?path=/etc/passwd",
    ],
)
def test_no_path_traversal(client, catalog, path):
    pid = catalog.ids[0]
    r = client.get(path.format(pid=pid))
    body = r.content
    assert b"root:" not in body and b"import " not in body and b"id,name,category" not in body
    if (
        r.status_code == 200
    ):  # only the product's own photo may come back (query strings are ignored)
        assert body == icon_bytes(catalog, pid)
    else:
        assert r.status_code in (404, 422)


def test_healthz(client, searcher):
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["products"] == len(searcher.index) == 618
    assert h["encoder"] == "colour-histogram" and h["dim"] == searcher.index.dim
    assert (
        h["config"]["batching"] is True
        and h["batcher"]["max_batch"] == 16
        and h["batcher"]["batches"] >= 1
    )


def test_openapi_and_docs_work_offline(client):
    schema = client.get("/openapi.json").json()
    content = schema["paths"]["/search"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(content)
    assert {"400", "413", "415", "422", "503", "504"} <= set(
        schema["paths"]["/search"]["post"]["responses"]
    )
    assert "/products/{product_id}" in schema["paths"] and "/healthz" in schema["paths"]
    docs = client.get("/docs")
    if (
        importlib.util.find_spec("swagger_ui_bundle") is None
    ):  # not installed: /docs is off, with a note
        assert docs.status_code == 404 and "/openapi.json" in docs.json()["detail"]
        return
    assert docs.status_code == 200
    urls = re.findall(r'(?:src|href)="([^"]+)"', docs.text) + re.findall(
        r"url: '([^']+)'", docs.text
    )
    assert urls and not [u for u in urls if u.startswith(("http:", "https:", "//"))], urls
    for u in urls:
        assert client.get(u).status_code == 200, u


def test_the_page_is_self_contained(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert {"/static/app.js", "/static/style.css"} <= set(assets)
    for text in [page.text] + [client.get(a).text for a in assets]:
        assert not re.search(r"(?:src|href|url)\s*[=(]\s*[\"']?(?:https?:)?//", text), (
            "an external resource"
        )
        assert "innerHTML" not in text


def test_cors_is_off_by_default_and_an_allow_list_when_asked(client, searcher, catalog):
    origin = {"Origin": "http://shop.example"}
    assert "access-control-allow-origin" not in client.get("/healthz", headers=origin).headers
    with serving(searcher, cors_origins=("http://shop.example",)) as c:
        assert (
            c.get("/healthz", headers=origin).headers["access-control-allow-origin"]
            == "http://shop.example"
        )
        assert (
            "access-control-allow-origin"
            not in c.get("/healthz", headers={"Origin": "http://evil.example"}).headers
        )


# ----------------------------------------------------------------------------- the batcher
def test_batcher_gives_each_caller_its_own_row(searcher, catalog):
    encoder = searcher.encoder
    photos = [load_image(p) for p in catalog.queries("test")[0][:24]]
    expected = encoder.encode_images(photos)
    batcher = MicroBatcher(encoder, max_batch=8, wait_ms=20)
    try:
        with ThreadPoolExecutor(6) as pool:
            got = list(pool.map(batcher.embed, photos))
    finally:
        batcher.close()
    for row, e in zip(expected, got):
        np.testing.assert_allclose(e.vector, row, atol=1e-6)
        assert 1 <= e.batch_size <= 8 and e.queue_ms >= 0 and e.embed_ms > 0
    assert batcher.stats().images == 24 and batcher.stats().largest_batch <= 8


@pytest.mark.parametrize("max_batch, expected", [(8, [1, 8, 8, 4]), (1, [1] * 21)])
def test_batcher_fills_batches_up_to_max_batch(searcher, catalog, max_batch, expected):
    gated = GatedEncoder(searcher.encoder)
    batcher = MicroBatcher(gated, max_batch=max_batch, wait_ms=0, max_queue=64)
    photo = load_image(catalog.icon_path(catalog.ids[0]))
    try:
        gated.gate.clear()
        futures = [batcher.submit(photo)]
        assert gated.entered.wait(10)
        futures += [batcher.submit(photo) for _ in range(20)]  # they pile up behind the first
        gated.gate.set()
        results = [f.result(10) for f in futures]
    finally:
        batcher.close()
    assert gated.batches == expected
    assert [r.batch_size for r in results] == [n for n in expected for _ in range(n)]
    stats = batcher.stats()
    assert (stats.batches, stats.images, stats.largest_batch) == (len(expected), 21, max(expected))


def test_batcher_waits_for_a_batch_to_fill_but_not_longer(searcher, catalog):
    gated = GatedEncoder(searcher.encoder)
    batcher = MicroBatcher(gated, max_batch=4, wait_ms=300)
    photo = load_image(catalog.icon_path(catalog.ids[0]))
    try:
        first = batcher.submit(photo)
        second = batcher.submit(photo)  # arrives inside the first one's window: same batch
        assert first.result(10).batch_size == second.result(10).batch_size == 2
        alone = batcher.embed(
            photo, timeout=10
        )  # nobody else comes: it goes alone after the window
        assert alone.batch_size == 1 and alone.queue_ms >= 250
    finally:
        batcher.close()


def test_batcher_skips_cancelled_requests_and_survives_encoder_errors(searcher, catalog):
    gated = GatedEncoder(searcher.encoder, fail_on={13})
    batcher = MicroBatcher(gated, max_batch=1, wait_ms=0, max_queue=4)
    photo = load_image(catalog.icon_path(catalog.ids[0]))
    odd = Image.new("RGB", (13, 20), "white")
    try:
        gated.gate.clear()
        running = batcher.submit(photo)
        assert gated.entered.wait(10)
        gone = batcher.submit(odd.resize((17, 20)))
        assert gone.cancel()  # a request that timed out before its turn
        batcher.submit(photo)
        batcher.submit(photo)
        batcher.submit(photo)
        with pytest.raises(ServerBusyError, match="busy"):
            batcher.submit(photo)
        gated.gate.set()
        assert running.result(10).batch_size == 1
        with pytest.raises(CancelledError):
            gone.result(0)
        with pytest.raises(RuntimeError, match="on purpose"):
            batcher.embed(odd, timeout=10)
        assert batcher.embed(photo, timeout=10).vector.shape == (
            searcher.index.dim,
        )  # the thread lives on
        assert (17, 20) not in gated.seen
    finally:
        batcher.close()


@pytest.mark.parametrize(
    "bad",
    [
        {"max_batch": 0},
        {"max_batch": 2.5},
        {"batch_wait_ms": -1},
        {"max_upload_mb": 0},
        {"timeout_s": 0},
        {"queue": 0},
        {"queue": True},
    ],
)
def test_bad_serve_settings_are_refused(bad):
    with pytest.raises(InvalidRequestError, match=next(iter(bad))):
        ServeConfig(**bad)


def test_cli_refuses_bad_settings_in_one_line_before_loading_anything(capsys):
    from image_search.__main__ import main

    assert main(["serve", "--max-batch", "0", "--encoder", "no-such-encoder"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "max_batch" in err and "unexpected" not in err
    assert main(["serve", "--port", "0", "--type-weight", "-1", "--encoder", "no-such"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "type_weight" in err and "unexpected" not in err


def test_cli_serves_the_product_search_pipeline_by_default():
    from image_search.__main__ import _parser

    args = _parser().parse_args(["serve"])
    assert args.encoder == "product-search" and args.type_weight == 0.0


def test_cli_refuses_a_busy_port_in_one_line_before_loading_anything(capsys):
    from image_search.__main__ import main

    with socket.create_server(("127.0.0.1", 0)) as taken:
        assert (
            main(["serve", "--port", str(taken.getsockname()[1]), "--encoder", "no-such-encoder"])
            == 1
        )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot listen on 127.0.0.1" in err and "unexpected" not in err


def test_json_fields_are_strict(client, catalog):
    img = base64.b64encode(icon_bytes(catalog, catalog.ids[0])).decode()
    assert client.post("/search", json={"image_base64": img, "k": "3"}).status_code == 422
    assert client.post("/search", json={"image_base64": img, "in_stock": "yes"}).status_code == 422
    ok = client.post(
        "/search", json={"image_base64": img, "k": 3, "min_price": 10, "in_stock": False}
    )
    assert ok.status_code == 200 and all(
        not h["in_stock"] and h["price"] >= 10 for h in ok.json()["results"]
    )
    assert json.loads(ok.text)["batch_size"] >= 1


def test_served_connections_get_tcp_nodelay():
    """asyncio turns Nagle off only on sockets made as TCP; with it on, each keep-alive response
    waited ~44 ms for a delayed ACK."""
    sock = listen_socket("127.0.0.1", 0)

    async def nodelay_of_an_accepted_connection() -> int:
        got = asyncio.get_running_loop().create_future()

        def accepted(reader, writer) -> None:
            got.set_result(
                writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            )
            writer.close()

        server = await asyncio.start_server(accepted, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname())
        try:
            return await asyncio.wait_for(got, 10)
        finally:
            writer.close()
            server.close()
            await server.wait_closed()

    assert asyncio.run(nodelay_of_an_accepted_connection()) != 0
    with (
        socket.create_server(("127.0.0.1", 0)) as taken,
        pytest.raises(InvalidRequestError, match="cannot listen on"),
    ):
        listen_socket("127.0.0.1", taken.getsockname()[1])
