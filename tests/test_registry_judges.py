"""The judges registry: every entry runs end to end, unknown names fail listing the known ones."""

from __future__ import annotations

import json

import numpy as np
import pytest

from realspo.cli import main
from realspo.errors import ConfigError
from realspo.labels.judges import JUDGES, check_judge, find_judge, make_judge, make_pairwise_judge


def _proving_ground_example(request):
    """``(value, prompts, responses, expected rewards)`` for the proving-ground oracle."""
    from realspo.proving_ground.world import build_world

    world = build_world()
    prompts = world.train_prompts[:3]
    responses = [world.responses_for(p, 1, seed=i)[0] for i, p in enumerate(prompts)]
    expected = [world.oracle.score(p, r) for p, r in zip(prompts, responses, strict=True)]
    return "proving-ground", prompts, responses, expected


def _reward_model_example(request):
    """The tiny reward model, its rewards computed here one text at a time (no chat template:
    prompt + response as HH text, a space after "Assistant:", plain text joined as it is)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = request.getfixturevalue("tiny_reward_model_dir")
    prompts = ["\n\nHuman: Are Python lists mutable?\n\nAssistant:", "Bread needs", "The capital of France is"]
    responses = ["Yes.", " flour and water.", " Paris."]
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    texts = ["\n\nHuman: Are Python lists mutable?\n\nAssistant: Yes.", "Bread needs flour and water.",
             "The capital of France is Paris."]
    with torch.inference_mode():
        expected = [model(**tokenizer(t, return_tensors="pt")).logits[0, 0].item() for t in texts]
    return path, prompts, responses, expected


def _llm_example(request):
    """The tiny causal LM as an LLM judge (plain text: it has no chat template) on the pairs
    (response i, response i+1); its P(A) in both orders computed here one text at a time."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from realspo.labels.llm_judge import DEFAULT_TEMPLATE

    path = request.getfixturevalue("tiny_model_dir")
    prompts = ["Python lists are", "Bread needs", "The capital of France is"]
    responses = ["mutable.", "flour and water, then knead the dough.", "Paris."]
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    a_id, b_id = tokenizer.convert_tokens_to_ids(["A", "B"])  # this tokenizer spells " A" as "Ġ", "A"

    def p_first(prompt, first, second):
        text = DEFAULT_TEMPLATE.format(prompt=prompt, response_a=first, response_b=second)
        with torch.inference_mode():
            logits = model(**tokenizer(text + "\n\nAnswer: ", return_tensors="pt")).logits[0, -1]
        return torch.softmax(logits[[a_id, b_id]], dim=-1)[0].item()

    others = responses[1:] + responses[:1]
    expected = [(p_first(p, a, b), 1 - p_first(p, b, a))
                for p, a, b in zip(prompts, responses, others, strict=True)]
    return f"llm:{path}", prompts, responses, expected


def _served_example(request):
    """SmolLM2 behind llama.cpp's server as a served judge (its URL and key from the environment:
    ``$OPENAI_BASE_URL``, ``$OPENAI_API_KEY``); its P(A) in both orders read here from one
    request per text, with the ``openai`` client, as softmax over the logprobs of "A" and "B"."""
    import math

    import openai

    from llama_server import ALIAS, KEY
    from realspo.labels.llm_judge import DEFAULT_TEMPLATE

    server = request.getfixturevalue("llama_server")
    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("REALSPO_CACHE", str(request.getfixturevalue("tmp_path") / "cache"))
    client = openai.OpenAI(base_url=server.base_url, api_key=KEY)
    prompts = ["What is the capital of France?", "What is 2 + 2?"]
    responses = ["Paris.", "Four."]

    def p_first(prompt, first, second):
        text = DEFAULT_TEMPLATE.format(prompt=prompt, response_a=first, response_b=second)
        reply = client.chat.completions.create(
            model=ALIAS, messages=[{"role": "user", "content": text}], max_tokens=4,
            temperature=0.0, logprobs=True, top_logprobs=10)
        top = {t.token.strip(): math.exp(t.logprob) for t in reply.choices[0].logprobs.content[0].top_logprobs}
        floor = min(top.values())  # an answer not among the top 10 is bounded by the last listed
        return top.get("A", floor) / (top.get("A", floor) + top.get("B", floor))

    others = responses[1:] + responses[:1]
    expected = [(p_first(p, a, b), 1 - p_first(p, b, a))
                for p, a, b in zip(prompts, responses, others, strict=True)]
    return f"openai:{ALIAS}", prompts, responses, expected


EXAMPLES = {"proving-ground": _proving_ground_example, "PATH": _reward_model_example,
            "llm:PATH": _llm_example, "openai:NAME": _served_example}


def test_every_judge_entry_has_an_example_here():
    assert set(EXAMPLES) == {entry.name for entry in JUDGES}


@pytest.mark.parametrize("name", [entry.name for entry in JUDGES])
def test_judge_entry_scores_its_example(name, request):
    value, prompts, responses, expected = EXAMPLES[name](request)
    assert find_judge(value).name == name
    check_judge(value, prompts=prompts)
    if find_judge(value).pairwise:  # P(A) of the pairs (response i, response i+1), both orders
        comparison = make_pairwise_judge(value).compare(prompts, responses, responses[1:] + responses[:1])
        np.testing.assert_allclose(comparison.p_orders, expected, rtol=1e-4, atol=1e-6)
        return
    rewards = make_judge(value)(prompts, responses)
    assert rewards.shape == (len(prompts),) and np.issubdtype(rewards.dtype, np.floating)
    np.testing.assert_allclose(rewards, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", [entry.name for entry in JUDGES])
def test_judge_entry_labels_pairs_in_label(name, request, tmp_path, capsys):
    value, prompts, responses, _ = EXAMPLES[name](request)
    others = responses[1:] + responses[:1]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"pair_id": f"p{i}", "prompt": p, "response_a": a,
                                         "response_b": b}) + "\n"
                             for i, (p, a, b) in enumerate(zip(prompts, responses, others, strict=True))))
    out = tmp_path / "labeled.jsonl"
    if find_judge(value).pairwise:  # no rewards for an oracle: it labels with --judge instead
        comparison = make_pairwise_judge(value).compare(prompts, responses, others)
        winners = [(a, b) if o == "A" else (b, a) for a, b, o in
                   zip(responses, others, comparison.outcomes, strict=True) if o != "tie"]
        code = main(["label", "--pairs", str(pairs), "--judge", value, "--out", str(out)])
        if not winners:  # every pair a tie: nothing to write, said in one line
            assert code == 2 and "no pair got a preference" in capsys.readouterr().err
            return
        assert code == 0
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [(r["chosen"], r["rejected"]) for r in rows] == winners
        assert all(r["chosen_score"] > 0.5 and r["label_source"] == find_judge(value).label_source
                   for r in rows)
        return
    assert main(["label", "--pairs", str(pairs), "--simulate", "--tau", "0", "--oracle", value,
                 "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    judge = make_judge(value)
    for row in rows:
        chosen, rejected = judge([row["prompt"]] * 2, [row["chosen"], row["rejected"]])
        assert (row["oracle_chosen"], row["oracle_rejected"]) == pytest.approx((chosen, rejected))
        assert row["oracle_chosen"] >= row["oracle_rejected"]  # tau = 0: the oracle's order


def test_unknown_judge_is_an_error_naming_the_known_judges():
    with pytest.raises(ConfigError, match="unknown judge 'no-such-judge'") as caught:
        make_judge("no-such-judge")
    assert all(entry.name in str(caught.value) for entry in JUDGES)


def test_unknown_judge_exits_2_from_label_and_evaluate(tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"pair_id": "a", "prompt": "Q?", "response_a": "x",
                                 "response_b": "y"}) + "\n")
    assert main(["label", "--pairs", str(pairs), "--simulate", "--oracle", "no-such-judge",
                 "--out", str(tmp_path / "o.jsonl")]) == 2
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Hi?"}) + "\n")
    assert main(["evaluate", "--model", "m", "--baseline", "m", "--prompts", str(prompts),
                 "--judge", "no-such-judge", "--out", str(tmp_path / "e.json")]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2
    assert all("unknown judge 'no-such-judge'" in e and "proving-ground" in e for e in errors)


@pytest.mark.parametrize("command", ["label", "evaluate"])
def test_cli_help_lists_every_judge(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(f"{entry.name} (" in text for entry in JUDGES)
