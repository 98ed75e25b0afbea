import io
import json
import zipfile

import faiss
import numpy as np
import pytest

from image_search import (
    Filters,
    ImageSearchError,
    IndexMismatchError,
    InvalidRequestError,
    ProductIndex,
)
from image_search.stores import persistence
from image_search.stores.filters import Attributes

from conftest import unit_vectors


def make(n=200, dim=32, factory="Flat"):
    x = unit_vectors(n, dim)
    ids = [f"p{i}" for i in range(n)]
    index = ProductIndex(dim, "test-encoder", factory=factory)
    index.add(ids, x)
    return index, ids, x


@pytest.mark.parametrize("factory", ["Flat", "HNSW16", "IVF8,Flat"])
def test_each_vector_finds_itself(factory):
    index, ids, x = make(factory=factory)
    scores, got = index.search(x[:20], 1, params={"nprobe": 8, "efSearch": 64})
    assert [g[0] for g in got] == ids[:20]
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)


def test_remove_and_update_by_id():
    index, ids, x = make()
    assert index.remove(["p3", "p4", "nope"]) == 2
    assert "p3" not in index and len(index) == 198
    _, got = index.search(x[3], 5)
    assert "p3" not in got[0]
    index.update(["p5"], x[6])  # p5 now points at p6's vector
    _, got = index.search(x[6], 2)
    assert set(got[0]) == {"p5", "p6"}
    with pytest.raises(ValueError, match="already"):
        index.add(["p7"], x[7])


def test_allow_list_is_applied_inside_the_search():
    index, ids, x = make()
    allowed = {"p10", "p20", "p30"}
    scores, got = index.search(x[:5], 10, allowed=allowed)
    assert all(
        set(row) == allowed for row in got
    )  # only 3 qualify: rows are short, not padded with others
    assert np.isneginf(scores[:, 3:]).all()
    _, empty = index.search(x[:1], 10, allowed=set())
    assert empty == [[]]


def test_bad_queries_are_refused():
    index, _, x = make()
    with pytest.raises(InvalidRequestError):
        index.search(np.full(32, np.nan, dtype=np.float32), 5)
    with pytest.raises(InvalidRequestError):
        index.search(np.zeros(31, dtype=np.float32), 5)
    with pytest.raises(InvalidRequestError):
        index.search(x[:1], 0)
    with pytest.raises(ValueError):
        ProductIndex(32, "e", factory="NotAFactory")


def test_save_load_round_trip_and_manifest(tmp_path):
    index, ids, x = make()
    index.remove(["p0"])
    path = index.save(tmp_path / "a.index")
    loaded = ProductIndex.load(path, encoder="test-encoder", dim=32)
    assert loaded.ids == index.ids
    assert loaded.manifest() == index.manifest()
    _, a = index.search(x[:10], 5)
    _, b = loaded.search(x[:10], 5)
    assert a == b
    loaded.add(["new"], x[0])  # labels keep counting after a load: no clash with old ones
    assert loaded.search(x[0], 1)[1] == [["new"]]


def test_mismatched_or_damaged_index_is_refused(tmp_path):
    index, _, _ = make()
    path = index.save(tmp_path / "a.index")
    with pytest.raises(IndexMismatchError, match="encoder"):
        ProductIndex.load(path, encoder="other")
    with pytest.raises(IndexMismatchError, match="dim"):
        ProductIndex.load(path, dim=64)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "bad.index").write_bytes(bytes(data))
    with pytest.raises(IndexMismatchError):
        ProductIndex.load(tmp_path / "bad.index")
    (tmp_path / "short.index").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(IndexMismatchError):
        ProductIndex.load(tmp_path / "short.index")


# ---------------------------------------------------------------------------------------------
# Reliability (chapter 02): the id <-> vector mapping stays exact, damaged files are refused.


@pytest.fixture
def one_faiss_thread():
    """Tiny FAISS calls on shared CPUs are far faster without OpenMP's thread team."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def _check_against_model(index, model, rng, exact_search):
    assert len(index) == len(model) and set(index.ids) == set(model)
    if not model:
        return
    ids = sorted(model)
    np.testing.assert_array_equal(index.vectors(ids), np.stack([model[i] for i in ids]))
    probe = [ids[j] for j in rng.choice(len(ids), size=min(25, len(ids)), replace=False)]
    _, got = index.search(
        np.stack([model[i] for i in probe]), 3, params={"nprobe": 64, "efSearch": 128}
    )
    for want, row in zip(probe, got):
        assert set(row) <= set(model)  # never a removed or unknown product
        if exact_search:
            assert row[0] == want
    sub = set(probe[:5])
    _, got = index.search(
        np.stack([model[i] for i in probe[:5]]), 10, allowed=sub | {"never-added"}
    )
    assert all(set(row) <= sub for row in got)


@pytest.mark.parametrize(
    "factory, exact_search", [("Flat", True), ("IVF16,Flat", True), ("HNSW16", False)]
)
def test_random_add_update_remove_matches_a_dict_model(
    tmp_path, factory, exact_search, one_faiss_thread
):
    dim, rng = 16, np.random.default_rng(42)
    index = ProductIndex(dim, "test-encoder", factory=factory)
    if not index.is_trained:
        index.train(unit_vectors(2000, dim, seed=1))
    model: dict[str, np.ndarray] = {}
    next_id, ops = 0, 0

    def fresh(n):
        x = rng.normal(size=(n, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    for batch in range(40):
        for _ in range(60):
            op, ops = rng.choice(["add", "add", "remove", "update"]), ops + 1
            if op == "add" or not model:
                n = int(rng.integers(1, 8))
                ids = [f"p{next_id + i}" for i in range(n)]
                next_id += n
                x = fresh(n)
                index.add(ids, x)
                model.update(zip(ids, x))
            elif op == "remove":
                existing = sorted(model)
                ids = [
                    existing[j]
                    for j in rng.choice(
                        len(existing),
                        size=min(len(existing), int(rng.integers(1, 6))),
                        replace=False,
                    )
                ]
                assert index.remove(ids + ["ghost"]) == len(ids)
                for i in ids:
                    del model[i]
            else:
                existing = sorted(model)
                ids = [
                    existing[j]
                    for j in rng.choice(
                        len(existing),
                        size=min(len(existing), int(rng.integers(1, 4))),
                        replace=False,
                    )
                ]
                ids.append(f"p{next_id}")  # update also adds a product not yet present
                next_id += 1
                x = fresh(len(ids))
                index.update(ids, x)
                model.update(zip(ids, x))
        _check_against_model(index, model, rng, exact_search)
        if (
            batch % 10 == 9
        ):  # a save/load round trip changes nothing, and work goes on from the loaded copy
            path = index.save(tmp_path / f"{factory}.index")
            index = ProductIndex.load(path, encoder="test-encoder", dim=dim, metric="ip")
            _check_against_model(index, model, rng, exact_search)
    assert ops == 2400 and len(model) > 200


def test_hnsw_removal_uses_tombstones_that_survive_save_and_load(tmp_path):
    index, ids, x = make(factory="HNSW16")
    assert index.removal == "tombstone"
    index.remove(ids[:50])
    index.update(ids[50:60], x[:10])  # p50..p59 now hold the vectors of removed p0..p9
    _, got = index.search(x[:10], 1)
    assert [g[0] for g in got] == ids[50:60]
    loaded = ProductIndex.load(index.save(tmp_path / "h.index"))
    assert loaded.removal == "tombstone" and len(loaded) == 150
    _, got = loaded.search(x[:60], 150, params={"efSearch": 256})
    assert not set().union(*got) & set(ids[:50])


def test_removal_kind_per_factory():
    assert ProductIndex(8, "e", "Flat").removal == "physical"
    assert ProductIndex(8, "e", "PQ2x4").removal == "physical"
    assert ProductIndex(8, "e", "IVF4,Flat").removal == "native"
    assert ProductIndex(8, "e", "HNSW8").removal == "tombstone"


def test_ivf_vectors_and_removal_keep_ids_exact():
    # Regression: an IndexIDMap over IVF mixed products up after a removal, and had no reconstruct.
    index, ids, x = make(n=400, factory="IVF8,Flat")
    np.testing.assert_array_equal(index.vectors(ids[:5]), x[:5])
    index.remove(ids[:100])
    index.add(["again"], x[0])
    _, got = index.search(x[100:200], 1, params={"nprobe": 8})
    assert [g[0] for g in got] == ids[100:200]
    assert index.search(x[0], 1, params={"nprobe": 8})[1] == [["again"]]
    np.testing.assert_array_equal(index.vectors(["again", "p150"]), x[[0, 150]])


def test_failed_operations_leave_the_mapping_intact():
    index, ids, x = make()
    before = index.ids
    with pytest.raises(InvalidRequestError):  # validated before anything is removed
        index.update(["p1", "p2"], np.full((2, 32), np.nan, np.float32))
    with pytest.raises(InvalidRequestError, match="Attributes with 2 rows"):
        index.update(["p1", "p2"], x[:2], Attributes.unknown(3))
    with pytest.raises(ValueError):
        index.update(["p1", "p2"], x[:3])
    with pytest.raises(ValueError):
        index.add([7], x[:1])
    assert index.ids == before
    np.testing.assert_array_equal(index.vectors(["p1", "p2"]), x[1:3])


def test_k_must_be_a_positive_integer():
    index, _, x = make()
    for bad in (0, -3, 2.5, True, "5", None):
        with pytest.raises(InvalidRequestError):
            index.search(x[:1], bad)
    scores, got = index.search(x[:1], 10**9)  # absurdly large: capped at the catalog size
    assert len(got[0]) == 200


def test_metric_mismatch_is_refused(tmp_path):
    x = unit_vectors(50, 8)
    index = ProductIndex(8, "enc", metric="l2")
    index.add([f"p{i}" for i in range(50)], x)
    path = index.save(tmp_path / "l2.index")
    with pytest.raises(IndexMismatchError, match="metric"):
        ProductIndex.load(path, metric="ip")
    assert ProductIndex.load(path, encoder="enc", dim=8, metric="l2").metric == "l2"


def _members(path):
    with zipfile.ZipFile(path) as z:
        return {name: z.read(name) for name in z.namelist()}


def _array(members, name):
    return np.load(io.BytesIO(members[f"{name}.npy"]), allow_pickle=False)


def _npy(a):
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _rewrite(
    path,
    out,
    manifest_changes=None,
    arrays=None,
    members=None,
    blob=None,
    recompute=True,
    compress=False,
):
    """A copy of an index file with some parts changed (and, unless told, a recomputed checksum)."""
    m = _members(path)
    for name, value in (arrays or {}).items():
        m[f"{name}.npy"] = _npy(value)
    m.update(members or {})
    if blob is not None:
        m["index.faiss"] = blob
    manifest = json.loads(m["manifest.json"])
    manifest.update(manifest_changes or {})
    if recompute:
        manifest["checksum"] = persistence.checksum(m)
    m["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        for name, data in m.items():
            z.writestr(name, data)
    return out


@pytest.mark.parametrize("factory", ["Flat", "IVF4,Flat", "HNSW8"])
def test_tampered_files_are_refused_even_with_a_valid_checksum(tmp_path, factory):
    index, ids, _ = make(n=50, factory=factory)
    path = index.save(tmp_path / "a.index")
    m = _members(path)
    labels = _array(m, "labels")
    swapped, duplicate, outside = labels.copy(), labels.copy(), labels.copy()
    swapped[[3, 7]] = swapped[[7, 3]]  # p3 and p7 trade vectors: same sets, wrong answers
    duplicate[1] = duplicate[2]
    outside[0] = 1000
    other = ProductIndex(40, "test-encoder", factory=factory)  # a FAISS blob of another dimension
    other.add(ids, unit_vectors(50, 40))
    l2 = ProductIndex(32, "test-encoder", factory=factory, metric="l2")
    l2.add(ids, unit_vectors(50, 32))
    huge = m["labels.npy"].replace(b"(50,)", b"(99999999999,)")  # an npy header declaring 800 GB
    cases = {
        "bad checksum": dict(manifest_changes={"count": 49}, recompute=False),
        "wrong count": dict(manifest_changes={"count": 49}),
        "wrong vector count": dict(manifest_changes={"vectors": 51}),
        "swapped labels": dict(arrays={"labels": swapped}),
        "ids not in FAISS": dict(arrays={"labels": outside}),
        "two ids, one label": dict(arrays={"labels": duplicate}),
        "ids and labels of different lengths": dict(
            members={"ids.json": json.dumps(ids[:49]).encode()}
        ),
        "duplicate product ids": dict(
            members={"ids.json": json.dumps(ids[:49] + ids[:1]).encode()}
        ),
        "float labels": dict(arrays={"labels": labels.astype(np.float64)}),
        "npy header declaring 800 GB": dict(members={"labels.npy": huge}),
        "object array": dict(
            members={
                "labels.npy": b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, "
                b"'shape': (50,), }" + b" " * 50 + b"\n" + b"\0" * 400
            }
        ),
        "other dimension": dict(blob=faiss.serialize_index(other.index).tobytes()),
        "other metric inside": dict(blob=faiss.serialize_index(l2.index).tobytes()),
        "not a FAISS blob": dict(blob=b"\0" * 100),
        "truncated FAISS blob": dict(blob=m["index.faiss"][:-40]),
        "unknown format": dict(manifest_changes={"format_version": 1}),
        "compressed (zip bomb)": dict(compress=True),
        "manifest with an extra key": dict(manifest_changes={"extra": 1}),
        "signatures of other vectors": dict(
            arrays={"signatures": _array(m, "signatures")[::-1].copy()}
        ),
    }
    for name, kw in cases.items():
        bad = _rewrite(path, tmp_path / "bad.index", **kw)
        with pytest.raises(IndexMismatchError):
            ProductIndex.load(bad)
            pytest.fail(f"{name}: accepted")
    # the same file without a change loads: each case tests its change, not _rewrite
    assert len(ProductIndex.load(_rewrite(path, tmp_path / "ok.index"))) == 50
    for junk in (b"", b"PK\x03\x04" + b"\0" * 50, b"not a zip at all", b"{}"):
        (tmp_path / "junk.index").write_bytes(junk)
        with pytest.raises(IndexMismatchError):
            ProductIndex.load(tmp_path / "junk.index")
    with pytest.raises(ImageSearchError):
        ProductIndex.load(tmp_path)  # a folder
    with pytest.raises(FileNotFoundError):
        ProductIndex.load(tmp_path / "missing.index")


def test_crafted_faiss_sizes_are_refused_before_faiss_allocates(tmp_path, monkeypatch):
    """A crafted IVF file (20 KB) declaring a huge number of lists took 55 s and 13.6 GB: FAISS now
    reads under limits equal to the blob's length, and the header is checked first."""
    index, ids, _ = make(n=50, factory="IVF4,Flat")
    path = index.save(tmp_path / "ivf.index")
    blob = bytearray(_members(path)["index.faiss"])
    at = blob.index(b"ilar") + 4
    blob[at : at + 8] = (10**8).to_bytes(8, "little")  # nlist of the inverted lists: 100 million
    seen = []
    real = faiss.deserialize_index

    def spy(data):
        seen.append(
            (faiss.get_deserialization_loop_limit(), faiss.get_deserialization_vector_byte_limit())
        )
        return real(data)

    monkeypatch.setattr(faiss, "deserialize_index", spy)
    with pytest.raises(IndexMismatchError, match="limit"):
        ProductIndex.load(_rewrite(path, tmp_path / "crafted.index", blob=bytes(blob)))
    assert seen and all(limit <= len(blob) + 64 for pair in seen for limit in pair)
    assert faiss.get_deserialization_loop_limit() == 0  # restored afterwards
    header = bytearray(_members(path)["index.faiss"])
    header[8:16] = (10**12).to_bytes(8, "little")  # ntotal in the FAISS header
    with pytest.raises(IndexMismatchError, match="declares"):
        ProductIndex.load(_rewrite(path, tmp_path / "ntotal.index", blob=bytes(header)))
    assert len(seen) == 1  # refused from the header: FAISS never read it


def test_a_member_declared_larger_than_the_file_is_refused(tmp_path):
    index, _, _ = make(n=20)
    data = bytearray(index.save(tmp_path / "a.index").read_bytes())
    at = data.index(b"PK\x01\x02")  # the first central directory entry: its sizes at +20 and +24
    data[at + 20 : at + 28] = (10**9).to_bytes(4, "little") * 2
    (tmp_path / "big.index").write_bytes(bytes(data))
    with pytest.raises(IndexMismatchError, match="more than the file holds|not a readable"):
        ProductIndex.load(tmp_path / "big.index")


# ---------------------------------------------------------------------------------------------
# Several vectors (photos) per product (issue 12 part 3).
def multi(n_products=300, dim=16, seed=0, max_photos=5):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, max_photos + 1, n_products)
    owners = [f"p{i}" for i, c in enumerate(counts) for _ in range(c)]
    return owners, unit_vectors(len(owners), dim, seed=seed + 1), counts


def brute_force_products(owners, x, q, k, how="max", top_m=2, allowed=None):
    sims = q @ x.T
    out = []
    for row in sims:
        per: dict[str, list[float]] = {}
        for pid, s in zip(owners, row.tolist()):
            if allowed is None or pid in allowed:
                per.setdefault(pid, []).append(s)
        score = {
            p: max(v) if how == "max" else sum(sorted(v, reverse=True)[:top_m])
            for p, v in per.items()
        }
        out.append(sorted(score, key=lambda p: -score[p])[:k])
    return out


@pytest.mark.parametrize("factory", ["Flat", "IVF8,Flat"])
def test_max_over_photos_is_exact_against_brute_force(factory):
    owners, x, counts = multi()
    index = ProductIndex(16, "enc", factory=factory)
    index.add(owners, x)
    assert len(index) == 300 and index.vector_count == len(owners)
    q = unit_vectors(40, 16, seed=9)
    fetched = []
    real = index._faiss_search
    index._faiss_search = lambda qq, kk, p: fetched.append(kk) or real(qq, kk, p)
    scores, got = index.search(q, 10, params={"nprobe": 8})  # nprobe = nlist: IVF is exact too
    assert got == brute_force_products(owners, x, q, 10)
    assert fetched == [
        10 * counts.max()
    ]  # over-fetch: k x the most photos any product has, no more
    sims = q @ x.T
    best = {
        pid: sims[:, [j for j, o in enumerate(owners) if o == pid]].max(axis=1)
        for pid in set(owners)
    }
    np.testing.assert_allclose(
        scores, [[best[p][r] for p in row] for r, row in enumerate(got)], atol=1e-5
    )


def test_sum_of_top_m_photos_and_filters_per_product():
    owners, x, counts = multi(n_products=40)
    q = unit_vectors(10, 16, seed=3)
    index = ProductIndex(16, "enc")
    products = list(dict.fromkeys(owners))
    stock = {p: i % 3 == 0 for i, p in enumerate(products)}
    attrs = Attributes(
        np.full(len(owners), "c"),
        np.full(len(owners), ""),
        np.full(len(owners), 1.0),
        [stock[o] for o in owners],
        np.ones(len(owners), bool),
    )
    index.add(owners, x, attrs)
    # 40 products x at most 5 photos: k=40 fetches every vector, so the top-2 sum is exact here
    assert index.search(q, 40, aggregate="sum", top_m=2)[1] == brute_force_products(
        owners, x, q, 40, "sum", 2
    )
    in_stock = {p for p, s in stock.items() if s}
    _, got = index.search(q, 5, Filters(in_stock=True))
    assert got == brute_force_products(owners, x, q, 5, allowed=in_stock)
    _, got = index.search(q, 100, Filters(in_stock=True))
    assert all(
        sorted(row) == sorted(in_stock) for row in got
    )  # each product once, all that qualify
    for bad in (dict(aggregate="mean"), dict(top_m=0), dict(top_m=1.5)):
        with pytest.raises(InvalidRequestError):
            index.search(q, 5, **bad)


def test_add_update_remove_and_vectors_work_per_product(tmp_path):
    owners, x, counts = multi(n_products=30)
    index = ProductIndex(16, "enc")
    index.add(owners, x)
    with pytest.raises(InvalidRequestError, match="already"):
        index.add(["new", "new", "p3"], x[:3])  # p3 is present: nothing of the batch is added
    assert "new" not in index and index.vector_count == len(owners)
    rows = [j for j, o in enumerate(owners) if o == "p4"]
    mean = x[rows].mean(axis=0)
    np.testing.assert_allclose(
        index.vectors(["p4"])[0],
        mean / np.linalg.norm(mean) if len(rows) > 1 else x[rows[0]],
        atol=1e-6,
    )
    index.update(["p4"], x[0])  # all of p4's photos replaced by one
    assert index.vector_count == len(owners) - len(rows) + 1
    np.testing.assert_array_equal(index.vectors(["p4"]), x[:1])
    assert index.remove(["p5", "p5", "ghost"]) == 1
    assert index.vector_count == len(owners) - len(rows) + 1 - int(counts[5])
    _, got = index.search(x, 30)
    assert all("p5" not in row and len(row) == len(set(row)) for row in got)
    loaded = ProductIndex.load(index.save(tmp_path / "m.index"))
    assert loaded.ids == index.ids and loaded.vector_count == index.vector_count
    assert loaded.search(x[:20], 7)[1] == index.search(x[:20], 7)[1]
    with pytest.raises(KeyError, match="ghost"):
        index.vectors(["p1", "ghost"])


def test_build_index_indexes_several_photos_per_product(catalog):
    from image_search.encoders import ColourHistogramEncoder
    from image_search.searcher import Searcher, build_index

    enc = ColourHistogramEncoder()
    index = build_index(
        catalog,
        enc,
        progress=False,
        photos=lambda pid: [catalog.icon_path(pid), catalog.view_paths(pid)[0]],
    )
    assert (
        len(index) == len(catalog)
        and index.vector_count == 2 * len(catalog)
        and index.has_attributes
    )
    view = catalog.view_paths(catalog.ids[7])[0]
    res = Searcher(index, catalog, enc).search(view, k=5)
    assert (
        res.ids[0] == catalog.ids[7] and len(set(res.ids)) == 5
    )  # its own photo is indexed: found first, once
