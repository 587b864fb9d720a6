"""`realspo leaderboard`: a tiny run end to end with every strategy and both settings; equal
budgets; rounds that continue from the previous round's policy; the report's files and keys;
the reward proxy and the budget arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from realspo.arms.records import Candidates
from realspo.errors import ConfigError
from realspo.leaderboard import run as lb_module
from realspo.leaderboard.plan import CONTROL_ARMS, load_run, make_leaderboard_plan
from realspo.leaderboard.pool import PaidLabels, fit_reward_proxy, pair_rows, proxy_arm_pairs
from realspo.leaderboard.report import FIGURES
from realspo.leaderboard.run import run_leaderboard
from realspo.schema import PromptGroup
from realspo.selection.strategies import strategy_names

ARMS = (*strategy_names(), *CONTROL_ARMS)
TINY = dict(n_train_prompts=12, n_test_prompts=10, steps=6, max_new_tokens=16,
            bootstrap_resamples=200)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny leaderboard (quick SFT model, 12 prompts, 6 labels in 1 or 3 rounds; 2 steps a round:
    a 1-step run only warms the learning rate up from 0 and leaves the model unchanged), with every
    training call recorded: (initial model, output, pairs file, steps)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    calls: list[tuple[Path, Path, Path, int]] = []
    original = lb_module.train_run

    def recording_train_run(plan, init, data, out, loss, seed, scratch):
        calls.append((Path(init), Path(out), Path(data), plan.steps))
        return original(plan, init, data, out, loss, seed, scratch)

    lb_module.train_run = recording_train_run
    try:
        plan = make_leaderboard_plan("quick", device="cpu", **TINY)
        out = tmp_path_factory.mktemp("leaderboard") / "tiny"
        run = run_leaderboard(plan, out)
    finally:
        lb_module.train_run = original
        torch.set_num_threads(before)
    return plan, out, run, calls, json.loads((out / "results.json").read_text())


def _lines(path: Path) -> int:
    return sum(1 for _ in path.open(encoding="utf-8"))


def test_every_arm_runs_in_both_settings(tiny):
    plan, _, run, _, results = tiny
    assert plan.arms == ARMS
    seen = {(r.arm, r.setting, r.round) for r in run.records}
    expected = {(a, "one-round", 1) for a in ARMS} | {(a, "rounds", r) for a in ARMS for r in (1, 2, 3)}
    assert seen == expected
    for setting in ("one-round", "rounds"):
        assert set(results["settings"][setting]) == set(ARMS)


def test_budgets_are_equal_across_arms_and_settings(tiny):
    plan, out, run, _, results = tiny
    assert plan.total_labels == 6 and plan.round_budgets() == [2, 2, 2]
    for arm in ARMS:
        one = [r for r in run.records if r.arm == arm and r.setting == "one-round"]
        rounds = sorted((r for r in run.records if r.arm == arm and r.setting == "rounds"),
                        key=lambda r: r.round)
        assert [r.n_labels for r in one] == [6]
        assert [r.n_labels for r in rounds] == [2, 2, 2]
        assert [r.cumulative_labels for r in rounds] == [2, 4, 6]
        assert _lines(out / "seed-0" / arm / "one-round" / "pairs.jsonl") == 6
        for r in (1, 2, 3):
            assert _lines(out / "seed-0" / arm / f"round-{r}" / "pairs.jsonl") == 2
    assert all(row["n_labels"] == [6] for s in results["settings"].values() for row in s.values())


def test_proxy_arms_pay_for_their_proxys_labels_from_the_budget(tiny):
    """Every arm spends the same labels; a proxy arm's include those it fitted its proxy on
    (half of each selection, rounded up), and its proxy saw nothing else."""
    _, out, run, _, results = tiny
    totals = {(r.arm, r.setting): r.cumulative_labels for r in run.records
              if r.round == (1 if r.setting == "one-round" else 3)}
    assert set(totals.values()) == {6}
    for arm in ("reward-gap", "reward-uncertain"):
        one = next(r for r in run.records if (r.arm, r.setting) == (arm, "one-round"))
        assert one.extra["fit_labels"] == 3 and one.extra["proxy_labels"] == 3
        assert one.extra["proxy"]["pairs"] == 3
        rounds = sorted((r for r in run.records if (r.arm, r.setting) == (arm, "rounds")),
                        key=lambda r: r.round)
        assert [r.extra["fit_labels"] for r in rounds] == [1, 1, 1]
        # the proxy refits on every label paid before: round r sees 2(r-1) earlier + 1 new
        assert [r.extra["proxy_labels"] for r in rounds] == [1, 3, 5]
        for setting in ("one-round", "rounds"):
            row = results["settings"][setting][arm]
            assert row["n_labels"] == [6] and row["proxy_fit_labels"] == [3]
        assert [p["pairs_fitted"] for p in results["reward_proxy"][arm]["rounds"]] == [1, 3, 5]
    assert results["settings"]["one-round"]["random"]["proxy_fit_labels"] is None
    report = (out / "report.md").read_text()
    assert "| reward-gap | 6 (3) |" in report and "| random | 6 |" in report


def test_rounds_train_from_the_previous_rounds_policy(tiny):
    plan, _, run, calls, _ = tiny
    assert len(calls) == 4 * len(ARMS)
    for k in range(len(ARMS)):
        one, r1, r2, r3 = calls[4 * k: 4 * k + 4]
        assert one[0] == run.sft_dir and r1[0] == run.sft_dir       # both start from SFT
        assert r2[0] == r1[1] and r3[0] == r2[1]                     # then continue
        assert one[3] == plan.demo.steps                             # equal compute in all
        assert r1[3] + r2[3] + r3[3] == plan.demo.steps


def test_later_rounds_sample_new_prompts_from_the_policy(tiny):
    _, out, run, _, _ = tiny
    for arm in ARMS:
        ids = [{json.loads(line)["prompt_id"] for line in
                (out / "seed-0" / arm / f"round-{r}" / "pairs.jsonl").open()} for r in (1, 2, 3)]
        assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    pools = {r.round: r.extra["pool_prompts"] for r in run.records
             if r.arm == "random" and r.setting == "rounds"}
    assert pools[1] == 12 and pools[2] <= 10 and pools[3] <= 8


def test_margins_are_zero_in_round_one_and_not_after(tiny):
    _, _, run, _, _ = tiny
    sd = {r.round: r.extra["implicit_reward_sd"] for r in run.records
          if r.arm == "margin" and r.setting == "rounds"}
    assert sd[1] == 0.0
    assert sd[2] > 0 and sd[3] > 0


def test_round_one_of_margin_and_margin_large_tie_to_the_same_pairs(tiny):
    _, out, _, _, _ = tiny
    read = lambda arm: (out / "seed-0" / arm / "round-1" / "pairs.jsonl").read_text()  # noqa: E731
    assert read("margin") == read("margin-large")


def test_noiseless_labels_have_no_errors_and_ceiling_the_largest_gaps(tiny):
    _, _, run, _, _ = tiny
    for r in run.records:
        if r.arm == "noiseless":
            assert r.labels["n_errors"] == 0
    gap = {r.arm: r.labels["mean_reward_gap"] for r in run.records if r.setting == "one-round"}
    assert gap["ceiling"] >= max(v for k, v in gap.items() if k != "ceiling")


def test_report_files_and_keys(tiny):
    _, out, _, _, results = tiny
    for name in ("report.md", "results.json", *FIGURES):
        assert (out / name).is_file()
    for name in FIGURES:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"config", "budgets", "statistics", "verdicts", "reward_proxy", "settings",
            "rounds_vs_one_round", "label_efficiency", "runs", "timings_seconds"} <= set(results)
    assert results["verdicts"] is False
    for setting in results["settings"].values():
        for arm, row in setting.items():
            assert row["ci_low"] <= row["win_rate"] <= row["ci_high"]
            if arm != "random":
                assert {"difference", "ci_low", "ci_high", "mde", "p", "p_holm", "q_bh",
                        "power"} <= set(row["vs_random"])
            if arm not in ("random", "ceiling"):
                assert "share_of_ceiling" in row
    curve = results["label_efficiency"]["easy"]
    assert [p["labels"] for p in curve["rounds"]] == [2, 4, 6]
    assert [p["labels"] for p in curve["one_round"]] == [2, 6]
    assert "smoke run: no verdicts" in (out / "report.md").read_text()


# --- units ------------------------------------------------------------------------------


def _random_candidates(rng: np.random.Generator, dim: int, k: int, g: int) -> Candidates:
    """G prompts x K distinct responses with random unit embeddings; every pair, random labels."""
    emb = rng.normal(size=(g * k, dim))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    groups = [PromptGroup(f"train-{i}", "q", [f"r{i}-{j}" for j in range(k)]) for i in range(g)]
    index = {(i, a, b): n for n, (i, a, b) in enumerate(
        (i, a, b) for i in range(g) for a in range(k) for b in range(a + 1, k))}
    p = len(index)
    return Candidates(groups, emb, np.arange(g * k), index, np.zeros(p), np.zeros(p), np.zeros(p),
                      rng.random(p) < 0.5, np.zeros(p))


def test_reward_proxy_recovers_a_planted_linear_reward():
    rng = np.random.default_rng(0)
    dim, g = 8, 150
    w_true = rng.normal(size=dim)
    dummy = _random_candidates(rng, dim, 4, g)
    emb = dummy.embeddings
    a, b, _ = pair_rows(dummy)
    r = 4 * emb @ w_true
    labels = rng.random(len(a)) < 1 / (1 + np.exp(-(r[a] - r[b])))
    dummy.a_preferred = labels
    paid = PaidLabels.empty()
    paid.add(dummy, list(range(len(a))))
    proxy = fit_reward_proxy(np.concatenate(paid.differences), np.concatenate(paid.preferred),
                             paid.prompts)
    fitted = proxy.rewards(emb)
    assert np.corrcoef(fitted, r)[0, 1] > 0.9
    assert proxy.info["pairs"] == len(a) and proxy.info["prompts"] == g


def test_a_proxy_arm_fits_on_half_its_budget_and_picks_the_rest_on_other_prompts():
    cands = _random_candidates(np.random.default_rng(1), 6, 4, 40)
    paid = PaidLabels.empty()
    rows, proxy, spent = proxy_arm_pairs("reward-gap", cands, 9, 0, paid, {})
    assert len(rows) == 9 and spent == {"fit_labels": 5, "proxy_labels": 5}
    assert proxy.info["pairs"] == 5 and len(paid) == 9          # the picks join the paid labels
    prompts = [pair_rows(cands)[2][r] for r in rows]
    assert len(set(prompts)) == 9                                # one pair per prompt
    again, proxy2, spent2 = proxy_arm_pairs("reward-gap", cands, 4, 1, paid, {})
    assert spent2 == {"fit_labels": 2, "proxy_labels": 11} and len(paid) == 13


def test_round_budgets_split_the_total_and_steps_follow_the_labels():
    plan = make_leaderboard_plan("quick", budget=20, rounds=3)
    assert plan.round_budgets() == [7, 7, 6]
    assert plan.steps_for(20) == plan.demo.steps
    assert plan.steps_for(1) >= 1


def test_bad_arms_and_budgets_are_refused():
    with pytest.raises(ConfigError):
        make_leaderboard_plan("quick", arms=("nope",))
    with pytest.raises(ConfigError):
        make_leaderboard_plan("quick", budget=2, rounds=3)
    with pytest.raises(ConfigError):
        make_leaderboard_plan("quick", rounds=0)


def test_the_report_rebuilds_from_runs_json(tiny, tmp_path):
    import shutil

    from realspo.leaderboard.report import rebuild_report

    _, out, run, _, results = tiny
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    assert len(load_run(copy).records) == len(run.records)
    again = json.loads(json.dumps(rebuild_report(copy), default=float))
    assert again["settings"] == results["settings"]
    assert again["label_efficiency"] == results["label_efficiency"]


def test_findings_call_an_arm_better_only_when_its_holm_adjusted_p_is_below_0_05():
    from realspo.leaderboard.markdown import findings
    from realspo.leaderboard.report import judge

    def diff(d, lo, hi, p):
        return {"difference": d, "ci_low": lo, "ci_high": hi, "mde": 0.05, "se": 0.02, "p": p,
                "per_seed": [d - 0.01, d, d + 0.01]}

    rows = {"random": {}, "ceiling": {"vs_random": diff(0.1, 0.04, 0.16, 0.001)},
            "easy": {"vs_random": diff(0.03, -0.01, 0.07, 0.2)},
            "hard": {"vs_random": diff(-0.06, -0.1, -0.02, 0.004)},
            # its interval excludes 0 (raw p 0.03) but Holm over 5 comparisons does not keep it
            "margin": {"vs_random": diff(0.05, 0.01, 0.09, 0.03)}}
    rounds = {"easy": diff(0.0, -0.02, 0.02, 0.9)}
    family = judge({"one-round": rows}, rounds, seeds=3)
    assert family["size"] == 5
    assert rows["margin"]["vs_random"]["p_holm"] == pytest.approx(0.09)  # 3 x 0.03
    assert rows["hard"]["vs_random"]["p_holm"] == pytest.approx(0.016)  # 4 x 0.004
    assert rows["easy"]["vs_random"]["power"] > 0 and rows["ceiling"]["vs_random"]["significant"]
    results = {"verdicts": True, "settings": {"one-round": rows}, "rounds_vs_one_round": rounds}
    text = "\n".join(findings(results))
    assert "significantly better than random: ceiling;" in text
    assert "significantly worse: hard;" in text
    assert "can show a selection effect" in text
    assert "better for none, worse for none" in text
    assert findings({**results, "verdicts": False}) == ["smoke run: no verdicts (the --quick sizes cannot support any)"]


def test_a_runs_json_from_before_equal_proxy_labels_is_refused(tiny, tmp_path):
    import shutil

    _, out, _, _, _ = tiny
    copy = tmp_path / "old"
    shutil.copytree(out, copy)
    raw = json.loads((copy / "runs.json").read_text())
    raw["proxy"] = {"0": {"pairs": 1430}}         # the spare-prompt proxy's record
    (copy / "runs.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="paid for their proxy's labels"):
        load_run(copy)


def test_reals_verdict_waits_for_its_premise(tiny):
    """The leaderboard measures the within-prompt premise on each seed's candidates; where it
    does not hold, easy's comparison with random carries no verdict."""
    from realspo.arms.premise_check import WITHHELD
    from realspo.leaderboard.markdown import findings

    _, _, run, _, results = tiny
    assert set(run.premise) == set(run.plan.demo.seeds) and all(run.premise.values())
    check = results["premise_check"]
    assert check["prompts"] == sum(len(v) for v in run.premise.values())
    altered = json.loads(json.dumps(results)) | {"verdicts": True}
    for rows in altered["settings"].values():
        easy = rows["easy"]["vs_random"]
        assert easy.get("withheld") == (not check["holds"])
        easy.update(withheld=True, p_holm=0.001, difference=0.2)  # would be "better" if judged
    text = "\n".join(findings(altered))
    assert WITHHELD in text and "better than random: easy" not in text
