"""Drop saved ipywidgets state from executed notebooks (run by `make execute`).

The rendered book would otherwise try to load the widget JavaScript from a CDN, which an
offline reader cannot reach; the demo notebook degrades to its static examples."""

import sys

import nbformat

WIDGET = "application/vnd.jupyter.widget-view+json"

for path in sys.argv[1:]:
    nb = nbformat.read(path, 4)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [
                o for o in cell.get("outputs", []) if WIDGET not in o.get("data", {})
            ]
    nbformat.write(nb, path)
