"""The label stage: the simulated annotator's law, label sources, the human round trip."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from realspo.cli import main
from realspo.labels.annotator import (
    bt_preference_prob,
    expected_error_rate,
    label_errors,
    simulate_labels,
)
from realspo.labels.judges import JudgeOptions, make_judge
from realspo.schema import read_annotation_rows


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


# -- the simulated annotator --------------------------------------------------------------


def test_bt_preference_prob_matches_hand_computed_values():
    assert bt_preference_prob(1.0, 0.0, tau=1.0) == pytest.approx(0.7310585786)
    assert bt_preference_prob(0.0, 1.0, tau=0.5) == pytest.approx(1 - 0.8807970780)
    assert bt_preference_prob(3.0, 3.0, tau=2.0) == pytest.approx(0.5)
    # flips: (1 - f) p + f (1 - p) with p = sigmoid(1), f = 0.1
    assert bt_preference_prob(1.0, 0.0, 1.0, flip=0.1) == pytest.approx(
        0.9 * 0.7310585786 + 0.1 * 0.2689414214)
    assert bt_preference_prob(2.0, 0.0, 1.0, flip=1.0) == pytest.approx(1 - _sigmoid(2.0))


def test_bt_preference_prob_at_tau_zero_is_the_oracle_ordering():
    p = bt_preference_prob([1.0, 0.0, 2.0], [0.0, 1.0, 2.0], tau=0.0)
    assert p.tolist() == [1.0, 0.0, 0.5]


def test_bt_preference_prob_does_not_overflow_for_large_gaps():
    p = bt_preference_prob([1e6, -1e6], [0.0, 0.0], tau=1e-3)
    assert p.tolist() == [1.0, 0.0]


def test_simulated_error_rate_matches_expected_error_rate():
    rng = np.random.default_rng(1)
    n = 20000
    r_a, r_b = rng.normal(size=n), rng.normal(size=n)
    r_b[:200] = r_a[:200]  # oracle ties: excluded from both rates
    for tau, flip in ((0.5, 0.0), (1.0, 0.1)):
        a_preferred = simulate_labels(r_a, r_b, tau, flip, seed=7)
        empirical = np.nanmean(label_errors(a_preferred, r_a, r_b))
        expected = expected_error_rate(r_a, r_b, tau, flip)
        tolerance = 4 * math.sqrt(expected * (1 - expected) / (n - 200))
        assert abs(empirical - expected) < tolerance


def test_expected_error_rate_of_a_single_pair_is_the_wrong_answer_probability():
    assert expected_error_rate([2.0], [1.0], tau=1.0) == pytest.approx(_sigmoid(-1.0))
    assert expected_error_rate([0.0, 5.0], [1.0, 5.0], tau=1.0, flip=0.5) == pytest.approx(0.5)
    assert math.isnan(expected_error_rate([1.0], [1.0], tau=1.0))


def test_simulate_labels_is_seeded():
    r_a, r_b = np.linspace(-1, 1, 50), np.zeros(50)
    assert (simulate_labels(r_a, r_b, 1.0, seed=3) == simulate_labels(r_a, r_b, 1.0, seed=3)).all()
    assert (simulate_labels(r_a, r_b, 1.0, seed=3) != simulate_labels(r_a, r_b, 1.0, seed=4)).any()


def test_label_errors_mark_oracle_ties_as_undefined():
    errors = label_errors([True, True, False, True], [1.0, 0.0, 0.0, 2.0], [0.0, 1.0, 1.0, 2.0])
    assert errors[:3].tolist() == [0.0, 1.0, 0.0] and math.isnan(errors[3])


# -- label sources -------------------------------------------------------------------------


def _pairs(n=6, **extra):
    rows = []
    for i in range(n):
        rows.append({"pair_id": f"q{i}:0-1", "prompt": f"Question {i}?",
                     "response_a": f"GOOD answer {i}." if i % 2 else f"bad answer {i}.",
                     "response_b": f"bad answer {i}." if i % 2 else f"GOOD answer {i}.",
                     "similarity": 0.1 * i, "prompt_id": f"q{i}", "index_a": 0, "index_b": 1,
                     "strategy": "easy", **{k: v[i] for k, v in extra.items()}})
    return rows


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_from_scores_orients_each_pair_by_score_and_drops_ties(tmp_path, capsys):
    pairs = _write_jsonl(tmp_path / "pairs.jsonl", _pairs(3, score_a=[1.0, 0.5, 2.0],
                                                          score_b=[0.0, 0.9, 2.0]))
    out = tmp_path / "labeled.jsonl"
    assert main(["label", "--pairs", str(pairs), "--from-scores", "--out", str(out)]) == 0
    rows = _read_jsonl(out)
    assert [(r["chosen"], r["rejected"]) for r in rows] == [
        ("bad answer 0.", "GOOD answer 0."), ("bad answer 1.", "GOOD answer 1.")]
    assert [(r["chosen_index"], r["chosen_score"]) for r in rows] == [(0, 1.0), (1, 0.9)]
    assert rows[0]["label_source"] == "scores" and rows[0]["similarity"] == 0.0
    assert "labeled 2 of 3 pairs (tied 1, skipped 0)" in capsys.readouterr().out


def test_from_scores_reads_multi_completion_scores_by_prompt_id_and_index(tmp_path):
    pairs = _write_jsonl(tmp_path / "pairs.jsonl", _pairs(2))
    candidates = _write_jsonl(tmp_path / "cands.jsonl", [
        {"prompt_id": "q0", "prompt": "Question 0?", "responses": ["x", "y"], "scores": [0.0, 3.0]},
        {"prompt_id": "q1", "prompt": "Question 1?", "responses": ["x", "y"], "scores": [5.0, 1.0]}])
    out = tmp_path / "labeled.jsonl"
    assert main(["label", "--pairs", str(pairs), "--from-scores", "--candidates", str(candidates),
                 "--out", str(out)]) == 0
    assert all(r["chosen"].startswith("GOOD") for r in _read_jsonl(out))


def test_simulated_annotator_on_the_proving_ground_oracle(tmp_path, capsys):
    from realspo.proving_ground.world import build_world

    world = build_world()
    rows = []
    for i, prompt in enumerate(world.train_prompts[:40]):
        a, b = world.responses_for(prompt, 2, seed=i)
        rows.append({"pair_id": str(i), "prompt": prompt, "response_a": a, "response_b": b})
    pairs = _write_jsonl(tmp_path / "pairs.jsonl", rows)
    perfect, flipped = tmp_path / "perfect.jsonl", tmp_path / "flipped.jsonl"
    assert main(["label", "--pairs", str(pairs), "--simulate", "--tau", "0", "--out", str(perfect)]) == 0
    assert "label-error rate vs the oracle 0.000" in capsys.readouterr().out
    labeled = _read_jsonl(perfect)
    assert all(r["oracle_chosen"] >= r["oracle_rejected"] for r in labeled)
    assert all(r["label_error"] in (False, None) for r in labeled)
    assert main(["label", "--pairs", str(pairs), "--simulate", "--tau", "0", "--flip", "1",
                 "--out", str(flipped)]) == 0
    assert "label-error rate vs the oracle 1.000" in capsys.readouterr().out


def test_reward_model_labels_by_the_classifier_score(tmp_path, tiny_reward_model_dir):
    pairs_rows = _pairs(4)
    pairs = _write_jsonl(tmp_path / "pairs.jsonl", pairs_rows)
    out = tmp_path / "labeled.jsonl"
    assert main(["label", "--pairs", str(pairs), "--reward-model", tiny_reward_model_dir,
                 "--batch-size", "3", "--out", str(out)]) == 0
    judge = make_judge(tiny_reward_model_dir, JudgeOptions(batch_size=1))  # unbatched: same rewards
    expected = []
    for r in pairs_rows:
        ra, rb = judge([r["prompt"]] * 2, [r["response_a"], r["response_b"]])
        expected.append((r["response_a"], r["response_b"]) if ra > rb else (r["response_b"], r["response_a"]))
    labeled = _read_jsonl(out)
    assert [(r["chosen"], r["rejected"]) for r in labeled] == expected
    assert all(r["chosen_score"] > r["rejected_score"] for r in labeled)


def test_reward_model_path_that_is_not_a_sequence_classifier_exits_2(tmp_path, tiny_model_dir, capsys):
    pairs = _write_jsonl(tmp_path / "pairs.jsonl", _pairs(2))
    out = tmp_path / "labeled.jsonl"
    code = main(["label", "--pairs", str(pairs), "--reward-model", tiny_model_dir, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "not a sequence classifier (architectures: LlamaForCausalLM)" in err
    assert "must be a sequence classifier (AutoModelForSequenceClassification with one output)" in err
    assert "--judge llm:PATH" in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("as_dir", [False, True], ids=["file", "directory of one"])
def test_gguf_reward_model_is_refused_in_one_line_suggesting_an_llm_judge(tmp_path, capsys, as_dir):
    pairs = _write_jsonl(tmp_path / "pairs.jsonl", _pairs(2))
    gguf = tmp_path / "models" / "judge.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")  # refused by its name, before anything reads it
    out = tmp_path / "labeled.jsonl"
    given = str(gguf.parent if as_dir else gguf)
    code = main(["label", "--pairs", str(pairs), "--reward-model", given, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"realspo label: error: {given}: a .gguf file holds a causal LM, not a reward model")
    assert "AutoModelForSequenceClassification with one output" in err and "llm:PATH" in err
    assert "not a valid JSON" not in err and not out.exists()


def test_label_needs_exactly_one_source(tmp_path, capsys):
    pairs = _write_jsonl(tmp_path / "pairs.jsonl", _pairs(2))
    assert main(["label", "--pairs", str(pairs), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert main(["label", "--pairs", str(pairs), "--from-scores", "--simulate",
                 "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "exactly one label source" in capsys.readouterr().err


def test_option_of_another_source_is_refused(tmp_path, capsys):
    pairs = _write_jsonl(tmp_path / "pairs.jsonl", _pairs(2, score_a=[1, 2], score_b=[2, 1]))
    code = main(["label", "--pairs", str(pairs), "--from-scores", "--tau", "2",
                 "--out", str(tmp_path / "o.jsonl")])
    assert code == 2 and "--tau has no effect with --from-scores" in capsys.readouterr().err


# -- the human round trip --------------------------------------------------------------------


def _export(tmp_path, n=6):
    pairs = _write_jsonl(tmp_path / "pairs.jsonl", _pairs(n))
    tasks = tmp_path / "tasks.csv"
    assert main(["label", "--pairs", str(pairs), "--export-tasks", str(tasks), "--seed", "1"]) == 0
    with tasks.open(newline="") as fh:
        return pairs, tasks, list(csv.DictReader(fh))


def test_exported_tasks_show_the_pair_in_a_seeded_random_order(tmp_path):
    pairs, tasks, shown = _export(tmp_path)
    assert [t["pair_id"] for t in shown] == [p.pair_id for p in read_annotation_rows(pairs)]
    assert set(shown[0]) == {"pair_id", "export_id", "prompt", "A", "B", "A_cut_off", "B_cut_off",
                             "answer", "comment"}
    swapped = [t["A"] != p["response_a"] for t, p in zip(shown, _pairs(6), strict=True)]
    assert any(swapped) and not all(swapped)
    key = _read_jsonl(tmp_path / "tasks.key.jsonl")
    assert [k["swapped"] for k in key] == swapped


def test_label_round_trip_recovers_chosen_and_rejected(tmp_path, capsys):
    pairs, tasks, shown = _export(tmp_path)
    answers = {0: "tie", 1: "skip", 2: ""}  # the rest: the annotator picks the GOOD answer
    for i, task in enumerate(shown):
        task["answer"] = answers.get(i, "A" if task["A"].startswith("GOOD") else "b")
    with tasks.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(shown[0]))
        writer.writeheader()
        writer.writerows(shown)
    out = tmp_path / "labeled.jsonl"
    assert main(["label", "--pairs", str(pairs), "--annotations", str(tasks), "--out", str(out)]) == 0
    rows = _read_jsonl(out)
    assert [r["pair_id"] for r in rows] == ["q3:0-1", "q4:0-1", "q5:0-1"]
    assert all(r["chosen"].startswith("GOOD") and r["rejected"].startswith("bad") for r in rows)
    assert [r["chosen_index"] for r in rows] == [0, 1, 0]
    assert "labeled 3 of 6 pairs (tied 1, skipped 1, unanswered 1)" in capsys.readouterr().out


def _answers(tmp_path, rows):
    """An answers file carrying the export id of ``tmp_path/tasks.key.jsonl``."""
    export_id = _read_jsonl(tmp_path / "tasks.key.jsonl")[0]["export_id"]
    return _write_jsonl(tmp_path / "answers.jsonl", [{**r, "export_id": export_id} for r in rows])


def test_unknown_pair_id_in_annotations_exits_2_naming_the_row(tmp_path, capsys):
    pairs, tasks, _ = _export(tmp_path)
    answers = _answers(tmp_path, [{"pair_id": "q0:0-1", "answer": "A"},
                                  {"pair_id": "nope", "answer": "B"}])
    out = tmp_path / "labeled.jsonl"
    code = main(["label", "--pairs", str(pairs), "--annotations", str(answers),
                 "--key", str(tmp_path / "tasks.key.jsonl"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "answers.jsonl:line 2: field 'pair_id': unknown pair id 'nope'" in err
    assert not out.exists()


def test_invalid_answer_exits_2_naming_the_row(tmp_path, capsys):
    pairs, tasks, _ = _export(tmp_path)
    answers = _answers(tmp_path, [{"pair_id": "q0:0-1", "answer": "maybe"}])
    code = main(["label", "--pairs", str(pairs), "--annotations", str(answers),
                 "--key", str(tmp_path / "tasks.key.jsonl"), "--out", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    assert code == 2 and "line 1: field 'answer': expected A, B, tie or skip" in err


def test_key_from_another_pairs_file_is_refused(tmp_path, capsys):
    pairs, tasks, _ = _export(tmp_path)
    changed = _pairs(6)
    changed[2]["response_a"] = "edited"
    _write_jsonl(pairs, changed)
    code = main(["label", "--pairs", str(pairs), "--annotations", str(tasks),
                 "--out", str(tmp_path / "o.jsonl")])
    assert code == 2 and "field 'fingerprint'" in capsys.readouterr().err
