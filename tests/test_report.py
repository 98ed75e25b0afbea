"""Tests of chapter 11's reader of committed notebook outputs."""
import nbformat

from image_search.report import Headline, cell_outputs, checked_outputs, find_number, headline_rows


def _notebook(path):
    nb = nbformat.v4.new_notebook()
    a = nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint('Recall@10 0.821')")
    a.outputs = [nbformat.v4.new_output("stream", name="stdout", text="Recall@10 0.821\n")]
    b = nbformat.v4.new_code_cell("print('embed 21.3 ms')")
    b.outputs = [nbformat.v4.new_output("stream", name="stdout", text="embed 21.3 ms\n")]
    c = nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\n1 + 1")
    c.outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "2"}, execution_count=1)]
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), a, b, c]
    nbformat.write(nb, str(path))
    return path


def test_checked_outputs_only_marked_cells(tmp_path):
    p = _notebook(tmp_path / "x.ipynb")
    assert checked_outputs(p) == ["Recall@10 0.821\n", "2"]
    assert len(cell_outputs(p)) == 3


def test_headlines_find_numbers_and_report_missing(tmp_path):
    _notebook(tmp_path / "x.ipynb")
    rows = headline_rows([Headline("R@10", "x.ipynb", r"Recall@10 ([\d.]+)"),
                          Headline("embed", "x.ipynb", r"embed ([\d.]+) ms", checked_only=False),
                          Headline("embed checked", "x.ipynb", r"embed ([\d.]+) ms"),
                          Headline("gone", "nope.ipynb", r"(\d)")], tmp_path)
    assert rows[0][1] == "0.821" and rows[1][1] == "21.3"
    assert rows[2][1].startswith("missing") and rows[3][1].startswith("missing: notebook")
    assert find_number(["a 1", "b 2"], r"b (\d)") == "2" and find_number([], r"(\d)") is None
