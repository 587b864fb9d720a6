"""The premise's knobs of `realspo demo` (annotator confusion K, world coupling RHO) and the grid."""

from __future__ import annotations

import hashlib
import json
import os
import random

import numpy as np
import pytest

from realspo.arms.knobs import candidate_effects, confuse_labels, guess_probability, with_confusion
from realspo.arms.plan import PRESETS, make_plan
from realspo.arms.records import Candidates
from realspo.cli import main
from realspo.labels.annotator import label_errors, simulate_labels
from realspo.proving_ground.oracle import words
from realspo.proving_ground.perceptual import PerceptualEmbedder
from realspo.proving_ground.registers import REGISTERS, register_sentences, strip_registers
from realspo.proving_ground.sft import SFTConfig, cache_key
from realspo.proving_ground.topics import RUDE_WORDS
from realspo.proving_ground.world import RESPONSE_KINDS, WorldConfig, build_world
from realspo.schema import PromptGroup

# The default and quick worlds' SFT corpora and model cache keys before the knobs existed
# (computed at 39fdb37): RHO = 0 must keep them, or every cached SFT model and committed
# demo number would change.
DEFAULT_CORPUS_SHA, QUICK_CORPUS_SHA = "2b2364c2f38f5755", "2fce3581f531a194"
DEFAULT_SFT_KEY, QUICK_SFT_KEY = "f181f9e9b2bd470c", "48e6caf145b7f5cf"


def corpus_sha(world) -> str:
    return hashlib.sha256(json.dumps(world.sft_corpus).encode()).hexdigest()[:16]


def corpus_candidates(world, n_prompts: int = 120, k: int = 6, seed: int = 0) -> Candidates:
    """Candidates without a model: ``k`` corpus responses per training prompt, random unit
    embeddings, labels of the default annotator (tau = 1)."""
    groups, sims, ra, rb, index = [], [], [], [], {}
    rng = np.random.default_rng(seed)
    for g, prompt in enumerate(world.train_prompts[:n_prompts]):
        responses = world.responses_for(prompt, k, seed=seed * 7919 + g)
        groups.append(PromptGroup(f"train-{g}", prompt, responses,
                                  scores=world.oracle.score_batch([prompt] * k, responses)))
    emb = rng.normal(size=(n_prompts * k, 8))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    keys = np.arange(n_prompts * k)
    for g, group in enumerate(groups):
        for i in range(k):
            for j in range(i + 1, k):
                index[g, i, j] = len(sims)
                sims.append(float(emb[g * k + i] @ emb[g * k + j]))
                ra.append(group.scores[i])
                rb.append(group.scores[j])
    ra, rb = np.asarray(ra), np.asarray(rb)
    labels = simulate_labels(ra, rb, 1.0, seed=seed)
    return Candidates(groups, emb, keys, index, np.asarray(sims), ra, rb, labels,
                      label_errors(labels, ra, rb))


@pytest.fixture(scope="module")
def world():
    return build_world(WorldConfig())


@pytest.fixture(scope="module")
def coupled():
    return build_world(WorldConfig(coupling=1.0))


# --- K = 0 and RHO = 0 change nothing ---------------------------------------------------------


def test_zero_coupling_keeps_the_default_worlds_and_their_sft_cache_keys():
    assert corpus_sha(build_world(WorldConfig(coupling=0.0))) == DEFAULT_CORPUS_SHA
    assert corpus_sha(build_world(PRESETS["quick"]["world"])) == QUICK_CORPUS_SHA
    assert cache_key(WorldConfig(), SFTConfig()) == DEFAULT_SFT_KEY
    assert cache_key(make_plan("quick").world, make_plan("quick").sft) == QUICK_SFT_KEY
    assert make_plan("default", world_coupling=0).world == WorldConfig()


def test_a_coupled_world_has_its_own_sft_model():
    keys = {cache_key(WorldConfig(coupling=rho), SFTConfig()) for rho in (0.0, 0.5, 1.0)}
    assert len(keys) == 3 and DEFAULT_SFT_KEY in keys


def test_zero_confusion_keeps_every_label(world):
    cands = corpus_candidates(world)
    same = with_confusion(cands, world, 0.0, seed=0)
    assert np.array_equal(same.a_preferred, cands.a_preferred)
    np.testing.assert_array_equal(same.error, cands.error)
    assert not same.knobs["guessed"].any()


# --- K > 0: the annotator guesses on pairs that look alike --------------------------------------


def test_guess_probability_is_s_to_the_k_and_zero_when_off():
    s = np.array([-0.2, 0.0, 0.5, 0.9, 1.3])
    np.testing.assert_allclose(guess_probability(s, 1.0), [0, 0, 0.5, 0.9, 1.0])
    np.testing.assert_allclose(guess_probability(s, 4.0), [0, 0, 0.0625, 0.6561, 1.0])
    np.testing.assert_array_equal(guess_probability(s, 0.0), np.zeros(5))


def test_guess_rate_rises_with_similarity_and_falls_with_k():
    rng = np.random.default_rng(1)
    s = rng.random(40_000)
    truth = rng.random(40_000) < 0.5
    rates = {}
    for k in (1.0, 4.0):
        labels, guessed = confuse_labels(truth, s, k, seed=3)
        low, high = guessed[s < 0.2].mean(), guessed[s > 0.8].mean()
        assert high > low + 0.5 if k == 1 else high > 5 * low
        assert abs(guessed.mean() - np.mean(s ** k)) < 0.01
        # a guess is a fair coin: it agrees with the original label half the time
        assert abs((labels[guessed] == truth[guessed]).mean() - 0.5) < 0.02
        assert np.array_equal(labels[~guessed], truth[~guessed])
        rates[k] = guessed
    assert not (rates[4.0] & ~rates[1.0]).any()  # same draws: a larger K guesses on fewer pairs


def test_confusion_raises_label_errors_most_among_perceptually_similar_pairs(world):
    cands = with_confusion(corpus_candidates(world), world, 1.0, seed=0)
    s, guessed = cands.knobs["perceptual"], cands.knobs["guessed"]
    assert 0 <= s.min() and s.max() <= 1 and s.std() > 0.1
    top, bottom = s >= np.quantile(s, 0.8), s <= np.quantile(s, 0.2)
    assert guessed[top].mean() > guessed[bottom].mean() + 0.3
    added = np.nan_to_num(cands.error) - np.nan_to_num(cands.knobs["base_error"])
    assert added[top].mean() > added[bottom].mean() + 0.05
    effects = candidate_effects(cands)
    assert effects["label_error_rate"] > effects["label_error_rate_k0"]
    assert effects["guess_rate"] == pytest.approx(guessed.mean())


def test_perceptual_similarity_is_tf_idf_cosine(world):
    embedder = PerceptualEmbedder(["the cat", "the dog", "a cat"])
    assert embedder.similarity("the cat", "the cat") == pytest.approx(1.0)
    assert embedder.similarity("the cat", "a dog") == 0.0
    # a shared rare word counts more than a shared common one
    assert embedder.similarity("the dog", "a dog") > embedder.similarity("the cat", "the dog")
    assert embedder.similarity("", "the cat") == 0.0


# --- RHO: quality shows on the surface; the oracle scores content only ------------------------


def test_coupling_writes_low_quality_responses_in_their_register(world, coupled):
    half = build_world(WorldConfig(coupling=0.5))
    registered = {1.0: 0, 0.5: 0}
    low = 0
    for i, prompt in enumerate(world.train_prompts[:150]):
        seed = world.config.seed * 1_000_003 + i
        kinds = random.Random(seed).choices(list(RESPONSE_KINDS), list(RESPONSE_KINDS.values()), k=8)
        plain = world.responses_for(prompt, 8, seed=seed)
        for rho, w in ((1.0, coupled), (0.5, half)):
            for kind, a, b in zip(kinds, plain, w.responses_for(prompt, 8, seed=seed), strict=True):
                assert strip_registers(b) == a  # the content is the default world's
                if kind not in REGISTERS:
                    assert b == a
                else:
                    openers, closers = REGISTERS[kind]
                    if b != a:
                        registered[rho] += 1
                        assert b.startswith(tuple(" " + o for o in openers))
                        assert b.endswith(closers)
        low += sum(k in REGISTERS for k in kinds)
    assert registered[1.0] == low
    assert 0.4 * low < registered[0.5] < 0.6 * low


def test_the_oracle_scores_content_not_register(world, coupled):
    for (p, plain), (_, styled) in zip(world.sft_corpus, coupled.sft_corpus, strict=True):
        assert coupled.oracle.score(p, styled) == world.oracle.score(p, plain)
        assert coupled.oracle.is_well_formed(styled)
    judged = coupled.oracle.judge(world.train_prompts[0], " Going from a hazy memory.")
    assert judged.n_words == 0 and judged.unknown == 0 and judged.score == 0
    # the default world's oracle does not know registers: their words are unknown there
    assert world.oracle.judge(world.train_prompts[0], " Going from a hazy memory.").unknown > 0


def test_register_sentences_name_no_fact_and_no_rude_word(world):
    phrases = world.oracle._phrases
    for sentence in register_sentences():
        tokens = words(sentence)
        assert not set(tokens) & set(RUDE_WORDS), sentence
        spans = [tuple(tokens[i:j]) for i in range(len(tokens)) for j in range(i + 1, len(tokens) + 1)]
        assert not [s for s in spans if s in phrases], sentence


# --- the command line ---------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["--annotator-confusion", "-1"], ["--annotator-confusion", "inf"],
    ["--annotator-confusion", "nan"], ["--world-coupling", "1.5"], ["--world-coupling", "-0.1"],
    ["--grid", "--annotator-confusion", "1"], ["--grid", "--grid-confusions", "0,x"],
    ["--grid", "--grid-couplings", "0,2"], ["--grid", "--grid-confusions", "1,1"],
    ["--grid", "--overwrite"], ["--grid-confusions", "0,2"]])
def test_bad_knob_values_exit_2_before_any_work(tmp_path, capsys, args):
    assert main(["demo", "--quick", *args, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err
    assert not (tmp_path / "x").exists()


def test_help_documents_the_knobs(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = capsys.readouterr().out
    for flag in ("--annotator-confusion", "--world-coupling", "--grid", "--grid-confusions",
                 "--grid-couplings"):
        assert flag in text


# --- the grid -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_cache(tmp_path_factory):
    before = os.environ.get("REALSPO_CACHE")
    os.environ["REALSPO_CACHE"] = str(tmp_path_factory.mktemp("realspo-cache"))
    yield
    if before is None:
        os.environ.pop("REALSPO_CACHE", None)
    else:
        os.environ["REALSPO_CACHE"] = before


def test_the_grid_resumes_without_training_and_refuses_another_configuration(
        tmp_path, monkeypatch, capsys, private_cache, one_thread):
    import realspo.grid.run as grid

    calls = []
    train_cell = grid.train_cell
    monkeypatch.setattr(grid, "train_cell", lambda *a, **k: calls.append(a) or train_cell(*a, **k))
    out = tmp_path / "grid"
    args = ["demo", "--grid", "--quick", "--device", "cpu", "--grid-confusions", "0,1",
            "--grid-couplings", "0", "--out", str(out)]
    assert main(args) == 0
    assert len(calls) == 7  # random, easy, ceiling per K, noiseless once
    first = json.loads((out / "grid-results.json").read_text())
    assert [(c["K"], c["RHO"], c["seeds"]) for c in first["cells"]] == [(0, 0, 1), (1, 0, 1)]
    assert (out / "grid.md").read_text().count("\n| ") == 3  # header + two cells
    assert (out / "grid_heatmap.png").read_bytes()[:4] == b"\x89PNG"

    (out / "cells" / "rho0" / "seed0" / "k1-easy.json").unlink()  # an interrupted run
    calls.clear()
    assert main(args) == 0
    assert len(calls) == 1
    calls.clear()
    assert main(args) == 0
    assert calls == []
    assert json.loads((out / "grid-results.json").read_text()) == first

    capsys.readouterr()
    assert main([*args[:-2], "--budget", "0.25", "--out", str(out)]) == 2
    assert "another configuration" in capsys.readouterr().err
    changed = [a if a != "0,1" else "0,2" for a in args]
    assert main(changed) == 2
    assert "confusions" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    assert main([*args[:-1], str(tmp_path / "other")]) == 2
    assert "not a realspo demo grid" in capsys.readouterr().err
    assert calls == []


def test_the_knobs_reach_the_plan_and_the_results(tmp_path, monkeypatch, world):
    import realspo.demo.run as run
    from realspo.arms.knobs import knob_effects
    from realspo.arms.records import DemoRun

    plans = []
    monkeypatch.setattr(run, "run_demo", lambda plan, out, overwrite=False: plans.append(plan))
    assert main(["demo", "--quick", "--annotator-confusion", "2", "--world-coupling", "0.5",
                 "--out", str(tmp_path / "x")]) == 0
    assert plans[0].annotator_confusion == 2.0 and plans[0].world.coupling == 0.5
    cands = {s: with_confusion(corpus_candidates(world, 40, seed=s), world, 2.0, seed=s)
             for s in (0, 1)}
    effects = knob_effects(DemoRun(plans[0], tmp_path, {}, [], cands, {}, {}))
    assert effects["annotator_confusion"] == 2.0 and effects["world_coupling"] == 0.5
    assert set(effects["per_seed"]) == {"0", "1"}
    deciles = effects["by_perceptual_decile"]
    assert len(deciles) == 10 and sum(d["n_pairs"] for d in deciles) == sum(
        len(c.similarity) for c in cands.values())
    assert deciles[-1]["guess_rate"] > deciles[0]["guess_rate"]
    assert effects["guess_rate"] == pytest.approx(np.mean(np.concatenate(
        [c.knobs["guessed"] for c in cands.values()])))
