"""Tests of image_search.viz: captions that never cut a word, grids whose titles never overlap."""

from __future__ import annotations

import itertools

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from image_search.viz import caption, exact_search, image_grid, result_grid

from conftest import unit_vectors


@pytest.mark.parametrize(
    "text,width,lines,expected",
    [
        ("Table with tablecloth", 18, 2, "Table with\ntablecloth"),
        ("Air conditioning - Internal unit", 18, 2, "Air conditioning -\nInternal unit"),
        ("Air conditioning - Internal unit", 18, 1, "Air conditioning…"),  # no "-…": ends on a word
        ("Plate, glasses and cutlery", 10, 2, "Plate,\nglasses…"),
        ("Spathiphyllum", 8, 1, "Spathiphyllum"),  # one long word is never cut
        ("query\nInduction cooker 2 zones", 30, 3, "query\nInduction cooker 2 zones"),
        ("", 10, 2, ""),
    ],
)
def test_caption_wraps_at_words_and_ends_with_an_ellipsis_after_a_word(
    text, width, lines, expected
):
    assert caption(text, width, lines) == expected


def test_caption_never_cuts_a_word(catalog):
    for p in catalog.products:
        words = set(p.name.split())
        for width, lines in ((10, 1), (14, 2), (26, 2)):
            out = caption(p.name, width, lines)
            assert len(out.splitlines()) <= lines
            shown = out.replace("…", "").split()
            assert all(w in words for w in shown), (p.name, out)
            assert shown == p.name.split()[: len(shown)]  # a prefix of the name, in order
            assert out.endswith("…") == (len(shown) < len(p.name.split()))


def _overlaps(fig) -> list[tuple[str, str]]:
    """Pairs of drawn titles that overlap each other, or a title that overlaps another axes'
    image."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = [ax for ax in fig.axes if ax.get_title()]
    titles = [(ax, ax.title.get_window_extent(renderer)) for ax in axes]
    bad = [
        (a.get_title(), b.get_title())
        for (a, ba), (b, bb) in itertools.combinations(titles, 2)
        if ba.overlaps(bb)
    ]
    for ax, box in titles:
        for other in fig.axes:
            if other is not ax and other.images and box.overlaps(other.get_window_extent(renderer)):
                bad.append((ax.get_title(), "an image"))
    return bad


def test_result_grid_titles_do_not_overlap_and_names_are_whole_words(catalog):
    longest = sorted(catalog.products, key=lambda p: -len(p.name))
    x = unit_vectors(len(catalog), 8)
    rows = [catalog.ids.index(p.id) for p in longest[:3]]
    results = exact_search(x[rows], x, catalog.ids, catalog, k=6)
    results[0] = exact_search(x[:1], x[:6], [p.id for p in longest[:6]], catalog, k=6)[
        0
    ]  # six long names
    queries = [catalog.icon_path(catalog.ids[i]) for i in rows]
    vocabulary = {w for p in catalog.products for w in p.name.split()}
    for size in (1.2, 1.7):  # narrower than any grid in the book, and the widest
        fig = result_grid(queries, results, catalog, [catalog.ids[i] for i in rows], k=6, size=size)
        assert _overlaps(fig) == []
        for ax in fig.axes:
            lines = ax.get_title().splitlines()
            name = lines[1:] if lines[0] == "query" else lines[:-1]  # results end with a price line
            words = " ".join(name).replace("…", "").split()
            assert words and set(words) <= vocabulary, ax.get_title()
        matplotlib.pyplot.close(fig)


def test_the_overlap_check_sees_overlapping_titles():
    fig, axes = matplotlib.pyplot.subplots(1, 3, figsize=(3, 1))
    for ax in axes:
        ax.imshow(np.zeros((4, 4)))
        ax.set_title("a title far too long for its little image", fontsize=8)
    assert _overlaps(fig)
    matplotlib.pyplot.close(fig)


def test_image_grid_long_titles_do_not_overlap(catalog):
    longest = sorted(catalog.products, key=lambda p: -len(p.name))[:8]
    titles = [f"{p.name} ({p.category}), cosine 0.93" for p in longest]
    fig = image_grid(
        [catalog.icon_path(p.id) for p in longest],
        titles,
        ncols=4,
        size=1.1,
        title="A long suptitle",
    )
    assert _overlaps(fig) == []
    matplotlib.pyplot.close(fig)


def test_exact_search_returns_results(catalog):
    x = unit_vectors(len(catalog), 8)
    res = exact_search(x[:2], x, catalog.ids, catalog, k=4)
    assert res[0].ids[0] == catalog.ids[0] and len(res[1]) == 4
    assert res[0].scores[0] == pytest.approx(1.0, abs=1e-5)
    assert [p.id for p in res[1].products] == list(res[1].ids)
    assert np.all(np.diff(res[1].scores) <= 0)
