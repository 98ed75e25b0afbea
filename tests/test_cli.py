import json
import subprocess
import sys

import pytest


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "image_search", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def index_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("idx") / "hist.index"
    out = cli("index", "--encoder", "colour-histogram", "--out", str(path))
    assert out.returncode == 0, out.stderr
    assert "indexed 618 products" in out.stdout
    return path


def test_search_prints_a_table_and_json(index_file, catalog):
    img = str(catalog.view_paths(catalog.ids[0])[0])
    out = cli("search", img, "-k", "3", "--encoder", "colour-histogram", "--index", str(index_file))
    assert out.returncode == 0, out.stderr
    assert "rank" in out.stdout and "ms" in out.stdout
    out = cli("search", img, "-k", "4", "--category", "Kitchen", "--json", "--encoder", "colour-histogram",
              "--index", str(index_file))
    data = json.loads(out.stdout)
    assert len(data["results"]) == 4 and {r["category"] for r in data["results"]} == {"Kitchen"}
    assert data["timings_ms"]["total"] > 0


@pytest.mark.parametrize("args", [
    ["search", "no/such/file.jpg"],
    ["search", "{img}", "-k", "0"],
    ["search", "{img}", "--max-price", "-5"],
    ["search", "{img}", "--category", "Garage"],
    ["search", "{img}", "-k", "many"],
    ["frobnicate"],
    ["search", "{txt}"],
])
def test_bad_input_is_one_line_and_non_zero(args, index_file, catalog, tmp_path):
    txt = tmp_path / "notes.jpg"
    txt.write_text("<html>not an image</html>")
    args = [a.format(img=catalog.icon_path(catalog.ids[0]), txt=txt) for a in args]
    if args[0] == "search":
        args += ["--encoder", "colour-histogram", "--index", str(index_file)]
    out = cli(*args)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_index_built_with_another_encoder_is_refused(index_file, catalog):
    out = cli("search", str(catalog.icon_path(catalog.ids[0])), "--encoder", "raw-pixels", "--index", str(index_file))
    assert out.returncode != 0 and "colour-histogram" in out.stderr
