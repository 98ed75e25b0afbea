"""Vector stores (chapter 12): FAISS, Qdrant (local mode) and Milvus Lite behind one protocol give
the same exact-search results on the real catalog, with filters applied inside each engine; a
missing client library or an unreachable server is a one-line error within seconds."""

from __future__ import annotations

import socket
import sys
import time

import numpy as np
import pytest

from image_search import Filters, IndexMismatchError, InvalidRequestError, ProductIndex
from image_search.encoders import encode_paths, load_encoder
from image_search.stores import BackendUnavailableError, VectorStore, open_store, product_digest
from image_search.stores.filters import Attributes

from conftest import unit_vectors

ENGINES = ("faiss", "qdrant", "milvus")


def same_ranking(a_ids, a_scores, b_ids, b_scores, tol=1e-5) -> bool:
    """Equal rankings up to ties: the scores agree position by position, and the products agree
    except inside a group of equal scores, whose members may come in any order (and whose last
    group may be cut at k differently)."""
    if len(a_ids) != len(b_ids) or not np.allclose(
        a_scores[: len(a_ids)], b_scores[: len(b_ids)], atol=tol
    ):
        return False
    groups, start = [], 0
    for i in range(1, len(a_ids) + 1):
        if i == len(a_ids) or abs(a_scores[i] - a_scores[start]) > tol:
            groups.append((start, i))
            start = i
    return all(set(a_ids[s:e]) == set(b_ids[s:e]) for s, e in groups[:-1])


@pytest.fixture(scope="module")
def icons(catalog):
    """The cached EfficientNet-Lite0 embeddings of the catalog's shop photos."""
    return encode_paths(load_encoder(), [catalog.icon_path(i) for i in catalog.ids], progress=False)


@pytest.fixture(scope="module")
def engines(catalog, icons, tmp_path_factory):
    """The catalog in each engine: every product's icon, and for the first 100 products a second
    photo (a perturbed copy), with the catalog's attributes."""
    folder = tmp_path_factory.mktemp("stores")
    extra = unit_vectors(100, icons.shape[1], seed=3) * 0.3 + icons[:100]
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    owners = catalog.ids + catalog.ids[:100]
    x = np.vstack([icons, extra]).astype(np.float32)
    attrs = Attributes.from_catalog(catalog, owners)
    out = {}
    for kind, where in (
        ("faiss", folder / "f.index"),
        ("qdrant", ":memory:"),
        ("milvus", folder / "m.db"),
    ):
        store = open_store(kind, where, "efficientnet-lite0", icons.shape[1], create=True)
        store.add(owners, x, attrs, digests=[f"d-{o}" for o in owners])
        out[kind] = store
    yield out, x
    for store in out.values():
        store.close()


def test_every_engine_is_a_vector_store(engines):
    stores, x = engines
    for kind, store in stores.items():
        assert isinstance(store, VectorStore), kind
        assert len(store) == 618 and store.vector_count == 718, kind
        assert sorted(store.ids) == sorted(stores["faiss"].ids)
        assert store.digests() == stores["faiss"].digests()
        np.testing.assert_allclose(
            store.vectors(["blend-swap-cc-0-antiquechair", stores["faiss"].ids[5]]),
            stores["faiss"].vectors(["blend-swap-cc-0-antiquechair", stores["faiss"].ids[5]]),
            atol=1e-6,
        )


@pytest.mark.parametrize(
    "filters",
    [
        None,
        Filters(categories=("Kitchen",)),
        Filters(categories=("Bedroom", "Living room"), max_price=300.0, in_stock=True),
        Filters(min_price=100.0, max_price=150.0),
        Filters(in_stock=False),
        Filters(categories=("Lights",), min_price=1000.0),  # nothing qualifies
    ],
    ids=["none", "category", "category+price+stock", "price range", "out of stock", "empty"],
)
def test_engines_agree_with_faiss_exact_search_on_the_catalog(engines, catalog, filters):
    stores, x = engines
    rng = np.random.default_rng(0)
    q = x[rng.choice(len(x), 30, replace=False)] + 0.02 * unit_vectors(30, x.shape[1], seed=1)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    want_s, want = stores["faiss"].search(q, 10, filters)
    passing = {p.id for p in catalog.products if filters is None or filters.accepts(p)}
    assert all(
        len(row) == min(10, len(passing)) and set(row) <= passing and len(set(row)) == len(row)
        for row in want
    )
    for kind in ("qdrant", "milvus"):
        got_s, got = stores[kind].search(q, 10, filters)
        assert len(got) == len(want)
        for r in range(len(q)):
            assert same_ranking(want[r], want_s[r], got[r], got_s[r]), (kind, r, want[r], got[r])


def test_filters_become_engine_native_queries(engines):
    stores, _ = engines
    f = Filters(categories=("Kitchen",), types=("chair",), min_price=10, in_stock=True)
    assert stores["milvus"].expression(f) == (
        'known == true and category in ["Kitchen"] and type in ["chair"] '
        "and price >= 10.0 and in_stock == true"
    )
    flt = stores["qdrant"].query_filter(f)
    assert {c.key for c in flt.must} == {"category", "type", "price", "in_stock"}
    assert (
        stores["milvus"].expression(Filters()) == "" and stores["qdrant"].query_filter(None) is None
    )


def test_add_remove_update_agree_across_engines(engines, catalog):
    stores, x = engines
    dim = x.shape[1]
    new = unit_vectors(3, dim, seed=11)
    attrs = Attributes.of([catalog.products[0]] * 3)
    for kind, store in stores.items():
        store.add(["zz-new", "zz-new", "zz-other"], new, attrs)
        with pytest.raises(InvalidRequestError, match="already"):
            store.add(["zz-other"], new[:1])
        assert len(store) == 620 and store.vector_count == 721, kind
        store.update(["zz-new"], new[2])
        assert store.vector_count == 720
        _, got = store.search(new[2], 1)
        assert got[0][0] in ("zz-new", "zz-other"), kind
        assert store.remove(["zz-new", "zz-other", "never-there"]) == 2
        assert len(store) == 618 and store.vector_count == 718 and "zz-new" not in store


def test_stores_persist_and_refuse_another_encoder(tmp_path):
    x = unit_vectors(12, 8)
    for kind, where in (
        ("faiss", tmp_path / "a.index"),
        ("qdrant", tmp_path / "q"),
        ("milvus", tmp_path / "m.db"),
    ):
        store = open_store(kind, where, "enc", 8, create=True)
        store.add([f"p{i // 2}" for i in range(12)], x)
        store.catalog_fingerprint = "abc"
        store.save()
        store.close()
        again = open_store(kind, where, "enc", 8)
        assert (
            len(again) == 6 and again.vector_count == 12 and again.catalog_fingerprint == "abc"
        ), kind
        again.close()
        with pytest.raises(IndexMismatchError, match="dim"):
            open_store(kind, where, "enc", 16).close()
        if kind == "faiss":
            with pytest.raises(IndexMismatchError, match="encoder"):
                open_store(kind, where, "other-encoder", 8)
        else:  # one collection per encoder: another encoder's is not there yet
            with pytest.raises(FileNotFoundError, match="build it with"):
                open_store(kind, where, "other-encoder", 8)


@pytest.mark.parametrize("kind", ["qdrant", "milvus"])
def test_an_unreachable_server_is_a_one_line_error_within_seconds(kind):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.perf_counter()
    with pytest.raises(BackendUnavailableError, match=f"127.0.0.1:{port}") as e:
        open_store(kind, f"http://127.0.0.1:{port}", "enc", 8, timeout=3)
    assert time.perf_counter() - t < 15 and "\n" not in str(e.value)


@pytest.mark.parametrize("kind, module", [("qdrant", "qdrant_client"), ("milvus", "pymilvus")])
def test_a_missing_client_library_is_a_one_line_error(kind, module, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(BackendUnavailableError, match="pip install"):
        open_store(kind, tmp_path / "x", "enc", 8)


def test_product_digests_change_with_photos_and_attributes(catalog):
    attrs = Attributes.from_catalog(catalog, catalog.ids[:2])
    a = product_digest(["c1"], attrs, 0)
    assert a == product_digest(["c1"], attrs, 0) != product_digest(["c2"], attrs, 0)
    cheaper = Attributes(attrs.category, attrs.type, attrs.price - 1, attrs.in_stock, attrs.known)
    assert product_digest(["c1"], cheaper, 0) != a


def test_faiss_store_is_the_product_index(tmp_path):
    store = open_store("faiss", tmp_path / "x.index", "enc", 8, create=True)
    assert isinstance(store, ProductIndex) and store.save() == tmp_path / "x.index"


# ----------------------------------------------------------- the CLI with each store (incremental)
from image_search.__main__ import main as cli_main  # noqa: E402


def run_cli(capsys, *args):
    rc = cli_main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def small_catalog(catalog, folder, n=60):
    """A catalog folder with the first ``n`` products and copies of their icons (editable)."""
    folder.mkdir()
    lines = (catalog.root / "products.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "products.csv").write_text("".join(lines[: n + 1]), encoding="utf-8")
    (folder / "icons").mkdir()
    for pid in catalog.ids[:n]:
        (folder / "icons" / f"{pid}.png").write_bytes(catalog.icon_path(pid).read_bytes())
    (folder / "views").symlink_to(catalog.root / "views")
    return folder


def edit_catalog(folder, drop=(), price=None, add_copy_of=None, pixel=(1, 2, 3)):
    import csv
    import io

    from PIL import Image

    rows = list(csv.DictReader(io.StringIO((folder / "products.csv").read_text(encoding="utf-8"))))
    fields = list(rows[0])
    rows = [r for r in rows if r["id"] not in drop]
    if price:
        for r in rows:
            if r["id"] == price[0]:
                r["price"] = str(price[1])
    if add_copy_of:
        new = dict(next(r for r in rows if r["id"] == add_copy_of), id="zz-new-product")
        rows.append(new)
        img = Image.open(folder / "icons" / f"{add_copy_of}.png").convert("RGB")
        img.putpixel((0, 0), pixel)  # another image: another checksum
        img.save(folder / "icons" / "zz-new-product.png")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (folder / "products.csv").write_text(buf.getvalue(), encoding="utf-8")


@pytest.mark.parametrize("kind", ENGINES)
def test_cli_indexes_incrementally_and_searches_each_store(
    kind, catalog, tmp_path, monkeypatch, capsys
):
    folder = small_catalog(catalog, tmp_path / "catalog")
    monkeypatch.setenv("IMAGE_SEARCH_CATALOG", str(folder))
    uri = tmp_path / {"faiss": "x.index", "qdrant": "qdrant", "milvus": "m.db"}[kind]
    common = ["--encoder", "colour-histogram", "--store", kind, "--store-uri", uri]
    rc, out, err = run_cli(capsys, "index", *common)
    assert rc == 0 and "indexed 60 products" in out and "60 added, 0 updated, 0 removed" in out, err
    query = catalog.view_paths(catalog.ids[3])[0]
    rc, out, err = run_cli(
        capsys, "search", query, "-k", "5", "--json", "--category", "Living room", *common
    )
    assert rc == 0, err
    import json

    got = [r["id"] for r in json.loads(out)["results"]]
    living = [p.id for p in catalog.products[:60] if p.category == "Living room"]
    assert set(got) <= set(living) and len(got) == min(5, len(living))

    ids = catalog.ids
    edit_catalog(
        folder,
        drop=ids[10:12],
        price=(ids[20], 1.5),
        add_copy_of=ids[30],
        pixel=(ENGINES.index(kind), 2, 3),
    )  # new to the session's embedding cache
    rc, out, err = run_cli(capsys, "search", query, *common)
    assert rc == 1 and "built for another catalog" in err and len(err.strip().splitlines()) == 1
    rc, out, err = run_cli(capsys, "index", *common)
    assert (
        rc == 0
        and "indexed 59 products" in out
        and "1 added, 1 updated, 2 removed, 1 images embedded" in out
    ), out
    rc, out, err = run_cli(capsys, "search", query, "-k", "59", "--json", *common)
    found = {r["id"]: r for r in json.loads(out)["results"]}
    assert rc == 0 and set(found) == set(ids[:60]) - set(ids[10:12]) | {"zz-new-product"}
    assert found[ids[20]]["price"] == 1.5  # the updated attributes are what the store filters on
    rc, out, err = run_cli(
        capsys, "search", query, "-k", "3", "--json", "--max-price", "2", *common
    )
    assert [r["id"] for r in json.loads(out)["results"]] == [ids[20]]


def test_cli_store_errors_are_one_line(capsys, tmp_path, monkeypatch, catalog):
    image = catalog.icon_path(catalog.ids[0])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc, _, err = run_cli(
        capsys,
        "search",
        image,
        "--encoder",
        "colour-histogram",
        "--store",
        "milvus",
        "--store-uri",
        f"http://127.0.0.1:{port}",
    )
    assert rc == 1 and "cannot open the Milvus store" in err and len(err.strip().splitlines()) == 1
    rc, _, err = run_cli(
        capsys,
        "search",
        image,
        "--encoder",
        "colour-histogram",
        "--store",
        "qdrant",
        "--store-uri",
        tmp_path / "never-built",
    )
    assert rc == 1 and "build it with" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setitem(sys.modules, "qdrant_client", None)
    rc, _, err = run_cli(
        capsys,
        "index",
        "--encoder",
        "colour-histogram",
        "--store",
        "qdrant",
        "--store-uri",
        tmp_path / "q",
    )
    assert rc == 1 and "pip install qdrant-client" in err and len(err.strip().splitlines()) == 1
