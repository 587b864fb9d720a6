"""Embeddings files: ``.npy`` or ``.safetensors`` holding one row per response.

Rows follow the *flattened order* of :mod:`realspo.schema` (group, then response). Files are
written atomically (:mod:`realspo.outputs`) and read without pickle.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from realspo.errors import ConfigError, InputError

log = logging.getLogger(__name__)

EMBEDDING_SUFFIXES = (".npy", ".safetensors")
SAFETENSORS_KEY = "embeddings"


def _suffix(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in EMBEDDING_SUFFIXES:
        raise ConfigError(f"{path}: embeddings file must end in .npy or .safetensors")
    return suffix


def save_embeddings(path: str, embeddings: np.ndarray, overwrite: bool = False,
                    metadata: dict[str, str] | None = None) -> None:
    """Write (N, H) embeddings atomically as ``.npy`` or ``.safetensors`` (key ``embeddings``).

    ``metadata`` (e.g. the embedder name) is stored in the safetensors header; a ``.npy`` file
    has no room for it, so it is then not stored (a warning says so).
    """
    from realspo.outputs import atomic_path

    suffix = _suffix(path)
    arr = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32))
    if arr.ndim != 2:
        raise ConfigError(f"{path}: embeddings must be 2-D (rows, dim), got shape {arr.shape}")
    with atomic_path(path, overwrite) as tmp:
        if suffix == ".npy":
            if metadata:
                log.warning("%s: .npy files cannot hold metadata; use .safetensors to keep it", path)
            with open(tmp, "wb") as fh:  # a file handle: np.save would append .npy to a name
                np.save(fh, arr, allow_pickle=False)
        else:
            from safetensors.numpy import save_file

            save_file({SAFETENSORS_KEY: arr}, str(tmp),
                      metadata={str(k): str(v) for k, v in (metadata or {}).items()})


def load_embeddings(path: str, expected_rows: int) -> np.ndarray:
    """Read an embeddings file written by :func:`save_embeddings` (or any (N, H) float array).

    ``.npy`` is read without pickle; ``.safetensors`` must hold the key ``embeddings``. Rows
    must match ``expected_rows`` (one per response, flattened order), be finite and non-zero.
    Returns (N, H) float32 with L2-normalised rows.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in EMBEDDING_SUFFIXES:
        raise InputError(path, "embeddings file must end in .npy or .safetensors")
    if not Path(path).is_file():
        raise InputError(path, "embeddings file not found")
    try:
        if suffix == ".npy":
            # Memory-mapped: a 100k x 8 x 2048 file is checked chunk by chunk instead of being
            # copied several times over (astype, isfinite, norm, divide).
            arr = np.load(path, allow_pickle=False, mmap_mode="r")
        else:
            from safetensors import safe_open

            with safe_open(path, framework="pt") as fh:
                keys = list(fh.keys())
                if SAFETENSORS_KEY not in keys:
                    raise InputError(path, f"no tensor named '{SAFETENSORS_KEY}' "
                                           f"(found: {', '.join(keys) or 'none'})")
                arr = fh.get_tensor(SAFETENSORS_KEY).float().numpy()  # .float(): bf16 has no numpy
    except InputError:
        raise
    except Exception as exc:  # corrupt header, pickled object array, truncated file, ...
        raise InputError(path, f"could not read embeddings ({str(exc).splitlines()[0]})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        raise InputError(path, f"expected a numeric array, got dtype {getattr(arr, 'dtype', '?')}")
    if arr.ndim != 2:
        raise InputError(path, f"expected a 2-D array (rows, dim), got shape {arr.shape}")
    if arr.shape[0] != expected_rows:
        raise InputError(path, f"has {arr.shape[0]} rows but the input has {expected_rows} "
                               "responses (one row per response, flattened order)")
    return _checked_unit_rows(arr, path)


def _checked_unit_rows(arr: np.ndarray, path: str, chunk_rows: int = 65536) -> np.ndarray:
    """Check rows are finite and non-zero, chunk by chunk; return them L2-normalised float32.

    A float32 array whose rows are already unit length (what :func:`save_embeddings` writes)
    is returned as it is (no copy; memory-mapped if ``arr`` is).
    """
    unit = arr.dtype == np.float32
    out: np.ndarray | None = None if unit else np.empty(arr.shape, dtype=np.float32)
    for start in range(0, arr.shape[0], chunk_rows):
        chunk = np.asarray(arr[start:start + chunk_rows], dtype=np.float32)
        bad = np.flatnonzero(~np.isfinite(chunk).all(axis=1))
        if bad.size:
            raise InputError(path, "non-finite values in a row", where=f"row {start + bad[0]}")
        norms = np.linalg.norm(chunk, axis=1, keepdims=True)
        zero = np.flatnonzero(norms[:, 0] == 0)
        if zero.size:
            raise InputError(path, "all-zero row (no direction to compare)",
                             where=f"row {start + zero[0]}")
        if unit and not np.allclose(norms, 1.0, atol=1e-4):
            unit = False
            out = np.empty(arr.shape, dtype=np.float32)
            for done in range(0, start, chunk_rows):  # earlier chunks were unit already
                out[done:done + chunk_rows] = arr[done:done + chunk_rows]
        if out is not None:
            out[start:start + chunk_rows] = chunk / norms
    return arr if out is None else out
