"""The evaluate stage: win rate, bootstrap interval, implicit rewards, the command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from realspo.cli import main
from realspo.evaluation.evaluate import (
    bootstrap_interval,
    implicit_reward_accuracy,
    win_indicators,
    win_rate,
)


def test_win_rate_counts_ties_as_half():
    assert win_indicators([1, 2, 3, 4], [0, 2, 5, 1]).tolist() == [1.0, 0.5, 0.0, 1.0]
    assert win_rate([1, 2, 3, 4], [0, 2, 5, 1]) == 0.625
    assert win_rate([1.0, 1.0], [1.0, 1.0]) == 0.5


def test_bootstrap_interval_of_all_wins_is_one_point():
    assert bootstrap_interval(np.ones(50), n_resamples=500, seed=0) == (1.0, 1.0)
    assert bootstrap_interval(np.full(50, 0.5), n_resamples=500, seed=0) == (0.5, 0.5)


def test_bootstrap_interval_of_a_fair_coin_has_the_normal_width():
    n = 400
    wins = np.tile([1.0, 0.0], n // 2)
    lo, hi = bootstrap_interval(wins, n_resamples=2000, seed=0)
    half_width = 1.96 * math.sqrt(0.25 / n)  # 0.049
    assert lo < 0.5 < hi
    assert (hi - lo) / 2 == pytest.approx(half_width, rel=0.15)
    assert 0.5 - lo == pytest.approx(hi - 0.5, abs=0.01)  # symmetric around the mean


def test_bootstrap_interval_is_seeded_and_chunking_does_not_change_it():
    wins = np.random.default_rng(0).integers(0, 3, size=300) / 2
    assert bootstrap_interval(wins, 1000, seed=5) == bootstrap_interval(wins, 1000, seed=5)
    big = np.tile(wins, 50)  # 15,000 prompts: drawn in several chunks
    lo, hi = bootstrap_interval(big, 400, seed=1)
    assert lo < big.mean() < hi and hi - lo < 0.03


def test_implicit_reward_accuracy_on_known_log_probs():
    policy = np.array([[-1.0, -5.0], [-3.0, -2.0], [-2.0, -2.0]])
    reference = np.array([[-2.0, -4.0], [-3.0, -3.0], [-2.0, -2.0]])
    result = implicit_reward_accuracy(policy, reference, beta=0.5)
    # rewards (chosen, rejected): (0.5, -0.5), (0, 0.5), (0, 0): margins 1, -0.5, 0 (not counted)
    assert result["accuracy"] == pytest.approx(1 / 3)
    assert result["mean_margin"] == pytest.approx(0.5 / 3)
    assert result["num_pairs"] == 3


# -- the command ---------------------------------------------------------------------------


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in
                            ["The capital of France is", "Bread needs", "Exercise improves"]))
    return path


def test_model_against_itself_ties_everywhere(tmp_path, tiny_model_dir, tiny_reward_model_dir, prompts_file,
                                              capsys):
    pairs = tmp_path / "heldout.jsonl"
    pairs.write_text(json.dumps({"prompt": "Python lists are", "chosen": " mutable.",
                                 "rejected": " immutable."}) + "\n")
    out = tmp_path / "eval.json"
    code = main(["evaluate", "--model", tiny_model_dir, "--baseline", tiny_model_dir,
                 "--prompts", str(prompts_file), "--judge", tiny_reward_model_dir, "--pairs", str(pairs),
                 "--max-new-tokens", "4", "--num-prompts", "2", "--bootstrap-resamples", "200",
                 "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    # same weights + same seeds -> same responses -> every prompt a tie
    assert result["num_prompts"] == 2 and result["ties"] == 2
    # no decisive judgment: no rate of 0.5 with a 0.5-0.5 "interval", which reads as certainty
    assert result["win_rate"] is None and result["win_rate_interval"] is None
    assert result["no_win_rate"] == "no decisive judgments (2 ties)"
    printed = capsys.readouterr().out
    assert "no decisive judgments (2 ties), no win rate (2 prompts)" in printed
    assert "95% CI" not in printed and "win rate of" not in printed
    assert result["mean_reward"]["trained"] == result["mean_reward"]["baseline"]
    assert [p["trained_response"] for p in result["per_prompt"]] == \
        [p["baseline_response"] for p in result["per_prompt"]]
    assert result["implicit_reward"]["accuracy"] == 0.0  # zero margin is not a win
    assert result["implicit_reward"]["mean_margin"] == 0.0
    assert result["config"]["judge"] == tiny_reward_model_dir


def test_proving_ground_judge_scores_with_the_oracle(tmp_path, tiny_model_dir):
    from realspo.proving_ground.world import build_world

    world = build_world()
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in world.test_prompts[:2]))
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--model", tiny_model_dir, "--baseline", tiny_model_dir,
                 "--prompts", str(prompts), "--judge", "proving-ground", "--max-new-tokens", "4",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    first = result["per_prompt"][0]
    assert first["trained_reward"] == world.oracle.score(world.test_prompts[0], first["trained_response"])
    assert result["ties"] == 2 and result["win_rate"] is None  # the same model twice: all ties


def test_win_summary_gives_a_rate_only_with_decisive_judgments():
    from realspo.evaluation.evaluate import win_summary

    tied = win_summary(np.array([0.5, 0.5, 0.5]), n_resamples=50)
    assert tied["win_rate"] is None and tied["win_rate_interval"] is None
    assert tied["no_win_rate"] == "no decisive judgments (3 ties)"
    assert (tied["wins"], tied["ties"], tied["losses"]) == (0, 3, 0)
    assert win_summary(np.zeros(0), n_resamples=50)["no_win_rate"] == "no decisive judgments (0 ties)"
    one_win = win_summary(np.array([1.0, 0.5, 0.5]), n_resamples=200)
    assert one_win["win_rate"] == pytest.approx(2 / 3) and one_win["no_win_rate"] is None
    lo, hi = one_win["win_rate_interval"]
    assert 0.5 <= lo <= one_win["win_rate"] <= hi <= 1.0
    assert (one_win["wins"], one_win["ties"], one_win["losses"]) == (1, 2, 0)


def test_judge_that_is_not_a_sequence_classifier_exits_2_before_generating(tmp_path, tiny_model_dir,
                                                                          prompts_file, capsys):
    out = tmp_path / "eval.json"
    code = main(["evaluate", "--model", tiny_model_dir, "--baseline", tiny_model_dir,
                 "--prompts", str(prompts_file), "--judge", tiny_model_dir, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "not a sequence classifier" in err and "generate" not in err
    assert "llm:PATH" in err
    assert not out.exists()


def test_gguf_judge_says_a_reward_model_must_be_a_sequence_classifier(tmp_path, tiny_model_dir,
                                                                    prompts_file, capsys):
    gguf = tmp_path / "judge.gguf"
    gguf.write_bytes(b"GGUF")
    out = tmp_path / "eval.json"
    code = main(["evaluate", "--model", tiny_model_dir, "--baseline", tiny_model_dir,
                 "--prompts", str(prompts_file), "--judge", str(gguf), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"{gguf}: a .gguf file holds a causal LM, not a reward model" in err
    assert "AutoModelForSequenceClassification with one output" in err and "--judge llm:PATH" in err
    assert not out.exists()
