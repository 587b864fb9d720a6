"""The grid's family (realspo.grid.report): every cell's easy - random, Holm and BH over cells."""

from __future__ import annotations

import pytest

from realspo.grid.report import COLUMNS, adjust_grid, markdown


def _row(k: float, rho: float, p: float | None, d: float = 0.05) -> dict:
    row = {c: None for c in COLUMNS}
    row.update(K=k, RHO=rho, seeds=3 if p is not None else 0)
    if p is not None:
        row.update(easy_minus_random=d, easy_ci_low=d - 0.04, easy_ci_high=d + 0.04, easy_mde=0.1,
                   easy_p=p, easy_power=0.4, easy_seeds_for_power=7)
    return row


def test_every_cells_easy_minus_random_is_adjusted_over_the_grid():
    rows = [_row(0, 0, 0.01), _row(1, 0, 0.02), _row(4, 0, 0.3), _row(0, 1, None)]
    adjust_grid(rows)
    # Holm over the 3 finished cells: 0.03, 0.04, 0.3; BH: 0.03, 0.03, 0.3
    assert [r["easy_p_holm"] for r in rows[:3]] == pytest.approx([0.03, 0.04, 0.3])
    assert [r["easy_q_bh"] for r in rows[:3]] == pytest.approx([0.03, 0.03, 0.3])
    assert rows[3]["easy_p_holm"] is None and rows[3]["easy_q_bh"] is None


def test_the_table_marks_only_holm_significant_cells_and_states_the_family():
    # every interval excludes 0 and every raw p < 0.05; Holm over 3 cells: 0.03, 0.06, 0.06
    rows = [_row(0, 0, 0.01), _row(1, 0, 0.03), _row(4, 0, 0.045)]
    adjust_grid(rows)
    plan = {"preset": "default", "seeds": [0, 1, 2], "budget": 0.5, "steps": 10,
            "n_train_prompts": 90, "num_candidates": 4, "n_test_prompts": 100}
    text = markdown(rows, {"plan": plan})
    lines = [line for line in text.splitlines() if line.startswith(("| 0 |", "| 1 |", "| 4 |"))]
    assert "*" in lines[0] and "*" not in lines[1] and "*" not in lines[2]
    assert "every cell's easy - random, 3 comparisons" in text and "Holm" in text
    assert "5.36 x se with 3 seeds" in text
    assert "| 0.010 | 0.030 | 0.030 | 0.40 | 7 |" in lines[0]
