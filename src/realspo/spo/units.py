"""What a degree level removes: key phrases in which order, and whole sentences around them.

:func:`realspo.spo.variants.degree_variants` removes the first ``k_d`` units of a ranked list.
Two choices shape what a variant loses (both :class:`realspo.spo.variants.SPOConfig` options):

* **Order** (``selection``): RAKE's ranking (``"top"``), a seeded shuffle (``"random"``), or
  ``"facts"``: phrases that look like facts first. A phrase is *fact-like* when it holds a
  number (``8.05 km``, ``1990``) or a capitalised word that does not open its sentence (a
  name: ``Marnet``), or when it is the last key phrase of its sentence: English puts the new
  information of a clause at its end ("end focus": in "The capital of Veloria is Marnet." the
  answer is the last phrase, in "Cook the soup for ten minutes." too). Fact-like phrases come
  first, then the rest, each group in RAKE order.
* **Unit** (``removal``): the bare phrases (``"phrases"``: "The capital of Veloria is
  Marnet." minus ``capital`` and ``marnet`` reads "The of Veloria is.", debris a classifier
  can spot without understanding anything), or the whole sentences that contain them
  (``"sentences"``: a sentence goes as a whole, so what is left reads as normal text with
  less in it). Sentences are ranked by their best-ranked phrase.
"""

from __future__ import annotations

import re

from realspo.spo.rake import KeyPhrase

# A sentence ends at . ! ? (runs, with closing quotes or brackets) followed by whitespace or
# the end, or at a line break: "8.05" or "e.g.x" does not end one.
_SENTENCE = re.compile(r"[^\n]*?(?:[.!?]+[\"')\]]*(?=\s|$)|(?=\n)|$)")
_NUMBER = re.compile(r"\d")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every sentence of ``text`` that holds a word, in order; a span
    starts at the sentence's first non-space character and ends after its punctuation."""
    spans = []
    for match in _SENTENCE.finditer(text):
        start, end = match.start(), match.end()
        while start < end and text[start].isspace():
            start += 1
        if start < end and re.search(r"[^\W_]", text[start:end]):
            spans.append((start, end))
    return spans


def _sentence_of(spans: list[tuple[int, int]], position: int) -> int:
    for i, (start, end) in enumerate(spans):
        if start <= position < end:
            return i
    return -1


def fact_tier(text: str, phrase: KeyPhrase, sentences: list[tuple[int, int]],
              last_in_sentence: set[tuple[int, int]]) -> int:
    """0 for a phrase that holds a number or ends a sentence's key phrases (at any
    occurrence), 1 for one that holds a name (a capitalised word not opening its sentence),
    2 for the rest (see the module docstring)."""
    if _NUMBER.search(phrase.text) or any(span in last_in_sentence for span in phrase.spans):
        return 0
    opening = {s for s, _ in sentences}
    for start, end in phrase.spans:
        for word in re.finditer(r"[^\W\d_]+", text[start:end]):
            if word.group()[0].isupper() and start + word.start() not in opening:
                return 1
    return 2


def fact_order(text: str, phrases: list[KeyPhrase]) -> list[int]:
    """Indices of ``phrases`` (RAKE-ranked), fact-like ones first, each group in RAKE order."""
    sentences = sentence_spans(text)
    last: dict[int, tuple[int, int]] = {}
    for phrase in phrases:
        for span in phrase.spans:
            s = _sentence_of(sentences, span[0])
            if s not in last or span[0] > last[s][0]:
                last[s] = span
    ends = set(last.values())
    tier = [fact_tier(text, p, sentences, ends) for p in phrases]
    return sorted(range(len(phrases)), key=lambda i: (tier[i], i))


def ranked_sentences(text: str, phrases: list[KeyPhrase], order: list[int]) -> list[tuple[int, int]]:
    """Spans of the sentences holding a key phrase, ranked by their best phrase under
    ``order`` (indices into ``phrases``); a phrase in several sentences ranks each of them."""
    sentences = sentence_spans(text)
    ranked: list[int] = []
    for i in order:
        for start, _ in phrases[i].spans:
            s = _sentence_of(sentences, start)
            if s >= 0 and s not in ranked:
                ranked.append(s)
    return [sentences[s] for s in ranked]
