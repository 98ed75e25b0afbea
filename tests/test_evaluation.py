"""Tests of image_search.evaluation and of the one-way dependencies between offline and online
code."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest

import image_search
from image_search import Searcher, Timings
from image_search.evaluation import evaluate, median_timings, product_types
from image_search.metrics import product_recall

PACKAGE = Path(image_search.__file__).parent
OFFLINE = ("features", "evaluation", "training", "experiments", "metrics", "augment")
ONLINE = ("searcher", "reranker", "serve", "demo", "__main__")


def imported_modules(path: Path) -> set[str]:
    """The package modules a file imports (relative or absolute), outside ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # from .x import y / from . import x
                found |= {module.split(".")[0]} if module else {a.name for a in node.names}
            elif module.startswith("image_search"):
                found.add(module.split(".")[1] if "." in module else "")
        elif isinstance(node, ast.Import):
            found |= {
                a.name.split(".")[1] for a in node.names if a.name.startswith("image_search.")
            }
    return found - {""}


@pytest.mark.parametrize("module", OFFLINE)
def test_offline_modules_never_import_the_online_path(module):
    assert not imported_modules(PACKAGE / f"{module}.py") & set(ONLINE)


def test_the_import_checker_sees_imports():
    assert {"searcher", "reranker"} <= imported_modules(PACKAGE / "demo.py") | imported_modules(
        PACKAGE / "searcher.py"
    )
    assert "encoders" in imported_modules(
        PACKAGE / "evaluation.py"
    )  # a real import, not under TYPE_CHECKING
    assert "searcher" not in imported_modules(PACKAGE / "evaluation.py")  # only under TYPE_CHECKING


def test_product_types_only_when_every_product_has_one():
    typed = SimpleNamespace(
        products=[SimpleNamespace(id="a", type="chair"), SimpleNamespace(id="b", type="lamp")]
    )
    assert product_types(typed) == {"a": "chair", "b": "lamp"}
    typed.products.append(SimpleNamespace(id="c", type=""))
    assert product_types(typed) is None
    assert (
        product_types(SimpleNamespace(products=[SimpleNamespace(id="a")])) is None
    )  # no types at all


def test_median_timings_is_the_median_of_each_stage():
    runs = iter(
        [Timings(9, 9, 9, 9)] * 2
        + [Timings(1, 10, 0.1, 5), Timings(3, 30, 0.3, 1), Timings(2, 20, 0.2, 3)]
    )
    fake = SimpleNamespace(search=lambda path, k: SimpleNamespace(timings=next(runs)))
    assert median_timings(fake, ["a", "b", "c"], warmup=2) == Timings(2, 20, 0.2, 3)
    with pytest.raises(ValueError):
        median_timings(fake, [])


def test_evaluate_scores_the_searchers_own_rankings(catalog):
    searcher = Searcher.from_catalog("colour-histogram", catalog=catalog, progress=False)
    paths, truth = catalog.queries("test")
    paths, truth = paths[::25], truth[::25]
    report, results = evaluate(searcher, paths, truth, k=5, progress=False)
    assert report.n_queries == len(paths) == len(results) and set(report.recall) == {1, 5}
    assert report.recall[5] == product_recall(results, truth, 5)
    assert [r.ids for r in results] == [searcher.search(p, k=5).ids for p in paths]
    expected = sum(
        sum(p.category == catalog[t].category for p in r.products) / 5
        for r, t in zip(results, truth)
    )
    assert report.category_precision[5] == pytest.approx(expected / len(truth))
    assert (report.type_precision != {}) == (product_types(catalog) is not None)


def test_the_demo_headline_shows_type_precision_only_when_types_exist():
    from image_search.demo import DemoReport
    from image_search.metrics import RetrievalReport

    plain = RetrievalReport(744, {1: 0.565, 10: 0.821}, 0.647, {10: 0.44})
    typed = RetrievalReport(
        744, {1: 0.565, 10: 0.821}, 0.647, {10: 0.44}, {10: 0.61}, {10: 0.97}, 0.7
    )
    line = DemoReport("lite0", plain, Timings(), 50, None).headline()
    assert line == "Recall@1 0.565, Recall@10 0.821 on 744 held-out customer photos"
    line = DemoReport("lite0", typed, Timings(), 50, None).headline()
    assert line == (
        "Recall@1 0.565, Recall@10 0.821, type P@10 0.610 (ceiling 0.970) "
        "on 744 held-out customer photos"
    )
    assert str(DemoReport("lite0", typed, Timings(1, 2, 3, 4), 50, None)).startswith(line + "\n")
