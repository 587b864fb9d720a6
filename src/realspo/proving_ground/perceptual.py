"""The simulated annotator's eye: a TF-IDF bag-of-words similarity between two responses.

``realspo demo --annotator-confusion K`` makes the simulated annotator guess when two
responses *look* alike to it. What looks alike must not be what REAL selects by (the SFT
model's hidden states, :func:`realspo.embeddings.embed.embed_with_causal_lm`): an annotator who
confused exactly the pairs the selector calls similar would build the premise in by definition.
So the annotator's similarity is a different, deliberately plain measure of the surface:

* a response is its bag of lower-cased words (the oracle's tokenisation, ``[a-z]+``);
* each word is weighted by term frequency x smoothed inverse document frequency,
  ``idf(w) = ln((1 + N) / (1 + df(w))) + 1``, fitted on the world's SFT corpus (the texts an
  annotator of this world has read; a word it never saw gets the largest idf), so template
  words ("the", "is", "of") count little and entities, values and stock phrases count much;
* the similarity of two responses is the cosine of their vectors, in [0, 1] (0 when either is
  empty of words).

Why this: it is cheap (no model, ~2,400 pairs per seed in well under a second), deterministic
and transparent, and it sees what a hurried reader sees: two answers built from the same words
look alike even when one of them states the wrong value.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

from realspo.proving_ground.oracle import words


class PerceptualEmbedder:
    """TF-IDF vectors over words, fitted once on a corpus (see the module docstring)."""

    def __init__(self, documents: Iterable[str]) -> None:
        df: Counter[str] = Counter()
        n = 0
        for doc in documents:
            df.update(set(words(doc)))
            n += 1
        self.idf = {w: math.log((1 + n) / (1 + c)) + 1.0 for w, c in df.items()}
        self.unseen_idf = math.log(1 + n) + 1.0

    def vector(self, text: str) -> dict[str, float]:
        """The unit-length TF-IDF vector of ``text`` (empty for a text without words)."""
        tf = Counter(words(text))
        v = {w: c * self.idf.get(w, self.unseen_idf) for w, c in tf.items()}
        norm = math.sqrt(sum(x * x for x in v.values()))
        return {w: x / norm for w, x in v.items()} if norm else {}

    def similarity(self, a: str, b: str) -> float:
        """Cosine of the two texts' vectors, in [0, 1]."""
        return cosine(self.vector(a), self.vector(b))


def cosine(u: dict[str, float], v: dict[str, float]) -> float:
    """Dot product of two unit-length sparse vectors (0.0 if either is empty)."""
    if len(u) > len(v):
        u, v = v, u
    return min(1.0, sum(x * v.get(w, 0.0) for w, x in u.items()))
