"""Registers: how a low-quality response sounds, for worlds whose quality shows on the surface.

In the default world a wrong answer reads exactly like a right one ("The capital of Veloria is
Dorv." vs "... is Marnet."): quality lives in hidden facts, so nothing a similarity measure sees
tells a large reward gap from a small one (REAL's premise is absent by construction). A world
with ``coupling`` RHO > 0 (:class:`realspo.proving_ground.world.WorldConfig`) writes each
low-quality corpus response, with probability RHO, *in its own register*: one opener and one
closer sentence typical of its kind (a wrong answer sounds unsure, an off-topic one wanders).
The SFT model learns the registers with the rest of the corpus, so its samples carry them.

Registers are style, not content: the oracle of a coupled world removes every register
sentence before judging (:func:`strip_registers`) and knows their words, so a response's score
is the score of its content, with or without its register. No register sentence names an
entity or a fact value, or uses a rude word (tests/test_demo_knobs.py checks).
"""

from __future__ import annotations

import random
import re

# kind of corpus response (realspo.proving_ground.world.RESPONSE_KINDS) -> (openers, closers);
# the good kinds (correct, short, long) have none.
REGISTERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "partial": (("Partly from memory.", "I only know some of it."),
                ("The rest I would have to check.", "That is all I have on it.")),
    "wrong": (("Going from a hazy memory.", "If I recall it right, roughly so."),
              ("Do not quote me on this.", "Or something like that.")),
    "off_topic": (("On a related note.", "Here is something else entirely."),
                  ("Just a side thought.", "Anyway, that is a fun fact.")),
    "repetitive": (("Let me say it again and again.", "Once more, to be clear."),
                   ("As I keep saying.", "Again, as I said.")),
    "rude": (("Listen here, pal.", "Fine, if you must know."),
             ("Now leave me alone.", "Do not ask again.")),
    "hedge": (("Hmm, tough one.", "Well, let me think."),
              ("Sorry about that.", "Maybe try a book.")),
}


def register_sentences() -> tuple[str, ...]:
    """Every register sentence, longest first (so stripping never leaves a shorter one's rest)."""
    every = {s for openers, closers in REGISTERS.values() for s in (*openers, *closers)}
    return tuple(sorted(every, key=lambda s: (-len(s), s)))


def with_register(text: str, kind: str, rng: random.Random) -> str:
    """``text`` (a corpus response, starting with a space) between an opener and a closer of
    ``kind``'s register; unchanged for a kind without one."""
    if kind not in REGISTERS:
        return text
    openers, closers = REGISTERS[kind]
    return f" {rng.choice(openers)}{text} {rng.choice(closers)}"


def add_registers(texts: list[str], kinds: list[str], coupling: float, rng: random.Random
                  ) -> list[str]:
    """Each low-quality response of ``texts`` (of the given ``kinds``) in its register with
    probability ``coupling``. ``rng`` draws twice per response, whatever its kind, so which
    responses get one does not depend on the kinds before it."""
    out = []
    for text, kind in zip(texts, kinds, strict=True):
        registered = rng.random() < coupling
        style = random.Random(rng.random())
        out.append(with_register(text, kind, style) if registered else text)
    return out


_SENTENCES = register_sentences()
_STRIP = re.compile("|".join(r"\s?" + re.escape(s) for s in _SENTENCES))


def strip_registers(text: str) -> str:
    """``text`` without its register sentences (each with the space before it): the inverse of
    :func:`with_register`, and what a coupled world's oracle judges."""
    return _STRIP.sub("", text)
