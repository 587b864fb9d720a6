"""GGUF model files (llama.cpp's one-file format), dequantized once into a cached model directory.

Every model path realspo takes (``--model``, a reward model, a judge, a causal-LM embedder) may
be a ``.gguf`` file, or a directory holding exactly one ``.gguf`` file and no ``config.json``.
The first load dequantizes it through ``transformers`` (which needs the ``gguf`` package) into
a plain safetensors model directory, tokenizer included; later loads read only that directory.

The cache lives in ``$REALSPO_CACHE/gguf/<key>`` (default ``~/.cache/realspo/gguf/<key>``).
The key hashes the file's *content sample*: its size, first MiB and last MiB (the first MiB
holds the GGUF header: architecture, tokenizer, tensor names, shapes and offsets). So a copy
or a reinstall of the same file (new path, new mtime: a fresh CI virtual environment) reuses
the cache, and reading 2 MiB costs milliseconds; an edit that changes neither the size nor
the first or last MiB would go unnoticed, which re-quantizing or fine-tuning does not do.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from realspo.errors import ConfigError, InputError
from realspo.outputs import atomic_dir

log = logging.getLogger(__name__)

SUFFIX = ".gguf"
_SAMPLE = 1 << 20  # bytes hashed from each end of the file
_KEY_VERSION = "1"  # bump when the conversion changes what a cached directory holds
_PROVENANCE = "realspo_gguf.json"


def default_cache_dir() -> Path:
    """``$REALSPO_CACHE/gguf``, else ``~/.cache/realspo/gguf``."""
    root = os.environ.get("REALSPO_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "realspo") / "gguf"


def find_gguf(name: str | os.PathLike) -> Path | None:
    """The ``.gguf`` file ``name`` stands for, or None (a model directory or a hub id).

    ``name`` stands for a file when it is one, or when it is a directory without
    ``config.json`` that holds exactly one; a directory holding several is an error.
    """
    path = Path(name)
    if path.is_file() and path.suffix.lower() == SUFFIX:
        return path
    if not path.is_dir() or (path / "config.json").exists():
        return None
    found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == SUFFIX)
    if len(found) > 1:
        raise InputError(str(path), f"holds {len(found)} .gguf files "
                                    f"({', '.join(p.name for p in found)}); pass one file")
    return found[0] if found else None


def cache_key(file: str | os.PathLike) -> str:
    """``<stem>-<hash>``: the hash covers the size and the first and last MiB of ``file``."""
    file = Path(file)
    size = file.stat().st_size
    h = hashlib.sha256(f"realspo-gguf:{_KEY_VERSION}:{size}\n".encode())
    with file.open("rb") as fh:
        h.update(fh.read(_SAMPLE))
        fh.seek(max(0, size - _SAMPLE))
        h.update(fh.read(_SAMPLE))
    return f"{file.stem}-{h.hexdigest()[:16]}"


def dequantize_gguf(file: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """The cached model directory of the ``.gguf`` ``file``, converted on the first call.

    The directory is written atomically (:func:`realspo.outputs.atomic_dir`): an interrupted
    conversion leaves no half-written cache entry behind.
    """
    file = Path(file).resolve()
    target = Path(cache_dir or default_cache_dir()) / cache_key(file)
    if (target / _PROVENANCE).exists():
        return target
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(f"{file}: reading .gguf files needs the gguf package: pip install gguf")
    with _exclusive(target):  # one conversion at a time (e.g. the processes of a torchrun)
        if not (target / _PROVENANCE).exists():
            log.info("dequantizing %s once into %s", file, target)
            with atomic_dir(target, overwrite=True, kind="gguf-dequantized", replace_unmarked=True) as tmp:
                _convert(file, tmp)
    return target


@contextlib.contextmanager
def _exclusive(target: Path) -> Iterator[None]:
    """Hold a lock file beside ``target`` (POSIX ``flock``; no lock where it is missing), so
    processes converting the same file wait for the first instead of swapping its result out
    from under a reader."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: atomic_dir alone keeps every entry whole
        yield
        return
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def resolve_model_path(name: str) -> str:
    """``name`` itself, or for a ``.gguf`` file (or a directory of one) its cached directory."""
    file = find_gguf(name)
    return name if file is None else str(dequantize_gguf(file))


def _convert(file: Path, out: Path) -> None:
    """Dequantize ``file`` to an fp32 safetensors model directory (with tokenizer) in ``out``."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:  # a broken or unsupported file fails deep inside the reader (ValueError, struct.error,
        # KeyError, NotImplementedError for an unknown architecture...): all mean "cannot read"
        tokenizer = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
        quantized = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name,
                                                         dtype=torch.float32)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(str(file), f"transformers cannot read this GGUF file ({first})") from None
    # The loaded model carries the GGUF quantization_config; a model built from a config
    # without it saves as an ordinary checkpoint that loads with no gguf package at all.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), assign=True)
    model.save_pretrained(out)  # safetensors (the default since transformers 4.35)
    tokenizer.save_pretrained(out)
    provenance = {"source": str(file), "size": file.stat().st_size, "key": cache_key(file),
                  "transformers": transformers.__version__}
    (out / _PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
