"""The proving ground: the oracle's formula, the world's determinism and corpus, the SFT cache."""

from __future__ import annotations

import statistics

import pytest

from realspo.errors import ConfigError, InputError
from realspo.proving_ground.oracle import repetition_rate
from realspo.proving_ground.sft import (
    SFTConfig,
    cache_key,
    collate,
    default_cache_dir,
    get_sft_model,
)
from realspo.proving_ground.world import (
    WorldConfig,
    build_world,
    format_prompt,
    oracle_reward_batch,
)

SMALL_WORLD = WorldConfig(n_train_prompts=40, n_test_prompts=10, responses_per_prompt=4)
SMALL_SFT = SFTConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                      vocab_size=400, steps=4, batch_size=8, warmup_steps=2)


@pytest.fixture(scope="module")
def world():
    return build_world(WorldConfig())


@pytest.fixture(scope="module")
def veloria(world):
    """The prompt "What is the capital of Veloria?", its true capital and a false one."""
    prompt = format_prompt("What is the capital of Veloria?")
    true = world.facts["Veloria", "capital"]
    false = next(v for v in ("Marnet", "Solvik") if v != true)
    return prompt, true, false


# -- the oracle -----------------------------------------------------------------------------

def test_oracle_gives_a_correct_answer_the_full_two_points(world, veloria):
    prompt, true, _ = veloria
    assert world.oracle.score(prompt, f" The capital of Veloria is {true}.") == 2.0


def test_oracle_gives_half_coverage_one_point_on_a_two_part_question(world):
    prompt = format_prompt("What are the capital and the currency of Veloria?")
    response = f" The capital of Veloria is {world.facts['Veloria', 'capital']}."
    assert world.oracle.score(prompt, response) == 1.0


def test_oracle_subtracts_one_per_wrong_fact(world, veloria):
    prompt, _, false = veloria
    assert world.oracle.score(prompt, f" The capital of Veloria is {false}.") == -1.0


def test_oracle_subtracts_half_per_off_topic_fact(world, veloria):
    prompt, true, _ = veloria
    other = f"The capital of Kastavia is {world.facts['Kastavia', 'capital']}."
    assert world.oracle.score(prompt, f" The capital of Veloria is {true}. {other}") == 1.5


def test_oracle_ranks_correct_over_partial_over_off_topic_over_wrong(world):
    prompt = format_prompt("What are the capital and the currency of Veloria?")
    facts = world.facts
    correct = (f" The capital of Veloria is {facts['Veloria', 'capital']}."
               f" The currency of Veloria is the {facts['Veloria', 'currency']}.")
    partial = f" The capital of Veloria is {facts['Veloria', 'capital']}."
    off_topic = f" The capital of Kastavia is {facts['Kastavia', 'capital']}."
    wrong_capital = next(v for v in ("Marnet", "Solvik") if v != facts["Veloria", "capital"])
    wrong = f" The capital of Veloria is {wrong_capital}."
    scores = [world.oracle.score(prompt, r) for r in (correct, partial, off_topic, wrong)]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == 4


def test_oracle_penalises_repetition_by_the_share_of_repeated_4grams(world, veloria):
    prompt, true, _ = veloria
    sentence = f" The capital of Veloria is {true}."
    # 18 words, 15 4-grams, 6 distinct: repetition 0.6, score 2 - 2 * 0.6
    assert repetition_rate(["the", "capital", "of", "veloria", "is", "x"] * 3) == pytest.approx(0.6)
    assert world.oracle.score(prompt, sentence * 3) == pytest.approx(0.8)


def test_oracle_penalises_each_rude_word_up_to_two(world, veloria):
    prompt, true, _ = veloria
    answer = f" The capital of Veloria is {true}."
    assert world.oracle.score(prompt, " That is a dumb thing to ask." + answer) == 1.0
    assert world.oracle.score(prompt, " Ugh, what a stupid question." + answer) == 0.0
    assert world.oracle.score(prompt, " Ugh, stupid, dumb, idiot." + answer) == 0.0


def test_oracle_reads_a_pronoun_as_the_asked_entity(world):
    prompt = format_prompt("Tell me about Veloria.")
    response = f" Its capital is {world.facts['Veloria', 'capital']}."
    judgement = world.oracle.judge(prompt, response)
    assert judgement.coverage == pytest.approx(1 / 5) and judgement.n_wrong == 0


def test_oracle_attributes_a_value_to_the_entity_named_in_its_sentence(world, veloria):
    prompt, _, _ = veloria
    kastavia = world.facts["Kastavia", "capital"]
    judgement = world.oracle.judge(prompt, f" {kastavia} is the capital of Kastavia.")
    assert (judgement.coverage, judgement.n_wrong, judgement.n_off_topic) == (0.0, 0, 1)


def test_oracle_penalises_the_share_of_unknown_words(world, veloria):
    prompt, true, _ = veloria
    judgement = world.oracle.judge(prompt, f" The capital of Veloria is {true} blorp zzq.")
    assert judgement.unknown == pytest.approx(2 / 8)
    assert judgement.score == pytest.approx(2.0 - 0.25)


def test_oracle_scores_an_empty_or_hedging_answer_zero(world, veloria):
    prompt, _, _ = veloria
    assert world.oracle.score(prompt, "") == 0.0
    assert world.oracle.score(prompt, " I do not know the answer.") == 0.0


def test_oracle_refuses_a_prompt_outside_the_world(world):
    with pytest.raises(InputError, match="not a proving-ground question"):
        world.oracle.score(format_prompt("What is the meaning of life?"), " Forty two.")


def test_oracle_reward_batch_matches_single_scores(world):
    prompts = world.test_prompts[:5]
    responses = [world.reference_response(p) for p in prompts]
    assert oracle_reward_batch(prompts, responses) == [world.oracle.score(p, r)
                                                        for p, r in zip(prompts, responses, strict=True)]
    with pytest.raises(ValueError):
        oracle_reward_batch(prompts, responses[:2])


# -- the world ------------------------------------------------------------------------------

def test_world_is_deterministic_under_its_seed():
    make = build_world.__wrapped__  # bypass the cache: build twice from scratch
    a, b = make(SMALL_WORLD), make(SMALL_WORLD)
    assert a.train_prompts == b.train_prompts and a.test_prompts == b.test_prompts
    assert a.facts == b.facts and a.sft_corpus == b.sft_corpus
    c = make(WorldConfig(seed=1, n_train_prompts=40, n_test_prompts=10, responses_per_prompt=4))
    assert c.train_prompts != a.train_prompts and c.facts != a.facts


def test_train_and_test_prompts_are_disjoint_and_distinct(world):
    assert len(set(world.train_prompts)) == len(world.train_prompts) == 600
    assert len(set(world.test_prompts)) == len(world.test_prompts) == 200
    assert not set(world.train_prompts) & set(world.test_prompts)


def test_prompts_and_responses_follow_the_hh_format(world):
    for prompt, response in world.sft_corpus[:200]:
        assert prompt.startswith("\n\nHuman: ") and prompt.endswith("\n\nAssistant:")
        assert response.startswith(" ") and not response.startswith("  ")


def test_corpus_mixes_good_and_bad_responses_for_each_prompt(world):
    rewards = [world.oracle.score(p, r) for p, r in world.sft_corpus]
    assert max(rewards) == 2.0 and min(rewards) <= -2.0
    assert statistics.pstdev(rewards) > 1.0
    assert 0.15 < sum(r == 2.0 for r in rewards) / len(rewards) < 0.6
    per_prompt = [rewards[i:i + 8] for i in range(0, len(rewards), 8)]
    assert sum(len(set(r)) > 1 for r in per_prompt) / len(per_prompt) > 0.9


def test_corpus_is_english_like_for_the_oracle(world):
    assert all(world.oracle.is_well_formed(r) for _, r in world.sft_corpus)


def test_world_refuses_more_prompts_than_it_can_ask():
    with pytest.raises(ConfigError, match="exceeds"):
        build_world(WorldConfig(n_train_prompts=5000))


# -- the SFT model --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
    cache = tmp_path_factory.mktemp("pg-cache")
    return get_sft_model(SMALL_WORLD, SMALL_SFT, cache_dir=cache, progress=False)


def test_sft_model_is_saved_as_safetensors_with_its_tokenizer(sft_dir):
    import json

    names = {p.name for p in sft_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "build_info.json"} <= names
    info = json.loads((sft_dir / "build_info.json").read_text())
    assert info["sft"]["steps"] == 4 and len(info["losses"]) == 4
    assert sft_dir.name == cache_key(SMALL_WORLD, SMALL_SFT)


def test_sft_model_is_reused_from_the_cache(sft_dir, monkeypatch):
    import realspo.proving_ground.sft as sft

    mtime = (sft_dir / "model.safetensors").stat().st_mtime_ns
    monkeypatch.setattr(sft, "train_sft", lambda *a, **k: pytest.fail("rebuilt a cached model"))
    assert get_sft_model(SMALL_WORLD, SMALL_SFT, cache_dir=sft_dir.parent) == sft_dir
    assert (sft_dir / "model.safetensors").stat().st_mtime_ns == mtime


def test_a_failed_build_leaves_no_model_behind(tmp_path, monkeypatch):
    import realspo.proving_ground.sft as sft

    def crash(world, cfg, out_dir, progress=True):
        (out_dir / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(sft, "train_sft", crash)
    with pytest.raises(KeyboardInterrupt):
        get_sft_model(SMALL_WORLD, SMALL_SFT, cache_dir=tmp_path, progress=False)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_cache_key_changes_with_either_config():
    keys = {cache_key(SMALL_WORLD, SMALL_SFT),
            cache_key(WorldConfig(seed=1), SMALL_SFT),
            cache_key(SMALL_WORLD, SFTConfig(steps=5))}
    assert len(keys) == 3


def test_cache_dir_honours_realspo_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REALSPO_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "proving-ground"


def test_collate_masks_prompt_and_padding_out_of_the_labels():
    input_ids, mask, labels = collate([([5, 6, 7, 8], 2), ([9, 10, 11], 1)], pad_id=0)
    assert input_ids.tolist() == [[5, 6, 7, 8], [9, 10, 11, 0]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert labels.tolist() == [[-100, -100, 7, 8], [-100, 10, 11, -100]]


def test_sft_model_loads_with_from_pretrained_and_generates(sft_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from realspo.models import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(sft_dir)
    tokenizer = load_tokenizer(str(sft_dir))
    prompt = build_world(SMALL_WORLD).test_prompts[0]
    enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    torch.manual_seed(0)
    out = model.generate(**enc, do_sample=True, max_new_tokens=6, min_new_tokens=6,
                         pad_token_id=tokenizer.pad_token_id)
    assert out.shape == (1, enc["input_ids"].shape[1] + 6)
    assert tokenizer.decode(out[0], skip_special_tokens=True).startswith(prompt)
