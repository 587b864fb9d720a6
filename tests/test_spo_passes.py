"""With --spo, a micro-batch still runs in passes of whole pairs (--pass-tokens), each pair with its
degree variants, and gives the one-pass step's loss, metric sums and gradients (policy and
degree head), with prefix sharing on and off; the degree head reads only the positions it pools."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest
import torch

from realspo.training.data import PairCollator, PairDataset, PreferencePair
from realspo.training.passes import run_passes, split_passes
from realspo.training.step import build_model, forward_batch, variant_batch
from realspo.training.train_config import TrainConfig

PAIRS = [
    ("Human: How do I bake bread? Assistant:",
     "To bake bread, mix flour, water, yeast and salt in a large bowl. Knead the dough for ten "
     "minutes, then let the dough rise in a warm place for one hour.",
     "Bread needs an oven."),
    ("Human: Tell me about Paris. Assistant:",
     "Paris is the capital of France. The Seine river flows through Paris. Visitors love the "
     "Eiffel Tower and the old museums along the river banks.",
     "Paris is a large city in northern France with famous museums, wide boulevards, old "
     "bridges, busy cafes and a long history of art and science."),
    ("Human: How do I boil an egg? Assistant:",
     "Put the egg in boiling water for nine minutes, then cool it under cold running water.",
     "I am sorry, but I cannot help with that request about cooking eggs today."),
    ("Human: What is a list? Assistant:", "A mutable sequence.",
     "A list in Python is a mutable sequence of items, written in square brackets, that can grow."),
]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    from realspo.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir)
    cfg = TrainConfig(data="unused", model=tiny_model_dir, out="unused", loss="sigmoid", spo=True,
                      spo_levels=4, nll_weight=0.5, batch_size=4, max_length=256)
    cfg.validate()
    pairs = [PreferencePair(p, c, r, f"row {i}") for i, (p, c, r) in enumerate(PAIRS)]
    for i, pair in enumerate(pairs):  # a reference that differs from the policy, so the loss is not log 2
        pair.ref_chosen, pair.ref_rejected = -40.0 - i, -45.0 + i
    dataset = PairDataset(pairs, tokenizer, cfg.max_length, cfg.truncation)
    assert dataset.truncated == 0
    batch = PairCollator(tokenizer.pad_token_id, True)([dataset[i] for i in range(len(pairs))])
    torch.manual_seed(0)
    model = build_model(cfg, load_model(tiny_model_dir, dtype=torch.float32))
    return cfg, tokenizer, batch, model


def _grads(model) -> list[torch.Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
            for p in itertools.chain(model.policy.parameters(), model.head.parameters()) if p.requires_grad]


def _recording_backward(losses: list[torch.Tensor]):
    def backward(loss: torch.Tensor) -> None:
        losses.append(loss.detach())
        loss.backward()
    return backward


@pytest.mark.parametrize("sharing", [True, False])
@pytest.mark.parametrize("sample_levels", [1, None])
def test_spo_passes_give_the_one_pass_loss_sums_and_gradients(setup, sharing, sample_levels):
    cfg, tokenizer, batch, model = setup
    settings = dataclasses.replace(cfg, spo_sample_levels=sample_levels).batch_settings()
    model.share_prefixes = sharing
    try:
        # the reference: the whole micro-batch in one forward and one backward, pairs and
        # variants together (the path `realspo train --spo` took for every --pass-tokens)
        model.zero_grad()
        one = forward_batch(model, batch, settings, tokenizer, spo_step=7)
        one.loss.backward()
        g_one = _grads(model)
        assert one.sums["spo/loss"] > 0 and any(bool(g.abs().sum() > 0) for g in g_one[-4:])
        for budget, expected in ((1, len(PAIRS)), (10**6, 1), (None, None)):
            if budget is None:  # about half the tokens: two or three passes
                variants = variant_batch(batch, settings, tokenizer, 7)
                total = sum(p.tokens for p in split_passes(batch, 1, variants))
                budget = total // 2 + 1
            model.zero_grad()
            losses: list[torch.Tensor] = []
            passes = run_passes(model, batch, settings, tokenizer, 7, budget, _recording_backward(losses))
            assert len(losses) == (expected or len(losses)) and (expected or 1 < len(losses) < len(PAIRS))
            assert passes.count == one.count and passes.tokens == one.tokens
            torch.testing.assert_close(passes.sums.values, one.sums.values, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(passes.loss, one.loss.detach(), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(sum(losses), one.loss.detach(), rtol=1e-5, atol=1e-6)
            columns = [n for n in passes.per_pair.names if n != "loss"]  # the degree term is per pass
            torch.testing.assert_close(passes.per_pair.select(tuple(columns)).values,
                                       one.per_pair.select(tuple(columns)).values, rtol=1e-4, atol=1e-5)
            g_passes = _grads(model)
            assert len(g_passes) == len(g_one) > 0
            for a, b in zip(g_passes, g_one, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    finally:
        model.share_prefixes = True


def test_each_pass_holds_whole_pairs_with_their_variants_within_the_budget(setup):
    cfg, tokenizer, batch, _ = setup
    settings = cfg.batch_settings()
    variants = variant_batch(batch, settings, tokenizer, 3)
    n = len(batch["index"])
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    pair_of = [int(r) % n if int(r) < 2 * n else int(variants["pairs"][int(r) - 2 * n])
               for r in variants["rows"]]
    own = [lengths[i] + lengths[n + i] for i in range(n)]
    for j, pair in enumerate(variants["pairs"].tolist()):
        own[pair] += int(variants["attention_mask"][j].sum())
    for budget in (1, 300, 10**6):
        passes = split_passes(batch, budget, variants)
        assert [i for p in passes for i in p.batch["index"].tolist()] == batch["index"].tolist()
        seen = 0
        for p in passes:
            pairs = list(range(seen, seen + p.count))
            seen += p.count
            assert p.tokens == sum(own[i] for i in pairs)
            assert p.tokens <= budget or p.count == 1  # only a pair that alone exceeds it goes over
            mine = [k for k, pair in enumerate(pair_of) if pair in pairs]
            assert p.variants["labels"].tolist() == [int(variants["labels"][k]) for k in mine]
            rows = p.variants["rows"].tolist()
            for k, row in zip(mine, rows, strict=True):  # same sequence, renumbered into the pass
                source = int(variants["rows"][k])
                if source < 2 * n:  # an original: the pair's own row in the pass
                    assert row == (source % n - pairs[0]) + (p.count if source >= n else 0)
                else:
                    got = p.variants["input_ids"][row - 2 * p.count]
                    want = variants["input_ids"][source - 2 * n]
                    width = int(variants["attention_mask"][source - 2 * n].sum())
                    assert got[:width].tolist() == want[:width].tolist()
        assert seen == n


@pytest.mark.parametrize("sharing", [True, False])
def test_the_degree_head_reads_only_the_pooled_positions(setup, monkeypatch, sharing):
    """The variants' final states are never laid out (B, T, H): the degree head's input is
    gathered from the model's states at one position per variant, and only the pairs' rows are
    laid out for the LM head."""
    import realspo.training.step as step

    cfg, tokenizer, batch, model = setup
    settings = cfg.batch_settings()
    variants = variant_batch(batch, settings, tokenizer, 3)
    seen: dict[str, list] = {"pool": [], "lm": []}
    pool, lm = step.pool_positions, step.logps_from_hidden

    def pool_spy(states, index, response_mask, pooling):
        seen["pool"].append((states.dim(), tuple(index.shape), tuple(response_mask.shape)))
        return pool(states, index, response_mask, pooling)

    def lm_spy(model_, hidden, input_ids, response_mask, **kw):
        seen["lm"].append(tuple(hidden.shape[:2]))
        return lm(model_, hidden, input_ids, response_mask, **kw)

    monkeypatch.setattr(step, "pool_positions", pool_spy)
    monkeypatch.setattr(step, "logps_from_hidden", lm_spy)
    model.share_prefixes = sharing
    try:
        forward_batch(model, batch, settings, tokenizer, spo_step=3)
    finally:
        model.share_prefixes = True
    (dims, index_shape, mask_shape), = seen["pool"]
    assert dims == 2 and index_shape[0] == mask_shape[0] == len(variants["labels"])  # one row per variant
    assert seen["lm"] == [tuple(batch["input_ids"].shape)]  # the pairs' rows only


def test_training_with_spo_and_pass_tokens_logs_the_one_pass_run(tiny_model_dir, tmp_path):
    from realspo.training.loop import train
    from realspo.training.run_dir import read_metrics

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n" for p, c, r in PAIRS * 2))
    for name, budget in (("one", 0), ("passes", 60)):
        cfg = TrainConfig(data=str(data), model=tiny_model_dir, out=str(tmp_path / name),
                          cache_dir=str(tmp_path / "c"), batch_size=4, max_length=128, logging_steps=1,
                          max_steps=2, lr=1e-3, warmup_ratio=0.0, pass_tokens=budget, spo=True, spo_levels=3)
        cfg.validate()
        train(cfg)
    one, passes = (read_metrics(tmp_path / name / "metrics.jsonl") for name in ("one", "passes"))
    assert len(one) == len(passes) == 3
    for a, b in zip(one, passes, strict=True):
        for key in ("loss", "rewards/margins", "logps/chosen", "spo/loss", "spo/accuracy"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6)
    assert one[0]["spo/loss"] > 0 and one[-1]["loss"] != one[0]["loss"]
