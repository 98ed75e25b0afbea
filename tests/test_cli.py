"""The command line, run in-process through ``image_search.__main__.main`` (one real process is
enough to show the entry point works:
``test_reliability.test_cli_in_a_real_process_prints_no_traceback``)."""

import json

import pytest

from image_search import __main__ as cli_module
from image_search.__main__ import main
from image_search.errors import InvalidRequestError


def cli(capsys, *args):
    """Run the CLI; returns (exit status, stdout, stderr). argparse's own errors exit with 2."""
    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def index_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("idx") / "hist.index"
    assert main(["index", "--encoder", "colour-histogram", "--out", str(path)]) == 0
    return path


def test_index_reports_what_it_built(index_file, capsys, tmp_path):
    rc, out, err = cli(
        capsys, "index", "--encoder", "colour-histogram", "--out", tmp_path / "again.index"
    )
    assert rc == 0 and "indexed 618 products with colour-histogram (128-d, Flat)" in out
    assert (tmp_path / "again.index").stat().st_size == index_file.stat().st_size


def test_search_prints_a_table_and_json(index_file, catalog, capsys):
    img = catalog.view_paths(catalog.ids[0])[0]
    rc, out, err = cli(
        capsys, "search", img, "-k", "3", "--encoder", "colour-histogram", "--index", index_file
    )
    assert rc == 0, err
    assert "rank" in out and "ms" in out and len(out.splitlines()) == 1 + 3 + 2
    rc, out, err = cli(
        capsys,
        "search",
        img,
        "-k",
        "4",
        "--category",
        "Kitchen",
        "--json",
        "--encoder",
        "colour-histogram",
        "--index",
        index_file,
    )
    data = json.loads(out)
    assert len(data["results"]) == 4 and {r["category"] for r in data["results"]} == {"Kitchen"}
    assert data["timings_ms"]["total"] > 0


@pytest.mark.parametrize(
    "args",
    [
        ["search", "no/such/file.jpg"],
        ["search", "{img}", "-k", "0"],
        ["search", "{img}", "--max-price", "-5"],
        ["search", "{img}", "--category", "Garage"],
        ["search", "{img}", "-k", "many"],
        ["frobnicate"],
        ["search", "{txt}"],
        ["search", "{img}", "--type-weight", "-1"],
        ["search", "{img}", "--crop", "1,2,3"],
        ["search", "{img}", "--crop", "5,5,1,1"],
        ["search", "{img}", "--crop", "0,0,5000,10"],
    ],
)
def test_bad_input_is_one_line_and_non_zero(args, index_file, catalog, tmp_path, capsys):
    txt = tmp_path / "notes.jpg"
    txt.write_text("<html>not an image</html>")
    args = [a.format(img=catalog.icon_path(catalog.ids[0]), txt=txt) for a in args]
    if args[0] == "search":
        args += ["--encoder", "colour-histogram", "--index", str(index_file)]
    rc, out, err = cli(capsys, *args)
    assert rc not in (0, None)
    assert "Traceback" not in err and "unexpected" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_type_weight_re_ranks_by_the_best_matches_kind(index_file, catalog, capsys):
    img = catalog.view_paths(catalog.ids[0])[0]
    common = ["--encoder", "colour-histogram", "--index", index_file, "-k", "10", "--json"]
    runs = [cli(capsys, "search", img, *common, "--type-weight", w) for w in ("0", "5")]
    assert all(rc == 0 for rc, _, _ in runs), runs
    plain, typed = ([r["type"] for r in json.loads(out)["results"]] for _, out, _ in runs)
    assert typed[0] == plain[0]  # the best match decides the kind
    assert typed.count(typed[0]) >= plain.count(plain[0])
    assert typed[: typed.count(typed[0])] == [typed[0]] * typed.count(typed[0])


def test_crop_searches_that_box_and_json_lists_the_candidates(index_file, catalog, capsys):
    img = catalog.view_paths(catalog.ids[0])[0]
    common = ["--encoder", "colour-histogram", "--index", index_file, "-k", "3", "--json"]
    rc, out, err = cli(capsys, "search", img, *common, "--crop", "0,0,50,50")
    data = json.loads(out)
    assert rc == 0, err
    assert data["box"] == [0, 0, 50, 50] and data["candidates"] == []


def test_missing_files_name_the_path(index_file, catalog, capsys, tmp_path):
    rc, _, err = cli(
        capsys,
        "search",
        tmp_path / "nope.jpg",
        "--encoder",
        "colour-histogram",
        "--index",
        index_file,
    )
    assert rc == 1 and err == f"error: cannot read image {tmp_path / 'nope.jpg'}: no such file\n"
    rc, _, err = cli(
        capsys,
        "search",
        catalog.icon_path(catalog.ids[0]),
        "--encoder",
        "colour-histogram",
        "--index",
        tmp_path / "none.index",
    )
    assert (
        rc == 1 and err.startswith("error: no index file") and str(tmp_path / "none.index") in err
    )


def test_an_os_error_on_the_users_path_is_the_users_error(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    rc, _, err = cli(capsys, "index", "--encoder", "colour-histogram", "--out", blocker / "x.index")
    assert rc == 1 and err.startswith("error: ") and "unexpected" not in err and str(blocker) in err
    assert len(err.splitlines()) == 1


def test_an_index_of_another_encoder_is_refused(index_file, catalog, capsys):
    rc, _, err = cli(
        capsys,
        "search",
        catalog.icon_path(catalog.ids[0]),
        "--encoder",
        "raw-pixels",
        "--index",
        index_file,
    )
    assert rc == 1 and "colour-histogram" in err and "unexpected" not in err


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("boom"),
        ValueError("a bug, not bad input"),
        KeyError("sofa"),
        OSError(28, "No space left on device", "/somewhere/else"),
    ],
)
def test_anything_else_is_unexpected_and_debug_shows_the_traceback(monkeypatch, capsys, error):
    def fail(args):
        raise error

    monkeypatch.setattr(cli_module, "_run", fail)
    monkeypatch.delenv("IMAGE_SEARCH_DEBUG", raising=False)
    rc, _, err = cli(capsys, "demo")
    assert (
        rc == 1
        and err.startswith(f"error: unexpected {type(error).__name__}: ")
        and len(err.splitlines()) == 1
    )
    assert "IMAGE_SEARCH_DEBUG=1" in err
    monkeypatch.setenv("IMAGE_SEARCH_DEBUG", "1")
    with pytest.raises(type(error)):
        main(["demo"])


def test_the_package_s_own_errors_are_user_errors(monkeypatch, capsys):
    def fail(args):
        raise InvalidRequestError("k must be an integer\nfrom 1 to 1000")

    monkeypatch.setattr(cli_module, "_run", fail)
    monkeypatch.setenv("IMAGE_SEARCH_DEBUG", "1")  # no traceback even when debugging
    rc, _, err = cli(capsys, "demo")
    assert (rc, err) == (1, "error: k must be an integer from 1 to 1000\n")


def _shop_catalog(catalog, folder, prices=None):
    """A shop's own catalog (CSV + photo folder) made of a few of the book's products."""
    import shutil

    images = folder / "photos"
    images.mkdir(parents=True)
    rows = ["id,name,type,price"]
    for n, pid in enumerate(catalog.ids[:12]):
        shutil.copy(catalog.icon_path(pid), images / f"item{n}.png")
        price = "" if prices is None else prices[n % len(prices)]
        rows.append(f"item{n},{catalog[pid].name},{catalog[pid].type},{price}")
    (folder / "products.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder / "products.csv", images


def test_a_shops_own_catalog_is_indexed_and_searched(catalog, capsys, tmp_path):
    csv, images = _shop_catalog(catalog, tmp_path, prices=["", "12.50"])
    out_index = tmp_path / "shop.index"
    rc, out, err = cli(
        capsys,
        "index",
        "--catalog",
        csv,
        "--images",
        images,
        "--out",
        out_index,
        "--encoder",
        "colour-histogram",
    )
    assert rc == 0 and "indexed 12 products" in out, err
    rc, out, err = cli(
        capsys,
        "search",
        images / "item3.png",
        "-k",
        "3",
        "--json",
        "--encoder",
        "colour-histogram",
        "--index",
        out_index,
        "--catalog",
        csv,
        "--images",
        images,
    )
    assert rc == 0, err
    results = json.loads(out)["results"]  # strict JSON: an unknown price is null, never NaN
    assert results[0]["id"] == "item3" and "NaN" not in out
    assert any(r["price"] is None for r in results) or all(r["price"] == 12.5 for r in results)
    rc, out, err = cli(
        capsys,
        "search",
        images / "item3.png",
        "--encoder",
        "colour-histogram",
        "--index",
        out_index,
    )
    assert (
        rc == 1 and "another catalog" in err and "--catalog" in err
    )  # the book's catalog is not the shop's
    rc, out, err = cli(capsys, "search", images / "item3.png", "--catalog", csv)
    assert rc == 1 and "--catalog and --images together" in err


def test_text_search_from_the_command_line(capsys):
    rc, out, err = cli(capsys, "search", "--text", "a bed to sleep in", "-k", "5", "--json")
    assert rc == 0, err
    assert sum(r["type"] == "bed" for r in json.loads(out)["results"]) >= 3
    rc, out, err = cli(capsys, "search", "--text", "   ")
    assert rc == 1 and "text is empty" in err
    rc, out, err = cli(capsys, "search", "-k", "3")
    assert rc == 1 and "give a photo, --text, or both" in err
