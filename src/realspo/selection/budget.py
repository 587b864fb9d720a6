"""How many pairs to keep: a budget is a count or a fraction of the eligible prompts.

A prompt is *eligible* when it has at least two distinct responses (one pair per prompt), so
a fraction is a share of those prompts, not of the input rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from realspo.errors import ConfigError


def parse_budget(text: str | int | float) -> int | float:
    """A budget as a count (``"100"``, ``100`` -> int >= 1) or a fraction (``"0.5"``,
    ``"50%"``, ``0.5`` -> float in (0, 1]) of the eligible prompts."""
    value: int | float
    if isinstance(text, bool):
        raise ConfigError(f"--budget: expected a count or a fraction, got {text!r}")
    if isinstance(text, (int, float)):
        value = text
    else:
        raw = str(text).strip()
        try:
            if raw.endswith("%"):
                value = float(raw[:-1]) / 100.0
            elif raw.lstrip("+").isdigit():
                value = int(raw)
            else:
                value = float(raw)
        except ValueError:
            raise ConfigError(
                f"--budget: expected a count (e.g. 100) or a fraction (e.g. 0.5), got {text!r}"
            ) from None
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(f"--budget: a count must be at least 1, got {value}")
        return value
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise ConfigError(f"--budget: a fraction must be in (0, 1], got {text!r}")
    return float(value)


def resolve_budget(budget: int | float | None, eligible: int) -> int:
    """Number of pairs to keep.

    Args:
        budget: None (all eligible prompts), a fraction of them (rounded half up, at least 1)
            or a count, as :func:`parse_budget` reads it.
        eligible: the number of prompts with two distinct responses.

    Returns:
        The number of pairs to keep.

    Raises:
        ConfigError: a malformed budget, or more pairs than ``eligible``.
    """
    if budget is None:
        return eligible
    budget = parse_budget(budget)
    n = budget if isinstance(budget, int) else max(1, math.floor(budget * eligible + 0.5))
    if n > eligible:
        raise ConfigError(
            f"--budget {budget} asks for {n} pairs, but only {eligible} prompts have two "
            "distinct responses (one pair per prompt)"
        )
    return n


def count_eligible(group_sizes: Sequence[int], response_keys: np.ndarray | None = None) -> int:
    """Prompts with at least two distinct responses (cheap: looks at keys, not embeddings)."""
    sizes = np.asarray(group_sizes, dtype=np.int64)
    if response_keys is None:
        return int((sizes >= 2).sum())
    keys = np.asarray(response_keys, dtype=np.int64)
    if keys.size == 0:
        return 0
    keys = keys - keys.min()
    span = int(keys.max()) + 1
    group = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    # Distinct (group, key) combinations, encoded as one integer each, counted per group.
    combos = np.unique(group * span + keys)
    distinct = np.bincount(combos // span, minlength=len(sizes))
    return int((distinct >= 2).sum())
