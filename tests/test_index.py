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
