"""Reliability (chapter 02): bad input gives a documented error, indexes never lose or mix up
products, concurrent searches agree with serial ones, and nothing unpickles untrusted files."""

from __future__ import annotations

import ast
import functools
import io
import math
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import image_search
from image_search import (
    Filters,
    ImageSearchError,
    InvalidImageError,
    InvalidRequestError,
    ProductIndex,
    Searcher,
    SearchRequest,
)
from image_search.__main__ import main as cli_main
from image_search.encoders import ColourHistogramEncoder
from image_search.errors import UnsafePathError
from image_search.images import decode_bytes
from image_search.searcher import MAX_K, build_index

from conftest import unit_vectors

PACKAGE = Path(image_search.__file__).parent
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def noise(w=48, h=32, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


SEEDS = [
    encode(noise(), "JPEG"),
    encode(noise(), "PNG"),
    encode(noise().convert("P"), "GIF"),
    encode(noise(), "WEBP"),
    encode(noise(), "BMP"),
    encode(noise(), "TIFF"),
]


@pytest.fixture(scope="module")
def searcher(catalog):
    return Searcher.from_catalog("colour-histogram", catalog=catalog, progress=False)


def bad_uploads(tmp: Path) -> dict[str, Path]:
    """One file per kind of bad upload, every one named like a photo."""
    from test_images import bomb_png

    files = {
        "zero-byte": b"",
        "truncated JPEG": encode(noise(), "JPEG")[:300],
        "truncated PNG": encode(noise(), "PNG")[:300],
        "text named .jpg": b"shopping list: sofa, lamp\n",
        "HTML named .jpg": b"<!doctype html><html><body>Login</body></html>",
        "SVG": b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9">'
        b'<rect width="9" height="9"/></svg>',
        "decompression bomb 30000x30000": bomb_png(30000, 30000),
        "ICO (unsupported format)": encode(noise(), "ICO"),
    }
    out = {}
    for name, data in files.items():
        out[name] = tmp / (name.replace(" ", "_") + ".jpg")
        out[name].write_bytes(data)
    return out


def awkward_uploads(tmp: Path) -> dict[str, Path]:
    """Legal but awkward uploads: each must give results, not an error."""
    rgba = Image.new("RGBA", (40, 40), (200, 30, 30, 0))
    rgba.paste((30, 30, 200, 255), (10, 10, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 255, 0)]]
    files = {
        "huge photo 5000x2500": encode(Image.new("RGB", (5000, 2500), (120, 80, 40)), "JPEG"),
        "1x1": encode(Image.new("RGB", (1, 1), (5, 5, 5)), "PNG"),
        "1x5000": encode(Image.new("RGB", (1, 5000), (0, 0, 0)), "PNG"),
        "5000x1": encode(Image.new("RGB", (5000, 1), (0, 0, 0)), "PNG"),
        "16-bit PNG": encode(
            Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)), "PNG"
        ),
        "CMYK JPEG": encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG"),
        "palette PNG": encode(noise().convert("P"), "PNG"),
        "RGBA with transparency": encode(rgba, "PNG"),
        "animated GIF": encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "EXIF-rotated JPEG": encode(noise(), "JPEG", exif=exif),
    }
    out = {}
    for name, data in files.items():
        out[name] = tmp / (name.replace(" ", "_") + ".img")
        out[name].write_bytes(data)
    return out


# ------------------------------------------------------------------ inputs through the Searcher
def test_bad_uploads_raise_invalid_image_error_from_the_searcher(searcher, tmp_path):
    for path in bad_uploads(tmp_path).values():
        for query in (path, path.read_bytes()):
            with pytest.raises(InvalidImageError):
                searcher.search(query, k=5)


def test_awkward_uploads_give_results(searcher, tmp_path):
    for name, path in awkward_uploads(tmp_path).items():
        res = searcher.search(path, k=5)
        assert len(res) == 5, name
        assert all(np.isfinite(res.scores)), name


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(k=0),
        dict(k=-1),
        dict(k=MAX_K + 1),
        dict(k=10**12),
        dict(k=2.5),
        dict(k=True),
        dict(k="10"),
        dict(k=None),
        dict(embedding=np.full(128, np.nan)),
        dict(embedding=np.full(128, np.inf)),
        dict(embedding=np.zeros(128)),
        dict(embedding=np.ones(127)),
        dict(embedding=np.ones((2, 128))),
        dict(embedding=np.ones(0)),
        dict(embedding="a vector"),
        dict(embedding=[[1, 2], [3]]),
        dict(embedding=np.ones(128), user_vector=np.ones(5)),
        dict(embedding=np.ones(128), user_vector=[np.nan] * 128),
        dict(filters=Filters(categories=("Garage",))),
        dict(filters=Filters(categories="Living room ")),
        dict(filters={"categories": "Kitchen"}),
    ],
)
def test_bad_requests_raise_invalid_request_error(searcher, kwargs):
    kwargs = dict(kwargs)
    if "embedding" not in kwargs:
        kwargs["embedding"] = np.ones(128)
    with pytest.raises(InvalidRequestError):
        searcher.run(SearchRequest(**kwargs))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(min_price=-1),
        dict(max_price=-0.01),
        dict(min_price=50, max_price=10),
        dict(max_price=math.nan),
        dict(min_price=math.inf),
        dict(max_price="cheap"),
        dict(max_price=True),
        dict(categories=5),
        dict(categories=()),
        dict(categories=["Kitchen", None]),
        dict(categories=[""]),
        dict(in_stock="yes"),
    ],
)
def test_bad_filters_raise_invalid_request_error(kwargs):
    with pytest.raises(InvalidRequestError):
        Filters(**kwargs)


def test_good_edge_requests_work(searcher, catalog):
    q = np.ones(128)
    big = searcher.run(
        SearchRequest(embedding=np.full(128, 3e38, np.float32), k=5)
    )  # norm overflows float32
    tiny = searcher.run(SearchRequest(embedding=np.full(128, 1e-30), k=5))
    assert big.ids == tiny.ids == searcher.run(SearchRequest(embedding=q, k=5)).ids
    assert len(searcher.run(SearchRequest(embedding=q, k=MAX_K))) == len(
        catalog
    )  # capped by the catalog
    assert len(searcher.run(SearchRequest(embedding=q, k=1))) == 1
    assert len(searcher.run(SearchRequest(embedding=q, k=np.int64(3)))) == 3
    res = searcher.run(SearchRequest(embedding=q, k=5, filters=Filters(min_price=0, max_price=0)))
    assert all(p.price == 0 for p in res.products)  # an empty but valid range: zero or few results
    res = searcher.run(
        SearchRequest(
            embedding=q,
            k=5,
            filters=Filters(
                categories=["Kitchen"],
                min_price=np.float32(1),
                max_price=1e12,
                in_stock=np.bool_(True),
            ),
        )
    )
    assert len(res) == 5 and all(p.category == "Kitchen" and p.in_stock for p in res.products)
    with pytest.raises(InvalidRequestError):
        SearchRequest()
    with pytest.raises(InvalidRequestError):
        SearchRequest(image=b"x", embedding=q)


# ------------------------------------------------------------------ property-based
@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_give_an_image_or_invalid_image_error(data):
    try:
        img = decode_bytes(data)
    except InvalidImageError:
        return
    assert img.mode == "RGB" and min(img.size) >= 1


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's notes on damaged TIFF tags
@FUZZ
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=12),
    st.integers(0, 10**6),
    st.booleans(),
)
def test_mutated_images_give_an_image_or_invalid_image_error(seed, flips, cut, truncate):
    data = bytearray(seed)
    for pos, value in flips:
        data[pos % len(data)] = value
    if truncate:
        data = data[: cut % len(data)]
    try:
        img = decode_bytes(bytes(data))
    except InvalidImageError:
        return
    assert img.mode == "RGB" and max(img.size) <= 1024


finite = st.floats(allow_nan=False, allow_infinity=False, width=32)
any_float = st.floats(allow_nan=True, allow_infinity=True)
price = st.one_of(st.none(), any_float, st.integers(-10, 10**6), st.text(max_size=3), st.booleans())


@settings(FUZZ, max_examples=60)
@given(
    k=st.one_of(st.integers(-5, 2 * MAX_K), st.floats(), st.none(), st.text(max_size=2)),
    categories=st.one_of(
        st.none(),
        st.text(max_size=12),
        st.lists(
            st.sampled_from(["Kitchen", "Bedroom", "Lights", "Office", "Garage", "", "kitchen"]),
            max_size=3,
        ),
    ),
    min_price=price,
    max_price=price,
    in_stock=st.one_of(st.none(), st.booleans(), st.integers(0, 2)),
    vec=st.one_of(
        st.lists(any_float, min_size=0, max_size=3),
        st.lists(finite, min_size=128, max_size=128),
        st.lists(any_float, min_size=128, max_size=128),
    ),
)
def test_random_requests_give_results_or_documented_errors(
    searcher, k, categories, min_price, max_price, in_stock, vec
):
    try:
        filters = Filters(
            categories=categories, min_price=min_price, max_price=max_price, in_stock=in_stock
        )
        res = searcher.run(SearchRequest(embedding=np.array(vec), k=k, filters=filters))
    except (InvalidRequestError, InvalidImageError):
        return
    assert 1 <= k <= MAX_K and len(res) <= k
    assert all(filters.accepts(p) for p in res.products)


# ------------------------------------------------------------------ the CLI
@pytest.fixture(scope="module")
def hist_index(catalog, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "hist.index"
    build_index(catalog, ColourHistogramEncoder(), progress=False).save(path)
    return path


def run_cli(capsys, *args):
    rc = cli_main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_bad_uploads_and_arguments_are_one_line_errors(capsys, tmp_path, hist_index, catalog):
    good = catalog.icon_path(catalog.ids[0])
    common = ["--encoder", "colour-histogram", "--index", hist_index]
    cases = {name: ["search", path, *common] for name, path in bad_uploads(tmp_path).items()}
    cases.update(
        {
            "missing file": ["search", tmp_path / "nope.jpg", *common],
            "a folder": ["search", tmp_path, *common],
            "-k 0": ["search", good, "-k", "0", *common],
            "-k -3": ["search", good, "-k", "-3", *common],
            "-k 100000": ["search", good, "-k", "100000", *common],
            "-k many": ["search", good, "-k", "many", *common],
            "--max-price -1": ["search", good, "--max-price", "-1", *common],
            "--max-price nan": ["search", good, "--max-price", "nan", *common],
            "--min-price > --max-price": [
                "search",
                good,
                "--min-price",
                "90",
                "--max-price",
                "10",
                *common,
            ],
            "unknown category": ["search", good, "--category", "Garage", *common],
            "index of another encoder": [
                "search",
                good,
                "--encoder",
                "raw-pixels",
                "--index",
                hist_index,
            ],
            "damaged index": [
                "search",
                good,
                "--encoder",
                "colour-histogram",
                "--index",
                bad_uploads(tmp_path)["zero-byte"],
            ],
            "unknown encoder": ["search", good, "--encoder", "nope", "--index", hist_index],
            "unknown command": ["frobnicate"],
            "no command": [],
        }
    )
    for name, args in cases.items():
        try:
            rc, out, err = run_cli(capsys, *args)
        except SystemExit as e:  # argparse errors exit 2 after one line
            rc, err = e.code, capsys.readouterr().err
        assert rc not in (0, None), name
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, (name, err)


def test_cli_awkward_uploads_succeed(capsys, tmp_path, hist_index):
    for name, path in awkward_uploads(tmp_path).items():
        rc, out, err = run_cli(
            capsys,
            "search",
            path,
            "-k",
            "3",
            "--encoder",
            "colour-histogram",
            "--index",
            hist_index,
        )
        assert rc == 0, (name, err)
        assert "rank" in out


def test_cli_in_a_real_process_prints_no_traceback(tmp_path, hist_index):
    path = bad_uploads(tmp_path)["decompression bomb 30000x30000"]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "image_search",
            "search",
            str(path),
            "--encoder",
            "colour-histogram",
            "--index",
            str(hist_index),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        out.returncode == 1 and out.stderr.startswith("error: ") and "Traceback" not in out.stderr
    )
    assert len(out.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------ atomic save
def _temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def _old_and_new(tmp_path):
    old = ProductIndex(16, "enc")
    old.add([f"old{i}" for i in range(30)], unit_vectors(30, 16))
    path = old.save(tmp_path / "catalog.index")
    new = ProductIndex(16, "enc")
    new.add([f"new{i}" for i in range(40)], unit_vectors(40, 16, seed=1))
    return old, new, path


@pytest.mark.parametrize(
    "fail_at",
    [
        "manifest",
        "ids",
        "labels",
        "index.faiss",
        "after the last member",
        "fsync",
        "check before rename",
        "replace",
    ],
)
def test_a_failed_save_keeps_the_previous_index(tmp_path, monkeypatch, fail_at):
    """Deterministic fault injection at each step of a save: the old file survives, complete and
    verified, and no temporary file is left behind."""
    import zipfile

    from image_search import paths

    old, new, path = _old_and_new(tmp_path)

    def boom(*args, **kwargs):
        raise OSError("disk full (simulated)")

    members = {
        "manifest": "manifest.json",
        "ids": "ids.json",
        "labels": "labels.npy",
        "index.faiss": "index.faiss",
    }
    if fail_at in members:  # the write callback fails part-way through the zip
        real = zipfile.ZipFile.writestr

        def partial(self, name, data, *a, **kw):
            if name == members[fail_at]:
                boom()
            return real(self, name, data, *a, **kw)

        monkeypatch.setattr(zipfile.ZipFile, "writestr", partial)
    elif fail_at == "after the last member":  # writing the zip's central directory
        monkeypatch.setattr(zipfile.ZipFile, "_write_end_record", boom)
    elif fail_at == "fsync":
        monkeypatch.setattr(os, "fsync", boom)
    elif fail_at == "check before rename":  # the target was swapped for something else meanwhile
        calls = []
        real_check = paths.check_write_target
        monkeypatch.setattr(
            paths,
            "check_write_target",
            lambda p: real_check(p) if not calls.append(p) and len(calls) == 1 else boom(),
        )
    else:
        monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="simulated"):
        new.save(path)
    monkeypatch.undo()
    assert ProductIndex.load(path).ids == old.ids
    assert _temp_files(tmp_path) == []


def test_killing_a_process_mid_save_keeps_the_previous_index(tmp_path):
    """One real ``kill -9``, at a known point: the child stops inside the write of the FAISS blob
    and tells the parent, which kills it (no polling, no race)."""
    path = tmp_path / "big.index"
    code = f"""
import sys, time, zipfile
import numpy as np
from image_search import ProductIndex
x = np.random.default_rng(0).normal(size=(2000, 16)).astype(np.float32)
index = ProductIndex(16, "enc")
index.add([f"p{{i}}" for i in range(len(x))], x)
index.save(r"{path}")
real = zipfile.ZipFile.writestr
def stall(self, name, data, *a, **kw):
    if name == "index.faiss":
        print("writing", flush=True)
        time.sleep(120)
    return real(self, name, data, *a, **kw)
zipfile.ZipFile.writestr = stall
index.remove(["p0"])
index.save(r"{path}")
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"  # mid-save: the temporary file exists
        assert len(_temp_files(tmp_path)) == 1
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    index = ProductIndex.load(
        path, encoder="enc", dim=16
    )  # the last complete save, checksum verified
    assert len(index) == 2000 and "p0" in index
    # a hard kill cannot clean up: its temp file is left under a name load() never reads
    assert all(p.name.startswith(".big.index.") for p in _temp_files(tmp_path))


# ----------------------------------------------------------- index files (issue 19: 1, 2, 4, 6, 11)
def test_index_save_refuses_devices_and_fifos_and_honours_the_umask(tmp_path):
    index = _old_and_new(tmp_path)[0]
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    targets = [fifo, tmp_path]
    try:
        os.mknod(tmp_path / "devnull", 0o666 | __import__("stat").S_IFCHR, os.makedev(1, 3))
        targets.append(tmp_path / "devnull")
    except PermissionError:  # not root: the FIFO and the folder still show it
        pass
    for target in targets:
        with pytest.raises(UnsafePathError, match="not a regular file|directory|FIFO|device"):
            index.save(target)
    assert Path(fifo).is_fifo() and _temp_files(tmp_path) == []
    if len(targets) == 3:
        assert (tmp_path / "devnull").is_char_device()
    old = os.umask(0o027)
    try:
        path = index.save(tmp_path / "umask.index")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640  # 0666 minus the umask, not mkstemp's 0600


def test_index_load_refuses_fifos_devices_and_oversized_files_at_once(tmp_path):
    import threading

    index, _, path = _old_and_new(tmp_path)
    fifo = tmp_path / "fifo.index"
    os.mkfifo(fifo)
    (tmp_path / "zero.index").symlink_to("/dev/zero")
    outcome = {}

    def load_all():  # in a thread: a regression would hang on the FIFO or grow on /dev/zero
        for name in (fifo, "/dev/zero", tmp_path / "zero.index"):
            try:
                ProductIndex.load(name)
                outcome[str(name)] = "loaded"
            except UnsafePathError as e:
                outcome[str(name)] = str(e)

    worker = threading.Thread(target=load_all, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive() and len(outcome) == 3, outcome
    assert all("not a regular file" in v for v in outcome.values()), outcome
    with pytest.raises(UnsafePathError, match="limit"):
        ProductIndex.load(path, max_bytes=1000)


def test_factory_needing_more_training_vectors_says_how_many(capsys, tmp_path):
    rc, out, err = run_cli(
        capsys,
        "index",
        "--encoder",
        "colour-histogram",
        "--factory",
        "IVF4096,PQ64",
        "--out",
        tmp_path / "x.index",
    )
    assert (
        rc == 1
        and "at least 4,096 training vectors, got 3,090" in err
        and len(err.strip().splitlines()) == 1
    )
    with pytest.raises(InvalidRequestError, match="at least 256 training vectors"):
        ProductIndex(16, "e", "PQ4").train(unit_vectors(100, 16))


def _subset_catalog(catalog, folder: Path, n: int) -> Path:
    """A catalog folder with the first ``n`` products (images shared through symlinks)."""
    folder.mkdir()
    lines = (catalog.root / "products.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "products.csv").write_text("".join(lines[: n + 1]), encoding="utf-8")
    for sub in ("icons", "views"):
        (folder / sub).symlink_to(catalog.root / sub)
    return folder


def test_a_stale_cached_index_is_rebuilt_and_a_stale_explicit_one_refused(
    capsys, tmp_path, monkeypatch, catalog, hist_index
):
    rc, _, _ = run_cli(capsys, "index", "--encoder", "colour-histogram")  # the cached default index
    assert rc == 0
    monkeypatch.setenv(
        "IMAGE_SEARCH_CATALOG", str(_subset_catalog(catalog, tmp_path / "small", 200))
    )
    image = catalog.icon_path(catalog.ids[300])  # a product the small catalog does not have
    rc, out, err = run_cli(
        capsys, "search", image, "-k", "200", "--json", "--encoder", "colour-histogram"
    )
    assert rc == 0  # another catalog folder has its own cached index: built here
    import json

    assert {r["id"] for r in json.loads(out)["results"]} == set(
        catalog.ids[:200]
    )  # never an unknown id
    rc, out, err = run_cli(
        capsys, "search", image, "--encoder", "colour-histogram", "--index", hist_index
    )
    assert rc == 1 and "built for another catalog" in err and len(err.strip().splitlines()) == 1
    rc, out, err = run_cli(
        capsys, "search", image, "--encoder", "colour-histogram"
    )  # built once, now current
    assert rc == 0 and "updating" not in err
    (tmp_path / "small" / "products.csv").write_text(  # the same catalog folder, one product fewer
        "".join(
            (catalog.root / "products.csv")
            .read_text(encoding="utf-8")
            .splitlines(keepends=True)[:200]
        ),
        encoding="utf-8",
    )
    rc, out, err = run_cli(
        capsys, "search", image, "-k", "200", "--json", "--encoder", "colour-histogram"
    )
    assert rc == 0 and "updating the cached index: the catalog changed" in err
    assert {r["id"] for r in json.loads(out)["results"]} == set(catalog.ids[:199])


def test_concurrent_saves_to_one_path_leave_one_complete_index(tmp_path):
    indexes = []
    for seed in range(4):
        ix = ProductIndex(16, "enc")
        ix.add([f"s{seed}-{i}" for i in range(200)], unit_vectors(200, 16, seed=seed))
        indexes.append(ix)
    path = tmp_path / "shared.index"
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            list(pool.map(lambda ix: ix.save(path), indexes))
    loaded = ProductIndex.load(path)
    assert any(loaded.ids == ix.ids for ix in indexes) and _temp_files(tmp_path) == []


# ------------------------------------------------------------------ concurrency
@pytest.mark.parametrize("factory", ["Flat", "HNSW16", "IVF8,Flat"])
def test_concurrent_index_searches_match_serial(factory):
    x = unit_vectors(500, 32)
    index = ProductIndex(32, "enc", factory=factory)
    index.add([f"p{i}" for i in range(500)], x)
    index.remove([f"p{i}" for i in range(0, 500, 7)])
    queries = unit_vectors(64, 32, seed=3)
    allowed = [None, {f"p{i}" for i in range(0, 500, 3)}]
    jobs = [(q, a) for q in queries for a in allowed]

    def one(job):
        s, ids = index.search(job[0], 10, allowed=job[1], params={"nprobe": 4})
        return ids[0], s[0].tolist()

    serial = [one(j) for j in jobs]
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(one, jobs)) == serial


def test_searches_overlap_inside_faiss_and_writers_wait_for_them():
    """Two searches are inside FAISS at the same moment (a barrier both must reach: it breaks
    after 10 s if searches were serialised), return what serial searches return, and an ``add``
    issued meanwhile waits until both have finished."""
    import threading

    x = unit_vectors(300, 16)
    index = ProductIndex(16, "enc", factory="HNSW8")
    index.add([f"p{i}" for i in range(300)], x)
    serial = [index.search(x[i], 5) for i in range(2)]
    both_inside = threading.Barrier(3, timeout=10)
    release = threading.Event()
    real = index._faiss_search

    def instrumented(q, k, params):
        both_inside.wait()
        assert release.wait(10)
        return real(q, k, params)

    index._faiss_search = instrumented
    with ThreadPoolExecutor(3) as pool:
        searches = [pool.submit(index.search, x[i], 5) for i in range(2)]
        both_inside.wait()  # both searches are in FAISS now
        writer = pool.submit(index.add, ["late"], x[0])
        deadline = time.time() + 10
        while index._lock._writers_waiting == 0 and time.time() < deadline:
            time.sleep(0.001)
        assert index._lock._writers_waiting == 1 and "late" not in index  # the writer waits
        release.set()
        got = [f.result(timeout=10) for f in searches]
        writer.result(timeout=10)
    index._faiss_search = real
    assert "late" in index
    for (s1, i1), (s2, i2) in zip(got, serial):
        assert i1 == i2
        np.testing.assert_array_equal(s1, s2)


def test_concurrent_searcher_queries_match_serial(searcher, catalog):
    paths = [catalog.view_paths(i)[0] for i in catalog.ids[:24]]
    kinds = [Filters(), Filters(categories=("Kitchen", "Bedroom")), Filters(max_price=200)]
    jobs = [(p, f) for p in paths for f in kinds]

    def one(job):
        res = searcher.search(job[0], k=8, filters=job[1])
        return res.ids, np.round(res.scores, 6).tolist()

    serial = [one(j) for j in jobs]
    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(one, jobs)) == serial


def test_concurrent_decoding_of_bombs_and_photos(tmp_path):
    from test_images import bomb_png

    bomb, photo = bomb_png(10000, 10000), encode(noise(), "PNG")

    def one(i):
        try:
            return decode_bytes(bomb if i % 2 else photo).size
        except InvalidImageError:
            return "refused"

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(one, range(64)))
    assert got == ["refused" if i % 2 else (48, 32) for i in range(64)]
    import warnings

    assert not any(
        f[2] is Image.DecompressionBombWarning and f[0] == "error" for f in warnings.filters
    )


# ------------------------------------------------------------------ no unsafe deserialisation
UNPICKLERS = {
    "pickle",
    "cPickle",
    "_pickle",
    "dill",
    "cloudpickle",
    "joblib",
    "marshal",
    "shelve",
    "jsonpickle",
}


def _keyword_constant(keywords: dict, key: str):
    """The literal value of keyword argument ``key``; ``None`` when absent or not a constant."""
    value = keywords.get(key)
    return value.value if isinstance(value, ast.Constant) else None


def unsafe_calls(source: str) -> list[str]:
    """Calls that can run code from a file's bytes: unpickling, ``torch.load`` without
    ``weights_only=True``, ``np.load(allow_pickle=True)``, ``pd.read_pickle``, unsafe YAML,
    eval/exec."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name.split(".")[0] for a in node.names] + (
                [node.module.split(".")[0]] if getattr(node, "module", None) else []
            )
            found += [f"line {node.lineno}: imports {n}" for n in names if n in UNPICKLERS]
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
        kw = {k.arg: k.value for k in node.keywords}
        const = functools.partial(_keyword_constant, kw)
        if owner in UNPICKLERS and name in ("load", "loads", "Unpickler", "open"):
            found.append(f"line {node.lineno}: {owner}.{name}")
        elif owner == "torch" and name == "load" and const("weights_only") is not True:
            found.append(f"line {node.lineno}: torch.load without weights_only=True")
        elif (
            owner in ("np", "numpy")
            and name == "load"
            and "allow_pickle" in kw
            and const("allow_pickle") is not False
        ):
            found.append(f"line {node.lineno}: np.load with allow_pickle")
        elif name in ("read_pickle", "unsafe_load", "full_load") or (
            owner == "yaml" and name == "load" and "Loader" not in kw
        ):
            found.append(f"line {node.lineno}: {owner}.{name}")
        elif isinstance(f, ast.Name) and name in ("eval", "exec"):
            found.append(f"line {node.lineno}: {name}()")
    return found


def test_the_unsafe_call_checker_catches_what_it_should():
    bad = """
import pickle
import numpy as np, torch, pandas as pd
a = pickle.load(open('x', 'rb'))
b = torch.load('w.pt')
c = torch.load('w.pt', weights_only=False)
d = np.load('x.npy', allow_pickle=True)
e = pd.read_pickle('x.pkl')
f = eval('1')
"""
    assert len(unsafe_calls(bad)) == 7
    good = (
        "import numpy as np, torch\n"
        "torch.load('w', map_location='cpu', weights_only=True)\n"
        "np.load('x', allow_pickle=False)\n"
    )
    assert unsafe_calls(good) == []


def test_the_package_never_unpickles():
    problems = {p.name: unsafe_calls(p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))}
    assert not {k: v for k, v in problems.items() if v}, problems
    text = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    assert "allow_pickle=True" not in text and "weights_only=False" not in text


def _empty_csv(folder: Path) -> Path:
    (folder / "empty.csv").write_text("")
    return folder / "empty.csv"


def test_every_documented_error_is_an_image_search_error(tmp_path, monkeypatch):
    """Each error class in errors.py (found there, not listed here) is exported, named in
    chapter 02, and really raised by its documented trigger, where ``except ImageSearchError``
    catches it."""
    import inspect

    from image_search import errors

    declared = {
        n for n, c in vars(errors).items() if inspect.isclass(c) and c.__module__ == errors.__name__
    }
    chapter = (PACKAGE.parent / "book" / "02_system_io.md").read_text()
    broken = tmp_path / "broken.index"
    broken.write_bytes(b"PK\x03\x04 not really a zip file")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(
        "HF_HOME", str(tmp_path)
    )  # an empty Hugging Face cache: the weights are missing
    triggers = {
        "InvalidImageError": lambda: decode_bytes(b""),
        "InvalidRequestError": lambda: SearchRequest(embedding=np.ones(4), k=0),
        "IndexMismatchError": lambda: ProductIndex.load(broken),
        "ModelUnavailableError": lambda: image_search.load_encoder(
            "open_clip:ViT-B-32/laion2b_s34b_b79k"
        ),
        "UnsafePathError": lambda: image_search.paths.atomic_write_bytes("/dev/null", b"x"),
        "CatalogError": lambda: image_search.load_catalog_csv(_empty_csv(tmp_path), tmp_path),
        "BackendUnavailableError": lambda: image_search.stores.open_store(
            "qdrant", "http://127.0.0.1:9", "x", 4
        ),
    }
    assert declared - {"ImageSearchError"} == set(triggers), (
        "give each error class in errors.py a trigger here"
    )
    for name in sorted(declared):
        assert name in image_search.__all__ and f"`{name}`" in chapter, (
            f"{name} is not exported or not documented"
        )
    for name, trigger in triggers.items():
        with pytest.raises(ImageSearchError) as caught:
            trigger()
        assert type(caught.value) is getattr(errors, name), (name, caught.value)
        assert str(caught.value) and "\n" not in str(caught.value)
