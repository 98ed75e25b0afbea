"""Readers run the notebooks live: `make lab` in a real browser (issue 20).

Starts `make lab` on a free loopback port (Jupyter generates the random token; the test reads the
URL that `make lab` prints, as a reader would), opens notebooks/09_end_to_end.ipynb in the Lab UI
with Debian's headless Chromium, clears the stored outputs, runs the first cells with Shift+Enter
and checks that fresh outputs appear with no error; then opens chapter 14's upload cell, checks
that it renders as a live ipywidgets FileUpload, and uploads a customer photo through it. Finally it
stops the server and checks that no server or kernel process is left and that no notebook on disk
changed (autosave is off in the test's private settings folder).

Everything Jupyter writes (runtime files, settings, workspaces, checkpoints, IPython history, the
notebook signing key) goes to a temporary folder. Screenshots: _build/screenshots/lab_09_end_to_end.png
and lab_14_upload.png.

The second half (no browser) checks that every notebook runs outside nbval too: nothing ties it
to the working directory or changes the kernel's environment for good, and chapter 11, the one
that reads files, runs in full from the repository root.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from book_build import REPO, SCREENSHOTS
from test_browser import _require_chromium, chrome

NOTEBOOKS = REPO / "notebooks"
# The reader's embedding cache, read before conftest gives the test session a fresh one: the Lab
# kernel is the reader's, as under `make lab` (warm after `make notebooks`; cold costs ~20 s of CPU).
READER_CACHE = os.environ.get("IMAGE_SEARCH_CACHE")
URL = re.compile(r"http://127\.0\.0\.1:(\d+)/lab\?token=([0-9a-f]{32,})")
START_TIMEOUT = 90  # s, from `make lab` to the printed URL on a busy 2-core machine
RUN_TIMEOUT = 120  # s, for a batch of cells to finish


def _code_cells(notebook: str) -> list[tuple[int, str]]:
    """(index among all cells, source) of each code cell of a notebook, as Lab numbers them."""
    cells = json.loads((NOTEBOOKS / notebook).read_text())["cells"]
    return [(i, "".join(c["source"])) for i, c in enumerate(cells) if c["cell_type"] == "code"]


def _snapshot() -> dict[str, str]:
    """Checksums of everything in notebooks/ (new files, e.g. .ipynb_checkpoints, count too)."""
    return {
        str(p.relative_to(NOTEBOOKS)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(NOTEBOOKS.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    """A `make lab` server: its process group, the URL it printed, and what it started."""

    process: subprocess.Popen
    log: Path
    base: str = ""
    token: str = ""
    url: str = ""
    kernel_pids: set[int] = field(default_factory=set)

    def api(self, path: str, method: str = "GET", token: bool = True) -> tuple[int, object]:
        headers = {"Authorization": f"token {self.token}"} if token else {}
        request = urllib.request.Request(f"{self.base}{path}", method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read()
                return response.status, json.loads(body) if body else None
        except urllib.error.HTTPError as e:
            return e.code, None

    def record_kernels(self) -> None:
        """Remember the kernel processes (they run in their own session, outside our group)."""
        import psutil

        for child in psutil.Process(self.process.pid).children(recursive=True):
            if "ipykernel" in " ".join(child.cmdline()):
                self.kernel_pids.add(child.pid)

    def stop(self) -> bool:
        """Shut the server down through its API, as Lab's File > Shut Down does; kill what stays.
        Returns whether it stopped by itself."""
        if self.process.poll() is not None:
            return True
        self.record_kernels()
        if self.base:
            self.api("/api/shutdown", method="POST")
        try:
            self.process.wait(timeout=30)
            return True
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            return False


def _alive(pids: set[int]) -> list[int]:
    import psutil

    return [
        p
        for p in pids
        if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """`make lab` on a free port, with Jupyter's own state in a temporary folder."""
    _require_chromium()
    home = tmp_path_factory.mktemp("jupyter_home")
    settings = home / "settings"
    for plugin, values in {
        "docmanager-extension/plugin": {"autosave": False},  # the test never writes a notebook
        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    }.items():
        path = settings / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    config = (
        home / "config"
    )  # Lab's checkpoints (written when a notebook opens) go to the temporary folder
    config.mkdir()
    (config / "jupyter_server_config.json").write_text(
        json.dumps({"FileCheckpoints": {"checkpoint_dir": str(home / "checkpoints")}})
    )
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "IPYTHONDIR": str(home / "ipython"),
    }
    for name in (
        "JUPYTER_TOKEN",
        "MPLBACKEND",
    ):  # Jupyter generates a random token; plots go inline
        env.pop(name, None)
    env.pop("IMAGE_SEARCH_CACHE", None)
    if READER_CACHE:
        env["IMAGE_SEARCH_CACHE"] = READER_CACHE
    before = _snapshot()
    log = home / "lab.log"
    with log.open("w") as out:  # `-o venv`: never (re)install the environment from a test
        process = subprocess.Popen(
            ["make", "--no-print-directory", "-o", "venv", "lab", f"LAB_PORT={_free_port()}"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Lab(process, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not (match := URL.search(log.read_text())):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"`make lab` printed no URL within {START_TIMEOUT} s:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.2)
        server.url = match.group(0)
        server.base, server.token = server.url.split("/lab?token=")
        yield server
    finally:
        server.stop()
        leftover = _alive(server.kernel_pids)
        for pid in leftover:
            os.kill(pid, signal.SIGKILL)
    assert _snapshot() == before, "the Lab session changed files in notebooks/"


@pytest.fixture(scope="module")
def browser(lab):
    driver = chrome(script_timeout=None)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


# The notebook shown in the main area (Lab keeps other open notebooks in the DOM, hidden).
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"


def _wait(browser, script: str, timeout: float, what: str, *args):
    deadline = time.monotonic() + timeout
    while not (value := browser.execute_script(script, *args)):
        if time.monotonic() > deadline:
            browser.save_screenshot(str(SCREENSHOTS / "lab_failure.png"))
            pytest.fail(
                f"timed out after {timeout:.0f} s waiting for {what} (screenshot lab_failure.png)"
            )
        time.sleep(0.25)
    return value


def _open_notebook(browser, lab: Lab, name: str) -> None:
    """Open a notebook (its URL the first time, then a double click in the file browser) and wait
    until its cells are shown and its kernel is idle."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    n_cells = len(json.loads((NOTEBOOKS / name).read_text())["cells"])
    if not browser.current_url.startswith(lab.base):
        browser.get(f"{lab.base}/lab/tree/{name}?token={lab.token}")
    else:
        item = browser.find_element(
            By.XPATH, f"//span[contains(@class,'jp-DirListing-itemText')][.='{name}']"
        )
        ActionChains(browser).double_click(item).perform()
    _wait(
        browser,
        f"const p = document.querySelector('{PANEL}');"
        "if (!p || !p.querySelector('.jp-Notebook-ExecutionIndicator[data-status=idle]')) return false;"
        "return p.querySelectorAll('.jp-Notebook .jp-Cell').length === arguments[0];",
        START_TIMEOUT,
        f"{name} to open with {n_cells} cells and an idle kernel",
        n_cells,
    )
    lab.record_kernels()


def _clear_all_outputs(browser) -> None:
    """Edit > Clear Outputs of All Cells, through the menu bar."""
    from selenium.webdriver.common.by import By

    menu = browser.find_element(
        By.XPATH, "//div[contains(@class,'lm-MenuBar-itemLabel')][text()='Edit']"
    )
    menu.click()
    item = browser.find_element(
        By.XPATH, "//div[contains(@class,'lm-Menu-itemLabel')][text()='Clear Outputs of All Cells']"
    )
    item.click()
    _wait(
        browser,
        f"return document.querySelectorAll('{PANEL} .jp-OutputArea-output').length === 0;",
        10,
        "the stored outputs to be cleared",
    )


def _cell_outputs(browser, index: int) -> dict:
    return browser.execute_script(
        f"const c = document.querySelectorAll('{PANEL} .jp-Notebook .jp-Cell')[arguments[0]];"
        "const outs = Array.from(c.querySelectorAll('.jp-OutputArea-output'));"
        "return {prompt: c.querySelector('.jp-InputPrompt').innerText.trim(),"
        " text: outs.map(o => o.innerText).join('\\n'),"
        " images: c.querySelectorAll('.jp-OutputArea-output img').length,"
        " errors: outs.filter(o => o.dataset.mimeType === 'application/vnd.jupyter.stderr').map(o => o.innerText)};",
        index,
    )


def _select(browser, index: int) -> None:
    """Click a cell's prompt (a real click, so the notebook gets the keyboard focus)."""
    prompt = browser.execute_script(
        f"const c = document.querySelectorAll('{PANEL} .jp-Notebook .jp-Cell')[arguments[0]];"
        "c.scrollIntoView({block: 'center'}); return c.querySelector('.jp-InputPrompt');",
        index,
    )
    prompt.click()


def test_make_lab_prints_a_loopback_url_with_a_token(lab):
    import psutil

    port, token = URL.search(lab.url).groups()
    assert len(token) >= 32, lab.url
    assert lab.api("/api/status")[0] == 200
    assert lab.api("/api/status", token=False)[0] == 403, "the server answers without the token"
    server = psutil.Process(_server_pid(lab))
    listening = {
        (c.laddr.ip, c.laddr.port)
        for c in server.net_connections("inet")
        if c.status == psutil.CONN_LISTEN
    }
    assert listening == {("127.0.0.1", int(port))}, (
        f"the server listens on {listening}, not only 127.0.0.1:{port}"
    )


def test_notebooks_ask_for_a_kernel_of_this_environment(lab):
    """Each notebook names a kernel the server offers, and that kernel is this .venv's Python
    (`python` in a kernelspec means the interpreter Jupyter itself runs on)."""
    status, specs = lab.api("/api/kernelspecs")
    assert status == 200
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        name = json.loads(path.read_text())["metadata"].get("kernelspec", {}).get("name")
        assert name in specs["kernelspecs"], (
            f"{path.name}: kernel {name!r} is not one of {sorted(specs['kernelspecs'])}"
        )
        argv = specs["kernelspecs"][name]["spec"]["argv"]
        interpreter = argv[0]
        assert (
            interpreter in {"python", "python3"}
            or Path(interpreter).resolve() == Path(sys.executable).resolve()
        ), argv
    # and the server runs on this environment's interpreter, so `python` above is .venv/bin/python
    import psutil

    server_python = psutil.Process(_server_pid(lab)).cmdline()[0]
    assert os.path.realpath(Path(server_python).parent) == os.path.realpath(
        Path(sys.executable).parent
    ), server_python


def _server_pid(lab: Lab) -> int:
    import psutil

    for child in psutil.Process(lab.process.pid).children(recursive=True):
        if any(arg.endswith("jupyter-lab") for arg in child.cmdline()):
            return child.pid
    raise AssertionError("no jupyter-lab process under `make lab`")


def test_09_end_to_end_runs_its_first_cells_in_lab(lab, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    _open_notebook(browser, lab, "09_end_to_end.ipynb")
    _clear_all_outputs(browser)
    first_two = [
        i for i, _ in _code_cells("09_end_to_end.ipynb")[:2]
    ]  # imports + catalog, photo grid
    # Click the first cell, then Shift+Enter down to the second code cell, as a reader does.
    _select(browser, 0)
    keys = ActionChains(browser).send_keys(Keys.ESCAPE)
    for _ in range(first_two[-1] + 1):
        keys = keys.key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT)
    keys.perform()
    _wait(
        browser,
        f"const cells = document.querySelectorAll('{PANEL} .jp-Notebook .jp-Cell');"
        "return arguments[0].every(i => /^\\[\\d+\\]:$/.test(cells[i].querySelector('.jp-InputPrompt').innerText.trim()))"
        f" && !!document.querySelector('{PANEL} .jp-Notebook-ExecutionIndicator[data-status=idle]');",
        RUN_TIMEOUT,
        "the first code cells of 09 to finish",
        first_two,
    )
    catalog_cell, grid_cell = (_cell_outputs(browser, i) for i in first_two)
    browser.execute_script(
        f"document.querySelectorAll('{PANEL} .jp-Notebook .jp-Cell')[arguments[0]]"
        ".scrollIntoView({block: 'start'});",
        first_two[0],
    )
    browser.save_screenshot(str(SCREENSHOTS / "lab_09_end_to_end.png"))

    assert catalog_cell["prompt"] == "[1]:" and grid_cell["prompt"] == "[2]:", (
        catalog_cell,
        grid_cell,
    )
    assert not catalog_cell["errors"] and not grid_cell["errors"], (
        catalog_cell["errors"],
        grid_cell["errors"],
    )
    from image_search import load_catalog

    catalog = load_catalog()
    assert (
        f"{len(catalog)} products of {len(catalog.types)} types "
        f"in {len(catalog.categories)} room categories" in catalog_cell["text"]
    ), catalog_cell
    assert grid_cell["images"] == 1, f"the photo grid shows {grid_cell['images']} images"
    decoded = browser.execute_script(
        f"const i = document.querySelectorAll('{PANEL} .jp-Notebook .jp-Cell')[arguments[0]]"
        ".querySelector('.jp-OutputArea-output img'); return i.complete && i.naturalWidth > 0;",
        first_two[1],
    )
    assert decoded, "the photo grid's PNG did not decode"
    outside = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(n => !n.startsWith(arguments[0]) && !n.startsWith('data:'));",
        lab.base,
    )
    assert not outside, f"Lab made requests that leave 127.0.0.1: {outside}"


def test_14_upload_widget_is_live_and_searches_an_uploaded_photo(lab, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    cells = _code_cells("14_demo.ipynb")
    upload_cell = next(i for i, source in cells if "widgets.FileUpload" in source)
    setup = [i for i, source in cells if i < upload_cell][:2]  # imports + searcher, then show()
    assert "Searcher.from_catalog" in dict(cells)[setup[0]] and "def show" in dict(cells)[setup[1]]
    _open_notebook(browser, lab, "14_demo.ipynb")
    _clear_all_outputs(browser)
    for index in [*setup, upload_cell]:  # select each cell (click its prompt) and Shift+Enter
        _select(browser, index)
        ActionChains(browser).send_keys(Keys.ESCAPE).key_down(Keys.SHIFT).send_keys(
            Keys.ENTER
        ).key_up(Keys.SHIFT).perform()
        _wait(
            browser,
            f"const c = document.querySelectorAll('{PANEL} .jp-Notebook .jp-Cell')[arguments[0]];"
            "return /^\\[\\d+\\]:$/.test(c.querySelector('.jp-InputPrompt').innerText.trim())"
            f" && !!document.querySelector('{PANEL} .jp-Notebook-ExecutionIndicator[data-status=idle]');",
            RUN_TIMEOUT,
            f"cell {index} of 14 to finish",
            index,
        )
        assert not _cell_outputs(browser, index)["errors"], _cell_outputs(browser, index)
    widget = _wait(
        browser,
        f"return document.querySelectorAll('{PANEL} .jp-Notebook .jp-Cell')[arguments[0]]"
        ".querySelector('.jupyter-widgets .widget-upload');",
        30,
        "the FileUpload widget to render",
        upload_cell,
    )
    assert "Upload a photo" in widget.text, widget.text

    # Upload a customer photo of a held-out product. The widget's button opens a file chooser
    # through a detached <input type=file>, which a headless browser cannot show: catch that
    # input when the button clicks it, and give it the file as a reader's chooser would.
    from image_search import load_catalog

    photo = load_catalog().queries("test")[0][0]
    browser.execute_script(
        "const click = HTMLInputElement.prototype.click;"
        "HTMLInputElement.prototype.click = function () {"
        "  if (this.type !== 'file') return click.call(this);"
        "  HTMLInputElement.prototype.click = click;"
        "  document.body.appendChild(this); window.uploadInput = this; };"
    )
    widget.click()
    _wait(
        browser, "return window.uploadInput;", 10, "the upload button to open its file input"
    ).send_keys(str(photo))
    _wait(
        browser,
        f"const c = document.querySelectorAll('{PANEL} .jp-Notebook .jp-Cell')[arguments[0]];"
        "const i = c.querySelector('.widget-output img'); return !!i && i.complete && i.naturalWidth > 0;",
        RUN_TIMEOUT,
        "the uploaded photo's results to appear under the widget",
        upload_cell,
    )
    shown = browser.execute_script(
        f"const c = document.querySelectorAll('{PANEL} .jp-Notebook .jp-Cell')[arguments[0]];"
        "c.querySelector('.widget-output').scrollIntoView({block: 'center'});"
        "return c.querySelector('.widget-output').innerText;",
        upload_cell,
    )
    browser.save_screenshot(str(SCREENSHOTS / "lab_14_upload.png"))
    assert "Traceback" not in shown and "Error" not in shown, shown
    assert re.search(r"decode [\d.]+ ms \| embed [\d.]+ ms .* total [\d.]+ ms", shown), shown
    assert "(1)" in widget.text, f"the widget does not count the upload: {widget.text!r}"


def test_lab_stops_and_leaves_nothing_running(lab):
    lab.record_kernels()
    assert lab.kernel_pids, "no kernel was started (the notebooks did not run)"
    assert lab.api("/api/kernels")[1], "the server lists no running kernels"
    stopped = lab.stop()
    leftover = _alive(lab.kernel_pids)
    assert stopped, (
        f"the server did not stop within 30 s of /api/shutdown:\n{lab.log.read_text()[-2000:]}"
    )
    assert lab.process.returncode == 0, lab.log.read_text()[-2000:]
    assert not leftover, f"kernel processes left running: {leftover}"


# --- Notebooks run top to bottom anywhere, not only under nbval (issue 20, part 4) -------------
# nbval runs each notebook from its own folder, in a kernel that inherits `make`'s environment; a
# reader's Lab, VS Code or `jupyter nbconvert --execute` may start elsewhere. Every notebook is
# scanned for what would tie it to the working directory or leave the kernel changed, and the one
# notebook that reads files (11, which quotes the others' checked outputs) runs in full from the
# repository root. (Lab honours `raises-exception` tags as nbval does: Run All goes past them.)

FILE_CALLS = {
    "open",
    "Path",
    "read_csv",
    "read_json",
    "read_parquet",
    "to_csv",
    "to_json",
    "savefig",
    "imread",
    "imsave",
    "load",
    "save",
    "loadtxt",
    "savetxt",
    "read_index",
    "write_index",
    "load_catalog",
}
CWD_CALLS = {"chdir", "getcwd", "cwd"}


def _notebook_problems(path: Path) -> list[str]:
    """What ties a notebook's code to the working directory or changes the kernel for later cells."""
    import ast

    local_modules = {p.stem for p in NOTEBOOKS.glob("*.py")} | {
        p.name for p in NOTEBOOKS.iterdir() if p.is_dir()
    }
    problems = []
    for index, cell in enumerate(json.loads(path.read_text())["cells"]):
        if cell["cell_type"] != "code":
            continue
        lines = "".join(cell["source"]).splitlines()
        problems += [
            f"cell {index}: `{ln.strip()}` depends on the working directory"
            for ln in lines
            if re.match(r"\s*(%cd|%run|%load|!cd)\b", ln)
        ]
        tree = ast.parse(
            "\n".join("pass" if ln.lstrip().startswith(("%", "!")) else ln for ln in lines)
        )
        env_reads, env_writes = set(), []
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = (
                    node.func.attr
                    if isinstance(node.func, ast.Attribute)
                    else getattr(node.func, "id", "")
                )
                first = node.args[0] if node.args else None
                if name in CWD_CALLS:
                    problems.append(f"cell {index}: {name}() depends on the working directory")
                elif (
                    name in FILE_CALLS
                    and isinstance(first, ast.Constant)
                    and isinstance(first.value, str)
                    and not first.value.startswith(("/", "~"))
                    and re.search(r"[/\\]|\.\w{2,5}$", first.value)
                ):
                    problems.append(
                        f"cell {index}: {name}({first.value!r}) is relative to the working directory"
                    )
                if (
                    isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("pop", "update", "setdefault", "clear")
                    and ast.unparse(node.func.value) == "os.environ"
                ):
                    env_writes.append(ast.unparse(node))
                if (
                    isinstance(node.func, ast.Attribute)
                    and ast.unparse(node.func) == "os.environ.get"
                    and first
                ):
                    env_reads.add(ast.unparse(first))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                problems += [
                    f"cell {index}: `import {m}` finds notebooks/{m} only from that folder"
                    for m in modules
                    if m.split(".")[0] in local_modules
                ]
            elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
                key = ast.unparse(node.slice)
                if isinstance(node.ctx, ast.Load):
                    env_reads.add(key)
                else:
                    env_writes.append(f"os.environ[{key}] ({type(node.ctx).__name__.lower()})")
        unrestored = [w for w in env_writes if not any(key in w for key in env_reads)]
        if unrestored:
            problems.append(
                f"cell {index}: changes the kernel's environment without keeping the reader's value "
                f"({', '.join(unrestored)}); use unittest.mock.patch.dict(os.environ, ...)"
            )
    return problems


def _scan_case(path: Path):
    return pytest.param(path, id=path.name)


@pytest.mark.parametrize("path", [_scan_case(p) for p in sorted(NOTEBOOKS.glob("*.ipynb"))])
def test_notebook_does_not_depend_on_where_it_runs(path: Path):
    problems = _notebook_problems(path)
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


def test_the_scan_finds_what_it_looks_for(tmp_path):
    """The scan above is only worth something if it flags each kind of problem."""
    cells = [
        "%cd ..",
        "import os\nos.chdir('/tmp')",
        "import pandas as pd\npd.read_csv('data/catalog/products.csv')",
        "import strip_widgets",
        "import os\nos.environ['X'] = '1'",
        "import os\ndel os.environ['X']",
        "import os\nold = os.environ.get('X')\nos.environ['X'] = '1'",
        "open('/etc/hostname')",
    ]
    nb = {"cells": [{"cell_type": "code", "source": c} for c in cells]}
    (tmp_path / "x.ipynb").write_text(json.dumps(nb))
    flagged = {int(p.split()[1].rstrip(":")) for p in _notebook_problems(tmp_path / "x.ipynb")}
    assert flagged == {0, 1, 2, 3, 4, 5}, _notebook_problems(tmp_path / "x.ipynb")


def test_summary_notebook_runs_from_the_repository_root():
    """11_summary reads the other notebooks' files: run it in full from the repository root, in a
    kernel without `make`'s PYTHONHASHSEED, and compare its checked outputs with the committed ones."""
    import nbformat
    from nbclient import NotebookClient

    path = NOTEBOOKS / "11_summary.ipynb"
    committed = nbformat.read(path, as_version=4)
    ran = nbformat.read(path, as_version=4)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHASHSEED", "MPLBACKEND")}
    NotebookClient(
        ran, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    ).execute(env=env)

    def text(cell) -> str:
        return "".join(
            o.get("text", "") for o in cell.get("outputs", []) if o["output_type"] == "stream"
        )

    errors = [
        o for c in ran.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors, errors[0]
    checked = [
        i
        for i, c in enumerate(committed.cells)
        if c.cell_type == "code" and "NBVAL_CHECK_OUTPUT" in c.source
    ]
    assert checked
    for i in checked:
        assert text(ran.cells[i]) == text(committed.cells[i]), (
            f"cell {i} differs when run from the repository root"
        )
