"""Reference-model log-probs, computed once before training and cached with the data.

DPO-family losses compare the policy with a frozen reference (usually the SFT model the
policy starts from). Its log-probs never change, so realspo computes them in one batched
``inference_mode`` pass before training and stores them; each training step then runs only
the policy. :func:`load_or_compute_reference` picks, in order:

1. ``from-columns``: the rows already carry ``ref_chosen_logps`` and ``ref_rejected_logps``
   (e.g. from TRL's precompute, or another tool): used as they are, after checking that
   they are finite log-probs (<= 0);
2. ``cached``: ``cache_dir/<key>.safetensors`` exists for this model, data and settings;
3. ``computed``: the pass runs and its result is written to the cache atomically.

The key (:func:`reference_cache_key`) hashes the model directory (config, tokenizer files,
and for each weight file its size plus 64 sampled 64 KiB blocks), the rows (prompt, chosen,
rejected and their finished flags, in order), ``max_length``, ``truncation``, the chat-template
mode, the reference dtype, any active autocast dtype and prefix sharing (pairs as token trees), so changing any of them computes afresh. Sampling keeps hashing a large checkpoint fast; a weight edit that
leaves every sampled block unchanged would go unnoticed (pass ``recompute=True`` then).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from realspo.errors import InputError
from realspo.outputs import atomic_path
from realspo.training.logprobs import logps_from_hidden, response_logps
from realspo.training.prefix_tree import shared_hidden_states
from realspo.training.tokenization import collate, finished_flags, tokenize_pairs

log = logging.getLogger(__name__)

REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
_BLOCK, _BLOCKS, _SMALL_FILE = 1 << 16, 64, 16 << 20
_KEY_VERSION = "2"  # 2: joint prompt/response tokenization, finished flags. Bump when tokenization or scoring changes what a cache entry means


def _file_digest(path: Path) -> str:
    """sha256 of a small file, or of a large file's size and 64 evenly spaced blocks."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as fh:
        if size <= _SMALL_FILE:
            h.update(fh.read())
        else:
            for i in range(_BLOCKS):
                fh.seek((size - _BLOCK) * i // (_BLOCKS - 1))
                h.update(fh.read(_BLOCK))
    return h.hexdigest()


def model_fingerprint(model_name: str, revision: str | None = None) -> str:
    """A content hash of a local model directory (or of a hub id's cached snapshot).

    A hub id that is not in the local cache is keyed by its name and revision only; a single
    model file (``.gguf``) by its content.
    """
    path = Path(model_name)
    if path.is_file():
        return hashlib.sha256(f"file:{_file_digest(path)}\n".encode()).hexdigest()
    if not path.is_dir():
        try:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(model_name, revision=revision, local_files_only=True))
        except Exception:  # not cached, or not a valid repo id: fall back to the name
            return hashlib.sha256(f"hub:{model_name}@{revision}".encode()).hexdigest()
    h = hashlib.sha256()
    for file in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
        h.update(f"{file.name}:{_file_digest(file)}\n".encode())
    return h.hexdigest()


def rows_fingerprint(rows: Sequence[dict[str, Any]]) -> str:
    """sha256 of the rows' ``prompt``, ``chosen``, ``rejected`` and finished flags, in order."""
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps([row.get("prompt"), row.get("chosen"), row.get("rejected"),
                             *finished_flags(row)], ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def reference_cache_key(
    model_name: str, rows_fingerprint: str, max_length: int, truncation: str, *, extra: str = ""
) -> str:
    """sha256 naming a cache entry: model content + data + tokenization settings (+ ``extra``,
    e.g. the reference dtype)."""
    parts = [_KEY_VERSION, model_fingerprint(model_name), rows_fingerprint, str(max_length),
             truncation, extra]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def score_sequences(model: Any, tokenizer: Any, sequences: list[tuple[list[int], int]],
                    batch_size: int, desc: str | None = None,
                    groups: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """Summed response log-probs (float64, one per ``(ids, response start)`` sequence, in
    order) under ``inference_mode``, longest first (an out-of-memory shows at once), with a
    progress bar named ``desc`` (None: none). The model is left in the mode it was in.

    ``groups`` (lists of sequence indices, each index in one): each group runs as one token
    tree, its common prefixes once (:mod:`realspo.training.prefix_tree`; the model must
    support it), and a batch holds whole groups, up to ``batch_size`` sequences."""
    from tqdm.auto import tqdm

    result = np.zeros(len(sequences), dtype=np.float64)
    if not sequences:
        return result
    if groups is None:
        groups = [[i] for i in range(len(sequences))]
        shared = False
    else:
        shared = True
    groups = sorted(groups, key=lambda g: -sum(len(sequences[i][0]) for i in g))
    per_batch = max(1, batch_size // max(len(g) for g in groups))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for lo in tqdm(range(0, len(groups), per_batch), desc=desc, disable=desc is None):
                members = groups[lo: lo + per_batch]
                idx = [i for group in members for i in group]
                batch = {k: v.to(device) for k, v in collate([sequences[i] for i in idx], pad_id).items()}
                if shared:
                    starts = np.cumsum([0] + [len(g) for g in members])
                    local = [list(range(a, b)) for a, b in zip(starts[:-1], starts[1:], strict=True)]
                    hidden = shared_hidden_states(model, batch["input_ids"], batch["attention_mask"], local)
                    sums, _ = logps_from_hidden(model, hidden, batch["input_ids"], batch["response_mask"])
                else:
                    sums, _, _ = response_logps(model, **batch)
                result[idx] = sums.double().cpu().numpy()
    finally:
        model.train(was_training)
    return result


def compute_reference_logps(
    model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]], *, max_length: int,
    truncation: str = "keep_end", batch_size: int = 8, show_progress: bool = True,
    source: str = "pairs", chat_template: str = "auto", share_prefixes: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Summed response log-probs of every chosen and rejected response, in row order.

    Returns ``(ref_chosen, ref_rejected)``, each float64 of shape (len(rows),). The 2N
    sequences are sorted by length (longest first, so an out-of-memory shows at once) and run
    ``batch_size`` sequences at a time under ``inference_mode``; tokenization is
    :func:`realspo.training.tokenization.tokenize_pairs`, exactly as in training. With
    ``share_prefixes`` each pair's two sequences run as one token tree (``--prefix-sharing``).
    """
    pairs = tokenize_pairs(tokenizer, rows, max_length, truncation, source=source,
                           chat_template=chat_template)
    sequences = [seq for pair in pairs for seq in pair.sequences()]  # chosen 2i, rejected 2i+1
    groups = [[2 * i, 2 * i + 1] for i in range(len(pairs))] if share_prefixes else None
    result = score_sequences(model, tokenizer, sequences, batch_size,
                             desc="reference log-probs" if show_progress else None, groups=groups)
    return result[0::2].copy(), result[1::2].copy()


def _from_columns(rows: Sequence[dict[str, Any]], source: str) -> tuple[np.ndarray, np.ndarray]:
    values = np.zeros((2, len(rows)), dtype=np.float64)
    for i, row in enumerate(rows):
        for j, field in enumerate(REF_COLUMNS):
            value = row.get(field)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or value > 1e-3:
                raise InputError(source, f"expected a finite log-prob (<= 0), got {value!r}",
                                 where=f"row {i + 1}", field=field)
            values[j, i] = value
    return values[0], values[1]


def _read_cache(path: Path, n_rows: int) -> tuple[np.ndarray, np.ndarray] | None:
    from safetensors.numpy import load_file

    try:
        data = load_file(str(path))
        chosen, rejected = data["ref_chosen"], data["ref_rejected"]
    except Exception as exc:  # a damaged or foreign file: recompute rather than fail
        log.warning("ignoring unreadable reference cache %s (%s)", path, exc)
        return None
    if chosen.shape != (n_rows,) or rejected.shape != (n_rows,) or not (
        np.isfinite(chosen).all() and np.isfinite(rejected).all()
    ):
        log.warning("ignoring reference cache %s: wrong shape or non-finite values", path)
        return None
    return chosen.astype(np.float64), rejected.astype(np.float64)


def _autocast_state(device: torch.device | None, model: Any) -> str:
    """The active autocast dtype for the model's device ("off" if none): it changes the values."""
    if model is not None:
        device = next(model.parameters()).device
    device_type = (device or torch.device("cpu")).type
    try:
        if not torch.is_autocast_enabled(device_type):
            return "off"
        return str(torch.get_autocast_dtype(device_type))
    except TypeError:  # torch < 2.4 has no per-device query
        return "unknown"


def load_or_compute_reference(
    model_name: str, rows: Sequence[dict[str, Any]], cache_dir: str | Path | None, *,
    max_length: int, truncation: str = "keep_end", model: Any = None, tokenizer: Any = None,
    batch_size: int = 8, show_progress: bool = True, recompute: bool = False,
    dtype: torch.dtype | None = None, device: torch.device | None = None,
    trust_remote_code: bool = False, source: str = "pairs", chat_template: str = "auto",
    share_prefixes: bool = False,
) -> tuple[np.ndarray, np.ndarray, str]:
    """``(ref_chosen, ref_rejected, status)``, status ``from-columns``, ``cached`` or ``computed``.

    ``model``/``tokenizer`` are the reference model (e.g. the policy before its first update)
    and its tokenizer; if not given they are loaded from ``model_name`` through
    :mod:`realspo.models`, and only when the cache misses. ``cache_dir=None`` disables the
    cache. Arrays are float64 of shape (len(rows),), in row order.
    """
    present = [any(f in row for f in REF_COLUMNS) for row in rows]
    if any(present):
        return (*_from_columns(rows, source), "from-columns")
    if model is not None:
        dtype = next(model.parameters()).dtype
    key = reference_cache_key(model_name, rows_fingerprint(rows), max_length, truncation,
                              extra=f"{dtype or 'auto'}|{_autocast_state(device, model)}|"
                                    f"chat-template={chat_template}"
                                    + ("|prefix-sharing" if share_prefixes else ""))
    path = Path(cache_dir) / f"{key}.safetensors" if cache_dir is not None else None
    if path is not None and path.exists() and not recompute:
        cached = _read_cache(path, len(rows))
        if cached is not None:
            return (*cached, "cached")
    if model is None or tokenizer is None:
        from realspo.models import load_model, load_tokenizer

        if tokenizer is None:
            tokenizer = load_tokenizer(model_name, trust_remote_code=trust_remote_code)
        if model is None:
            model = load_model(model_name, dtype=dtype, device=device,
                               trust_remote_code=trust_remote_code)
    chosen, rejected = compute_reference_logps(
        model, tokenizer, rows, max_length=max_length, truncation=truncation,
        batch_size=batch_size, show_progress=show_progress, source=source,
        chat_template=chat_template, share_prefixes=share_prefixes,
    )
    if path is not None:
        from safetensors.numpy import save_file

        meta = {"model": str(model_name), "rows": str(len(rows)), "max_length": str(max_length),
                "truncation": truncation}
        with atomic_path(path, overwrite=True) as tmp:
            save_file({"ref_chosen": chosen, "ref_rejected": rejected}, str(tmp), metadata=meta)
    return chosen, rejected, "computed"
