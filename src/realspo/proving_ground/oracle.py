"""The oracle: a transparent program that scores any response to a proving-ground prompt.

Reading a response. The text is lower-cased and split into words (``[a-z]+``) and sentences
(at ``. ! ? ;`` and newlines). Every entity name and every fact value of the world is a phrase;
phrases are found by greedy longest match. Each value phrase belongs to one attribute, so a
value mention is a *claim* (entity, attribute, value) once its entity is known: the nearest
entity named in the same sentence (ties: the earlier one), else the entity named last in an
earlier sentence, else the entity the question asks about ("Its capital is Marnet." after
"Tell me about Veloria." is a claim about Veloria). Repeated claims count once.

Judging the claims, for a question about entity ``e`` and asked attributes ``A``:

* *correct and relevant*: about ``e``, an attribute in ``A``, the true value;
* *wrong*: a value that is not the true one for that entity and attribute (including an
  attribute the entity's topic does not have, such as a watering schedule for a country);
* *off-topic*: a true fact that was not asked (another entity, or another attribute of ``e``).

The score::

    score = 2.0 * coverage                 coverage = |{a in A with a correct claim}| / |A|
          - 1.0 * n_wrong                  distinct wrong claims
          - 0.5 * n_off_topic              distinct off-topic claims
          - 2.0 * repetition               1 - distinct word 4-grams / word 4-grams
          - 1.0 * min(n_rude, 2)           words from the rude lexicon (ugh, stupid, idiot, ...)
          - 1.0 * unknown                  fraction of words outside the world's vocabulary
          - 0.02 * max(0, n_words - 60)    length beyond 60 words

A complete, polite, correct answer scores 2.0; an empty answer or "I do not know." scores 0.
It is deterministic and looks only at the words of the prompt and response: nothing here uses
embeddings or similarity between responses. The oracle of a world with ``coupling`` > 0
(``registers=True``) first removes the register sentences (:mod:`realspo.proving_ground.registers`)
and knows their words, and the ``premise`` world's oracle (``ladder=True``) does the same with
its ladder sentences (:mod:`realspo.proving_ground.ladder`): style is not scored, content is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from realspo.errors import InputError
from realspo.proving_ground.ladder import LADDER, strip_ladder
from realspo.proving_ground.registers import register_sentences, strip_registers
from realspo.proving_ground.topics import (
    CLOSERS,
    HEDGES,
    OPENERS,
    RUDE_SENTENCES,
    RUDE_WORDS,
    TOPICS,
    Topic,
)

W_COVERAGE, W_WRONG, W_OFF_TOPIC, W_REPETITION, W_RUDE, W_UNKNOWN = 2.0, 1.0, 0.5, 2.0, 1.0, 1.0
RUDE_CAP, LENGTH_FREE, W_LENGTH = 2, 60, 0.02

_WORD = re.compile(r"[a-z]+")
_SENTENCE_END = re.compile(r"[.!?;\n]+")


def words(text: str) -> list[str]:
    """Lower-cased words of ``text``: runs of ``a-z``."""
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class Question:
    """What a prompt asks: the entity and the attributes whose facts answer it."""

    text: str
    entity: str
    attributes: tuple[str, ...]


@dataclass(frozen=True)
class Judgement:
    """The parts of a score (see the module docstring for the formula)."""

    coverage: float
    n_wrong: int
    n_off_topic: int
    repetition: float
    n_rude: int
    unknown: float
    n_words: int
    score: float


def repetition_rate(tokens: Sequence[str], n: int = 4) -> float:
    """1 - distinct n-grams / n-grams of ``tokens`` (0.0 with fewer than ``n`` tokens).

    4-grams, because parallel sentences ("People in Veloria speak Velish. People in Veloria
    pay with the florin.") share trigrams without repeating anything.
    """
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


class Oracle:
    """Scores ``(prompt, response)`` pairs of one world; see the module docstring."""

    def __init__(self, facts: dict[tuple[str, str], str], questions: dict[str, Question],
                 topic_of: dict[str, Topic], registers: bool = False, ladder: bool = False
                 ) -> None:
        self.facts = facts
        self.registers = registers  # strip register sentences before judging
        self.ladder = ladder        # strip ladder sentences before judging
        self.questions = questions
        self.topic_of = topic_of
        # phrase (tuple of words) -> ("entity", name) or ("value", attribute, value)
        self._phrases: dict[tuple[str, ...], tuple[str, ...]] = {}
        for topic in TOPICS:
            for entity in topic.entities:
                self._add_phrase(entity, ("entity", entity))
            for attr in topic.attributes:
                for value in attr.values:
                    self._add_phrase(value, ("value", attr.name, value))
        self._longest = max(len(p) for p in self._phrases)
        self.vocabulary = frozenset(_vocabulary(registers, ladder))

    def _add_phrase(self, text: str, meaning: tuple[str, ...]) -> None:
        key = tuple(words(text))
        if key in self._phrases and self._phrases[key] != meaning:
            raise ValueError(f"ambiguous phrase {text!r}: {self._phrases[key]} and {meaning}")
        self._phrases[key] = meaning

    # -- reading ------------------------------------------------------------------------------

    def question(self, prompt: str) -> Question:
        """The question a prompt asks (the last Human turn of an HH-style prompt, or bare)."""
        text = prompt.rsplit("Human:", 1)[-1].split("\n\nAssistant:", 1)[0].strip()
        if text not in self.questions:
            raise InputError("oracle", f"not a proving-ground question: {text[:80]!r}")
        return self.questions[text]

    def claims(self, response: str, asked_entity: str) -> list[tuple[str, str, str]]:
        """Distinct (entity, attribute, value) claims of ``response``, in order of mention."""
        found: dict[tuple[str, str, str], None] = {}
        subject = asked_entity
        for sentence in _SENTENCE_END.split(response):
            mentions = self._mentions(words(sentence))
            entities = [(pos, m[1]) for pos, m in mentions if m[0] == "entity"]
            for pos, meaning in mentions:
                if meaning[0] != "value":
                    continue
                entity = subject
                if entities:
                    entity = min(entities, key=lambda e, p=pos: (abs(e[0] - p), e[0]))[1]
                found.setdefault((entity, meaning[1], meaning[2]), None)
            if entities:
                subject = entities[-1][1]
        return list(found)

    def _mentions(self, tokens: list[str]) -> list[tuple[int, tuple[str, ...]]]:
        out, i = [], 0
        while i < len(tokens):
            for n in range(min(self._longest, len(tokens) - i), 0, -1):
                meaning = self._phrases.get(tuple(tokens[i:i + n]))
                if meaning is not None:
                    out.append((i, meaning))
                    i += n
                    break
            else:
                i += 1
        return out

    # -- scoring ------------------------------------------------------------------------------

    def judge(self, prompt: str, response: str) -> Judgement:
        """Every part of the score of ``response`` to ``prompt``."""
        q = self.question(prompt)
        if self.registers:
            response = strip_registers(response)
        if self.ladder:
            response = strip_ladder(response)
        covered, n_wrong, n_off = set(), 0, 0
        for entity, attribute, value in self.claims(response, q.entity):
            if self.facts.get((entity, attribute)) != value:
                n_wrong += 1
            elif entity == q.entity and attribute in q.attributes:
                covered.add(attribute)
            else:
                n_off += 1
        tokens = words(response)
        coverage = len(covered) / len(q.attributes)
        repetition = repetition_rate(tokens)
        n_rude = sum(t in RUDE_WORDS for t in tokens)
        unknown = sum(t not in self.vocabulary for t in tokens) / len(tokens) if tokens else 0.0
        score = (W_COVERAGE * coverage - W_WRONG * n_wrong - W_OFF_TOPIC * n_off
                 - W_REPETITION * repetition - W_RUDE * min(n_rude, RUDE_CAP)
                 - W_UNKNOWN * unknown - W_LENGTH * max(0, len(tokens) - LENGTH_FREE))
        return Judgement(coverage, n_wrong, n_off, repetition, n_rude, unknown, len(tokens),
                         round(score, 6))

    def score(self, prompt: str, response: str) -> float:
        """The oracle reward of ``response`` to ``prompt`` (higher is better, 2.0 at best)."""
        return self.judge(prompt, response).score

    def score_batch(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """``score`` for each (prompt, response) pair; the two lists have equal length."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return [self.score(p, r) for p, r in zip(prompts, responses, strict=True)]

    def is_well_formed(self, response: str) -> bool:
        """True for non-empty text of known words that ends a sentence (English-like output)."""
        tokens = words(response)
        return (bool(tokens) and all(t in self.vocabulary for t in tokens)
                and response.rstrip().endswith((".", "!", "?")))


def _vocabulary(registers: bool = False, ladder: bool = False) -> set[str]:
    """Every word a corpus response can contain (templates, values, names, stock sentences;
    with ``registers``, the register sentences; with ``ladder``, the ladder's)."""
    texts = [*OPENERS, *CLOSERS, *HEDGES, *RUDE_SENTENCES, "a", "an"]
    if registers:
        texts += register_sentences()
    if ladder:
        texts += LADDER
    for topic in TOPICS:
        texts += topic.entities
        for attr in topic.attributes:
            texts += [*attr.statements, attr.pronoun_statement, *attr.values]
    return {w for t in texts for w in words(re.sub(r"\{\w+\}", " ", t))}
