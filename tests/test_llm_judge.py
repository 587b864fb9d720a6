"""The LLM judge (``--judge llm:PATH``): both orders, their mean, the tie rule, the position-bias
rate, the template option, and ``label``/``evaluate`` with it (on SmolLM2-135M-Instruct)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from realspo.cli import main
from realspo.errors import InputError
from realspo.labels.judges import JudgeOptions, make_pairwise_judge
from realspo.labels.llm_judge import DEFAULT_TEMPLATE, LLMJudge, check_template, read_template
from realspo.labels.pairwise import Comparison, compare_both_orders

pytestmark = pytest.mark.usefixtures("one_thread")

OBVIOUS = [  # (prompt, the better response, a worse one)
    ("What is the capital of France?", "The capital of France is Paris.", "Bananas are yellow."),
    ("What is 10 times 10?", "10 times 10 is 100.", "10 times 10 is 20."),
    ("How do I boil an egg?", "Put the egg in boiling water for nine minutes.", "Eggs are laid by chickens."),
]


def _render(prompt, a, b):
    return f"{prompt}|{a}|{b}"


# -- the arithmetic, with a fake scorer ------------------------------------------------------


def test_both_orders_are_asked_in_one_call_a_first_then_b_first():
    calls = []

    def p_first(texts):
        calls.append(list(texts))
        return np.full(len(texts), 0.5)

    compare_both_orders(p_first, _render, ["q1", "q2"], ["a1", "a2"], ["b1", "b2"])
    assert calls == [["q1|a1|b1", "q2|a2|b2", "q1|b1|a1", "q2|b2|a2"]]


def test_the_second_order_is_flipped_and_the_two_are_averaged():
    shown_first_wins = {"q|x|y": 0.9, "q|y|x": 0.3}  # x preferred in both orders

    comparison = compare_both_orders(lambda texts: np.array([shown_first_wins[t] for t in texts]),
                                     _render, ["q"], ["x"], ["y"])
    np.testing.assert_allclose(comparison.p_orders, [[0.9, 0.7]])
    assert comparison.p_a[0] == pytest.approx(0.8)
    assert comparison.outcomes == ["A"] and comparison.position_bias_rate == 0.0


def test_orders_that_disagree_are_a_tie_and_make_the_position_bias_rate():
    p_orders = np.array([[0.8, 0.2],    # always picks the first shown: a tie at 1/2
                         [0.9, 0.4],    # disagree, though the mean (0.65) leans to A: still a tie
                         [0.3, 0.1],    # B in both orders
                         [0.5, 0.7]])   # exactly 1/2 names no winner: a tie
    comparison = Comparison(p_orders)
    np.testing.assert_allclose(comparison.p_a, [0.5, 0.65, 0.2, 0.6])
    assert comparison.outcomes == ["tie", "tie", "B", "tie"]
    assert comparison.position_bias_rate == 0.75
    assert comparison.bias_summary() == ("position-bias rate 0.750 (3 of 4 pairs judged differently "
                                         "in the two orders)")


def test_a_scorer_that_always_prefers_the_first_shown_ties_everything():
    comparison = compare_both_orders(lambda texts: np.full(len(texts), 0.8), _render,
                                     ["q1", "q2"], ["a1", "a2"], ["b1", "b2"])
    assert comparison.outcomes == ["tie", "tie"] and comparison.position_bias_rate == 1.0
    np.testing.assert_allclose(comparison.p_a, [0.5, 0.5])


# -- the template ------------------------------------------------------------------------------


def test_default_template_is_valid_and_documented():
    import realspo.labels.llm_judge as module

    assert check_template(DEFAULT_TEMPLATE, "default") == DEFAULT_TEMPLATE
    assert read_template(None) == DEFAULT_TEMPLATE
    assert all(line.strip() in module.__doc__ for line in DEFAULT_TEMPLATE.splitlines()[-9:])


@pytest.mark.parametrize(("text", "message"), [
    ("{prompt} {response_a}", "missing placeholder {response_b}"),
    ("{prompt} {response_a} {response_b} {answer}", "unknown placeholder {answer}"),
    ("{} {prompt} {response_a} {response_b}", "unknown placeholder {}"),
    ("{prompt} {response_a} {response_b} }", "not a valid template"),
])
def test_bad_template_is_one_line_input_error(text, message):
    with pytest.raises(InputError, match="t.txt") as caught:
        check_template(text, "t.txt")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_literal_braces_are_allowed_doubled():
    check_template("{{json}} {prompt} {response_a} {response_b}", "t.txt")


# -- SmolLM2-135M-Instruct as the judge -------------------------------------------------------


@pytest.fixture(scope="module")
def smol_judge(smollm2_dir) -> LLMJudge:
    judge = make_pairwise_judge(f"llm:{smollm2_dir}", JudgeOptions(batch_size=4, progress=False))
    assert isinstance(judge, LLMJudge)
    return judge


def test_smollm2_reads_the_prompt_through_its_chat_template(smol_judge):
    text = smol_judge.render("Q?", "one", "two")
    assert smol_judge.chat and text.endswith("<|im_start|>assistant\n")
    assert "[Response A]\none\n\n[Response B]\ntwo" in text
    assert [smol_judge.tokenizer.decode([i]) for i in smol_judge.answer_ids] == ["A", "B"]


def test_smollm2_judges_obvious_pairs_in_both_orders(smol_judge, monkeypatch):
    prompts, good, bad = (list(column) for column in zip(*OBVIOUS, strict=True))
    seen = []
    scorer = smol_judge.p_first
    monkeypatch.setattr(smol_judge, "p_first", lambda texts: seen.append(texts) or scorer(texts))
    comparison = smol_judge.compare(prompts, good, bad)
    assert len(seen) == 1 and seen[0] == ([smol_judge.render(*t) for t in OBVIOUS]
                                          + [smol_judge.render(p, b, g) for p, g, b in OBVIOUS])
    p = comparison.p_orders
    assert p.shape == (3, 2) and np.all((p > 0) & (p < 1))
    np.testing.assert_allclose(comparison.p_a, p.mean(axis=1))
    rate = comparison.position_bias_rate
    assert rate == comparison.disagree.mean() and 0 <= rate <= 1
    assert comparison.outcomes == ["tie" if d else "A" if pa > 0.5 else "B"
                                   for d, pa in zip(comparison.disagree, comparison.p_a, strict=True)]
    # swapping A and B asks the same two texts: the verdict is mirrored
    swapped = smol_judge.compare(prompts, bad, good)
    np.testing.assert_allclose(swapped.p_a, 1 - comparison.p_a, atol=1e-5)
    print(f"\nSmolLM2-135M on the obvious pairs: P(A) by order {p.round(3).tolist()}, "
          f"outcomes {comparison.outcomes}, {comparison.bias_summary()}")


def _obvious_pairs() -> tuple[list[str], list[str], list[str], list[str]]:
    """tests/data/obvious_pairs.jsonl: prompts, A, B, and which is the sensible answer."""
    rows = [json.loads(line) for line in
            (Path(__file__).parent / "data" / "obvious_pairs.jsonl").read_text().splitlines()]
    return ([r["prompt"] for r in rows], [r["response_a"] for r in rows],
            [r["response_b"] for r in rows], [r["better"] for r in rows])


def test_smollm2_pointwise_grades_agree_with_obvious_pairs_where_pairwise_ties(smol_judge, smollm2_dir):
    """Pointwise: each response alone, P(Yes) vs P(No); the sensible answer graded higher on
    at least 5 of 6 pairs (measured: 5), where the pairwise judge's position bias ties them."""
    prompts, a, b, better = _obvious_pairs()
    pointwise = make_pairwise_judge(f"llm:{smollm2_dir}", JudgeOptions(
        batch_size=4, progress=False, mode="pointwise"))
    assert [pointwise.tokenizer.decode([i]) for i in pointwise.answer_ids] == ["Yes", "No"]
    graded, compared = pointwise.compare(prompts, a, b), smol_judge.compare(prompts, a, b)
    graded_agree = sum(o == w for o, w in zip(graded.outcomes, better, strict=True))
    compared_agree = sum(o == w for o, w in zip(compared.outcomes, better, strict=True))
    print(f"\nSmolLM2 local: pointwise agrees on {graded_agree} of 6 ({graded.bias_summary()}), "
          f"pairwise on {compared_agree} ({compared.bias_summary()})")
    assert graded.grades.shape == (6, 2) and np.all((graded.grades > 0) & (graded.grades < 1))
    assert graded_agree >= 5 and graded_agree > compared_agree
    # the grade of a response does not depend on what it is paired with
    regraded = pointwise.compare(prompts[:1], b[:1], a[:1])
    np.testing.assert_allclose(regraded.grades[0], graded.grades[0, ::-1], atol=1e-5)


def test_left_padded_batches_score_like_one_text_at_a_time(smol_judge):
    texts = [smol_judge.render(*t) for t in OBVIOUS] + ["Hi"]  # lengths differ: padding
    np.testing.assert_allclose(smol_judge.p_first(texts),
                               [smol_judge.p_first([t])[0] for t in texts], atol=1e-5)


# -- label and evaluate ------------------------------------------------------------------------


def _pairs_file(tmp_path, rows=OBVIOUS[:2]):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"pair_id": f"p{i}", "prompt": p, "response_a": a,
                                        "response_b": b}) + "\n" for i, (p, a, b) in enumerate(rows)))
    return path


def test_label_with_smollm2_labels_what_both_orders_agree_on(tmp_path, smollm2_dir, smol_judge, capsys):
    """SmolLM2-135M prefers the first response it is shown whatever it says, so both obvious
    pairs come out ties; nothing is written and the summary says why."""
    expected = smol_judge.compare(*zip(*OBVIOUS[:2], strict=True))
    out = tmp_path / "labeled.jsonl"
    code = main(["label", "--pairs", str(_pairs_file(tmp_path)), "--judge", f"llm:{smollm2_dir}",
                 "--batch-size", "4", "--out", str(out)])
    captured = capsys.readouterr()
    agreed = [o for o in expected.outcomes if o != "tie"]
    if not agreed:
        assert code == 2 and not out.exists()
        assert f"judge {expected.bias_summary()}" in captured.err and "no pair got a preference" in captured.err
    else:
        assert code == 0 and f"judge {expected.bias_summary()}" in captured.out
        assert len(out.read_text().splitlines()) == len(agreed)


def test_label_with_an_llm_judge_writes_its_probability(tmp_path, tiny_model_dir, monkeypatch, capsys):
    """The whole label path with the scorer replaced by one that prefers Paris in any order."""
    shown_first_wins = {"The capital of France is Paris.": 0.9, "Bananas are yellow.": 0.2,
                        "10 times 10 is 100.": 0.7, "10 times 10 is 20.": 0.3}
    monkeypatch.setattr(LLMJudge, "p_first", lambda self, texts: np.array(
        [shown_first_wins[t.split("[Response A]\n")[1].split("\n")[0]] for t in texts]))
    out = tmp_path / "labeled.jsonl"
    assert main(["label", "--pairs", str(_pairs_file(tmp_path)), "--judge", f"llm:{tiny_model_dir}",
                 "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["chosen"], r["rejected"]) for r in rows] == [(good, bad) for _, good, bad in OBVIOUS[:2]]
    assert [r["chosen_score"] for r in rows] == pytest.approx([(0.9 + 0.8) / 2, (0.7 + 0.7) / 2])
    assert [r["rejected_score"] for r in rows] == pytest.approx([0.15, 0.3])
    assert all(r["label_source"] == "llm-judge" for r in rows)
    assert ("labeled 2 of 2 pairs (tied 0, skipped 0); judge position-bias rate 0.000 (0 of 2 pairs"
            in capsys.readouterr().out)


def test_evaluate_with_smollm2_judge_compares_in_both_orders(tmp_path, tiny_model_dir, smollm2_dir, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p, _, _ in OBVIOUS[:2]))
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--model", tiny_model_dir, "--baseline", tiny_model_dir,
                 "--prompts", str(prompts), "--judge", f"llm:{smollm2_dir}", "--max-new-tokens", "4",
                 "--bootstrap-resamples", "100", "--no-progress", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    # the same model twice: equal responses, so the two orders are one text asked twice, and
    # P(trained) = (p + 1 - p) / 2 = 1/2: a tie, and a position-biased judge disagrees with itself
    assert result["win_rate"] is None and result["ties"] == 2 and result["mean_reward"] is None
    assert result["no_win_rate"] == "no decisive judgments (2 ties)"
    for row in result["per_prompt"]:
        assert row["trained_response"] == row["baseline_response"]
        assert row["p_trained"] == pytest.approx(0.5, abs=1e-6)
        assert sum(row["p_trained_by_order"]) == pytest.approx(1.0, abs=1e-6)
    bias = result["pairwise"]
    assert bias["position_bias_rate"] == bias["position_disagreements"] / 2
    assert f"judge position-bias rate {bias['position_bias_rate']:.3f}" in capsys.readouterr().out


# -- every judge checks the prompts before anything is generated; bad inputs exit 2 ----------


@pytest.fixture
def no_generation(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded to generate")

    monkeypatch.setattr("realspo.evaluation.evaluate.load_generator_model", refuse)


def _evaluate(tmp_path, judge, *extra):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "What is the capital of France?"}) + "\n")
    return main(["evaluate", "--model", "unused", "--baseline", "unused", "--prompts", str(prompts),
                 "--judge", judge, *extra, "--out", str(tmp_path / "eval.json")])


def _one_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    return err[0]


def test_proving_ground_judge_refuses_other_prompts_before_generating(tmp_path, no_generation, capsys):
    assert _evaluate(tmp_path, "proving-ground") == 2
    assert "not a proving-ground question" in _one_line(capsys)
    assert not (tmp_path / "eval.json").exists()


@pytest.mark.parametrize("command", ["label", "evaluate"])
def test_llm_judge_path_that_is_not_a_causal_lm_exits_2(command, tmp_path, tiny_reward_model_dir,
                                                        no_generation, capsys):
    judge = f"llm:{tiny_reward_model_dir}"
    if command == "label":
        code = main(["label", "--pairs", str(_pairs_file(tmp_path)), "--judge", judge,
                     "--out", str(tmp_path / "labeled.jsonl")])
    else:
        code = _evaluate(tmp_path, judge)
    assert code == 2
    assert "not a causal language model (architectures: LlamaForSequenceClassification)" in _one_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl" if command == "label" else "prompts.jsonl"]


@pytest.mark.parametrize("command", ["label", "evaluate"])
def test_bad_judge_template_exits_2_before_anything_loads(command, tmp_path, tiny_model_dir,
                                                         no_generation, capsys):
    template = tmp_path / "judge.txt"
    template.write_text("Which is better, {response_a} or {response_b}?")
    judge = ["--judge", f"llm:{tiny_model_dir}", "--judge-template", str(template)]
    if command == "label":
        code = main(["label", "--pairs", str(_pairs_file(tmp_path)), *judge,
                     "--out", str(tmp_path / "labeled.jsonl")])
    else:
        code = _evaluate(tmp_path, judge[1], *judge[2:])
    assert code == 2
    line = _one_line(capsys)
    assert "judge.txt" in line and "missing placeholder {prompt}" in line
    assert not (tmp_path / "labeled.jsonl").exists() and not (tmp_path / "eval.json").exists()


def test_judge_template_with_a_judge_that_has_no_prompt_is_refused(tmp_path, tiny_reward_model_dir,
                                                                   no_generation, capsys):
    template = tmp_path / "judge.txt"
    template.write_text(DEFAULT_TEMPLATE)
    assert _evaluate(tmp_path, tiny_reward_model_dir, "--judge-template", str(template)) == 2
    assert "--judge-template has no effect" in _one_line(capsys)


def test_a_pairwise_judge_cannot_be_the_oracle_of_label(tmp_path, tiny_model_dir, capsys):
    assert main(["label", "--pairs", str(_pairs_file(tmp_path)), "--simulate",
                 "--oracle", f"llm:{tiny_model_dir}", "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "a pairwise judge gives no rewards" in _one_line(capsys)
