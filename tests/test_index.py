import numpy as np
import pytest

from image_search import IndexMismatchError, InvalidRequestError, ProductIndex

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
    assert all(set(row) == allowed for row in got)  # only 3 qualify: rows are short, not padded with others
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
import json
import zipfile

import faiss


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
    _, got = index.search(np.stack([model[i] for i in probe]), 3, params={"nprobe": 64, "efSearch": 128})
    for want, row in zip(probe, got):
        assert set(row) <= set(model)  # never a removed or unknown product
        if exact_search:
            assert row[0] == want
    sub = set(probe[:5])
    _, got = index.search(np.stack([model[i] for i in probe[:5]]), 10, allowed=sub | {"never-added"})
    assert all(set(row) <= sub for row in got)


@pytest.mark.parametrize("factory, exact_search", [("Flat", True), ("IVF16,Flat", True), ("HNSW16", False)])
def test_random_add_update_remove_matches_a_dict_model(tmp_path, factory, exact_search, one_faiss_thread):
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
                ids = [existing[j] for j in rng.choice(len(existing), size=min(len(existing), int(rng.integers(1, 6))), replace=False)]
                assert index.remove(ids + ["ghost"]) == len(ids)
                for i in ids:
                    del model[i]
            else:
                existing = sorted(model)
                ids = [existing[j] for j in rng.choice(len(existing), size=min(len(existing), int(rng.integers(1, 4))), replace=False)]
                ids.append(f"p{next_id}")  # update also adds a product not yet present
                next_id += 1
                x = fresh(len(ids))
                index.update(ids, x)
                model.update(zip(ids, x))
        _check_against_model(index, model, rng, exact_search)
        if batch % 10 == 9:  # a save/load round trip changes nothing, and work goes on from the loaded copy
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
    with pytest.raises(ValueError, match="duplicate"):
        index.update(["p1", "p1"], x[:2])   # validated before anything is removed
    with pytest.raises(InvalidRequestError):
        index.update(["p1", "p2"], np.full((2, 32), np.nan, np.float32))
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
    scores, got = index.search(x[:1], 10 ** 9)  # absurdly large: capped at the catalog size
    assert len(got[0]) == 200


def test_metric_mismatch_is_refused(tmp_path):
    x = unit_vectors(50, 8)
    index = ProductIndex(8, "enc", metric="l2")
    index.add([f"p{i}" for i in range(50)], x)
    path = index.save(tmp_path / "l2.index")
    with pytest.raises(IndexMismatchError, match="metric"):
        ProductIndex.load(path, metric="ip")
    assert ProductIndex.load(path, encoder="enc", dim=8, metric="l2").metric == "l2"


def _rewrite(path, out, manifest_changes=None, ids_changes=None, blob=None, recompute=True, compress=False):
    with zipfile.ZipFile(path) as z:
        manifest, ids, old_blob = json.loads(z.read("manifest.json")), json.loads(z.read("ids.json")), z.read("index.faiss")
    manifest.update(manifest_changes or {})
    ids.update(ids_changes or {})
    ids_bytes, blob = json.dumps(ids, sort_keys=True).encode(), blob if blob is not None else old_blob
    if recompute:
        manifest["checksum"] = ProductIndex._checksum(blob, ids_bytes)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        z.writestr("manifest.json", json.dumps(manifest))
        z.writestr("ids.json", ids_bytes)
        z.writestr("index.faiss", blob)
    return out


def test_tampered_files_are_refused_even_with_a_valid_checksum(tmp_path):
    index, ids, _ = make(n=50)
    path = index.save(tmp_path / "a.index")
    labels = json.loads(zipfile.ZipFile(path).read("ids.json"))["labels"]
    swapped_out = dict(labels)
    swapped_out["zzz"] = swapped_out.pop("p0") + 1000  # a label FAISS does not hold
    duplicate = dict(labels, p1=labels["p2"])
    other = ProductIndex(50 // 5 * 4, "test-encoder")  # a FAISS blob of another dimension (40)
    other.add(ids, unit_vectors(50, 40))
    l2 = ProductIndex(32, "test-encoder", metric="l2")
    l2.add(ids, unit_vectors(50, 32))
    cases = {
        "bad checksum": dict(manifest_changes={"count": 49}, recompute=False),
        "wrong count": dict(manifest_changes={"count": 49}),
        "ids not in FAISS": dict(ids_changes={"labels": swapped_out}),
        "two ids, one label": dict(ids_changes={"labels": duplicate}),
        "other dimension": dict(blob=faiss.serialize_index(other.index).tobytes()),
        "other metric inside": dict(blob=faiss.serialize_index(l2.index).tobytes()),
        "not a FAISS blob": dict(blob=b"\0" * 100),
        "unknown format": dict(manifest_changes={"format_version": 99}),
        "compressed (zip bomb)": dict(compress=True),
        "manifest missing a key": dict(manifest_changes={"extra": 1}),
    }
    for name, kw in cases.items():
        bad = _rewrite(path, tmp_path / "bad.index", **kw)
        with pytest.raises(IndexMismatchError):
            ProductIndex.load(bad)
        # the same file without the change loads: the test is of the change, not of _rewrite
    assert len(ProductIndex.load(_rewrite(path, tmp_path / "ok.index"))) == 50
    for junk in (b"", b"PK\x03\x04" + b"\0" * 50, b"not a zip at all", b"{}"):
        (tmp_path / "junk.index").write_bytes(junk)
        with pytest.raises(IndexMismatchError):
            ProductIndex.load(tmp_path / "junk.index")
    with pytest.raises(IndexMismatchError):
        ProductIndex.load(tmp_path)  # a folder
    with pytest.raises(FileNotFoundError):
        ProductIndex.load(tmp_path / "missing.index")
