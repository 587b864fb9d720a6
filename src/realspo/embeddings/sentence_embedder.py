"""The ``st:PATH`` embedder: any sentence-transformers model, as an alternative to a causal LM.

Rows are unit vectors (``normalize_embeddings=True``) in input order, like
:func:`realspo.embeddings.embed.embed_with_causal_lm`'s; weights load from safetensors only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from realspo.errors import ConfigError, InputError
from realspo.faults import after_batch
from realspo.models import check_safetensors_files


def embed_with_sentence_transformer(path: str, texts: list[str], *, batch_size: int = 64,
                                    device: str | None = None, show_progress: bool = True,
                                    trust_remote_code: bool = False, dtype: str = "float32",
                                    max_length: int | None = None) -> np.ndarray:
    """Embeddings of ``texts`` from any sentence-transformers model (path or hub id).

    ``dtype`` as in :func:`realspo.models.pick_dtype`; ``max_length`` lowers the model's own
    ``max_seq_length`` (longer texts are cut at the end, as sentence-transformers does).
    Returns (N, D) float32 unit rows (``normalize_embeddings=True``), in input order.
    """
    model = load_sentence_transformer(path, device=device, trust_remote_code=trust_remote_code,
                                      dtype=dtype, max_length=max_length)
    return encode_sentences(model, texts, batch_size=batch_size, show_progress=show_progress)


def load_sentence_transformer(path: str, *, device: str | None = None,
                              trust_remote_code: bool = False, dtype: str = "float32",
                              max_length: int | None = None, allow_pickle: bool = False) -> Any:
    """A ``SentenceTransformer`` on ``device`` in ``dtype``, ``max_seq_length`` capped.

    As for every model (:mod:`realspo.models`), weights load from safetensors only: a local
    directory holding only pickled ``.bin``/``.pt`` weights is refused unless ``allow_pickle``.
    """
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ConfigError("the st: embedder needs sentence-transformers: "
                          "pip install 'realspo[st]'") from None
    from realspo.models import pick_device, pick_dtype

    local = check_safetensors_files(Path(path))  # a forged header: an error naming the file
    if local.is_dir() and not allow_pickle and not any(local.rglob("*.safetensors")) and (
            any(local.rglob("*.bin")) or any(local.rglob("*.pt"))):
        raise InputError(path, "weights are only in pickle format (.bin), which can run arbitrary "
                               "code when loaded; convert them to safetensors or pass "
                               "--allow-pickle if you trust the source")
    dev = pick_device(device)
    try:
        model = SentenceTransformer(str(path), device=str(dev), trust_remote_code=trust_remote_code,
                                    model_kwargs={"use_safetensors": not allow_pickle or None})
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(path, f"could not load sentence-transformers model "
                               f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                         ) from None
    model.to(pick_dtype(dev, dtype))
    if max_length is not None:
        model.max_seq_length = min(model.max_seq_length or max_length, max_length)
    return model


def encode_sentences(model: Any, texts: list[str], *, batch_size: int = 64,
                     show_progress: bool = True) -> np.ndarray:
    """(N, D) float32 unit rows of ``texts`` from a loaded ``SentenceTransformer``."""
    if not texts:
        return np.zeros((0, model.get_sentence_embedding_dimension() or 0), dtype=np.float32)
    emb = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                       convert_to_numpy=True, show_progress_bar=show_progress)
    return np.asarray(emb, dtype=np.float32)



def encode_in_chunks(model: Any, texts: list[str], batch_size: int, show_progress: bool,
                      done: Mapping[int, np.ndarray],
                      on_batch: Callable[[list[int], np.ndarray], None] | None,
                      every: int | None) -> np.ndarray:
    """Sentence-transformers embeddings, in chunks of ``batch_size * every`` texts when saving
    progress (each chunk reported to ``on_batch``; chunks already ``done`` are not rerun)."""
    if every is None:
        return encode_sentences(model, texts, batch_size=batch_size, show_progress=show_progress)
    size = batch_size * every
    parts = []
    for start in range(0, len(texts), size):
        chunk = list(range(start, min(start + size, len(texts))))
        if all(i in done for i in chunk):
            parts.append(np.stack([done[i] for i in chunk]))
            continue
        rows = encode_sentences(model, [texts[i] for i in chunk], batch_size=batch_size,
                                show_progress=show_progress)
        parts.append(rows)
        if on_batch is not None:
            on_batch(chunk, rows)
        after_batch()
    if not parts:
        return encode_sentences(model, [], batch_size=batch_size, show_progress=False)
    return np.concatenate(parts)
