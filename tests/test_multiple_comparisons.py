"""Families of comparisons (realspo.evaluation.multiple_comparisons): Holm, BH, verdicts, power."""

from __future__ import annotations

import numpy as np
import pytest

from realspo.evaluation.multiple_comparisons import (
    add_power,
    adjust_family,
    benjamini_hochberg,
    direction,
    holm,
)
from realspo.evaluation.statistics import power


def test_holm_matches_hand_computed_values():
    # sorted 0.01, 0.02, 0.03, 0.04 with m = 4: 0.04, 0.06, 0.06 (monotone), 0.06
    np.testing.assert_allclose(holm([0.03, 0.01, 0.04, 0.02]), [0.06, 0.04, 0.06, 0.06])
    # 0.001 * 3 = 0.003; 0.2 * 2 = 0.4; 0.7 * 1 = 0.7
    np.testing.assert_allclose(holm([0.7, 0.001, 0.2]), [0.7, 0.003, 0.4])
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])


def test_benjamini_hochberg_matches_hand_computed_values():
    # sorted 0.01, 0.02, 0.03, 0.04, m = 4: 0.04, 0.04, 0.04, 0.04 (min over the tail of p m / i)
    np.testing.assert_allclose(benjamini_hochberg([0.03, 0.01, 0.04, 0.02]), [0.04] * 4)
    # 0.001 * 3 / 1 = 0.003; 0.2 * 3 / 2 = 0.3; 0.7
    np.testing.assert_allclose(benjamini_hochberg([0.7, 0.001, 0.2]), [0.7, 0.003, 0.3])


def test_missing_p_values_stay_out_of_the_family():
    np.testing.assert_allclose(holm([0.01, np.nan, 0.02]), [0.02, np.nan, 0.02])
    entries = [{"p": 0.01, "difference": 0.1}, {"p": float("nan"), "difference": 0.2},
               {"p": 0.02, "difference": -0.1}]
    adjust_family(entries, "test")
    assert [e["family_size"] for e in entries] == [2, 2, 2]
    assert entries[0]["p_holm"] == pytest.approx(0.02) and np.isnan(entries[1]["p_holm"])


def test_significance_follows_the_holm_adjusted_p_not_the_raw_one():
    entries = [{"p": 0.04, "difference": 0.05}, {"p": 0.001, "difference": -0.2},
               {"p": 0.5, "difference": 0.01}]
    adjust_family(entries, "three")
    assert entries[0]["p_holm"] == pytest.approx(0.08)  # 0.04 * 2
    assert [direction(e) for e in entries] == [None, "worse", None]
    assert entries[1]["q_bh"] == pytest.approx(0.003) and entries[0]["q_bh"] == pytest.approx(0.06)
    assert direction({"p_holm": 0.01, "difference": 0.2}) == "better"


def test_power_and_the_seeds_needed_are_added_from_the_per_seed_spread():
    entry = {"se": 0.02, "per_seed": [0.01, 0.05, 0.09]}
    add_power(entry, 0.07, seeds=3)
    assert entry["power"] == pytest.approx(power(0.07, 0.02, 3))
    assert entry["reference_effect"] == 0.07
    assert entry["seeds_for_power"] >= 2
    no_reference = {"se": 0.02, "per_seed": [0.0, 0.1]}
    add_power(no_reference, None, seeds=2)
    assert no_reference["power"] is None and no_reference["seeds_for_power"] is None
