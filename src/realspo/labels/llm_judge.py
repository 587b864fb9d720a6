"""An LLM as a pairwise judge (``--judge llm:PATH``): which of two responses is better?

The judge is any causal LM (a model directory, a ``.gguf`` file or a hub id). With
``--judge-mode pointwise`` it grades each response alone instead: P("Yes") against P("No")
after :data:`realspo.labels.judge_prompts.POINTWISE_TEMPLATE`, the pair preferring the higher
grade (:class:`realspo.labels.pairwise.GradedComparison`). Pairwise, it reads this prompt
(:data:`DEFAULT_TEMPLATE`)::

    Please act as an impartial judge and decide which of two responses answers the user's
    prompt better. Consider helpfulness, correctness and relevance. Do not let the order of
    the responses or their length influence your decision.

    [User prompt]
    {prompt}

    [Response A]
    {response_a}

    [Response B]
    {response_b}

    Which response is better? Answer with one letter: A or B.

as one user message through the judge's chat template (with the assistant turn opened) when
its tokenizer has one, else as plain text followed by ``"\\n\\nAnswer:"``. ``--judge-template
FILE`` replaces the text; the file must use each of ``{prompt}``, ``{response_a}``,
``{response_b}`` and no other placeholder (``{{``/``}}`` for literal braces).

Nothing is generated. The verdict is read from the next-token logits of the two answer
tokens ("A" and "B" as they would follow the rendered prompt, :func:`answer_token_ids`):
``P(A) = softmax(l_A, l_B)_A``.
Each pair is asked in both orders, A/B and B/A; the second probability is flipped to be about
A, the two are averaged, and a pair whose orders pick different winners is a tie
(:class:`realspo.labels.pairwise.Comparison`). LLM judges favour a position; swapping and
calling inconsistent verdicts ties is the conservative rule of Zheng et al. 2023 ("Judging
LLM-as-a-judge with MT-Bench and Chatbot Arena"). The share of such pairs is
reported as the judge's *position-bias rate*.

Inputs are scored ``--batch-size`` at a time, longest first, left-padded so that every row's
last position is the one whose next token is the answer. An input longer than
``--max-length`` tokens is cut from the left (with a warning).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from realspo.errors import InputError
from realspo.labels.judge_prompts import (  # the prompts belong to this judge's API: re-exported
    ANSWERS,
    DEFAULT_TEMPLATE,
    PAIRWISE,
    PLACEHOLDERS,
    JudgeMode,
    check_template,
    read_template,
)
from realspo.labels.pairwise import Verdicts, compare_both_orders, grade_pairs
from realspo.template_sandbox import render_guarded

__all__ = ["ANSWERS", "DEFAULT_TEMPLATE", "PLACEHOLDERS", "LLMJudge", "check_llm_judge",
           "check_template", "read_template"]

log = logging.getLogger(__name__)

PLAIN_ANSWER_CUE = "\n\nAnswer:"  # ends the prompt of a judge without a chat template


def check_llm_judge(name: str, template: str | None = None, trust_remote_code: bool = False,
                    mode: JudgeMode = PAIRWISE) -> None:
    """Refuse (InputError) a bad template file, or a model whose config is not a causal LM."""
    from transformers import AutoConfig

    from realspo.gguf import resolve_model_path

    read_template(template, mode)
    if name.startswith(("/", ".", "~")) and not Path(name).expanduser().exists():
        raise InputError(name, "no such model directory or .gguf file")
    path = resolve_model_path(name)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise InputError(name, f"could not load model config ({str(exc).splitlines()[0]})") from None
    archs = list(getattr(config, "architectures", None) or [])
    if not any(a.endswith("ForCausalLM") for a in archs):
        raise InputError(name, f"not a causal language model (architectures: {', '.join(archs) or 'none'}); "
                               "an LLM judge needs an AutoModelForCausalLM")


def answer_token_ids(tokenizer, context: str, add_special_tokens: bool,
                     source: str, answers: tuple[str, str] = ANSWERS) -> tuple[str, list[int]]:
    """``(gap, ids)``: the ids of the ``answers`` tokens ("A" and "B", or "Yes" and "No") as
    the next token after ``context + gap``. After a space the answer is "A"; after another character it is " A" (``gap`` ""),
    or, for a tokenizer that makes the space a token of its own, "A" after ``gap`` " ".
    InputError if no way makes both letters one token."""
    tries = [("", "")] if context[-1:].isspace() else [("", " "), (" ", "")]  # (gap, lead)
    for gap, lead in tries:
        base = tokenizer(context + gap, add_special_tokens=add_special_tokens)["input_ids"]
        ids = []
        for letter in answers:
            full = tokenizer(context + gap + lead + letter,
                             add_special_tokens=add_special_tokens)["input_ids"]
            if len(full) == len(base) + 1 and full[: len(base)] == base:
                ids.append(full[-1])
        if len(ids) == len(answers):
            return gap, ids
    raise InputError(source, f"the answers {answers[0]!r} and {answers[1]!r} are not single "
                             "tokens after the judge prompt; end the template differently")


def answer_probability(two_logits) -> np.ndarray:
    """(N,) P(first answer) from (N, 2) logits of the two answer tokens: softmax over the two."""
    import torch

    return torch.softmax(two_logits.float(), dim=-1)[:, 0].cpu().numpy().astype(np.float64)


class LLMJudge:
    """A causal LM comparing two responses to a prompt, or grading each alone with
    ``mode=POINTWISE`` (see the module docstring and :mod:`realspo.labels.judge_prompts`)."""

    def __init__(self, name: str, *, template: str | None = None, device: str = "auto",
                 dtype: str = "auto", batch_size: int = 16, max_length: int = 1024,
                 progress: bool = True, trust_remote_code: bool = False,
                 allow_pickle: bool = False, mode: JudgeMode = PAIRWISE,
                 tie_margin: float = 0.0) -> None:
        from realspo.models import load_model, load_tokenizer, pick_device, pick_dtype

        check_llm_judge(name, template, trust_remote_code, mode)
        self.mode, self.tie_margin = mode, tie_margin
        self.template = read_template(template, mode)
        self.batch_size, self.max_length, self.progress = batch_size, max_length, progress
        self.device = pick_device(device)
        self.tokenizer = load_tokenizer(name, trust_remote_code=trust_remote_code)
        self.tokenizer.padding_side = "left"
        self.model = load_model(name, "causal-lm", dtype=pick_dtype(self.device, dtype),
                                device=self.device, trust_remote_code=trust_remote_code,
                                allow_pickle=allow_pickle).eval()
        self.chat = bool(getattr(self.tokenizer, "chat_template", None))
        accepted = inspect.signature(self.model.forward).parameters
        self._extra = {k: k in accepted for k in ("position_ids", "logits_to_keep")}
        self.gap = ""
        empty = self._render(**dict.fromkeys(mode.placeholders, ""))
        self.gap, self.answer_ids = answer_token_ids(self.tokenizer, empty, not self.chat, name,
                                                     mode.answers)

    def render(self, prompt: str, response_a: str, response_b: str) -> str:
        """The judge's input for one order of one pair (pairwise mode)."""
        return self._render(prompt=prompt, response_a=response_a, response_b=response_b)

    def render_single(self, prompt: str, response: str) -> str:
        """The judge's input for one response (pointwise mode)."""
        return self._render(prompt=prompt, response=response)

    def _render(self, **slots: str) -> str:
        text = self.template.format(**slots)
        if not self.chat:
            return text + PLAIN_ANSWER_CUE + self.gap
        return render_guarded(lambda: self.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True),
            "the judge") + self.gap

    def p_first(self, texts: Sequence[str]) -> np.ndarray:
        """(M,) P(first answer) over the mode's two answers ("A"/"B", "Yes"/"No") as the next
        token after each text (batched, left-padded)."""
        import torch
        from tqdm.auto import tqdm

        limit = self.max_length
        encoded = [self.tokenizer(t, add_special_tokens=not self.chat)["input_ids"] for t in texts]
        cut = sum(len(ids) > limit for ids in encoded)
        if cut:
            log.warning("LLM judge: %d of %d inputs longer than --max-length %d tokens, cut from "
                        "the left", cut, len(encoded), limit)
        encoded = [ids[-limit:] for ids in encoded]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))  # less padding
        out = np.empty(len(encoded))
        pad = self.tokenizer.pad_token_id
        with torch.inference_mode(), tqdm(total=len(encoded), desc=f"judge (llm, {self.mode.name})",
                                          unit="input", disable=not self.progress) as bar:
            for lo in range(0, len(order), self.batch_size):
                rows = order[lo:lo + self.batch_size]
                width = max(len(encoded[i]) for i in rows)
                ids = torch.tensor([[pad] * (width - len(encoded[i])) + encoded[i] for i in rows])
                mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i])
                                     for i in rows])
                extra = {}
                if self._extra["position_ids"]:  # positions count real tokens, as in generate()
                    extra["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(self.device)
                if self._extra["logits_to_keep"]:
                    extra["logits_to_keep"] = 1
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                    **extra).logits[:, -1, :]
                out[rows] = answer_probability(logits[:, self.answer_ids])
                bar.update(len(rows))
        return out

    def compare(self, prompts: Sequence[str], responses_a: Sequence[str],
                responses_b: Sequence[str]) -> Verdicts:
        """P(A preferred) for each pair, asked in both orders; or, pointwise, each response's
        P("Yes") and the pair's preference from their difference."""
        if self.mode is not PAIRWISE:
            return grade_pairs(self.p_first, self.render_single, prompts, responses_a,
                               responses_b, self.tie_margin)
        return compare_both_orders(self.p_first, self.render, prompts, responses_a, responses_b)
