"""Glued numbers and their tolerances (image_search.glue): what CI compares after each notebook."""

from __future__ import annotations

import json

import numpy as np
import pytest

from image_search import glue as G


def _notebook(tmp_path, values: dict) -> str:
    """A committed notebook holding glue outputs made by glue() itself (via the display hook)."""
    outputs = []
    for name, (value, tol) in values.items():
        outputs.append(
            {
                "output_type": "display_data",
                "data": {G.GLUE_PREFIX + "text/plain": repr(value)},
                "metadata": {
                    "scrapbook": {"name": name, "mime_prefix": G.GLUE_PREFIX},
                    "image_search": {"tol": tol, "rel": 0.0},
                },
            }
        )
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "source": "",
                "metadata": {},
                "outputs": outputs,
                "execution_count": 1,
            }
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb))
    return str(path)


@pytest.fixture(autouse=True)
def _fresh_run(monkeypatch):
    monkeypatch.setattr(G, "_RUN", {})
    monkeypatch.delenv(G.RECORD_ENV, raising=False)


def test_glue_emits_what_myst_nb_reads_and_records_the_tolerance(capsys):
    G.glue("r1", np.float32(0.5), tol=G.rate_tol(744))
    assert G._RUN["r1"] == G.Glued("r1", 0.5, 3 / 744, 0.0)
    G.glue("n", np.int64(618))
    assert type(G._RUN["n"].value) is int


@pytest.mark.parametrize("name", ["", "1abc", "a-b", "a b", "a::b"])
def test_glue_refuses_names_a_role_cannot_quote(name):
    with pytest.raises(ValueError, match="glue name"):
        G.glue(name, 1)


def test_glue_refuses_arrays():
    with pytest.raises(TypeError, match="number"):
        G.glue("x", np.ones(3))


def test_rate_tolerance_is_flips_over_n():
    assert G.rate_tol(744) == pytest.approx(3 / 744)
    assert G.rate_tol(100, flips=1) == 0.01
    with pytest.raises(ValueError):
        G.rate_tol(0)


def test_numbers_within_tolerance_pass_and_others_fail(tmp_path, capsys):
    path = _notebook(
        tmp_path,
        {"r1": (0.565, 0.004), "n": (744, 0.0), "ms": (12.5, None), "model": ("lite0", 0.0)},
    )
    G.glue("r1", 0.568, tol=0.004)  # within 0.004
    G.glue("n", 744)
    G.glue("ms", 99.0, tol=G.TIMING)  # a timing: never compared
    G.glue("model", "lite0")
    G.check_glued(path)
    assert "all 4 glued numbers reproduce" in capsys.readouterr().out

    G.glue("r1", 0.570, tol=0.004)  # 0.005 away
    G.glue("n", 743)  # a count must be exact
    with pytest.raises(AssertionError) as e:
        G.check_glued(path)
    table = str(e.value)
    assert (
        "2 of 4 glued numbers" in table and "r1" in table and "0.565" in table and "0.57" in table
    )
    assert "±0.004" in table and "743" in table


def test_a_name_missing_on_either_side_fails(tmp_path):
    path = _notebook(tmp_path, {"old": (1.0, 0.0)})
    G.glue("new", 1.0)
    with pytest.raises(AssertionError, match="not glued in this run"):
        G.check_glued(path)
    diffs = G.differences(G.glued(path), dict(G._RUN))
    assert {d.name for d in diffs} == {"old", "new"}


def test_record_mode_compares_nothing(tmp_path, monkeypatch, capsys):
    path = _notebook(tmp_path, {"r1": (0.5, 0.0)})
    G.glue("r1", 0.9)
    monkeypatch.setenv(G.RECORD_ENV, "1")
    G.check_glued(path)
    assert "recording" in capsys.readouterr().out


def test_committed_notebooks_glue_through_the_checker():
    """Every notebook that glues numbers ends by checking them (hidden from the book), and no cell
    both glues and is checked as text by nbval (which would compare the glued value exactly)."""
    for path in sorted(G.NOTEBOOKS.glob("*.ipynb")):
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        sources = ["".join(c["source"]) for c in cells]
        if not any("glue(" in s for s in sources):
            continue
        last = cells[-1]
        assert f'check_glued("{path.name}")' in sources[-1], (
            f"{path.name}: the last cell must call check_glued"
        )
        assert "remove-cell" in last["metadata"].get("tags", []), (
            f"{path.name}: hide the check cell (remove-cell)"
        )
        for s in sources:
            assert not (s.lstrip().startswith("# NBVAL_CHECK_OUTPUT") and "glue(" in s), (
                f"{path.name}: a checked cell glues: {s[:80]!r}"
            )
