"""A micro-batch run as several passes of whole pairs (--pass-tokens) gives the one-pass step's
loss, metrics and gradients."""

from __future__ import annotations

import pytest
import torch

from realspo.training.data import PairCollator, PairDataset, PreferencePair
from realspo.training.loop import train
from realspo.training.passes import merge_results, pair_groups, split_pairs
from realspo.training.run_dir import read_metrics
from realspo.training.step import build_model, forward_batch
from realspo.training.train_config import TrainConfig

PAIRS = [
    ("Human: How do I bake bread? Assistant:",
     "Mix flour, water, yeast and salt in a bowl, knead the dough for ten minutes, let it rise.",
     "Bread needs an oven."),
    ("Human: Tell me about Paris. Assistant:", "Paris is the capital of France.",
     "Paris is a large city in northern France with famous museums and old bridges."),
    ("Human: How do I boil an egg? Assistant:", "Put the egg in boiling water for nine minutes.",
     "I cannot help with that."),
    ("Human: What is a list? Assistant:", "A mutable sequence.", "A list is a kind of tuple that never changes."),
]

pytestmark = pytest.mark.usefixtures("one_thread")


def test_pair_groups_are_consecutive_within_the_budget_and_keep_long_pairs_alone():
    assert pair_groups([30, 30, 30, 30], 60) == [range(0, 2), range(2, 4)]
    assert pair_groups([30, 100, 20, 20], 60) == [range(0, 1), range(1, 2), range(2, 4)]
    assert pair_groups([30, 30], 1000) == [range(0, 2)]


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    from realspo.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir)
    cfg = TrainConfig(data="unused", model=tiny_model_dir, out="unused", loss="sigmoid", nll_weight=0.5,
                      batch_size=4, max_length=256)
    cfg.validate()
    pairs = [PreferencePair(p, c, r, f"row {i}") for i, (p, c, r) in enumerate(PAIRS)]
    for i, pair in enumerate(pairs):  # a reference that differs from the policy
        pair.ref_chosen, pair.ref_rejected = -40.0 - i, -45.0 + i
    dataset = PairDataset(pairs, tokenizer, cfg.max_length, cfg.truncation)
    batch = PairCollator(tokenizer.pad_token_id, True)([dataset[i] for i in range(len(pairs))])
    torch.manual_seed(0)
    model = build_model(cfg, load_model(tiny_model_dir, dtype=torch.float32))
    return cfg, tokenizer, batch, model


def test_split_batch_holds_each_pair_once_as_the_collator_would_build_it(setup):
    _, _, batch, _ = setup
    n = len(batch["index"])
    parts = split_pairs(batch, max_tokens=1)  # every pair alone
    assert len(parts) == n
    for i, part in enumerate(parts):
        length = part["attention_mask"].sum(dim=1)
        assert part["input_ids"].shape[1] == int(length.max())  # cut to its longest sequence
        for row, source in ((0, i), (1, n + i)):
            width = int(length[row])
            assert part["input_ids"][row, :width].tolist() == batch["input_ids"][source, :width].tolist()
            assert part["response_mask"][row].tolist() == batch["response_mask"][source, :part["input_ids"].shape[1]].tolist()
        assert part["index"].tolist() == [int(batch["index"][i])] and part["prompts"] == [batch["prompts"][i]]
        assert part["ref_chosen"].tolist() == [float(batch["ref_chosen"][i])]
    assert split_pairs(batch, max_tokens=10**6) == [batch]


def test_passes_give_the_one_pass_loss_metrics_and_gradients(setup):
    cfg, tokenizer, batch, model = setup
    n = len(batch["index"])
    results = {}
    for budget in (0, 1, int(batch["attention_mask"].sum()) // 2 + 1):  # one pass, one per pair, two or three
        model.zero_grad()
        parts = split_pairs(batch, budget) if budget else [batch]
        outs = []
        for part in parts:
            out = forward_batch(model, part, cfg.batch_settings(), tokenizer, spo_step=0)
            (out.loss * (out.count / n)).backward()
            outs.append(out)
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results[budget] = (len(parts), merge_results(outs), grads)
    counts = [c for c, _, _ in results.values()]
    assert counts[0] == 1 and counts[1] == n and 1 < counts[2] < n
    _, plain, g_plain = results[0]
    assert plain.sums["nll_loss"] > 0  # the NLL term took part
    for _, split, g_split in list(results.values())[1:]:
        assert split.per_pair.names == plain.per_pair.names and split.count == plain.count
        assert split.tokens == plain.tokens
        torch.testing.assert_close(split.per_pair.values, plain.per_pair.values, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(split.sums.values, plain.sums.values, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(split.loss, plain.loss.detach(), rtol=1e-5, atol=1e-6)
        assert len(g_split) == len(g_plain) > 0
        for a, b in zip(g_split, g_plain, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_training_with_pass_tokens_logs_the_same_run(tiny_model_dir, tmp_path):
    import json

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n" for p, c, r in PAIRS * 2))
    for name, budget in (("one", 0), ("passes", 40)):
        cfg = TrainConfig(data=str(data), model=tiny_model_dir, out=str(tmp_path / name), cache_dir=str(tmp_path / "c"),
                          batch_size=4, max_length=64, logging_steps=1, max_steps=2, lr=1e-3, warmup_ratio=0.0,
                          pass_tokens=budget)
        cfg.validate()
        train(cfg)
    one, passes = (read_metrics(tmp_path / name / "metrics.jsonl") for name in ("one", "passes"))
    assert len(one) == len(passes) == 3
    for a, b in zip(one, passes, strict=True):
        for key in ("loss", "rewards/margins", "logps/chosen", "logps/rejected"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6)
    assert one[-1]["loss"] != one[0]["loss"]  # the second step saw updated weights


def test_pass_budget_defaults_to_passes_on_cpu_and_one_pass_elsewhere():
    from realspo.training.passes import CPU_PASS_TOKENS, pass_budget

    assert pass_budget(None, torch.device("cpu")) == CPU_PASS_TOKENS > 0
    assert pass_budget(None, torch.device("meta")) == 0
    assert pass_budget(0, torch.device("cpu")) == 0 and pass_budget(300, torch.device("cpu")) == 300
