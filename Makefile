# Visual Product Search — the executable book. `make help` lists the targets.
PY      ?= python3
VENV    := .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-$(shell cat requirements.txt | cksum | cut -d' ' -f1)
export PYTHONHASHSEED := 0
export TQDM_MININTERVAL := 5

.PHONY: help venv lint format test test-portable unit notebooks book book-check browser-deps book-html execute embeddings text-model models demo catalog bench clean

help:
	@echo "make book      build the book strictly (-W -n) into _build/html from the committed notebook outputs"
	@echo "make test      lint, unit tests, every notebook under nbval, then the book checks (make book-check)"
	@echo "make lint      ruff on the Python sources (100 columns) and the notebooks (88 columns, so code"
	@echo "               does not scroll sideways in the rendered book)"
	@echo "make format    ruff format the Python sources (not the notebooks)"
	@echo "make book-check build the book into a temporary folder, check its HTML and open every page in"
	@echo "               headless Chromium (screenshots in _build/screenshots)"
	@echo "make test-portable  the notebooks again as another machine would run them: eager PyTorch instead of"
	@echo "               ONNX Runtime, then one thread, each from an empty cache; glued numbers must hold"
	@echo "make demo      run the end-to-end demo from the command line"
	@echo "make execute   re-execute every notebook in place (for authors)"
	@echo "make catalog   rebuild data/catalog and data/real_photos from Debian packages (needs root for apt-get)"
	@echo "make embeddings  recompute the shipped canonical embeddings (data/embeddings) after a catalog or model change"
	@echo "make text-model retrain the text search heads (data/models/minilm-lit) and say if they changed"
	@echo "make bench     install requirements-bench.txt, then run the benchmarks in benchmarks/"
	@echo "make models   retrain the shipped object localiser and query tower (data/models/product-search; seeded), then say if they changed"
	@echo "make lab       run the notebooks in JupyterLab (127.0.0.1; open the URL with the token it prints)"
	@echo "make pdf       the whole book as one PDF, _build/book.pdf (printed by headless Chromium)"

$(STAMP): requirements.txt
	$(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements.txt
	$(PYTHON) -m pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

test: lint unit notebooks book-check

# ruff's rules and line length are in pyproject.toml. Notebook code is checked at 88 columns for line
# length and syntax errors only, so that it fits the rendered page.
PY_SOURCES := image_search tests benchmarks data book

lint: venv
	$(PYTHON) -m ruff check $(PY_SOURCES)
	$(PYTHON) -m ruff check --line-length 88 --select E501,E9,F63,F7,F82 notebooks

format: venv
	$(PYTHON) -m ruff format $(PY_SOURCES)
	$(PYTHON) -m ruff check --fix --select I $(PY_SOURCES)

BROWSER_TESTS := tests/test_book.py tests/test_browser.py tests/test_serve_browser.py tests/test_lab.py tests/test_pdf.py

unit: venv
	$(PYTHON) -m pytest -q tests $(addprefix --ignore=,$(BROWSER_TESTS))

NBVAL := -m pytest -q --nbval-lax --nbval-current-env -p no:cacheprovider notebooks

notebooks: venv
	$(PYTHON) $(NBVAL)

# Another CPU moves float results in their last bits. Perturb the numerics the same way twice: eager
# PyTorch instead of ONNX Runtime (so no shipped embedding is used: everything is recomputed), then
# one thread for every library; each run starts from an empty cache. The glued numbers of every
# notebook must stay within their tolerances (each notebook's last cell checks them).
test-portable: venv
	@for mode in eager one-thread; do \
		cache=$$(mktemp -d); \
		if [ $$mode = eager ]; then vars="IMAGE_SEARCH_ONNX=0"; \
		else vars="IMAGE_SEARCH_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1"; fi; \
		echo "== notebooks with $$vars, empty cache $$cache"; \
		start=$$(date +%s); \
		env IMAGE_SEARCH_CACHE=$$cache $$vars $(PYTHON) $(NBVAL); rc=$$?; \
		rm -rf $$cache; \
		echo "== $$mode: exit $$rc after $$(( $$(date +%s) - start )) s"; \
		[ $$rc = 0 ] || exit $$rc; \
	done

book: venv
	@start=$$(date +%s); \
	$(VENV)/bin/jupyter-book build . --all --warningiserror --nitpick --keep-going || exit 1; \
	echo "book built in $$(( $$(date +%s) - start )) s: open _build/html/index.html"

# One strict build into a temporary folder, then static HTML checks and the headless-Chromium checks.
book-check: venv browser-deps
	$(PYTHON) -m pytest -q -p no:cacheprovider $(BROWSER_TESTS)

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
		echo "executing $$nb"; IMAGE_SEARCH_GLUE_RECORD=1 ../$(VENV)/bin/jupyter-execute --inplace --timeout=1200 $$nb || exit 1; \
	done
	$(PYTHON) notebooks/strip_widgets.py notebooks/*.ipynb

# The canonical embeddings every machine starts from (data/embeddings): recompute them after
# `make catalog` or a change of the default model, its preprocessing or backend.
embeddings: venv
	$(PYTHON) -c 'import sys; from image_search.embeddings import main; sys.exit(main())'

# The two-tower text model's projection heads (seconds on 2 cores; seeded, single-threaded). Prints
# whether data/models/minilm-lit/heads.safetensors came out byte-identical to the shipped one.
text-model: venv
	$(PYTHON) -m image_search.text

# The object localiser of the product-search pipeline, then its query tower on the localiser's crops (about
# ten minutes on 2 cores; seeded, single-threaded training). The --stat line shows whether the .safetensors
# files came out byte-identical (training.json always changes: it records the wall times). Another CPU's float
# kernels take another path: on 2026-12-01 (AMD EPYC with AVX-512) the retrained localiser differed from the
# shipped one by at most 1.3e-3 per weight, and so did the query tower trained on its crops; the query tower
# retrained from the shipped localiser came out byte-identical.
models: venv
	$(PYTHON) -c 'from image_search.training import build_models; print(build_models())'
	git diff --stat -- data/models/product-search

demo: venv
	$(PYTHON) -m image_search demo --out _build/demo_results.png

catalog: venv
	apt-get update -q && apt-get install -y -q sweethome3d-furniture libosmesa6
	$(PYTHON) -m pip install --quiet pyrender==0.1.45 trimesh==4.12.2
	$(PYTHON) -m pip install --quiet PyOpenGL==3.1.7
	PYOPENGL_PLATFORM=osmesa $(PYTHON) data/build_catalog.py
	$(PYTHON) data/build_real_photos.py

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

.PHONY: lab pdf

# JupyterLab on the notebooks, for readers. The kernel is the notebooks' `python3`, which Jupyter
# maps to the interpreter it runs on: .venv's. Nothing is fetched from the internet (no news, no
# update check, a read-only extension manager); root (as in a container) needs --allow-root.
# LAB_PORT=9999 make lab to choose another port.
LAB_PORT ?= 8888
lab: venv
	@echo "JupyterLab on notebooks/ at 127.0.0.1:$(LAB_PORT): open the http://127.0.0.1:...?token=... URL printed below; Ctrl+C stops it"
	PYTHONPATH=$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} $(VENV)/bin/jupyter-lab --no-browser \
		--ServerApp.ip=127.0.0.1 --ServerApp.port=$(LAB_PORT) --ServerApp.root_dir=notebooks \
		--LabApp.news_url=None --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate \
		--LabApp.extension_manager=readonly $(if $(filter 0,$(shell id -u)),--allow-root)

# The whole book as one PDF: book/build_pdf.py prints every page of _build/html in _toc.yml order with
# Debian's headless Chromium and merges them with pypdf (an outline entry per chapter; no TeX).
pdf: book browser-deps
	$(PYTHON) book/build_pdf.py --html _build/html --out _build/book.pdf
