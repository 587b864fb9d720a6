"""A judge behind an OpenAI-compatible server (``--judge openai:NAME --judge-base-url URL``).

It is asked what the local LLM judge is asked (:mod:`realspo.labels.judge_prompts`: pairwise,
both orders, or pointwise), as one user message; the server applies the model's chat
template. Each request asks for a short greedy reply with ``logprobs`` and ``top_logprobs``.
The verdict is read from the first answer token's ``top_logprobs`` when the server returns
them: P(first answer) = p1 / (p1 + p2), summing the probabilities of the listed tokens that
are the answer (spaces stripped, any case); when only one answer is listed, the other is
bounded by the smallest listed probability. Without logprobs, the reply's first word is read
(``A``/``B``, ``Yes``/``No``: probability 1 or 0). A reply that is neither is *unparseable*
(nan): counted apart, never a tie.

Every reply is journaled and cached (:mod:`realspo.served.journal`) under the request, which
holds the model, the base URL and the rendered judge prompt (template, prompt, responses,
order), so ``evaluate`` after ``label`` or a rerun sends nothing it already asked.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from realspo.labels.judge_prompts import PAIRWISE, JudgeMode, read_template
from realspo.labels.pairwise import Verdicts, compare_both_orders, grade_pairs
from realspo.served.client import ServedClient
from realspo.served.journal import request_key
from realspo.served.options import ServedOptions

TOP_LOGPROBS = 10
REPLY_TOKENS = 4  # room for "Response A" when the verdict must be read from the text
_FIRST_WORD = re.compile(r"^[\W_]*(?:response\s+)?([A-Za-z]+)", re.IGNORECASE)


def _is_answer(token: str, answer: str) -> bool:
    return token.strip().capitalize() == answer


def p_first_answer(reply: dict[str, Any], answers: tuple[str, str]) -> float:
    """P(``answers[0]``) against ``answers[1]`` from one chat reply (see the module); nan if
    the reply names neither."""
    choice = reply["choices"][0]
    content = ((choice.get("logprobs") or {}).get("content") or [])
    listed = (content[0].get("top_logprobs") or []) if content else []
    probs = [(entry.get("token") or "", math.exp(entry.get("logprob", -math.inf)))
             for entry in listed if isinstance(entry, dict)]
    mass = [sum(p for token, p in probs if _is_answer(token, answer)) for answer in answers]
    if any(mass):
        floor = min(p for _, p in probs)
        first, second = (m if m > 0 else floor for m in mass)
        return first / (first + second)
    match = _FIRST_WORD.match(str(choice["message"].get("content") or ""))
    word = match.group(1).capitalize() if match else ""
    return 1.0 if word == answers[0] else 0.0 if word == answers[1] else math.nan


class ServedJudge:
    """An LLM judge on a server (see the module docstring).

    Args:
        model: the judge's name on the server.
        options: the server and how hard to try.
        template: a template file (None: the mode's default).
        mode: :data:`~realspo.labels.judge_prompts.PAIRWISE` or ``POINTWISE``.
        tie_margin: pointwise: grades closer than this are a tie.
        http_client: an ``httpx.Client`` to send through (tests).
    """

    def __init__(self, model: str, options: ServedOptions, *, template: str | None = None,
                 mode: JudgeMode = PAIRWISE, tie_margin: float = 0.0, progress: bool = True,
                 http_client: Any = None) -> None:
        self.template = read_template(template, mode)
        self.mode, self.tie_margin, self.progress = mode, tie_margin, progress
        self.client = ServedClient(model, options, http_client)
        self.journal = self.client.journal("chat")
        self.asked = 0  # replies needed so far, cached or not

    def request(self, text: str) -> tuple[str, dict[str, Any]]:
        """(cache key, request body) asking the judge about one rendered prompt."""
        body = {"messages": [{"role": "user", "content": text}], "max_tokens": REPLY_TOKENS,
                "temperature": 0.0, "logprobs": True, "top_logprobs": TOP_LOGPROBS}
        key = request_key(kind="judge", model=self.client.model,
                          base_url=self.client.options.base_url, **body)
        return key, body

    def p_first(self, texts: Sequence[str]) -> np.ndarray:
        """(M,) P(first answer) for each rendered judge prompt (nan: unparseable)."""
        requests = [self.request(text) for text in texts]
        self.asked += len(requests)
        replies = self.client.send_all(self.journal, requests, self.client.chat,
                                       desc=f"judge (served, {self.mode.name})",
                                       progress=self.progress)
        return np.array([p_first_answer(replies[key], self.mode.answers) for key, _ in requests])

    def render(self, prompt: str, response_a: str, response_b: str) -> str:
        """The judge prompt for one order of one pair (pairwise mode)."""
        return self.template.format(prompt=prompt, response_a=response_a, response_b=response_b)

    def render_single(self, prompt: str, response: str) -> str:
        """The judge prompt for one response (pointwise mode)."""
        return self.template.format(prompt=prompt, response=response)

    def compare(self, prompts: Sequence[str], responses_a: Sequence[str],
                responses_b: Sequence[str]) -> Verdicts:
        """Both orders of each pair (pairwise), or each response graded alone (pointwise)."""
        if self.mode is not PAIRWISE:
            return grade_pairs(self.p_first, self.render_single, prompts, responses_a,
                               responses_b, self.tie_margin)
        return compare_both_orders(self.p_first, self.render, prompts, responses_a, responses_b)

    def requests_summary(self) -> str:
        """``judge requests: 8 sent, 4 from the cache``."""
        sent = self.client.sent
        return f"judge requests: {sent} sent, {self.asked - sent} from the cache"
