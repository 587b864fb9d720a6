"""The label-efficiency curve in the paper's terms (realspo.arms.efficiency): on constructed
runs where easy reaches random's full-budget value at a known budget, the crossing, its
interval, the share saved, "not reached", the findings line and the figure."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from realspo.arms.efficiency import label_efficiency, paper_terms
from realspo.arms.plan import make_plan
from realspo.arms.records import DemoRun, RunRecord
from realspo.demo.figures import plot_label_efficiency
from realspo.demo.findings import _efficiency

BUDGETS = {"12.5%": 10, "25%": 20, "50%": 40, "100%": 80}
SEEDS = (0, 1, 2)
PROMPTS, SAMPLES = 120, 4


def synthetic_run(curves: dict[str, list[float]], noise: float = 0.05, seed: int = 0) -> DemoRun:
    """Runs of random and easy (DPO) at the four budgets over three seeds whose pooled mean
    sample reward is exactly ``curves[strategy][budget index]``. Each seed has a prompt effect
    shared by all its runs (held-out prompts and sampling noise are shared) and per-run noise
    centred to mean 0, so the point estimates are exact and the intervals come from the noise."""
    rng = np.random.default_rng(seed)
    plan = replace(make_plan("quick"), bootstrap_resamples=1000, seeds=SEEDS)
    runs, baseline = [], {}
    for s in SEEDS:
        prompt_effect = rng.normal(0, 0.5, PROMPTS)
        prompt_effect -= prompt_effect.mean()
        baseline[s] = prompt_effect + rng.normal(0, 0.3, PROMPTS)
        for strategy, values in curves.items():
            for (budget, n), value in zip(BUDGETS.items(), values, strict=True):
                sample_noise = rng.normal(0, noise, (PROMPTS, SAMPLES))
                sample_noise -= sample_noise.mean()
                samples = value + prompt_effect[:, None] + sample_noise
                runs.append(RunRecord(s, strategy, "dpo", budget, {"n_labels": n},
                                      samples[:, 0], sample_rewards=samples))
    return DemoRun(plan, Path("sft"), baseline, runs, {}, {}, {})


def test_easy_reaches_randoms_full_budget_value_at_the_known_budget():
    # random reaches 0.4 at 80 labels; easy reaches 0.4 at exactly 40 labels
    demo = synthetic_run({"random": [0.0, 0.1, 0.2, 0.4], "easy": [0.1, 0.25, 0.4, 0.5]})
    result = paper_terms(demo)
    assert result["primary_outcome"] == "mean_reward_samples" and result["seeds"] == [0, 1, 2]
    primary = result["outcomes"]["mean_reward_samples"]
    assert primary["target"]["value"] == pytest.approx(0.4)
    assert primary["target"]["n_labels"] == 80
    assert primary["target"]["ci_low"] < 0.4 < primary["target"]["ci_high"]
    need = primary["labels_needed"]
    assert need["estimate"] == pytest.approx(40.0)
    assert need["ci_low"] < 40 < need["ci_high"]
    assert 30 < need["ci_low"] and need["ci_high"] < 55        # the noise is small
    assert need["not_reached_share"] == 0.0 and need["at_smallest_budget"] is False
    saved = primary["share_saved"]
    assert saved["estimate"] == pytest.approx(0.5)
    assert saved["ci_low"] == pytest.approx(1 - need["ci_high"] / 80)
    assert saved["ci_high"] == pytest.approx(1 - need["ci_low"] / 80)
    curves = primary["curves"]
    assert [p["n_labels"] for p in curves["easy"]] == [10, 20, 40, 80]
    assert [p["estimate"] for p in curves["random"]] == pytest.approx([0.0, 0.1, 0.2, 0.4])
    for p in curves["easy"] + curves["random"]:
        assert p["ci_low"] < p["estimate"] < p["ci_high"]
    # the secondary outcome is there too, on the same resamples
    assert set(result["outcomes"]) == {"mean_reward_samples", "win_rate"}


def test_a_crossing_between_budgets_is_interpolated():
    # easy: 0.3 at 20 labels, 0.5 at 40: reaches random's 0.4 at 30 labels (62.5% saved)
    demo = synthetic_run({"random": [0.0, 0.1, 0.2, 0.4], "easy": [0.1, 0.3, 0.5, 0.6]})
    primary = paper_terms(demo)["outcomes"]["mean_reward_samples"]
    assert primary["labels_needed"]["estimate"] == pytest.approx(30.0)
    assert primary["share_saved"]["estimate"] == pytest.approx(0.625)


def test_not_reached_is_more_than_the_full_budget_in_the_interval():
    # easy ends exactly at random's full-budget value: about half the resamples miss it
    demo = synthetic_run({"random": [0.0, 0.1, 0.2, 0.4], "easy": [0.0, 0.1, 0.2, 0.4]}, noise=0.3)
    need = paper_terms(demo)["outcomes"]["mean_reward_samples"]["labels_needed"]
    assert 0.2 < need["not_reached_share"] < 0.8
    assert need["ci_high"] is None                  # beyond the full budget
    # easy far below random everywhere: never reached
    demo = synthetic_run({"random": [0.0, 0.1, 0.2, 0.4], "easy": [-0.2, -0.1, 0.0, 0.1]})
    primary = paper_terms(demo)["outcomes"]["mean_reward_samples"]
    assert primary["labels_needed"]["estimate"] is None
    assert primary["labels_needed"]["not_reached_share"] == 1.0
    assert primary["share_saved"] == {"estimate": None, "ci_low": None, "ci_high": None}


def test_findings_line_and_figure_speak_the_papers_terms(tmp_path):
    demo = synthetic_run({"random": [0.0, 0.1, 0.2, 0.4], "easy": [0.1, 0.25, 0.4, 0.5]})
    pooled = {(r.strategy, "dpo", r.budget): {"n_labels": r.labels["n_labels"], "win_rate": 0.5,
                                              "ci_low": 0.4, "ci_high": 0.6} for r in demo.runs}
    eff = label_efficiency(demo, pooled)
    assert {"curves", "random_best", "easy_labels_to_match", "labels_saved", "outcomes",
            "primary_outcome", "paper_claim"} <= set(eff)
    line = _efficiency(eff)
    assert line.startswith("Label efficiency (DPO, mean oracle reward over the samples per prompt)")
    assert "easy needs 40 [" in line and "to reach random's value at the full budget (80 labels)" in line
    assert "saves 50% [" in line and "up to 65%" in line
    never = synthetic_run({"random": [0.0, 0.1, 0.2, 0.4], "easy": [-0.2, -0.1, 0.0, 0.1]})
    line = _efficiency(label_efficiency(never, pooled))
    assert "does not reach it at any budget tried (not reached in 100% of resamples)" in line
    plot_label_efficiency({"label_efficiency": eff}, tmp_path / "eff.png")
    assert (tmp_path / "eff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fewer_than_two_budgets_give_no_curve():
    demo = synthetic_run({"random": [0.0, 0.1, 0.2, 0.4], "easy": [0.1, 0.25, 0.4, 0.5]})
    demo.runs = [r for r in demo.runs if r.budget == "100%"]
    assert paper_terms(demo)["outcomes"] == {}
