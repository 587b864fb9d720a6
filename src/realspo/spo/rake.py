"""RAKE key-phrase extraction: what SPO treats as the "key content" of a response.

RAKE (Rapid Automatic Keyword Extraction; Rose, Engel, Cramer, Cowley 2010, "Automatic
keyword extraction from individual documents"), offline and deterministic:

1. Words are runs of letters/digits (any script), with inner apostrophes or hyphens kept
   (``don't``, ``state-of-the-art``). Numbers stay whole: a decimal point or a comma
   between digits does not split them (``8.05``, ``1,234,567``, version ``3.11.7``), nor
   does a trailing ``%`` (``45%``) or a leading minus sign (``-3``, ``\u22123``) that no
   word precedes; a unit glued on stays too (``10km``). Matching is case-insensitive.
2. Candidate phrases are maximal runs of consecutive non-stopwords not separated by
   punctuation or a line break. Stopwords come from ``realspo/data/stopwords_en.txt``,
   shipped with the package (nothing is downloaded). Candidates longer than ``max_words``
   words are dropped before scoring (as rake-nltk does), so long runs cannot dominate.
3. Over all candidate occurrences, ``freq(w)`` counts occurrences of word ``w`` and
   ``deg(w)`` sums the lengths (in words) of the candidates it occurs in, so
   ``deg(w) = freq(w) + co-occurrences``. Word score = ``deg(w) / freq(w)``.
4. Phrase score = sum of its word scores. Equal phrases (case-insensitive) are one
   :class:`KeyPhrase` carrying the character span of every occurrence.
5. Phrases are ranked by score, descending; ties by first occurrence.

Numbers are ordinary words here (``9 minutes`` is key content of a recipe), and a number is
one word however it is written (``About 8.05 km.`` -> ``8.05 km``, never ``8``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

# A number (digits joined by "." or "," between digits, then "%" or glued letters: 8.05,
# 1,234,567, 3.11.7, 45%, 10km) or a run of letters/digits of any script (``[^\W_]``).
_UNIT = r"(?:\d+(?:[.,]\d+)*(?:%|[^\W_]*)|[^\W_]+)"
# Units joined by inner apostrophes or hyphens, with a leading minus sign that no word
# precedes (``-3``; a hyphen after a word joins it instead: ``covid-19``, ``5-10``).
_WORD = re.compile(rf"(?:(?<![^\W_])[-\u2212](?=\d))?{_UNIT}(?:['\u2019\-]{_UNIT})*")
# Only these may sit between two words of one phrase; anything else (punctuation, line
# breaks, tabs, symbols) ends the phrase, as RAKE's phrase delimiters do.
_SAME_PHRASE_GAP = re.compile(r"[ \u00a0\u2009\u202f]+")


@dataclass(frozen=True)
class KeyPhrase:
    """A ranked RAKE phrase: lower-cased ``text``, ``score``, and ``spans``, the
    ``(start, end)`` character offsets of every occurrence in the source text (sorted)."""

    text: str
    score: float
    spans: tuple[tuple[int, int], ...]


@lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    """The shipped English stopword list (lower case, ASCII apostrophes)."""
    text = resources.files("realspo").joinpath("data/stopwords_en.txt").read_text(encoding="utf-8")
    return frozenset(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def _normalise(word: str) -> str:
    return word.lower().replace("\u2019", "'")


def candidate_phrases(text: str) -> list[tuple[tuple[str, ...], int, int]]:
    """Every candidate occurrence as ``(words, start, end)``, in text order, before the
    ``max_words`` filter: maximal stopword- and punctuation-free runs of words."""
    stop = stopwords()
    runs: list[tuple[tuple[str, ...], int, int]] = []
    words: list[str] = []
    start = end = 0
    for match in _WORD.finditer(text):
        word = _normalise(match.group())
        gap = text[end : match.start()]
        if words and not _SAME_PHRASE_GAP.fullmatch(gap):
            runs.append((tuple(words), start, end))
            words = []
        if word in stop:
            if words:
                runs.append((tuple(words), start, end))
                words = []
        else:
            if not words:
                start = match.start()
            words.append(word)
        end = match.end()
    if words:
        runs.append((tuple(words), start, end))
    return runs


def extract_key_phrases(text: str, *, max_words: int = 4) -> list[KeyPhrase]:
    """RAKE key phrases of ``text``, best first (see the module docstring for the rules).

    Returns an empty list for text without candidate phrases (empty, only stopwords, ...).
    """
    if max_words < 1:
        raise ValueError(f"max_words must be >= 1, got {max_words}")
    occurrences = [c for c in candidate_phrases(text) if len(c[0]) <= max_words]
    freq: dict[str, int] = defaultdict(int)
    degree: dict[str, int] = defaultdict(int)
    spans: dict[tuple[str, ...], list[tuple[int, int]]] = defaultdict(list)
    for words, start, end in occurrences:
        for word in words:
            freq[word] += 1
            degree[word] += len(words)
        spans[words].append((start, end))
    phrases = [
        KeyPhrase(" ".join(words), sum(degree[w] / freq[w] for w in words), tuple(where))
        for words, where in spans.items()
    ]
    # sorted() is stable and ``spans`` preserves first-occurrence order, so ties keep it;
    # rounding makes equal sums computed in different orders compare equal.
    return sorted(phrases, key=lambda p: -round(p.score, 9))
