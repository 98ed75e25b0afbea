"""The search page in a real browser: `python -m image_search serve` as a subprocess on a free
loopback port, driven by Debian's headless Chromium through Selenium (as tests/test_browser.py).

A shopper chooses a catalog shop photo and sees that product among the cards; drops and pastes a
photo; filters by category; chooses a text file named .jpg and reads a clear message. Screenshots
go to _build/screenshots/serve_*.png. The server is stopped at the end and nothing is left running.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from test_browser import _require_chromium, chrome

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "_build" / "screenshots"


@pytest.fixture(scope="module")
def server():
    """URL of `python -m image_search serve --port 0` (colour-histogram encoder: starts in
    seconds)."""
    _require_chromium()
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "image_search",
                "serve",
                "--port",
                "0",
                "--encoder",
                "colour-histogram",
                "--max-upload-mb",
                "1",
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, "TQDM_DISABLE": "1"},
        )
        lines: queue.Queue = queue.Queue()
        threading.Thread(
            target=lambda: [lines.put(line) for line in proc.stdout], daemon=True
        ).start()
        try:
            yield _served_url(proc, lines, log)
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    assert proc.returncode is not None  # nothing left running


def _served_url(proc, lines: queue.Queue, log) -> str:
    deadline = time.monotonic() + 300  # a cold cache embeds the 618 shop photos first
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"serve exited with {proc.returncode}:\n{log.read()[-3000:]}")
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        if line.startswith("serving") and " on http://" in line:
            url = line.split(" on ", 1)[1].split()[0]
            while time.monotonic() < deadline:  # the URL is printed before the model is warm
                try:
                    with urllib.request.urlopen(url + "healthz", timeout=5) as r:
                        if r.status == 200:
                            return url
                except OSError:
                    time.sleep(0.2)
    pytest.fail("serve did not start within 300 s")


@pytest.fixture(scope="module")
def browser(server):
    driver = chrome(window="1280,1000")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("serve_*.png"):
        old.unlink()
    yield driver
    driver.quit()


def _open(browser, server: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get_log("browser")
    browser.get(server)
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return document.getElementById('category').options.length") > 1
    )


def _cards(browser, before: str | None = None, timeout: float = 60) -> list[str]:
    """Product ids on the cards, once a search has answered (the timing line changes)."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, timeout).until(
        lambda d: d.execute_script(
            "const t = document.getElementById('timings').textContent;"
            "return t !== '' && t !== 'searching…' && t !== arguments[0];",
            before,
        )
    )
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script(
            "return Array.from(document.querySelectorAll('#results img')).every(i => i.complete);"
        )
    )
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('#results li.card')).map(c => c.dataset.id);"
    )


def _timings(browser) -> str:
    return browser.execute_script("return document.getElementById('timings').textContent;")


def _check_clean(browser, server: str) -> None:
    severe = [
        e["message"]
        for e in browser.get_log("browser")
        if e["level"] == "SEVERE" and "/search - Failed to load resource" not in e["message"]
    ]  # a refused upload logs its 4xx
    assert not severe, "console errors:\n" + "\n".join(severe)
    outside = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(n => !n.startsWith(arguments[0]) && !n.startsWith('data:')"
        " && !n.startsWith('blob:'));",
        server,
    )
    assert not outside, f"requests leave the server: {outside}"


def test_a_chosen_shop_photo_finds_its_product(browser, server, catalog):
    pid = catalog.ids[42]
    _open(browser, server)
    browser.find_element("id", "file").send_keys(str(catalog.icon_path(pid)))
    ids = _cards(browser)
    browser.save_screenshot(str(SCREENSHOTS / "serve_results.png"))
    assert pid in ids and len(ids) == 12
    assert ids[0] == pid  # the exact photo is indexed: score 1
    broken = browser.execute_script(
        "return Array.from(document.querySelectorAll('#results img'))"
        ".filter(i => !(i.naturalWidth > 0)).length;"
    )
    assert broken == 0
    first = browser.execute_script("return document.querySelector('#results li.card').innerText;")
    assert (
        catalog[pid].name in first
        and f"{catalog[pid].price:.2f}" in first
        and "score 1.000" in first
    )
    assert browser.execute_script("return document.getElementById('message').hidden;")
    assert "ms" in _timings(browser)
    _check_clean(browser, server)


def test_dropped_and_pasted_photos_search_too_and_filters_apply(browser, server, catalog):
    from selenium.webdriver.support.ui import Select

    _open(browser, server)
    send = (
        "const [url, name, kind] = arguments; const done = arguments[arguments.length - 1];"
        "fetch(url).then(r => r.blob()).then(b => {"
        "  const dt = new DataTransfer(); dt.items.add(new File([b], name, {type: b.type}));"
        "  if (kind === 'drop') document.getElementById('drop').dispatchEvent("
        "new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));"
        "  else document.dispatchEvent("
        "new ClipboardEvent('paste', {clipboardData: dt, bubbles: true, cancelable: true}));"
        "  done(true); });"
    )
    dropped, pasted = catalog.ids[100], catalog.ids[200]
    browser.execute_async_script(
        send, f"{server}products/{dropped}/images/0", "dropped.png", "drop"
    )
    assert dropped in _cards(browser)
    before = _timings(browser)
    browser.execute_async_script(send, f"{server}products/{pasted}/images/0", "pasted.png", "paste")
    assert pasted in _cards(browser, before)
    before = _timings(browser)
    Select(browser.find_element("id", "category")).select_by_visible_text("Kitchen")
    browser.find_element("id", "search-button").click()
    _cards(browser, before)
    categories = browser.execute_script(
        "return Array.from(document.querySelectorAll('#results li.card'))"
        ".map(c => c.querySelector('.meta').textContent.split(' · ')[0]);"
    )
    browser.save_screenshot(str(SCREENSHOTS / "serve_filtered.png"))
    assert categories and set(categories) == {"Kitchen"}
    _check_clean(browser, server)


def test_a_bad_file_gets_a_readable_message(browser, server, catalog, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    _open(browser, server)
    browser.find_element("id", "file").send_keys(str(catalog.icon_path(catalog.ids[0])))
    assert _cards(browser)
    notes = tmp_path / "holiday.jpg"
    notes.write_text("Shopping list: a chair, a lamp, a green sofa.\n")
    browser.find_element("id", "file").send_keys(str(notes))
    WebDriverWait(browser, 30).until(
        lambda d: not d.execute_script("return document.getElementById('message').hidden;")
    )
    message = browser.find_element("id", "message").text
    browser.save_screenshot(str(SCREENSHOTS / "serve_bad_file.png"))
    assert (
        message.startswith("That file could not be read as a photo.") and "not an image" in message
    ), message
    assert browser.execute_script("return document.querySelectorAll('#results li').length;") == 0
    assert "Traceback" not in message and "{" not in message


def test_docs_page_when_swagger_ui_is_installed(browser, server):
    from selenium.webdriver.support.ui import WebDriverWait

    with urllib.request.urlopen(server + "openapi.json", timeout=10) as r:
        assert r.status == 200
    try:
        urllib.request.urlopen(server + "docs", timeout=10).close()
    except urllib.error.HTTPError as e:
        assert e.code == 404
        pytest.skip(
            "swagger-ui-bundle-v2 is not installed: /docs is off, /openapi.json serves the schema"
        )
    browser.get(server + "docs")
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return document.querySelectorAll('.opblock').length;") >= 4
    )
    browser.save_screenshot(str(SCREENSHOTS / "serve_docs.png"))
    _check_clean(browser, server)


def test_the_localisers_boxes_are_drawn_over_the_photo_and_a_click_searches_one(
    browser, server, catalog, tmp_path
):
    """The page's side of candidate boxes (the server's side, with the real localiser, is
    test_serve's localising-encoder test). This server's encoder does not localise, so the answer
    to the whole-photo search is given the two boxes product-search finds for two products side
    by side; the click then sends a real crop search, which finds the right-hand product."""
    from PIL import Image
    from selenium.webdriver.support.ui import WebDriverWait

    from image_search.images import load_image

    left, right = (load_image(catalog.icon_path(catalog.ids[i])) for i in (7, 300))
    width, height = left.width + right.width, max(left.height, right.height)
    photo = Image.new("RGB", (width, height), (255, 255, 255))
    photo.paste(left, (0, 0))
    photo.paste(right, (left.width, 0))
    path = tmp_path / "two_products.png"
    photo.save(path)
    boxes = [[0, 0, left.width, left.height], [left.width, 0, width, right.height]]
    _open(browser, server)
    browser.execute_script(
        "const [size, boxes] = arguments; window.__crops = []; const real = window.fetch;"
        "window.fetch = async (url, opts) => {"
        "  const r = await real(url, opts);"
        "  if (url !== '/search') return r;"
        "  const crop = opts.body.get('crop'); window.__crops.push(crop);"
        "  if (crop) return r;"
        "  const body = await r.json();"
        "  Object.assign(body, {image_size: size, box: boxes[0], candidates: boxes});"
        "  return new Response(JSON.stringify(body),"
        "    {status: r.status, headers: {'content-type': 'application/json'}}); };",
        [width, height],
        boxes,
    )
    browser.find_element("id", "file").send_keys(str(path))
    _cards(browser)
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return document.querySelectorAll('#boxes .box').length;") == 2
    )
    geometry = browser.execute_script(
        "const img = document.getElementById('preview').getBoundingClientRect();"
        "return Array.from(document.querySelectorAll('#boxes .box')).map(b => {"
        "  const r = b.getBoundingClientRect();"
        "  return [(r.left - img.left) / img.width, r.width / img.width, r.height / img.height,"
        "          b.classList.contains('searched')]; });"
    )
    assert [g[3] for g in geometry] == [True, False]  # the first box was searched
    for (x, w, h, _), (l, t, r, b) in zip(geometry, boxes):
        assert abs(x - l / width) < 0.02 and abs(w - (r - l) / width) < 0.02
        assert abs(h - (b - t) / height) < 0.03
    assert "2 objects found" in browser.find_element("id", "boxes-hint").text
    before = _timings(browser)
    browser.find_elements("css selector", "#boxes .box")[1].click()
    ids = _cards(browser, before)
    assert browser.execute_script("return window.__crops;") == [None, ",".join(map(str, boxes[1]))]
    assert ids[0] == catalog.ids[300]  # the crop is exactly the right-hand product's shop photo
    searched = browser.execute_script(
        "return Array.from(document.querySelectorAll('#boxes .box'))"
        ".map(b => b.classList.contains('searched'));"
    )
    assert searched == [False, True]
    browser.save_screenshot(str(SCREENSHOTS / "serve_boxes.png"))
    _check_clean(browser, server)
