"""`realspo demo`: the quick run's report, JSON and figures; determinism; the report's arithmetic."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from realspo.arms.analysis import rank_correlation
from realspo.arms.efficiency import crossing_point
from realspo.cli import main
from realspo.demo.findings import SMOKE
from realspo.demo.report import FIGURES, findings
from realspo.evaluation.multiple_comparisons import benjamini_hochberg, holm

STRATEGIES = ("random", "easy", "hard", "centroid")
CONTROLS = ("ceiling", "noiseless", "easy-random-prompts")
LOSSES = ("dpo", "dpo+spo")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", autouse=True)
def quiet_machine_settings(tmp_path_factory):
    """One torch thread (tiny models gain nothing from more on a shared CPU) and a private
    proving-ground cache, so the quick SFT model is built once for this module."""
    before, cache = torch.get_num_threads(), os.environ.get("REALSPO_CACHE")
    torch.set_num_threads(1)
    os.environ["REALSPO_CACHE"] = str(tmp_path_factory.mktemp("realspo-cache"))
    yield
    torch.set_num_threads(before)
    if cache is None:
        os.environ.pop("REALSPO_CACHE", None)
    else:
        os.environ["REALSPO_CACHE"] = cache


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "quick"
    assert main(["demo", "--quick", "--device", "cpu", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def results(quick_demo) -> dict:
    return json.loads((quick_demo / "results.json").read_text())


# --- the quick run --------------------------------------------------------------------------


def test_quick_demo_writes_report_json_and_figures(quick_demo):
    for name in ("report.md", "results.json", *FIGURES):
        assert (quick_demo / name).is_file(), name
    assert (quick_demo / "seed-0" / "candidates.jsonl").is_file()
    assert (quick_demo / "seed-0" / "easy-dpo+spo-50pct" / "metrics.jsonl").is_file()
    assert not list(quick_demo.parent.glob(".quick.*"))  # no temporary directory left behind


def test_figures_are_valid_png_images(quick_demo):
    import matplotlib.image

    for name in FIGURES:
        path = quick_demo / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE, name
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert image.shape[2] in (3, 4)


def test_results_hold_every_strategy_and_loss_with_an_interval(results):
    assert set(results["main"]) == set(STRATEGIES)
    for strategy in STRATEGIES:
        assert set(results["main"][strategy]) == set(LOSSES)
        for loss in LOSSES:
            entry = results["main"][strategy][loss]
            for scope in [entry, *entry["per_seed"]]:
                assert 0.0 <= scope["ci_low"] <= scope["win_rate"] <= scope["ci_high"] <= 1.0
            assert entry["n_labels"] == 20  # 50% of the 40 quick prompts
            assert 0.0 <= entry["label_error_rate"] <= 1.0
            assert 0.0 <= entry["oracle_tie_rate"] <= 1.0
            assert np.isfinite(entry["mean_reward"])
            assert [s["seed"] for s in entry["per_seed"]] == [0]


def test_label_error_deciles_cover_every_candidate_pair(results):
    deciles = results["label_error_by_similarity"]
    assert len(deciles) == 10
    assert sum(d["n_pairs"] for d in deciles) == results["sizes"]["candidate_pairs"]["0"]
    for d in deciles:
        assert d["similarity_low"] <= d["similarity_high"]
        for key in ("label_error_rate", "expected_error_rate", "oracle_tie_rate"):
            assert d[key] is None or 0.0 <= d[key] <= 1.0


def test_label_efficiency_has_random_and_easy_at_each_budget(results):
    curves = results["label_efficiency"]["curves"]
    assert [p["n_labels"] for p in curves["random"]] == [20, 40]
    assert [p["n_labels"] for p in curves["easy"]] == [20, 40]
    needed = results["label_efficiency"]["easy_labels_to_match"]
    assert needed is None or 20 <= needed <= 40
    primary = results["label_efficiency"]["outcomes"]["mean_reward_samples"]
    assert [p["n_labels"] for p in primary["curves"]["easy"]] == [20, 40]
    assert primary["target"]["n_labels"] == 40
    assert 0.0 <= primary["labels_needed"]["not_reached_share"] <= 1.0


def test_report_has_the_table_and_computed_findings(quick_demo, results):
    text = (quick_demo / "report.md").read_text()
    easy = results["main"]["easy"]["dpo"]
    assert f"| easy | dpo | 20 | {easy['win_rate']:.3f} [{easy['ci_low']:.3f}, {easy['ci_high']:.3f}]" in text
    assert all(f in text for f in results["findings"])
    judged = findings({**results, "verdicts": True})
    assert any(f.startswith("SPO (DPO+SPO minus DPO") for f in judged)
    assert any(f.startswith("Positive control: ceiling") for f in judged)
    assert any(f.startswith("Label efficiency (DPO, mean oracle reward over the samples per prompt)")
               and "up to 65%" in f for f in judged)
    target = results["label_efficiency"]["outcomes"]["mean_reward_samples"]["target"]
    assert (f"| mean oracle reward over the samples per prompt | {target['value']:.3f} "
            f"[{target['ci_low']:.3f}, {target['ci_high']:.3f}] (40 labels) |") in text


def test_existing_out_is_refused_without_overwrite(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["demo", "--quick", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_quick_and_full_together_are_refused(tmp_path):
    assert main(["demo", "--quick", "--full", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--out", "--overwrite", "--quick", "--full", "--seed", "--seeds", "--budget",
                 "--device", "--config"):
        assert flag in text
    # --seeds states its own per-preset default; it is not followed by a second "(default: None)"
    seeds_help = " ".join(text.split("--seeds N", 2)[-1].split("--budget")[0].split())
    assert "(default: 1 quick, 3 default, 5 full)" in seeds_help and "None" not in seeds_help


def test_a_budget_above_the_number_of_prompts_is_refused_before_any_work(tmp_path, capsys):
    assert main(["demo", "--quick", "--budget", "41", "--out", str(tmp_path / "x")]) == 2
    assert "--budget 41" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# --- determinism ------------------------------------------------------------------------------


def test_same_seed_gives_the_same_candidates_labels_and_selection(quick_demo):
    from realspo.arms.candidate_pool import build_candidates, selected_pairs
    from realspo.arms.plan import make_plan
    from realspo.generation.sampling import load_generator_model
    from realspo.proving_ground.sft import get_sft_model
    from realspo.proving_ground.world import build_world

    plan = make_plan("quick", device="cpu")
    model, tokenizer = load_generator_model(str(get_sft_model(plan.world, plan.sft)), device="cpu")
    a, b = (build_candidates(build_world(plan.world), model, tokenizer, plan, 0, {}) for _ in range(2))
    assert [g.responses for g in a.groups] == [g.responses for g in b.groups]
    np.testing.assert_array_equal(a.a_preferred, b.a_preferred)
    np.testing.assert_array_equal(a.similarity, b.similarity)
    assert selected_pairs(a, "random", 0) == selected_pairs(b, "random", 0)
    saved = [json.loads(line)["responses"] for line in
             (quick_demo / "seed-0" / "candidates.jsonl").read_text().splitlines()]
    assert saved == [g.responses for g in a.groups]  # and the same as the demo's own run


def test_same_seed_trains_and_evaluates_to_the_same_rewards(quick_demo):
    from realspo.arms.plan import make_plan
    from realspo.arms.train_and_evaluate import evaluate_run, train_run
    from realspo.proving_ground.sft import get_sft_model
    from realspo.proving_ground.world import build_world

    plan = make_plan("quick", device="cpu")
    sft_dir = get_sft_model(plan.world, plan.sft)
    data = quick_demo / "seed-0" / "random-dpo-50pct" / "pairs.jsonl"
    rewards = []
    with tempfile.TemporaryDirectory() as scratch:
        for n in range(2):
            train_run(plan, sft_dir, data, Path(scratch) / f"m{n}", "dpo", 0, Path(scratch))
            rewards.append(evaluate_run(Path(scratch) / f"m{n}", plan, build_world(plan.world), 0))
    np.testing.assert_array_equal(rewards[0], rewards[1])


# --- the report's arithmetic ---------------------------------------------------------------


def test_crossing_point_interpolates_between_budgets():
    assert crossing_point([(10, 0.50), (20, 0.60), (40, 0.70)], 0.65) == pytest.approx(30.0)


def test_crossing_point_is_the_first_budget_when_already_reached():
    assert crossing_point([(10, 0.70), (20, 0.60)], 0.65) == 10


def test_crossing_point_is_none_when_never_reached():
    assert crossing_point([(10, 0.50), (20, 0.60)], 0.65) is None


def test_rank_correlation_uses_average_ranks_for_ties():
    assert rank_correlation(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])) == pytest.approx(1.0)
    assert rank_correlation(np.array([1, 2, 3, 4]), np.array([4, 3, 2, 1])) == pytest.approx(-1.0)
    # ranks of x: 0, 1.5, 1.5, 3; y is ranked 0..3
    expected = np.corrcoef([0, 1.5, 1.5, 3], [0, 1, 2, 3])[0, 1]
    assert rank_correlation(np.array([1, 2, 2, 3]), np.array([1, 2, 3, 4])) == pytest.approx(expected)


def test_findings_say_not_reached_when_easy_never_matches_random(results):
    altered = json.loads(json.dumps(results))
    altered["verdicts"] = True
    primary = altered["label_efficiency"]["outcomes"]["mean_reward_samples"]
    primary["labels_needed"].update(estimate=None, ci_low=None, ci_high=None, not_reached_share=1.0)
    primary["share_saved"].update(estimate=None, ci_low=None, ci_high=None)
    assert any("does not reach it at any budget tried (not reached in 100% of resamples)" in f
               for f in findings(altered))


def _easy_vs_random(results, loss="dpo"):
    return next(c for c in results["comparisons"] if (c["a"], c["b"]) == (f"easy/{loss}", f"random/{loss}"))


def test_findings_call_a_difference_significant_only_when_its_holm_adjusted_p_is_below_0_05(results):
    altered = json.loads(json.dumps(results))
    altered["verdicts"] = True
    altered["label_error_by_similarity"] = []
    # a run where REAL's premise holds (elsewhere its verdicts are withheld: test_worlds.py)
    altered["premise_check"] = {"estimate": -0.6, "ci_low": -0.7, "ci_high": -0.5, "prompts": 40,
                                "holds": True}
    assert altered["statistics"]["primary_outcome"] == "mean_reward_samples"
    for c in altered["comparisons"]:
        for entry in (c, c["mean_reward_samples"], c["implicit_reward_accuracy"]):
            entry.update(difference=0.01, ci_low=-0.05, ci_high=0.07, p=0.5, p_holm=1.0, q_bh=0.9)
    assert "significant" not in " ".join(findings(altered)).lower()
    easy = _easy_vs_random(altered)
    # the interval excludes 0 and the raw p is small, but Holm's is not: inconclusive
    easy["mean_reward_samples"].update(difference=0.1, ci_low=0.02, ci_high=0.2, p=0.01, p_holm=0.12)
    line = next(f for f in findings(altered) if f.startswith("REAL (easy) vs random, dpo:"))
    assert "significant" not in line and "p 0.010, Holm 0.120" in line and "mde" in line
    easy["mean_reward_samples"].update(p_holm=0.03)
    line = next(f for f in findings(altered) if f.startswith("REAL (easy) vs random, dpo:"))
    primary, secondary = line.split("win rate (secondary)")
    assert "mean reward over the samples (primary) +0.100" in primary
    assert "significantly better" in primary and "significant" not in secondary
    assert any(f.startswith("REAL (easy) vs random, dpo+spo:") and "inconclusive" in f
               for f in findings(altered))
    # a secondary outcome below the Holm threshold is called significant on its own line
    easy["mean_reward_samples"].update(p_holm=1.0)
    easy["implicit_reward_accuracy"].update(p_holm=0.001)
    flagged = [f for f in findings(altered) if "significant" in f.lower()]
    assert len(flagged) == 1 and flagged[0].startswith("Secondary outcome, implicit-reward")


def test_every_comparison_has_raw_holm_and_bh_p_values_within_its_outcome_family(results):
    families = results["statistics"]["families"]
    assert families["mean_reward_samples"]["role"] == "primary"
    assert {families[k]["role"] for k in ("win_rate", "implicit_reward_accuracy")} == {"secondary"}
    n = len(results["comparisons"])
    assert all(f["size"] == n for f in families.values())
    for outcome in families:
        entries = [c if outcome == "win_rate" else c[outcome] for c in results["comparisons"]]
        raw = [e["p"] for e in entries]
        np.testing.assert_allclose([e["p_holm"] for e in entries], holm(raw))
        np.testing.assert_allclose([e["q_bh"] for e in entries], benjamini_hochberg(raw))
        for e in entries:
            assert 0 < e["p"] <= e["p_holm"] <= 1 and e["q_bh"] <= e["p_holm"] + 1e-12
            assert e["family"] == outcome and e["family_size"] == n
    ceiling = next(c for c in results["comparisons"] if c["a"] == "ceiling/dpo")
    easy = _easy_vs_random(results)
    assert easy["mean_reward_samples"]["reference_effect"] == pytest.approx(
        ceiling["mean_reward_samples"]["difference"])
    assert easy["reference_effect"] == pytest.approx(ceiling["difference"])
    assert "Holm" in results["statistics"]["rule"] and "one seed" in results["statistics"]["mde"]


def test_a_quick_report_makes_no_verdicts(quick_demo, results):
    text = (quick_demo / "report.md").read_text()
    assert "smoke run: no verdicts" in text
    assert "significant" not in text.lower()
    assert results["verdicts"] is False
    assert results["findings"] == [SMOKE]


def test_a_failing_manipulation_check_voids_the_spo_verdict(results):
    altered = json.loads(json.dumps(results))
    altered["verdicts"] = True
    altered["spo_manipulation"].update(passes=False, share_below=0.3, lowest_share_below=0.1)
    text = findings(altered)
    assert any(f.startswith("SPO manipulation check FAILS") and "void" in f for f in text)
    assert any(f.startswith("SPO (DPO+SPO minus DPO, same pairs) (void") for f in text)
    altered["spo_manipulation"].update(passes=True, share_below=0.9, lowest_share_below=0.85)
    assert any(f.startswith("SPO manipulation check passes") for f in findings(altered))


# --- controls, seed-level statistics, the SPO check -------------------------------------------


def _rows(quick_demo: Path, run: str) -> list[dict]:
    return [json.loads(line) for line in
            (quick_demo / "seed-0" / run / "pairs.jsonl").read_text().splitlines()]


def _pair(row: dict) -> tuple[str, frozenset[str]]:
    return row["prompt_id"], frozenset((row["chosen"], row["rejected"]))


def test_controls_are_trained_with_dpo_at_the_main_budget(quick_demo, results):
    assert set(results["controls"]) == set(CONTROLS)
    for name in CONTROLS:
        entry = results["controls"][name]["dpo"]
        assert entry["n_labels"] == 20
        assert 0.0 <= entry["ci_low"] <= entry["win_rate"] <= entry["ci_high"] <= 1.0
        assert len(_rows(quick_demo, f"{name}-dpo-50pct")) == 20


def test_ceiling_pairs_have_the_largest_oracle_gap_of_their_prompt(quick_demo):
    candidates = {}
    for line in (quick_demo / "seed-0" / "candidates.jsonl").read_text().splitlines():
        row = json.loads(line)
        pairs = [(a, b) for a in range(len(row["responses"])) for b in range(a + 1, len(row["responses"]))
                 if row["responses"][a] != row["responses"][b]]
        candidates[row["prompt_id"]] = max((abs(row["oracle_rewards"][a] - row["oracle_rewards"][b])
                                            for a, b in pairs), default=None)
    rows = _rows(quick_demo, "ceiling-dpo-50pct")
    gaps = [abs(r["oracle_chosen"] - r["oracle_rejected"]) for r in rows]
    for row, gap in zip(rows, gaps, strict=True):
        assert gap == pytest.approx(candidates[row["prompt_id"]])
    # the budget keeps the prompts whose best gap is largest
    chosen = {r["prompt_id"] for r in rows}
    left = [g for p, g in candidates.items() if p not in chosen and g is not None]
    assert min(gaps) >= max(left) - 1e-9
    # labelled by the simulated annotator, not the oracle: errors are possible and counted
    errors = [r["label_error"] for r in rows if r["label_error"] is not None]
    assert sum(errors) / len(errors) == pytest.approx(
        json.loads((quick_demo / "results.json").read_text())["controls"]["ceiling"]["dpo"]["label_error_rate"])


def test_noiseless_has_random_pairs_and_no_label_errors(quick_demo, results):
    rows = _rows(quick_demo, "noiseless-dpo-50pct")
    assert {_pair(r) for r in rows} == {_pair(r) for r in _rows(quick_demo, "random-dpo-50pct")}
    assert all(r["label_error"] in (False, None) for r in rows)
    assert all(r["oracle_chosen"] >= r["oracle_rejected"] for r in rows)
    assert results["controls"]["noiseless"]["dpo"]["label_error_rate"] == 0.0
    assert results["main"]["random"]["dpo"]["label_error_rate"] > 0.0  # the annotator errs


def test_easy_random_prompts_uses_easys_pair_on_other_prompts(quick_demo):
    easy_everywhere = dict(_pair(r) for r in _rows(quick_demo, "easy-dpo-100pct"))
    rows = _rows(quick_demo, "easy-random-prompts-dpo-50pct")
    assert all(easy_everywhere[p] == pair for p, pair in map(_pair, rows))
    assert {r["prompt_id"] for r in rows} != {r["prompt_id"] for r in _rows(quick_demo, "easy-dpo-50pct")}


def test_every_difference_carries_its_interval_and_mde(results):
    pairs = {(c["a"], c["b"]) for c in results["comparisons"]}
    assert {("ceiling/dpo", "random/dpo"), ("noiseless/dpo", "random/dpo"),
            ("easy-random-prompts/dpo", "random/dpo"), ("easy/dpo", "easy-random-prompts/dpo"),
            ("easy/dpo", "random/dpo"), ("easy/dpo+spo", "easy/dpo")} <= pairs
    for c in results["comparisons"]:
        assert c["ci_low"] <= c["difference"] <= c["ci_high"]
        assert c["mde"] == pytest.approx(2.80 * c["se"], rel=1e-3)  # one seed: the normal factor
        assert 0 < c["p"] <= 1 and {"p_holm", "q_bh", "power", "seeds_for_power"} <= set(c)
        assert len(c["per_seed"]) == 1
    for entry in [*(p for by in results["main"].values() for p in by.values()),
                  *(by["dpo"] for by in results["controls"].values())]:
        assert entry["mde"] == pytest.approx(2.80 * entry["se"], rel=1e-3)
    assert "hierarchical" in results["statistics"]["interval"]


def test_share_of_the_ceiling_is_reported_for_each_arm(results):
    shares = results["share_of_ceiling"]
    assert set(shares) == {"easy", "hard", "centroid", "noiseless", "easy-random-prompts"}
    assert all("mde" not in s and "p" not in s for s in shares.values())  # a ratio: neither
    main, ctl = results["main"], results["controls"]
    gain = ctl["ceiling"]["dpo"]["win_rate"] - main["random"]["dpo"]["win_rate"]
    if gain != 0:
        expected = (main["easy"]["dpo"]["win_rate"] - main["random"]["dpo"]["win_rate"]) / gain
        assert shares["easy"]["estimate"] == pytest.approx(expected)


def test_spo_manipulation_check_scores_every_level_and_role(results):
    check = results["spo_manipulation"]
    levels = results["config"]["spo_levels"]
    assert [(c["level"], c["role"]) for c in check["by_level"]] == [
        (d, role) for d in range(1, levels) for role in ("chosen", "rejected")]
    for c in check["by_level"]:
        assert c["n_variants"] > 0
        assert c["share_below"] + c["share_equal"] + c["share_above"] == pytest.approx(1.0)
    assert check["passes"] == (check["lowest_share_below"] >= 0.8)
    dose = results["spo_dose"]
    assert 0.0 <= dose["head_accuracy"] <= 1.0 and dose["head_accuracy_source"].startswith("held-out")
    assert dose["head_accuracy_heldout_variants"] > 0 and 0.0 <= dose["head_accuracy_training"] <= 1.0
    assert 0.0 <= dose["changed_answers"] <= 1.0
    assert set(dose["changed_answers_by_strategy"]) == set(STRATEGIES)


def test_premise_difference_matches_the_extreme_deciles(results):
    premise, deciles = results["premise"], results["label_error_by_similarity"]
    assert premise["least_similar_rate"] == pytest.approx(deciles[0]["label_error_rate"])
    assert premise["most_similar_rate"] == pytest.approx(deciles[-1]["label_error_rate"])
    assert premise["difference"] == pytest.approx(premise["least_similar_rate"] - premise["most_similar_rate"])
    assert premise["ci_low"] <= premise["difference"] <= premise["ci_high"]
    assert premise["mde"] == pytest.approx(2.80 * premise["se"], rel=1e-3)


def test_findings_say_when_the_positive_control_fails(results):
    altered = json.loads(json.dumps(results))
    altered["verdicts"] = True
    ceiling = next(c for c in altered["comparisons"] if (c["a"], c["b"]) == ("ceiling/dpo", "random/dpo"))
    ceiling["mean_reward_samples"].update(difference=0.02, ci_low=-0.03, ci_high=0.07, p_holm=0.4)
    assert any(f.startswith("Positive control") and "the positive control fails" in f
               for f in findings(altered))
    ceiling["mean_reward_samples"].update(difference=0.12, ci_low=0.05, ci_high=0.19, p_holm=0.01)
    assert any(f.startswith("Positive control") and "significantly better" in f
               for f in findings(altered))


# --- the extra outcomes (realspo.arms.arm_outcomes) ------------------------------------------


def _interval_of(entry: dict) -> None:
    assert entry["ci_low"] <= entry.get("estimate", entry.get("difference")) <= entry["ci_high"]
    assert entry["mde"] >= 0 and np.isfinite(entry["se"])


def test_results_hold_the_extra_outcomes_per_run_and_per_comparison(results):
    info = results["outcomes"]
    assert info["eval_samples"] == 2  # the quick preset's
    assert info["heldout_pairs"]["0"] > 0 and info["heldout_responses"]["0"] > 0
    assert np.isfinite(results["sft"]["mean_reward_samples"])
    for by_loss in [*results["main"].values(), *results["controls"].values()]:
        for entry in by_loss.values():
            _interval_of(entry["mean_reward_samples"])
            _interval_of(entry["implicit_reward_accuracy"])
            assert 0.0 <= entry["implicit_reward_accuracy"]["estimate"] <= 1.0
            assert len(entry["implicit_reward_accuracy"]["per_seed"]) == 1
    for c in results["comparisons"]:
        _interval_of(c["mean_reward_samples"])
        _interval_of(c["implicit_reward_accuracy"])
    check = results["spo_manipulation"]
    assert set(check["passes_by_role"]) == {"chosen", "rejected"}
    assert all("share_below_positive" in c and "n_positive" in c for c in check["by_level"])


def test_report_shows_the_extra_outcomes_without_verdicts_in_a_smoke_run(quick_demo, results):
    text = (quick_demo / "report.md").read_text()
    assert "## More sensitive outcomes" in text
    easy = results["main"]["easy"]["dpo"]["implicit_reward_accuracy"]
    assert f"{easy['estimate']:.3f} [{easy['ci_low']:.3f}, {easy['ci_high']:.3f}]" in text
    assert "significant" not in text.split("## More sensitive outcomes")[1].split("## SPO")[0]
    judged = findings({**results, "verdicts": True})
    assert any(f.startswith("REAL (easy) vs random, dpo: mean reward over the samples (primary)")
               for f in judged)
    assert any(f.startswith("Secondary outcome, implicit-reward accuracy") for f in judged)
    assert text.index("mean reward over the samples (primary") < text.index("win rate (secondary")
    assert any(f.startswith("SPO on the implicit-reward accuracy") for f in judged)


def test_sample_zero_is_the_single_evaluation_sample(quick_demo, one_thread):
    """More samples per held-out prompt leave the win rate's sample (and so the win rate)
    bit-identical: sample 0 is drawn exactly as a one-sample evaluation draws it."""
    from dataclasses import replace

    from realspo.arms.arm_outcomes import EVAL_SEED_OFFSET, evaluate_model
    from realspo.arms.candidate_pool import sample_responses
    from realspo.arms.plan import make_plan
    from realspo.arms.train_and_evaluate import evaluate_run
    from realspo.generation.sampling import SamplingSettings, load_generator_model
    from realspo.proving_ground.sft import get_sft_model
    from realspo.proving_ground.world import build_world

    plan = make_plan("quick", device="cpu")
    world, sft = build_world(plan.world), get_sft_model(plan.world, plan.sft)
    model, tokenizer = load_generator_model(str(sft), device="cpu")
    prompts = world.test_prompts[: plan.n_test_prompts]
    single = [s[0] for s in sample_responses(model, tokenizer, prompts, SamplingSettings(
        num_responses=1, temperature=plan.temperature, max_new_tokens=plan.max_new_tokens,
        seed=3 + EVAL_SEED_OFFSET))]
    many = evaluate_model(sft, replace(plan, eval_samples=4), world, seed=3)
    assert many.responses == single and [s[0] for s in many.samples] == single
    assert many.sample_rewards.shape == (len(prompts), 4)
    np.testing.assert_array_equal(many.sample_rewards[:, 0], many.rewards)
    np.testing.assert_array_equal(many.rewards, evaluate_run(sft, plan, world, seed=3))
    # the other samples are new draws (different noise), not copies of sample 0
    assert any(row[j] != row[0] for row in many.samples for j in range(1, 4))
