"""SPO's degree task (realspo.spo.variants): variants, labels, pooling, head, loss, and spo-preview."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from realspo.cli import main
from realspo.errors import ConfigError, OutputExistsError
from realspo.spo.head import DegreeHead, degree_loss, load_head, pool_hidden, save_head
from realspo.spo.rake import extract_key_phrases, stopwords
from realspo.spo.variants import (
    SPOConfig,
    build_variant_batch,
    degree_label,
    degree_variants,
    is_graded,
    num_classes,
    precompute_variants,
    remove_spans,
    variant_stats,
)

PARIS = "Paris is the capital of France. The Seine river flows through Paris. Visitors love the Eiffel Tower."
BREAD = (
    "To bake bread, mix flour, water, yeast and salt in a large bowl. Knead the dough for ten "
    "minutes until smooth, then let the dough rise in a warm place for one hour. Bake at 220 "
    "degrees for thirty minutes."
)
SHORT = "I cannot help with that request."  # 2 key phrases: help, request


def content_words(text: str) -> int:
    """Words that are not stopwords: what removal takes away."""
    return sum(w.lower() not in stopwords() for w in re.findall(r"[^\W_]+(?:['\-][^\W_]+)*", text))


def test_variants_remove_the_top_ranked_fraction_per_level():
    # Ranked: seine river flows 9, visitors love 4, eiffel tower 4, paris 1, capital 1,
    # france 1 (n = 6). D = 4 removes ceil(d * 6 / 4) = 0, 2, 3, 5 phrases.
    variants = degree_variants(PARIS, 4, selection="top")
    assert [v.level for v in variants] == [0, 1, 2, 3]
    assert variants[0].text == PARIS and variants[0].removed == []
    assert variants[1].removed == ["seine river flows", "visitors love"]
    assert variants[1].text == "Paris is the capital of France. The through Paris. the Eiffel Tower."
    assert variants[2].text == "Paris is the capital of France. The through Paris. the."
    # every occurrence of "paris" goes at level 3
    assert variants[3].text == "is the of France. The through. the."


def test_key_content_strictly_decreases_with_level():
    for levels in (2, 4, 6):
        counts = [content_words(v.text) for v in degree_variants(BREAD, levels)]
        assert all(a > b for a, b in zip(counts, counts[1:], strict=False)), counts


def test_random_selection_also_strictly_decreases_and_is_nested():
    variants = degree_variants(BREAD, 4, selection="random", seed=3)
    counts = [content_words(v.text) for v in variants]
    assert all(a > b for a, b in zip(counts, counts[1:], strict=False))
    removed = [set(v.removed) for v in variants]
    assert all(a < b for a, b in zip(removed, removed[1:], strict=False))


def test_variants_are_deterministic_for_a_seed():
    assert degree_variants(BREAD, 4, selection="random", seed=7) == degree_variants(
        BREAD, 4, selection="random", seed=7
    )


def test_a_different_seed_changes_the_random_selection():
    by_seed = [[v.removed for v in degree_variants(BREAD, 4, selection="random", seed=s)] for s in range(4)]
    assert len({json.dumps(r) for r in by_seed}) > 1
    top = [v.removed for v in degree_variants(BREAD, 4, selection="top", seed=0)]
    assert top == [v.removed for v in degree_variants(BREAD, 4, selection="top", seed=99)]


def test_removal_tidies_spaces_and_punctuation():
    text = "Buy milk, eggs, and bread (whole grain) today."
    grain = (text.index("whole"), text.index(")"))
    assert remove_spans(text, [(4, 8), grain]) == "Buy, eggs, and bread today."
    assert remove_spans("A **bold claim** here.", [(4, 14)]) == "A here."
    assert remove_spans("- apples\n- pears\n- plums", [(2, 8)]) == "- pears\n- plums"


def test_removal_keeps_leading_space_and_text_away_from_the_cuts():
    text = " Paris is big.\n    x  =  1"  # HH responses start with a space; code keeps its layout
    assert remove_spans(text, [(1, 6)]) == " is big.\n    x  =  1"


def test_responses_with_too_few_phrases_have_equal_levels_and_are_not_graded():
    variants = degree_variants(SHORT, 4)  # n = 2 < D - 1: removes 0, 1, 1, 2
    assert len(variants) == 4
    assert variants[1].text == variants[2].text
    assert not is_graded(variants)
    assert is_graded(degree_variants(PARIS, 4))


def test_a_top_level_without_words_is_not_graded():
    # n = 3 = D - 1: level 3 removes everything, leaving only punctuation
    variants = degree_variants("Apples. Pears. Plums.", 4)
    assert [len(v.removed) for v in variants] == [0, 1, 2, 3]
    assert variants[3].text == ""
    assert not is_graded(variants)


def test_ungraded_responses_are_skipped_and_counted():
    cfg = SPOConfig(levels=4)
    prompts, texts, labels = build_variant_batch(["p"], [PARIS], [SHORT], cfg, step=0)
    assert prompts == ["p"] * 4 and labels == [0, 1, 2, 3]
    assert variant_stats(precompute_variants([PARIS, SHORT, PARIS], cfg)) == {"graded": 1, "skipped": 1}


def test_labels_separate_and_shared():
    assert [degree_label(d, True, 4, "separate") for d in range(4)] == [0, 1, 2, 3]
    assert [degree_label(d, False, 4, "separate") for d in range(4)] == [4, 5, 6, 7]
    assert [degree_label(d, False, 4, "shared") for d in range(4)] == [0, 1, 2, 3]
    assert num_classes(4, "separate") == 8 and num_classes(4, "shared") == 4
    with pytest.raises(ValueError):
        degree_label(4, True, 4, "separate")


def test_variant_batch_holds_every_level_of_both_responses_with_their_prompt():
    cfg = SPOConfig(levels=3)
    prompts, texts, labels = build_variant_batch(["p0", "p1"], [PARIS, BREAD], [BREAD, PARIS], cfg, step=5)
    assert prompts == ["p0"] * 6 + ["p1"] * 6
    assert labels == [0, 1, 2, 3, 4, 5] * 2
    assert texts[0] == PARIS and texts[3] == BREAD
    assert texts[1] == degree_variants(PARIS, 3)[1].text


def test_sampled_levels_are_deterministic_per_step_and_vary_across_steps():
    cfg = SPOConfig(sample_levels=2, seed=1)
    batch = [["p"] * 3, [PARIS, BREAD, PARIS], [BREAD, PARIS, BREAD]]
    first = build_variant_batch(*batch, cfg, step=0)
    assert first == build_variant_batch(*batch, cfg, step=0)
    assert len(first[2]) == 3 * 2 * 2
    by_step = {tuple(build_variant_batch(*batch, cfg, step=s)[2]) for s in range(6)}
    assert len(by_step) > 1


def test_config_rejects_bad_values():
    for bad in (dict(levels=1), dict(weight=-1.0), dict(labels="both"), dict(pooling="max"),
                dict(selection="best"), dict(sample_levels=5), dict(head_hidden=0)):
        with pytest.raises(ConfigError):
            SPOConfig(**bad).validate()


def test_pool_hidden_last_and_mean_skip_padding():
    hidden = torch.arange(2 * 4 * 2, dtype=torch.float32).reshape(2, 4, 2)
    # row 0: right padding, response = positions 1, 2; row 1: left padding, response = 2, 3
    mask = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 1]])
    assert pool_hidden(hidden, mask, "last").tolist() == [[4.0, 5.0], [14.0, 15.0]]
    assert pool_hidden(hidden, mask, "mean").tolist() == [[3.0, 4.0], [13.0, 14.0]]


def test_pool_hidden_rejects_rows_without_response_tokens():
    with pytest.raises(ValueError, match="rows without response tokens"):
        pool_hidden(torch.zeros(2, 3, 4), torch.tensor([[1, 1, 0], [0, 0, 0]]), "last")


def test_head_maps_hidden_states_to_class_logits():
    head = DegreeHead(hidden_size=16, num_classes=8, head_hidden=5)
    assert head(torch.zeros(3, 16)).shape == (3, 8)
    assert DegreeHead(1024, 8).head_hidden == 512


def test_degree_loss_is_cross_entropy_of_the_head():
    head = DegreeHead(hidden_size=2, num_classes=2, head_hidden=2)
    with torch.no_grad():  # identity layers: logits = gelu(pooled)
        for layer in (head.net[0], head.net[2]):
            layer.weight.copy_(torch.eye(2))
            layer.bias.zero_()
    pooled = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    loss, accuracy = degree_loss(head, pooled, torch.tensor([0, 0]))

    def gelu(x: float) -> float:
        return 0.5 * x * (1 + math.erf(x / math.sqrt(2)))

    # row 0: logits (gelu 1, 0), class 0 correct; row 1: logits (0, gelu 2), class 0 wrong
    expected = (math.log(1 + math.exp(-gelu(1.0))) + math.log(1 + math.exp(gelu(2.0)))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert accuracy.item() == 0.5


def test_degree_loss_accepts_bf16_hidden_states():
    head = DegreeHead(8, 4)
    loss, _ = degree_loss(head, torch.randn(3, 8, dtype=torch.bfloat16), torch.tensor([0, 1, 2]))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_head_save_load_round_trip(tmp_path):
    head = DegreeHead(12, 8, head_hidden=6)
    save_head(head, tmp_path, cfg=SPOConfig(levels=4))
    loaded = load_head(tmp_path)
    x = torch.randn(5, 12)
    assert torch.equal(loaded(x), head(x))
    meta = json.loads((tmp_path / "spo_head.json").read_text())
    assert meta["head"] == {"hidden_size": 12, "num_classes": 8, "head_hidden": 6}
    assert meta["spo"]["levels"] == 4
    with pytest.raises(OutputExistsError):
        save_head(head, tmp_path)


def test_head_learns_the_degree_from_hidden_states():
    # Fixed "hidden states" that encode the class (a centre per class + noise), as a policy's
    # would: 100 plain gradient steps on the head alone classify fresh samples far above
    # chance (1/8). (Plain SGD by hand: torch.optim's first step imports dynamo, ~5 s.)
    gen = torch.Generator().manual_seed(0)
    classes, hidden = 8, 16
    centres = torch.randn(classes, hidden, generator=gen)
    labels = torch.arange(classes).repeat(32)
    train = centres[labels] + 1.5 * torch.randn(len(labels), hidden, generator=gen)
    fresh = centres[labels] + 1.5 * torch.randn(len(labels), hidden, generator=gen)
    torch.manual_seed(0)
    head = DegreeHead(hidden, classes, head_hidden=16)
    first, _ = degree_loss(head, train, labels)
    for _ in range(100):
        loss, _ = degree_loss(head, train, labels)
        head.zero_grad()
        loss.backward()
        with torch.no_grad():
            for param in head.parameters():
                param -= 0.5 * param.grad
    held_out_loss, held_out_accuracy = degree_loss(head, fresh, labels)
    assert first.item() == pytest.approx(math.log(classes), abs=0.3)  # CE starts at log C
    assert held_out_loss.item() < 0.5 * first.item()
    assert held_out_accuracy.item() > 0.7


def test_spo_preview_prints_variants_and_removed_phrases(tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text(
        json.dumps({"prompt": "Tell me about Paris.", "chosen": PARIS, "rejected": SHORT}) + "\n"
        + json.dumps({"prompt": "Bread?", "chosen": BREAD, "rejected": PARIS}) + "\n"
    )
    assert main(["spo-preview", "--data", str(data), "-n", "1", "--width", "200", "--levels", "4"]) == 0
    out = capsys.readouterr().out
    assert "level 1  label 1" in out and "level 3  label 7" in out
    assert '"seine river flows"; "visitors love"' in out
    assert "skipped by the degree loss" in out  # SHORT has too few key phrases
    assert "Bread?" not in out  # -n 1


def test_spo_preview_defaults_are_the_training_defaults():
    from realspo.commands.spo_preview import SPOPreviewConfig
    from realspo.training.train_config import TrainConfig

    preview = SPOPreviewConfig(data="unused").spo_config()
    train = TrainConfig(data="unused", model="unused", out="unused", spo=True).spo_config()
    for field in ("levels", "selection", "removal", "labels", "seed", "max_words"):
        assert getattr(preview, field) == getattr(train, field), field
    assert preview.levels == SPOConfig().levels == 3


def test_spo_preview_splits_implicit_hh_prompts(tmp_path, capsys):
    data = tmp_path / "hh.jsonl"
    prompt = "\n\nHuman: Tell me about Paris.\n\nAssistant:"
    data.write_text(json.dumps({"chosen": prompt + " " + PARIS, "rejected": prompt + " " + SHORT}) + "\n")
    assert main(["spo-preview", "--data", str(data), "--width", "200"]) == 0
    out = capsys.readouterr().out
    assert "Human: Tell me about Paris." in out and f"    {PARIS}" in out


def test_spo_preview_reports_a_missing_field(tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps({"prompt": "x", "chosen": PARIS}) + "\n")
    assert main(["spo-preview", "--data", str(data), "--format", "trl"]) == 2
    assert "line 1: field 'rejected'" in capsys.readouterr().err
    assert main(["spo-preview", "--data", str(data)]) == 2  # auto: no format has these columns
    assert "cannot detect the format" in capsys.readouterr().err


def test_extracted_phrases_used_by_variants_match_rake():
    assert [p.text for p in extract_key_phrases(PARIS)][:2] == degree_variants(PARIS, 4, selection="top")[1].removed
