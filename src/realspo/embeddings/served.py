"""``select --embedder openai:NAME --base-url URL``: REAL's response embeddings from a server.

The responses are sent to the server's ``/embeddings`` endpoint (vLLM, Text Embeddings
Inference, llama.cpp's server started with ``--embedding``), ``batch_size`` texts per
request and ``--concurrency`` requests in flight. Each response's vector is journaled under
(model, base URL, text) (:mod:`realspo.served.journal`), so a killed run resumes without
asking again, and a response seen before is never sent twice. The server pools as it was
started to pool (mean, last token or CLS); the rows are L2-normalised here, as the local
embedders' rows are, so similarities are cosines.

A server that returns one vector per token (llama-cpp-python's server for a causal LM: it has
no pooling option) is mean-pooled here, which is REAL's pooling; on the SmolLM2 GGUF the
result matches the local ``--model`` embedding of the same model to cosine 0.9996
(``tests/test_served_llama.py``). That server gets the rows of every text but the first of a
batch wrong (measured), so once it answers per token each text is sent alone (a batch then
counts as one request against ``--max-requests``).
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from realspo.errors import RealspoError
from realspo.served.client import ServedClient, mean_of_tokens
from realspo.served.journal import request_key
from realspo.served.options import ServedOptions

log = logging.getLogger(__name__)


def embed_served(texts: list[str], model: str, options: ServedOptions, *, batch_size: int = 16,
                 show_progress: bool = True, http_client: object = None) -> np.ndarray:
    """Unit embeddings of ``texts`` from the server's ``/embeddings`` endpoint.

    Args:
        texts: N response texts.
        model: the embedding model's name on the server.
        options: the server and how hard to try.
        batch_size: texts per request.
        http_client: an ``httpx.Client`` to send through (tests).
    Returns:
        (N, D) float32 unit rows in input order.
    Raises:
        DryRun: with ``options.dry_run``, the count of requests it would send.
    """
    client = ServedClient(model, options, http_client)
    journal = client.journal("embeddings")
    base_url = options.base_url
    keys = [request_key(kind="embedding", model=model, base_url=base_url, text=t) for t in texts]
    missing = list(dict.fromkeys(k for k in keys if k not in journal))
    text_of = dict(zip(keys, texts, strict=True))
    batches = [missing[lo:lo + batch_size] for lo in range(0, len(missing), batch_size)]

    per_token = threading.Event()

    def send(batch: list[str]) -> None:
        if per_token.is_set() and len(batch) > 1:
            for key in batch:
                send([key])
            return
        vectors = client.embed([text_of[k] for k in batch])
        if vectors and vectors[0] and isinstance(vectors[0][0], list) and not per_token.is_set():
            per_token.set()
            log.warning("%s answers one vector per token: mean-pooling them, one text per "
                        "request", base_url)
            if len(batch) > 1:
                send(batch)
                return
        for key, vector in zip(batch, vectors, strict=True):
            journal.add(key, mean_of_tokens(vector))  # each text alone: a resume batches anew

    client.run(batches, send, cached=len(set(keys)) - len(missing), kept_in=str(journal.path),
               desc="embedding (served)", progress=show_progress)
    rows = np.asarray([journal.get(k) for k in keys], dtype=np.float32)
    if rows.ndim != 2 or not np.isfinite(rows).all():
        raise RealspoError(f"{base_url}: the embeddings are not one finite vector per text")
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)
