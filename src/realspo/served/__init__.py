"""Models behind an OpenAI-compatible server (vLLM, llama.cpp's server, TGI, Ollama, hosted APIs).

``client.py``: the connection, retries, error classification, the request budget and the
concurrent sending of many requests; ``journal.py``: the append-only reply journal that is
also the cache; ``options.py``: the command-line options every served command shares. The
stages use them: :mod:`realspo.generation.served`, :mod:`realspo.labels.served_judge`,
:mod:`realspo.embeddings.served`.
"""
