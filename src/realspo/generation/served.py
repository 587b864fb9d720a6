"""``generate --model openai:NAME --base-url URL``: candidates from a model behind a server.

Each prompt is sent as chat messages (a text prompt in HH form becomes its turns, any other
text one user message); the *server* applies the model's chat template. Sample ``j`` of
prompt ``i`` is one request with ``seed = row_seed(seed, i, j)`` (the seed local generation
uses), so the K samples of a prompt are K requests: every sample is journaled on its own, a
rerun with the same seed asks for none again, and servers that honour ``seed`` (llama.cpp,
vLLM) give the same samples. (The ``n`` parameter would send one request for K samples, but
with one seed for all of them, and llama.cpp's server ignores it.) ``temperature``,
``top_p`` and ``max_new_tokens`` (as ``max_tokens``) are sent as given; a reply whose
``finish_reason`` is ``"length"`` was cut, ``finished: false``. The replies' token usage is
summed over the replies.

The replies live in the served reply journal (:mod:`realspo.served.journal`), not in an
``OUT.partial.jsonl``: a killed run is resumed by running the same command again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from realspo.chat_format import hh_messages
from realspo.generation.prompts import Prompt, PromptRecord
from realspo.generation.sampling import row_seed
from realspo.generation.settings import SamplingSettings
from realspo.outputs import check_writable, write_rows
from realspo.served.client import ServedClient
from realspo.served.journal import request_key
from realspo.served.options import ServedOptions

log = logging.getLogger(__name__)


def prompt_messages(prompt: Prompt) -> list[dict[str, str]]:
    """The prompt as chat messages: messages as given, HH text as its turns, else one user turn."""
    if not isinstance(prompt, str):
        return [dict(m) for m in prompt]
    return hh_messages(prompt) or [{"role": "user", "content": prompt}]


def sample_requests(client: ServedClient, prompts: Sequence[PromptRecord],
                    settings: SamplingSettings) -> list[tuple[str, dict[str, Any]]]:
    """(key, request body) for sample j of each prompt, prompt-major."""
    out = []
    for prompt in prompts:
        messages = prompt_messages(prompt.prompt)
        for j in range(settings.num_responses):
            body = {"messages": messages, "temperature": settings.temperature,
                    "top_p": settings.top_p, "max_tokens": settings.max_new_tokens,
                    "seed": row_seed(settings.seed, prompt.index, j)}
            key = request_key(kind="generate", model=client.model, base_url=client.options.base_url,
                              **body)
            out.append((key, body))
    return out


def reply_sample(reply: dict[str, Any]) -> tuple[str, bool]:
    """(text, finished) of a chat reply's first choice; cut at the length limit is unfinished."""
    choice = reply["choices"][0]
    return str(choice["message"].get("content") or ""), choice.get("finish_reason") != "length"


def generate_served(model: str, prompts: Sequence[PromptRecord], out: str | os.PathLike,
                    settings: SamplingSettings, options: ServedOptions, *,
                    overwrite: bool = False, progress: bool = True,
                    http_client: Any = None) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Sample K responses per prompt from ``model`` on the server and write ``out``.

    Args:
        model: the model's name on the server.
        prompts: the prompts, in file order (``index`` seeds their samples).
        out: the multi-completion file to write.
        settings: K, temperature, top-p, max new tokens, seed (``chat_template`` is the
            server's business).
        options: the server and how hard to try.
        http_client: an ``httpx.Client`` to send through (tests).
    Returns:
        The rows written, and a summary: the token usage summed over every reply the rows
        came from (``prompt_tokens``, ``completion_tokens``; cached replies included) and
        ``requests_sent`` in this run.
    Raises:
        DryRun: with ``options.dry_run``, the count of requests it would send.
    """
    from realspo.generation.candidates import drop_empty

    settings.validate()
    out = check_writable(out, overwrite)
    client = ServedClient(model, options, http_client)
    journal = client.journal("chat")
    requests = sample_requests(client, prompts, settings)
    replies = client.send_all(journal, requests, client.chat, desc="generate (served)",
                              progress=progress)
    k = settings.num_responses
    rows = []
    for n, prompt in enumerate(prompts):
        samples = [reply_sample(replies[key]) for key, _ in requests[n * k:(n + 1) * k]]
        rows.append({"prompt_id": prompt.prompt_id, "prompt": prompt.prompt,
                     "responses": [text for text, _ in samples],
                     "finished": [done for _, done in samples]})
    final = drop_empty(rows)
    write_rows(out, final, overwrite=overwrite)
    usage = {name: sum(int((reply.get("usage") or {}).get(name) or 0) for reply in replies.values())
             for name in ("prompt_tokens", "completion_tokens")}
    return final, {**usage, "requests_sent": client.sent}
