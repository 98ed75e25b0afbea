# Visual Product Search — the executable book. `make help` lists the targets.
PY      ?= python3
VENV    := .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-$(shell cat requirements.txt | cksum | cut -d' ' -f1)
export PYTHONHASHSEED := 0
export TQDM_MININTERVAL := 5

.PHONY: help venv test unit notebooks book book-check browser-deps book-html execute demo catalog bench clean

help:
	@echo "make book      build the book strictly (-W -n) into _build/html from the committed notebook outputs"
	@echo "make test      unit tests, every notebook under nbval, then the book checks (make book-check)"
	@echo "make book-check build the book into a temporary folder, check its HTML and open every page in"
	@echo "               headless Chromium (screenshots in _build/screenshots)"
	@echo "make demo      run the end-to-end demo from the command line"
	@echo "make execute   re-execute every notebook in place (for authors)"
	@echo "make catalog   rebuild data/catalog from the Debian package (needs root for apt-get)"
	@echo "make bench     install requirements-bench.txt, then run the benchmarks in benchmarks/"

$(STAMP): requirements.txt
	$(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements.txt
	$(PYTHON) -m pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

test: unit notebooks book-check

unit: venv
	$(PYTHON) -m pytest -q tests --ignore=tests/test_book.py --ignore=tests/test_browser.py

notebooks: venv
	$(PYTHON) -m pytest -q --nbval-lax --nbval-current-env -p no:cacheprovider notebooks

book: venv
	@start=$$(date +%s); \
	$(VENV)/bin/jupyter-book build . --all --warningiserror --nitpick --keep-going || exit 1; \
	echo "book built in $$(( $$(date +%s) - start )) s: open _build/html/index.html"

# One strict build into a temporary folder, then static HTML checks and the headless-Chromium checks.
book-check: venv browser-deps
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/test_book.py tests/test_browser.py

# Debian's Chromium and chromedriver for the browser checks (never a downloaded browser).
browser-deps:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver fonts-dejavu-core; \
	else \
		echo "chromium/chromedriver missing and not root: browser checks will be skipped (apt-get install chromium chromium-driver)"; \
	fi

# 11_summary quotes the other notebooks' checked outputs, so it runs last.
execute: venv
	cd notebooks && for nb in $$(ls [0-9]*.ipynb | grep -v 11_summary) 11_summary.ipynb; do \
		echo "executing $$nb"; ../$(VENV)/bin/jupyter-execute --inplace --timeout=1200 $$nb || exit 1; \
	done
	$(PYTHON) notebooks/strip_widgets.py notebooks/*.ipynb

demo: venv
	$(PYTHON) -m image_search demo --out _build/demo_results.png

catalog: venv
	apt-get update -q && apt-get install -y -q sweethome3d-furniture libosmesa6
	$(PYTHON) -m pip install --quiet pyrender==0.1.45 trimesh==4.12.2
	$(PYTHON) -m pip install --quiet PyOpenGL==3.1.7
	PYOPENGL_PLATFORM=osmesa $(PYTHON) data/build_catalog.py

BENCH_STAMP := $(VENV)/.bench-$(shell cat requirements-bench.txt | cksum | cut -d' ' -f1)

$(BENCH_STAMP): requirements-bench.txt $(STAMP)
	$(PYTHON) -m pip install --quiet -r requirements-bench.txt
	rm -f $(VENV)/.bench-*
	touch $@

# Optional benchmark-only dependencies (hnswlib, usearch), then every benchmark with its defaults.
bench: venv $(BENCH_STAMP)
	for b in benchmarks/bench_*.py; do $(PYTHON) $$b || exit 1; done

clean:
	rm -rf _build .pytest_cache
