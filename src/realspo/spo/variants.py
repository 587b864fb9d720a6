"""SPO's preference-degree task: degree variants and their labels (the head: :mod:`realspo.spo.head`).

SPO (Li, Huang et al., arXiv 2409.17791, EMNLP 2024 Findings) removes different amounts of
a response's key content (found with RAKE, :mod:`realspo.spo.rake`) and trains a small
classifier on the policy's hidden states to recognise how much was removed. Its loss is
added to any preference loss::

    L = L_pref + lambda * CE(head(h_variant), degree_class)      (averaged over variants)

Our instantiation (the SPO paper does not fix these; each is a :class:`SPOConfig` option):

* **Degrees.** ``D = levels`` variants per response. With ``n`` units, level ``d``
  removes ``k_d = ceil(d * n / D)`` of them: the first ``k_d`` of a ranking (nested, so
  higher levels always remove a superset). Level 0 is the original. With ``n >= D - 1`` the
  ``k_d`` are strictly increasing, so key content strictly decreases with the level.
* **What goes first and what goes** (:mod:`realspo.spo.units`). ``selection``: fact-like
  key phrases first (``"facts"``, the default: numbers and the last key phrase of each
  sentence, then names), RAKE's ranking (``"top"``) or a seeded permutation
  (``"random"``). ``removal``: a unit is a key phrase, every occurrence (``"phrases"``,
  the default) or a sentence holding one (``"sentences"``: no word debris, but responses
  need ``D`` such sentences). ``"facts"`` became the default when the demo's manipulation
  check showed that ``"top"`` often removes words around the fact and leaves the fact
  (docs/explanation/spo.md, "What the variants remove").
* **Ungraded responses are skipped.** A response with fewer than ``D - 1`` units
  (some levels would be identical texts with different labels, i.e. label noise), or
  whose highest level is left without any word, contributes no variants to the degree
  loss; :func:`variant_stats` counts them.
* **Labels.** ``"separate"``: chosen-derived variants get classes ``0..D-1``,
  rejected-derived ``D..2D-1`` (the head also learns chosen vs rejected); ``"shared"``:
  ``0..D-1`` for both.
* **Head.** ``Linear(H, h) -> GELU -> Linear(h, C)`` on the policy's final hidden state at
  the last response token (``pooling="last"``) or its mean over response tokens
  (``"mean"``); trained alongside the policy, saved beside the checkpoint
  (``spo_head.safetensors`` + ``spo_head.json``), never inside the exported model.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass
from functools import lru_cache

from realspo.errors import ConfigError
from realspo.spo.rake import extract_key_phrases
from realspo.spo.units import fact_order, ranked_sentences

LABEL_MODES = ("separate", "shared")
POOLINGS = ("last", "mean")
SELECTIONS = ("top", "random", "facts")
REMOVALS = ("phrases", "sentences")


@dataclass(frozen=True)
class SPOConfig:
    """Options of the degree task. ``weight`` is lambda; the defaults (D = 3, lambda = 0.1)
    were chosen by the sweep in docs/experiments/spo-defaults.md."""

    levels: int = 3
    weight: float = 0.1
    labels: str = "separate"
    pooling: str = "last"
    selection: str = "facts"  # measured: docs/explanation/spo.md, "What the variants remove"
    removal: str = "phrases"
    sample_levels: int | None = None  # levels per response per step; None = all D
    seed: int = 0
    head_hidden: int | None = None  # MLP width; None = min(hidden size, 512)
    max_words: int = 4  # RAKE: longest candidate phrase, in words

    def validate(self) -> None:
        if self.levels < 2:
            raise ConfigError(f"spo levels must be >= 2 (level 0 is the original), got {self.levels}")
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ConfigError(f"spo weight must be a finite number >= 0, got {self.weight}")
        for name, value, allowed in (("labels", self.labels, LABEL_MODES),
                                     ("pooling", self.pooling, POOLINGS),
                                     ("selection", self.selection, SELECTIONS),
                                     ("removal", self.removal, REMOVALS)):
            if value not in allowed:
                raise ConfigError(f"spo {name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.sample_levels is not None and not 1 <= self.sample_levels <= self.levels:
            raise ConfigError(f"spo sample_levels must be in 1..{self.levels} (levels), got {self.sample_levels}")
        if self.head_hidden is not None and self.head_hidden < 1:
            raise ConfigError(f"spo head_hidden must be >= 1, got {self.head_hidden}")
        if self.max_words < 1:
            raise ConfigError(f"spo max_words must be >= 1, got {self.max_words}")


# The defaults of ``realspo train --spo-*`` and ``realspo spo-preview`` (one place for both).
SPO_DEFAULTS = SPOConfig()


@dataclass
class DegreeVariant:
    """Level ``level`` of a response: its ``text`` and the key phrases ``removed`` (best first)."""

    level: int
    text: str
    removed: list[str]


# ----------------------------------------------------------------------------- variants

def _seeded_rng(*parts: object) -> random.Random:
    # hash() of str is salted per process; sha256 keeps variants identical across runs/ranks.
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def removal_count(level: int, num_phrases: int, levels: int) -> int:
    """``k_d = ceil(d * n / D)``: how many key phrases level ``d`` removes."""
    return -(-level * num_phrases // levels)


_HSPACE = " \t\u00a0"
_PUNCT = ",;:.!?"
_EMPTY_PAIRS = (("(", ")"), ("[", "]"), ("{", "}"), ("**", "**"), ("__", "__"), ("`", "`"))
_BARE_BULLET = re.compile(r"(?:^|\n)[ \t]*(?:[-*+]|\d+[.)])$")


def _join(left: str, right: str) -> str:
    """Join the text before and after a removed span, tidying only that junction."""
    left, right = left.rstrip(_HSPACE), right.lstrip(_HSPACE)
    for opening, closing in _EMPTY_PAIRS:  # "()" or "** **" left empty: drop both
        if left.endswith(opening) and right.startswith(closing):
            return _join(left[: -len(opening)], right[len(closing):])
    if right[:1] and right[0] in _PUNCT:
        if not left or left.endswith("\n"):  # punctuation would open a line
            return _join(left, right[1:])
        if left[-1] in _PUNCT:  # ", ," -> ","; ", ." -> "."; ". ," -> "."
            if left[-1] in ",;:" and right[0] in ".!?":
                return _join(left[:-1], right)
            return _join(left, right[1:])
    if (not right or right.startswith("\n")) and _BARE_BULLET.search(left):
        return _join(_BARE_BULLET.sub("", left), right)  # a list item left empty
    glued = (not left or not right or left[-1] in "\n([{" or right[0] in "\n,.;:!?)]}")
    return left + ("" if glued else " ") + right


def remove_spans(text: str, spans: list[tuple[int, int]]) -> str:
    """Delete the character ``spans`` from ``text``, tidying the whitespace and punctuation
    left at each cut (doubled spaces, ``" ,"``, ``", ,"``, empty brackets or emphasis, empty
    list items); text away from the cuts is kept as it was, and so is leading whitespace
    (HH-style responses start with a space)."""
    if not spans:
        return text
    kept, cursor = [], 0
    for start, end in sorted(spans):
        kept.append(text[cursor:start] if start >= cursor else "")
        cursor = max(cursor, end)
    kept.append(text[cursor:])
    out = kept[0]
    for piece in kept[1:]:
        out = _join(out, piece)
    body = out.strip()
    return text[: len(text) - len(text.lstrip())] + body if body else ""


def degree_variants(
    response: str, levels: int, *, selection: str = "facts", seed: int = 0, max_words: int = 4,
    removal: str = "phrases",
) -> list[DegreeVariant]:
    """The ``levels`` degree variants of ``response`` (level 0 = the original text).

    SPO's self-supervised task: level ``l`` removes a growing share of the response's key
    content (RAKE key phrases, or the sentences holding them), and the degree head learns to
    tell the levels apart. Deterministic for ``(response, selection, seed, max_words,
    removal)``.

    Args:
        response: the response text.
        levels: the number of degrees D, the original included (``--spo-levels``).
        selection: which key content goes first: ``facts`` (phrases that state facts),
            ``top`` (RAKE's highest-scoring) or ``random`` (seeded).
        seed: the seed of ``selection="random"``.
        max_words: the longest key phrase RAKE keeps, in words.
        removal: remove the key ``phrases`` themselves or the ``sentences`` that hold them.

    Returns:
        Always ``levels`` variants; each has its ``level``, ``text`` and ``removed`` (the key
        phrases or sentences it removed, best first). With fewer than ``levels - 1`` units
        some are equal (see :func:`is_graded`).

    Raises:
        ConfigError: an unknown ``selection`` or ``removal``, or ``levels`` < 1.
    """
    if selection not in SELECTIONS:
        raise ConfigError(f"spo selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
    if removal not in REMOVALS:
        raise ConfigError(f"spo removal must be one of {', '.join(REMOVALS)}, got {removal!r}")
    if levels < 1:
        raise ConfigError(f"spo levels must be >= 1, got {levels}")
    phrases = extract_key_phrases(response, max_words=max_words)
    order = list(range(len(phrases)))
    if selection == "random":
        _seeded_rng("degree-variants", seed, response).shuffle(order)
    elif selection == "facts":
        order = fact_order(response, phrases)
    # (rank, what is removed, its spans), in removal order; ``removed`` lists them by rank
    units: list[tuple[int, str, list[tuple[int, int]]]]
    if removal == "sentences":
        units = [(n, response[a:b], [(a, b)])
                 for n, (a, b) in enumerate(ranked_sentences(response, phrases, order))]
    else:
        units = [(i, phrases[i].text, list(phrases[i].spans)) for i in order]
    variants = []
    for level in range(levels):
        chosen = sorted(units[: removal_count(level, len(units), levels)])
        spans = [span for _, _, where in chosen for span in where]
        text = response if level == 0 else remove_spans(response, spans)
        variants.append(DegreeVariant(level, text, [u for _, u, _ in chosen]))
    return variants


def is_graded(variants: list[DegreeVariant]) -> bool:
    """Whether the variants form a usable degree ladder: each level removes strictly more
    key phrases than the one below, and every variant still contains a word."""
    counts = [len(v.removed) for v in variants]
    strictly_more = all(a < b for a, b in zip(counts, counts[1:], strict=False))
    return strictly_more and all(re.search(r"[^\W_]", v.text) for v in variants)


@lru_cache(maxsize=65536)
def _cached_variants(response: str, levels: int, selection: str, seed: int, max_words: int,
                     removal: str) -> tuple[DegreeVariant, ...] | None:
    variants = degree_variants(response, levels, selection=selection, seed=seed,
                               max_words=max_words, removal=removal)
    return tuple(variants) if is_graded(variants) else None


def variants_for(response: str, cfg: SPOConfig) -> list[DegreeVariant] | None:
    """Cached degree variants of ``response`` under ``cfg``, or None when it is not graded.

    RAKE runs once per distinct text per process.

    Args:
        response: the response text.
        cfg: SPO's options (levels, selection, removal, seed, key-phrase length).

    Returns:
        The variants of :func:`degree_variants`, or None when they do not form a usable
        ladder (:func:`is_graded`): the degree loss then skips the response.
    """
    found = _cached_variants(response, cfg.levels, cfg.selection, cfg.seed, cfg.max_words,
                             cfg.removal)
    return None if found is None else list(found)


def precompute_variants(responses: list[str], cfg: SPOConfig) -> dict[str, list[DegreeVariant] | None]:
    """Variants of every distinct response (None = skipped), e.g. once before training."""
    return {r: variants_for(r, cfg) for r in dict.fromkeys(responses)}


def variant_stats(variants: dict[str, list[DegreeVariant] | None]) -> dict[str, int]:
    """``{"graded": ..., "skipped": ...}`` counts of distinct responses, for logging."""
    skipped = sum(v is None for v in variants.values())
    return {"graded": len(variants) - skipped, "skipped": skipped}


# ----------------------------------------------------------------------------- labels

def num_classes(levels: int, labels: str) -> int:
    """Classes of the degree head: ``2D`` for ``"separate"`` labels, ``D`` for ``"shared"``."""
    if labels not in LABEL_MODES:
        raise ConfigError(f"spo labels must be one of {', '.join(LABEL_MODES)}, got {labels!r}")
    return 2 * levels if labels == "separate" else levels


def degree_label(level: int, from_chosen: bool, levels: int, labels: str) -> int:
    """Class of a variant: ``level`` (+ ``D`` for rejected-derived ones under ``"separate"``)."""
    if not 0 <= level < levels:
        raise ValueError(f"level must be in 0..{levels - 1}, got {level}")
    offset = levels if labels == "separate" and not from_chosen else 0
    num_classes(levels, labels)  # validates ``labels``
    return level + offset


@dataclass(frozen=True)
class PlannedVariant:
    """One degree-task example of a step: level ``level`` of pair ``pair``'s chosen
    (``from_chosen``) or rejected response, its ``text`` and class ``label``."""

    pair: int
    from_chosen: bool
    level: int
    text: str
    label: int
    weight: float = 1.0  # in the degree loss; one response's weights sum to 1


def _levels_and_weights(cfg: SPOConfig, rng: random.Random, always_original: bool
                        ) -> list[tuple[int, float]]:
    """The levels one response contributes this step, each with its loss weight.

    All ``D`` levels weigh ``1/D`` each. Sampling ``k`` of them uniformly keeps ``1/k`` each.
    With ``always_original`` the original (level 0) is always kept, at its full-loss weight
    ``1/D``, and ``k`` of the ``D - 1`` other levels are drawn, each weighing ``(D-1)/(D k)``:
    in expectation the weighted loss is the all-levels loss, while the original, which a
    trainer gets for free from the preference pass, is never wasted.
    """
    levels, k = cfg.levels, cfg.sample_levels
    if always_original:
        if k is None or k >= levels - 1:
            return [(d, 1.0 / levels) for d in range(levels)]
        drawn = sorted(rng.sample(range(1, levels), k))
        return [(0, 1.0 / levels)] + [(d, (levels - 1) / (levels * k)) for d in drawn]
    if k is None or k >= levels:
        return [(d, 1.0 / levels) for d in range(levels)]
    return [(d, 1.0 / k) for d in sorted(rng.sample(range(levels), k))]


def plan_variants(
    prompts: list[str], chosen: list[str], rejected: list[str], cfg: SPOConfig, step: int,
    cache: dict[str, list[DegreeVariant] | None] | None = None, always_original: bool = False,
) -> list[PlannedVariant]:
    """The degree-task examples of one training step, in the order of :func:`build_variant_batch`
    (which returns the same examples as lists), with the pair, side, level and loss weight of
    each, so a trainer can reuse its preference pass for level 0 (the original response).
    ``always_original``: see :func:`_levels_and_weights`."""
    if not len(prompts) == len(chosen) == len(rejected):
        raise ValueError(f"prompts/chosen/rejected lengths differ: {len(prompts)}, {len(chosen)}, {len(rejected)}")
    planned: list[PlannedVariant] = []
    for i in range(len(prompts)):
        for from_chosen, response in ((True, chosen[i]), (False, rejected[i])):
            variants = cache[response] if cache is not None and response in cache else variants_for(response, cfg)
            if variants is None:
                continue
            rng = _seeded_rng("sample-levels", cfg.seed, step, i, from_chosen)
            for level, weight in _levels_and_weights(cfg, rng, always_original):
                planned.append(PlannedVariant(i, from_chosen, level, variants[level].text,
                                              degree_label(level, from_chosen, cfg.levels, cfg.labels),
                                              weight))
    return planned


def build_variant_batch(
    prompts: list[str], chosen: list[str], rejected: list[str], cfg: SPOConfig, step: int,
    cache: dict[str, list[DegreeVariant] | None] | None = None,
) -> tuple[list[str], list[str], list[int]]:
    """The degree-task examples of one training step: ``(prompts, variant_texts, labels)``.

    For each pair, the variants of its chosen then its rejected response, each with the
    pair's prompt (variants share the prompt with their original, so a trainer can reuse
    its prompt encoding). All ``D`` levels, or ``cfg.sample_levels`` of them drawn
    deterministically from ``(cfg.seed, step, pair index, side)``; ungraded responses are
    skipped, so the lists may be shorter than expected, or empty. ``cache`` is an optional
    :func:`precompute_variants` result; otherwise the in-process cache is used.
    """
    planned = plan_variants(prompts, chosen, rejected, cfg, step, cache)
    return [prompts[v.pair] for v in planned], [v.text for v in planned], [v.label for v in planned]
