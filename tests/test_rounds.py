"""``realspo rounds``: R rounds of generate -> select -> label -> train, resumable per round."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from realspo.cli import main
from realspo.errors import ConfigError
from realspo.pipeline.rounds_config import (
    round_budgets,
    round_prompts,
    schedule_fractions,
    total_budget,
)

QUESTIONS = ["What is the capital of France?", "How do I boil an egg?", "Why exercise?",
             "What are Python lists?", "What does photosynthesis make?", "How to bake bread?",
             "What is the mitochondria?", "Is Paris on the Seine?"]


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"\n\nHuman: {q}\n\nAssistant:"}) + "\n"
                            for q in QUESTIONS), encoding="utf-8")
    return str(path)


def _argv(model: str, prompts: str, judge: str, out: Path, cache: Path, *extra: str) -> list[str]:
    return ["rounds", "--model", model, "--prompts", prompts, "--judge", judge, "--out", str(out),
            "--budget", "6", "--rounds", "2", "--schedule", "front", "--num-responses", "3",
            "--max-new-tokens", "8", "--max-steps", "2", "--batch-size", "2", "--lr", "1e-3",
            "--max-length", "64", "--cache-dir", str(cache), "--no-progress", *extra]


def _weights(model_dir: str | Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


def _same(a: dict, b: dict) -> bool:
    import torch

    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def two_rounds(tiny_model_dir, tiny_reward_model_dir, prompts_file, tmp_path_factory, one_thread):
    """Two rounds on the tiny model, labeled by the tiny reward model (budget 6, front: 4 + 2)."""
    root = tmp_path_factory.mktemp("rounds")
    argv = _argv(tiny_model_dir, prompts_file, tiny_reward_model_dir, root / "out", root / "cache")
    assert main(argv) == 0
    return root / "out", argv


# -- the plan ----------------------------------------------------------------------------------

@pytest.mark.parametrize("total", [1, 5, 6, 7, 100, 301])
@pytest.mark.parametrize("schedule,rounds", [("even", 3), ("front", 3), ("back", 4),
                                             ("0.5,0.3,0.2", 3), ("even", 1)])
def test_round_budgets_sum_to_the_total(total, schedule, rounds):
    fractions = schedule_fractions(schedule, rounds)
    assert sum(fractions) == pytest.approx(1.0)
    if total < rounds:
        with pytest.raises(ConfigError, match="gives a round no labels"):
            round_budgets(total, fractions)
        return
    budgets = round_budgets(total, fractions)
    assert sum(budgets) == total and min(budgets) >= 1
    assert all(abs(b - total * f) < 1 for b, f in zip(budgets, fractions, strict=True))


def test_front_spends_more_early_and_back_late():
    assert round_budgets(60, schedule_fractions("front", 3)) == [30, 20, 10]
    assert round_budgets(60, schedule_fractions("back", 3)) == [10, 20, 30]
    assert round_budgets(10, schedule_fractions("0.5,0.3,0.2", 3)) == [5, 3, 2]


@pytest.mark.parametrize("schedule", ["0.5,0.4", "0.5,0.6,-0.1", "0.5,0.3", "fast", "0.5,nan,0.5"])
def test_bad_schedule_is_refused(schedule):
    with pytest.raises(ConfigError, match="--schedule"):
        schedule_fractions(schedule, 3)


def test_budget_fraction_is_of_the_prompts():
    assert total_budget("0.5", 8) == 4
    assert total_budget("5", 8) == 5


def test_split_rounds_get_disjoint_seeded_prompts():
    parts = round_prompts(10, 3, "split", seed=1)
    assert sorted(i for p in parts for i in p) == list(range(10))
    assert [len(p) for p in parts] == [4, 3, 3]
    assert parts == round_prompts(10, 3, "split", seed=1)
    assert parts != round_prompts(10, 3, "split", seed=2)
    assert round_prompts(4, 2, "all", seed=0) == [[0, 1, 2, 3]] * 2


# -- two rounds end to end -----------------------------------------------------------------------

def test_each_round_keeps_its_candidates_pairs_labels_and_model(two_rounds):
    out, _ = two_rounds
    for r, budget in ((1, 4), (2, 2)):
        d = out / f"round-{r}"
        candidates = [json.loads(line) for line in (d / "candidates.jsonl").read_text().splitlines()]
        assert len(candidates) == 4  # --round-prompts split: 8 prompts over 2 rounds
        assert all(len(c["responses"]) >= 2 for c in candidates)
        pairs = (d / "pairs.jsonl").read_text().splitlines()
        labels = [json.loads(line) for line in (d / "labels.jsonl").read_text().splitlines()]
        assert len(pairs) == budget and 0 < len(labels) <= budget
        assert all(row["label_source"] == "reward-model" for row in labels)
        assert all(row["chosen_score"] >= row["rejected_score"] for row in labels)
        assert (d / "model" / "model.safetensors").is_file()
        record = json.loads((d / "round.json").read_text())
        assert record["budget"] == budget == record["labels_used"]
        assert record["preferences"] == len(labels)
        assert record["train"]["steps"] == 2 and "loss" in record["train"]


def test_the_rounds_use_different_prompts(two_rounds):
    out, _ = two_rounds
    ids = [{json.loads(line)["prompt_id"] for line in (out / f"round-{r}" / "candidates.jsonl")
            .read_text().splitlines()} for r in (1, 2)]
    assert not ids[0] & ids[1]


def test_round_two_starts_from_round_one_policy(two_rounds, tiny_model_dir):
    import yaml

    out, _ = two_rounds
    run2 = yaml.safe_load((out / "round-2" / "model" / "config.yaml").read_text())
    assert Path(run2["model"]) == out / "round-1" / "model"
    round2 = json.loads((out / "round-2" / "round.json").read_text())
    assert Path(round2["policy"]) == out / "round-1" / "model"
    assert round2["reference"] == tiny_model_dir  # --reference initial
    start, first, second = (_weights(tiny_model_dir), _weights(out / "round-1" / "model"),
                            _weights(out / "round-2" / "model"))
    assert not _same(start, first) and not _same(first, second)


def test_initial_reference_log_probs_are_in_round_two_pairs(two_rounds, tiny_model_dir):
    """Round 2 trains round 1's policy against the initial model: its pairs carry the initial
    model's log-probs, equal to those a plain reference pass computes."""
    from realspo.models import load_model, load_tokenizer
    from realspo.training.reference import compute_reference_logps

    out, _ = two_rounds
    assert not (out / "round-1" / "train-pairs.jsonl").exists()  # round 1: the policy is the reference
    rows = [json.loads(line) for line in (out / "round-2" / "train-pairs.jsonl").read_text().splitlines()]
    chosen, rejected = compute_reference_logps(
        load_model(tiny_model_dir), load_tokenizer(tiny_model_dir), rows, max_length=64,
        show_progress=False)
    assert [r["ref_chosen_logps"] for r in rows] == pytest.approx(chosen.tolist(), abs=1e-4)
    assert [r["ref_rejected_logps"] for r in rows] == pytest.approx(rejected.tolist(), abs=1e-4)


def test_summary_and_latest_model_link(two_rounds):
    out, _ = two_rounds
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds_finished"] == 2 and summary["budgets"] == [4, 2]
    assert summary["budget_total"] == 6
    assert summary["final_model"] == str(out / "round-2" / "model")
    assert summary["labels_used"] == 6
    assert summary["preferences"] == sum(r["preferences"] for r in summary["per_round"])
    assert (out / "model").resolve() == (out / "round-2" / "model").resolve()
    lines = (out / "rounds.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [1, 2]
    assert set(summary["per_round"][0]["timings_s"]) >= {"generate_s", "label_s", "train_s", "total_s"}


def test_rerun_of_a_finished_run_changes_nothing(two_rounds, capsys):
    out, argv = two_rounds
    before = (out / "round-2" / "model" / "model.safetensors").stat().st_mtime_ns
    assert main(argv) == 0
    assert (out / "round-2" / "model" / "model.safetensors").stat().st_mtime_ns == before


def test_changed_configuration_is_refused(two_rounds, capsys):
    out, argv = two_rounds
    before = sorted(p.name for p in out.iterdir())
    assert main([*argv, "--beta", "0.2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other options" in err[0] and "beta" in err[0]
    assert sorted(p.name for p in out.iterdir()) == before


# -- resume ------------------------------------------------------------------------------------------

def test_crash_in_round_two_reruns_only_round_two(tiny_model_dir, tiny_reward_model_dir, prompts_file,
                                                  tmp_path, monkeypatch, one_thread):
    """A failure in round 2's training leaves round 1 whole and no round 2; the rerun generates,
    selects, labels and trains round 2 only (margin strategy, previous-policy reference)."""
    import realspo.generation.candidates as candidates
    import realspo.training.loop as loop

    argv = _argv(tiny_model_dir, prompts_file, tiny_reward_model_dir, tmp_path / "out",
                 tmp_path / "cache", "--strategy", "margin", "--first-strategy", "random",
                 "--reference", "previous", "--schedule", "even")
    real_train, calls = loop.train, {"train": 0, "generate": 0}

    def crashing_train(cfg, **kw):
        calls["train"] += 1
        if calls["train"] == 2:
            raise RuntimeError("simulated crash in round 2")
        return real_train(cfg, **kw)

    monkeypatch.setattr(loop, "train", crashing_train)
    with pytest.raises(RuntimeError, match="simulated crash"):
        main(argv)
    out = tmp_path / "out"
    assert (out / "round-1" / "round.json").is_file() and not (out / "round-2").exists()
    assert json.loads((out / "summary.json").read_text())["rounds_finished"] == 1
    round1 = (out / "round-1" / "model" / "model.safetensors").stat().st_mtime_ns
    (out / ".round-2.0123456789ab.tmp").mkdir()  # what a kill would leave behind

    real_generate = candidates.generate_candidates

    def counting_generate(*args, **kw):
        calls["generate"] += 1
        return real_generate(*args, **kw)

    monkeypatch.setattr(loop, "train", real_train)
    monkeypatch.setattr(candidates, "generate_candidates", counting_generate)
    assert main(argv) == 0
    assert calls["generate"] == 1
    assert (out / "round-1" / "model" / "model.safetensors").stat().st_mtime_ns == round1
    assert not list(out.glob(".round-*.tmp"))
    round2 = json.loads((out / "round-2" / "round.json").read_text())
    assert round2["strategy"] == "margin" and round2["selection"]["margins"] is True
    assert round2["reference"] == str(out / "round-1" / "model")  # --reference previous
    assert not (out / "round-2" / "train-pairs.jsonl").exists()  # train scores its own start
    assert json.loads((out / "round-1" / "round.json").read_text())["strategy"] == "random"
    assert json.loads((out / "summary.json").read_text())["rounds_finished"] == 2


# -- refusals ----------------------------------------------------------------------------------------

BAD = {
    "margin without a policy": (["--strategy", "margin"], "needs a policy"),
    "unknown judge": (["--judge", "no-such-judge"], "unknown judge"),
    "schedule not summing": (["--schedule", "0.5,0.4"], "sum to 1"),
    "schedule of the wrong length": (["--schedule", "0.5,0.3,0.2"], "3 fractions for 2 rounds"),
    "budget over the prompts": (["--budget", "7"], "budget"),
    "first strategy without margin": (["--first-strategy", "random"], "--first-strategy"),
    "reward strategy with a pairwise judge": (["--strategy", "reward-gap", "--judge", "llm:JUDGE"],
                                              "only compares pairs"),
    "proving-ground judge on other prompts": (["--judge", "proving-ground"], "proving"),
    "no merge of LoRA": (["--lora-r", "4", "--no-merge"], "unrecognized"),
    "bad loss option": (["--beta", "-1"], "beta"),
    "embedder a strategy ignores": (["--strategy", "random", "--embedder", "st:x"], "no effect"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_exits_2_and_writes_nothing(name, tiny_model_dir, tiny_reward_model_dir,
                                              prompts_file, tmp_path, capsys):
    extra, message = BAD[name]
    extra = [tiny_model_dir if a == "JUDGE" else a for a in extra]
    extra = [f"llm:{tiny_model_dir}" if a == "llm:JUDGE" else a for a in extra]
    argv = _argv(tiny_model_dir, prompts_file, tiny_reward_model_dir, tmp_path / "out",
                 tmp_path / "cache", *extra)
    if message == "unrecognized":
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    else:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_overwrite_never_replaces_a_foreign_directory(tiny_model_dir, tiny_reward_model_dir,
                                                      prompts_file, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    argv = _argv(tiny_model_dir, prompts_file, tiny_reward_model_dir, out, tmp_path / "cache")
    for extra, message in (([], "already exists"), (["--overwrite"], "not a realspo output")):
        assert main([*argv, *extra]) == 2
        assert message in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]


def test_lora_rounds_with_a_reward_strategy(tiny_model_dir, tiny_reward_model_dir, prompts_file,
                                            tmp_path, one_thread):
    """LoRA rounds export merged models the next round starts from; reward-gap scores the
    candidates with the judge's reward model and ranks by the gap."""
    out = tmp_path / "out"
    argv = _argv(tiny_model_dir, prompts_file, tiny_reward_model_dir, out, tmp_path / "cache",
                 "--lora-r", "4", "--strategy", "reward-gap", "--round-prompts", "all",
                 "--schedule", "0.5,0.5")
    assert main(argv) == 0
    rounds = [json.loads((out / f"round-{r}" / "round.json").read_text()) for r in (1, 2)]
    assert [r["prompts"] for r in rounds] == [8, 8]  # --round-prompts all
    assert [r["budget"] for r in rounds] == [3, 3]
    assert all(r["selection"]["key_mean"] > 0 for r in rounds)  # mean reward gap of the picks
    assert (out / "round-2" / "model" / "model.safetensors").is_file()  # merged, not an adapter
    assert not _same(_weights(out / "round-1" / "model"), _weights(out / "round-2" / "model"))


def test_a_kill_in_round_two_keeps_round_one_and_the_rerun_finishes(
        tiny_model_dir, tiny_reward_model_dir, prompts_file, tmp_path, one_thread):
    """SIGKILL while round 2 is being built: round 1 stays whole, round 2 is absent (only its
    hidden temporary and a stale lock are left), and the same command finishes the run."""
    from test_resume import kill_when

    out = tmp_path / "out"
    argv = _argv(tiny_model_dir, prompts_file, tiny_reward_model_dir, out, tmp_path / "cache")
    kill_when(argv, lambda: (out / "round-1" / "round.json").is_file()
              and any(out.glob(".round-2.*.tmp")), slow=0.3)
    assert not (out / "round-2").exists() and any(out.glob(".round-2.*.tmp"))
    round1 = {p.name: p.read_bytes() for p in (out / "round-1").iterdir() if p.is_file()}
    assert main(argv) == 0
    assert {p.name: p.read_bytes() for p in (out / "round-1").iterdir() if p.is_file()} == round1
    assert (out / "round-2" / "round.json").is_file() and not any(out.glob(".round-*.tmp"))
    assert json.loads((out / "summary.json").read_text())["rounds_finished"] == 2


def test_an_llm_judge_labels_a_round_in_both_orders(tiny_model_dir, tiny_reward_model_dir,
                                                   prompts_file, tmp_path, monkeypatch, one_thread):
    """A pairwise judge (llm:PATH) labels through its comparison; its scorer is replaced by one
    that prefers the longer response in either order."""
    import numpy as np

    from realspo.labels.llm_judge import LLMJudge

    def first_line(text: str, tag: str) -> str:
        return text.split(f"[{tag}]\n")[1].split("\n")[0]

    monkeypatch.setattr(LLMJudge, "p_first", lambda self, texts: np.array(
        [0.5 + 0.4 * np.sign(len(first_line(t, "Response A")) - len(first_line(t, "Response B")))
         for t in texts]))
    out = tmp_path / "out"
    argv = _argv(tiny_model_dir, prompts_file, f"llm:{tiny_model_dir}", out, tmp_path / "cache",
                 "--rounds", "1", "--budget", "4", "--schedule", "even", "--strategy", "random")
    assert main(argv) == 0
    record = json.loads((out / "round-1" / "round.json").read_text())
    assert record["labels_used"] == 4 and record["label_stats"]["label_source"] == "llm-judge"
    assert "position-bias rate 0.000" in record["label_stats"]["judge_bias"]
    labels = [json.loads(line) for line in (out / "round-1" / "labels.jsonl").read_text().splitlines()]
    assert len(labels) == record["preferences"] > 0
    assert all(len(r["chosen"].split("\n")[0]) > len(r["rejected"].split("\n")[0]) for r in labels)
