"""The positive-control worlds of the proving ground: ``premise`` (REAL's premise holds) and
``omissions`` (SPO's premise holds), and the within-prompt premise check every demo reports."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from tests.test_demo_knobs import corpus_candidates

from realspo.arms.knobs import perceptual_similarity
from realspo.arms.plan import PREMISE_CONFUSION, make_plan
from realspo.arms.premise_check import (
    PREMISE_THRESHOLD,
    per_prompt_spearman,
    premise_line,
    within_prompt_spearman,
)
from realspo.cli import main
from realspo.errors import ConfigError
from realspo.proving_ground.ladder import LADDER, rungs, strip_ladder, with_ladder
from realspo.proving_ground.oracle import words
from realspo.proving_ground.sft import SFTConfig, cache_key
from realspo.proving_ground.topics import RUDE_WORDS
from realspo.proving_ground.world import WorldConfig, build_world, question_pool_size
from realspo.spo.variants import SPOConfig, variants_for


@pytest.fixture(scope="module")
def premise():
    return build_world(WorldConfig(kind="premise"))


@pytest.fixture(scope="module")
def omissions():
    return build_world(WorldConfig(kind="omissions", n_train_prompts=480))


def _leading_rungs(text: str) -> int:
    n = 0
    for sentence in LADDER:
        if not text.startswith(" " + sentence):
            break
        text, n = text[len(sentence) + 1:], n + 1
    return n


def test_rungs_fall_as_the_content_score_rises():
    assert [rungs(s) for s in (2.0, 1.5, 1.0, 0.0, -0.5, -1.0, -2.0, -5.0)] == [0, 1, 1, 2, 3, 3, 4, 4]
    assert with_ladder(" Marnet.", 0.0) == f" {LADDER[0]} {LADDER[1]} Marnet."
    assert strip_ladder(with_ladder(" Marnet.", -3.0)) == " Marnet."


def test_every_premise_response_carries_the_rungs_of_its_content(premise):
    seen = set()
    for prompt, response in premise.sft_corpus[:2000]:
        content = strip_ladder(response)
        score = premise.oracle.score(prompt, content)
        assert _leading_rungs(response) == rungs(score), response
        # the oracle judges content only: the ladder neither helps nor hurts
        assert premise.oracle.score(prompt, response) == score
        seen.add(rungs(score))
    assert seen == {0, 1, 2, 3, 4}


def test_the_premise_world_keeps_the_default_worlds_facts_and_prompts(premise):
    default = build_world(WorldConfig())
    assert premise.facts == default.facts and premise.train_prompts == default.train_prompts
    assert premise.test_prompts == default.test_prompts


def test_ladder_sentences_name_no_fact_and_no_rude_word(premise):
    for sentence in LADDER:
        assert not premise.oracle.claims(sentence, "Veloria")
        assert not set(words(sentence)) & set(RUDE_WORDS)


def test_the_premise_world_couples_surface_and_quality_within_prompts(premise):
    """On world-written candidates, perceptual similarity ranks against |gap| within prompts:
    at or below the threshold in the premise world, above it in the default world."""
    def spearman(world):
        cands = corpus_candidates(world, n_prompts=80, k=6)
        cands = dataclasses.replace(cands, similarity=perceptual_similarity(cands, world))
        return float(per_prompt_spearman(cands).mean())

    coupled, default = spearman(premise), spearman(build_world(WorldConfig()))
    assert coupled <= PREMISE_THRESHOLD < default
    assert coupled < default - 0.2


def test_omissions_world_asks_only_for_two_or_more_facts(omissions):
    assert question_pool_size("omissions") == 680 < question_pool_size() == 1040
    assert all(len(q.attributes) > 1 for q in omissions.questions.values())


def test_omissions_responses_state_only_true_asked_facts(omissions):
    complete = 0
    for prompt, response in omissions.sft_corpus:
        j = omissions.oracle.judge(prompt, response)
        assert j.n_wrong == j.n_off_topic == j.n_rude == 0 and j.coverage > 0, response
        complete += j.coverage == 1.0
    assert 0.2 < complete / len(omissions.sft_corpus) < 0.6


def test_removing_key_content_lowers_the_omission_worlds_reward(omissions):
    """SPO's premise, on the world's own responses: the manipulation check's rule (>= 0.8 of
    the degree variants below their original) holds for every level."""
    cfg = SPOConfig()
    below: dict[int, list[bool]] = {}
    for prompt, response in omissions.sft_corpus[:1500]:
        variants = variants_for(response, cfg)
        if not variants:
            continue
        original = omissions.oracle.score(prompt, response)
        for v in variants:
            if v.level > 0:
                below.setdefault(v.level, []).append(omissions.oracle.score(prompt, v.text) < original)
    assert set(below) == {1, 2}
    for level, flags in below.items():
        assert np.mean(flags) >= 0.8, (level, np.mean(flags))


def test_the_default_world_fails_that_rule():
    """The same measurement in the default world, where errors are false claims: the control
    above can fail."""
    world, cfg, flags = build_world(WorldConfig()), SPOConfig(), []
    for prompt, response in world.sft_corpus[:1500]:
        original = world.oracle.score(prompt, response)
        flags += [world.oracle.score(prompt, v.text) < original
                  for v in variants_for(response, cfg) or [] if v.level > 0]
    assert np.mean(flags) < 0.8


def test_worlds_have_their_own_sft_models():
    keys = {cache_key(WorldConfig(kind=k), SFTConfig()) for k in ("default", "premise", "omissions")}
    assert len(keys) == 3


def test_plans_of_the_worlds():
    assert make_plan("default", world="premise").annotator_confusion == PREMISE_CONFUSION
    assert make_plan("default", world="premise", annotator_confusion=0).annotator_confusion == 0
    assert make_plan("default").annotator_confusion == 0
    plan = make_plan("full", world="omissions")
    assert plan.world.kind == "omissions"
    assert plan.world.n_train_prompts + plan.world.n_test_prompts == 680
    assert plan.n_train_prompts == plan.world.n_train_prompts == 480
    with pytest.raises(ConfigError, match="--world"):
        make_plan("default", world="nope")


@pytest.mark.parametrize("args", [["--world", "premise", "--grid"], ["--world", "nowhere"]])
def test_bad_world_options_exit_2(tmp_path, capsys, args):
    try:
        code = main(["demo", "--out", str(tmp_path / "d"), *args])
    except SystemExit as exc:  # argparse refuses an unknown choice
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "world" in err and len(err.splitlines()) <= 2
    assert not (tmp_path / "d").exists()


def test_within_prompt_spearman_and_its_verdict_rule(premise):
    cands = corpus_candidates(premise, n_prompts=40, k=6)
    # similarity = minus the gap's rank within the prompt: a perfect premise
    gap = np.abs(cands.reward_a - cands.reward_b)
    perfect = dataclasses.replace(cands, similarity=-gap)
    check = within_prompt_spearman({0: perfect, 1: perfect}, resamples=200)
    assert check["estimate"] == pytest.approx(-1.0) and check["holds"]
    assert "holds" in premise_line(check)
    flat = within_prompt_spearman({0: cands}, resamples=200)  # random embeddings: no premise
    assert abs(flat["estimate"]) < 0.2 and not flat["holds"]
    assert "no conclusion about REAL" in premise_line(flat)
    assert "no conclusion" in premise_line(None)


def test_quick_demo_in_the_premise_world_runs_and_reports_the_premise(tmp_path):
    """CI's smoke test of the positive control: ``realspo demo --world premise --quick``."""
    import json

    out = tmp_path / "premise"
    assert main(["demo", "--world", "premise", "--quick", "--device", "cpu", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["world"]["kind"] == "premise"
    assert results["config"]["candidates"] == "world"
    assert results["config"]["annotator_confusion"] == PREMISE_CONFUSION
    check = results["premise_check"]
    assert check["prompts"] > 0 and -1.0 <= check["estimate"] <= 1.0
    assert check["ci_low"] <= check["estimate"] <= check["ci_high"]
    # the candidates are the world's writing: every one opens with the rungs of its content
    rows = [json.loads(line) for line in (out / "seed-0" / "candidates.jsonl").open()]
    world = build_world(WorldConfig(**results["config"]["world"]))
    for row in rows[:20]:
        for response, reward in zip(row["responses"], row["oracle_rewards"], strict=True):
            assert _leading_rungs(response) == rungs(world.oracle.score(row["prompt"], strip_ladder(response)))
            assert reward == world.oracle.score(row["prompt"], response)
    assert "within-prompt Spearman" in (out / "report.md").read_text()


def test_reals_verdicts_are_withheld_where_its_premise_does_not_hold():
    from realspo.arms.premise_check import WITHHELD, withheld
    from realspo.demo.findings import judged

    c = {"kind": "strategy", "a": "easy/dpo", "b": "random/dpo", "difference": -0.05,
         "ci_low": -0.09, "ci_high": -0.01, "mde": 0.05, "p": 0.01, "p_holm": 0.02, "q_bh": 0.02,
         "per_seed": [-0.05]}
    spo = {**c, "kind": "spo", "a": "random/dpo+spo"}
    absent = {"premise_check": {"holds": False}, "statistics": {}}
    present = {"premise_check": {"holds": True}, "statistics": {}}
    assert withheld(absent, c) and not withheld(present, c) and not withheld(absent, spo)
    assert withheld({"statistics": {}}, c)  # not measured: no conclusion either
    assert WITHHELD in judged(absent, c) and "worse" not in judged(absent, c)
    assert judged(absent, c).count("Holm") == 1  # the numbers once, with their p-values
    assert WITHHELD not in judged(present, c) and "worse" in judged(present, c)
