"""The quality ladder of the ``premise`` world: quality shows on the surface in one ordinal way.

REAL (arXiv 2409.17169) rests on a premise with two halves: pairs whose responses look alike
are the pairs annotators get wrong, and responses that look alike differ little in quality.
The default world has neither (a wrong answer reads like a right one), and the registers of
``--world-coupling`` (:mod:`realspo.proving_ground.registers`) give each *kind* of bad answer
its own style, so two bad answers of different kinds look far apart yet differ little in
reward. The ladder is kind-agnostic and ordinal instead: every corpus response opens with
``m`` hedge sentences, the first ``m`` of :data:`LADDER` in order, where

    m = clip(floor(2 - content + 1/2), 0, 4)        content = the oracle's score of the response

so a complete, correct answer (2.0) carries none, a half-right one (about 0) two, and a wrong
or rude one (-2 or less) all four. Two responses with similar ``m`` share their opening words
and are close in reward; responses far apart on the ladder are far apart in reward.

Like registers, the ladder is style, not content: the oracle of the ``premise`` world removes
every ladder sentence before judging (:func:`strip_ladder`) and knows their words, so a
response's score is that of its content. No ladder sentence names an entity or a fact value,
or uses a rude word (tests check).
"""

from __future__ import annotations

import math
import re

LADDER: tuple[str, ...] = ("I may be wrong here.", "My memory is shaky on this.",
                           "Please double check it.", "Treat this as a rough guess.")
MAX_RUNGS = len(LADDER)


def rungs(content_score: float) -> int:
    """How many ladder sentences a response scoring ``content_score`` carries (0 to 4)."""
    return int(min(MAX_RUNGS, max(0, math.floor(2.0 - content_score + 0.5))))


def with_ladder(text: str, content_score: float) -> str:
    """``text`` (a corpus response, starting with a space) after its rungs of the ladder."""
    prefix = "".join(" " + s for s in LADDER[:rungs(content_score)])
    return prefix + text


_STRIP = re.compile("|".join(r"\s?" + re.escape(s) for s in sorted(LADDER, key=len, reverse=True)))


def strip_ladder(text: str) -> str:
    """``text`` without its ladder sentences (each with the space before it): what the
    ``premise`` world's oracle judges."""
    return _STRIP.sub("", text)
