"""The training loop (realspo.training.loop): first-step losses, learning, resume, outputs, failures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from realspo.errors import ConfigError, InputError, OutputExistsError, TrainingDiverged
from realspo.training.data import EpochShuffleSampler, PairDataset, read_pairs
from realspo.training.loop import train
from realspo.training.run_dir import read_metrics
from realspo.training.train_config import TrainConfig

PROMPTS = ["Human: How do I boil an egg? Assistant:", "Human: How do I bake bread? Assistant:",
           "Human: What are lists in Python? Assistant:", "Human: Tell me about cells. Assistant:"]
HELPFUL = ["Put the egg in boiling water for nine minutes.",
           "Mix flour, water, yeast and salt, then knead the dough.",
           "Python lists are mutable sequences; tuples are immutable."]
UNHELPFUL = ["I am sorry, but I cannot help with that request.",
             "The mitochondria is the powerhouse of the cell."]


def write_pairs(path: Path, n: int = 24) -> Path:
    """A learnable toy set: chosen responses are helpful sentences, rejected ones refusals."""
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"prompt": PROMPTS[i % len(PROMPTS)],
                                 "chosen": HELPFUL[i % len(HELPFUL)],
                                 "rejected": UNHELPFUL[i % len(UNHELPFUL)]}) + "\n")
    return path


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("data") / "pairs.jsonl")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("ref-cache"))


def config(tiny_model_dir: str, pairs_file: Path, out: Path, cache_dir: str, **kw) -> TrainConfig:
    base = dict(data=str(pairs_file), model=tiny_model_dir, out=str(out), cache_dir=cache_dir,
                batch_size=4, max_length=64, logging_steps=1, max_steps=1, lr=1e-3, warmup_ratio=0.0)
    base.update(kw)
    cfg = TrainConfig(**base)
    cfg.validate()
    return cfg


@pytest.fixture(scope="module")
def learned_run(tiny_model_dir, pairs_file, cache_dir, tmp_path_factory) -> Path:
    """20 steps with SPO (D = 2) and a held-out eval split; shared by the output checks."""
    out = tmp_path_factory.mktemp("runs") / "learned"
    cfg = config(tiny_model_dir, pairs_file, out, cache_dir, max_steps=20, lr=2e-3, spo=True,
                 spo_levels=2, spo_weight=1.0, eval_fraction=0.25, logging_steps=5, eval_steps=10)
    assert train(cfg) == out
    return out


@pytest.mark.parametrize(("loss", "extra", "expected"), [
    ("sigmoid", {}, math.log(2)),
    ("cdpo", {"label_smoothing": 0.2}, math.log(2)),
    ("robust", {"label_smoothing": 0.2}, math.log(2)),
    ("hinge", {}, 1.0),
    ("ipo", {"beta": 0.2}, 1 / (4 * 0.2**2)),
])
def test_first_logged_loss_with_policy_equal_to_reference(
        tiny_model_dir, pairs_file, cache_dir, tmp_path, loss, extra, expected):
    train(config(tiny_model_dir, pairs_file, tmp_path / "run", cache_dir, loss=loss, **extra))
    first = read_metrics(tmp_path / "run" / "metrics.jsonl")[0]
    assert first["step"] == 0
    assert first["loss"] == pytest.approx(expected, abs=1e-4)
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-4)


def test_short_run_learns_preferences_and_degrees(learned_run):
    records = [r for r in read_metrics(learned_run / "metrics.jsonl") if "loss" in r]
    first, last = records[0], records[-1]
    assert first["rewards/accuracies"] < 0.5 and first["spo/accuracy"] < 0.4
    assert last["step"] == 20
    assert last["rewards/accuracies"] >= 0.9
    assert last["spo/accuracy"] >= 0.6  # chance is 1/(2D) = 0.25
    assert last["loss"] < first["loss"]
    evals = [r for r in read_metrics(learned_run / "metrics.jsonl") if "eval/loss" in r]
    assert [r["step"] for r in evals] == [10, 20]
    assert evals[-1]["eval/rewards/accuracies"] >= 0.9


def test_metrics_records_carry_trl_names_and_throughput(learned_run):
    record = read_metrics(learned_run / "metrics.jsonl")[1]
    for key in ("step", "epoch", "learning_rate", "loss", "rewards/chosen", "rewards/rejected",
                "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected",
                "spo/loss", "spo/accuracy", "tokens_per_second", "peak_memory_mb"):
        assert key in record
    assert record["rewards/margins"] == pytest.approx(
        record["rewards/chosen"] - record["rewards/rejected"], abs=1e-5)
    assert record["tokens_per_second"] > 0 and record["peak_memory_mb"] > 0


def test_output_loads_with_plain_transformers_without_spo_weights(learned_run):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(learned_run)
    assert model.config.num_hidden_layers == 2
    with safe_open(str(learned_run / "model.safetensors"), "pt") as fh:
        keys = list(fh.keys())
    assert keys and not any("head.net" in k or k.startswith("policy.") for k in keys)
    with safe_open(str(learned_run / "spo_head.safetensors"), "pt") as fh:
        assert sorted(fh.keys()) == ["net.0.bias", "net.0.weight", "net.2.bias", "net.2.weight"]
    assert (learned_run / "config.yaml").read_text().count("spo: true") == 1


def test_resume_continues_from_checkpoint_with_same_data_order(
        tiny_model_dir, pairs_file, cache_dir, tmp_path):
    kw = dict(max_steps=6, save_steps=3, grad_accum=2, batch_size=5, spo=True, spo_levels=3,
              spo_sample_levels=1, seed=3, warmup_ratio=0.2)
    whole, interrupted = [], []
    train(config(tiny_model_dir, pairs_file, tmp_path / "a", cache_dir, **kw),
          on_batch=lambda step, idx: whole.append((step, idx)))
    cfg_b = config(tiny_model_dir, pairs_file, tmp_path / "b", cache_dir, **kw)
    assert train(cfg_b, on_batch=lambda step, idx: interrupted.append((step, idx)), stop_after=3) is None
    assert not (tmp_path / "b" / "model.safetensors").exists()
    cfg_b.resume = True
    train(cfg_b, on_batch=lambda step, idx: interrupted.append((step, idx)))
    # 24 pairs in batches of 5: 5 micro-batches (3 steps) per epoch, the last step of an
    # epoch has one micro-batch; the interrupted run stops mid-epoch 2 and resumes there
    assert interrupted == whole and len(whole) == 10
    a = read_metrics(tmp_path / "a" / "metrics.jsonl")
    b = read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [r["step"] for r in b] == [r["step"] for r in a] == list(range(7))
    for ra, rb in zip(a, b, strict=True):
        for key in ("loss", "rewards/margins", "spo/loss", "learning_rate"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-6)


def test_lora_run_exports_a_merged_model(tiny_model_dir, pairs_file, cache_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    train(config(tiny_model_dir, pairs_file, out, cache_dir, lora_r=4, max_steps=2))
    assert not (out / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in name for name, _ in model.named_parameters())
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    changed = [n for (n, p), (_, q) in zip(model.named_parameters(), base.named_parameters(), strict=True)
               if not torch.equal(p, q)]
    assert changed and all("proj" in n for n in changed)  # only LoRA-adapted layers moved


def test_lora_no_merge_exports_the_adapter(tiny_model_dir, pairs_file, cache_dir, tmp_path):
    out = tmp_path / "adapter"
    train(config(tiny_model_dir, pairs_file, out, cache_dir, lora_r=4, merge=False,
                 lora_target=["q_proj", "v_proj"]))
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]
    assert (out / "adapter_model.safetensors").exists() and not (out / "model.safetensors").exists()
    from peft import AutoPeftModelForCausalLM

    model = AutoPeftModelForCausalLM.from_pretrained(out)
    assert sum("lora_A" in name for name, _ in model.named_parameters()) == 4  # 2 layers x q, v


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_checkpoint(
        tiny_model_dir, pairs_file, cache_dir, tmp_path, monkeypatch):
    import realspo.training.step as step_module

    real, calls = step_module.preference_loss, []

    def nan_at_third_call(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 3:  # micro-batch 3 = step 3 (the step-0 record reuses batch 1)
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(step_module, "preference_loss", nan_at_third_call)
    out = tmp_path / "nan"
    with pytest.raises(TrainingDiverged, match=r"at step 3\b.*checkpoints/step-000002"):
        # one pass per micro-batch, so that preference_loss's third call is micro-batch 3
        train(config(tiny_model_dir, pairs_file, out, cache_dir, max_steps=4, save_steps=2, pass_tokens=0))
    kept = out / "checkpoints" / "step-000002"
    assert json.loads((kept / "trainer_state.json").read_text())["step"] == 2
    assert (kept / "model.safetensors").exists()
    assert not (out / "checkpoints" / "step-000004").exists()
    assert not (out / "model.safetensors").exists()
    assert max(r["step"] for r in read_metrics(out / "metrics.jsonl")) == 2


def test_reference_free_loss_never_computes_reference(
        tiny_model_dir, pairs_file, tmp_path, monkeypatch):
    import realspo.training.reference

    def fail(*args, **kwargs):
        raise AssertionError("reference pass ran for simpo")

    monkeypatch.setattr(realspo.training.reference, "load_or_compute_reference", fail)
    out = tmp_path / "simpo"
    train(config(tiny_model_dir, pairs_file, out, str(tmp_path / "unused"), loss="simpo",
                 gamma=0.5, beta=2.0))
    first = read_metrics(out / "metrics.jsonl")[0]
    assert math.isfinite(first["loss"]) and (out / "model.safetensors").exists()
    assert not (tmp_path / "unused").exists()  # no cache entry was written either


def test_existing_out_is_refused_before_any_work(tiny_model_dir, pairs_file, cache_dir, tmp_path,
                                                 monkeypatch):
    import realspo.models

    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    monkeypatch.setattr(realspo.models, "load_tokenizer", lambda *a, **k: pytest.fail("loaded"))
    with pytest.raises(OutputExistsError, match="--resume .* --overwrite"):
        train(config(tiny_model_dir, pairs_file, out, cache_dir))
    with pytest.raises(ConfigError, match="no checkpoint to resume"):
        train(config(tiny_model_dir, pairs_file, out, cache_dir, resume=True))
    assert (out / "keep.txt").read_text() == "precious"


def test_missing_field_names_row_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n"
                    + json.dumps({"prompt": "p", "chosen": "a"}) + "\n")
    with pytest.raises(InputError, match=r"bad.jsonl:line 2: field 'rejected': missing"):
        read_pairs(path)


def test_empty_response_names_row_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "p", "chosen": "  ", "rejected": "b"}) + "\n")
    with pytest.raises(InputError, match=r"line 1: field 'chosen': empty"):
        read_pairs(path)


def test_truncation_counts_pairs_and_keeps_a_response_token(tiny_model_dir, tmp_path):
    from realspo.models import load_tokenizer

    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({"prompt": "Human: " + "bread " * 40, "chosen": "Put the egg in.",
                                "rejected": "No."}) + "\n"
                    + json.dumps({"prompt": "Hi", "chosen": "Yes.", "rejected": "No."}) + "\n")
    tokenizer = load_tokenizer(tiny_model_dir)
    data = PairDataset(read_pairs(path), tokenizer, max_length=12, truncation="keep_end")
    assert data.truncated == 1
    assert all(len(t.chosen_ids) >= 1 and len(t.prompt_ids) + len(t.chosen_ids) <= 12 for t in data.tokens)
    with pytest.raises(InputError, match="line 1: field 'prompt': .*no room"):
        PairDataset(read_pairs(path), tokenizer, max_length=12, truncation="keep_start")


def test_epoch_order_depends_only_on_seed_and_epoch():
    a, b = EpochShuffleSampler(10, seed=1), EpochShuffleSampler(10, seed=1)
    a.set_epoch(0)
    first = list(a)
    a.set_epoch(1)
    second = list(a)
    b.set_epoch(1)
    assert list(b) == second != first and sorted(first) == list(range(10))


def _padded_tokens(order: list[int], lengths: list[int], batch_size: int) -> int:
    return sum(batch_size * max(lengths[i] for i in order[k:k + batch_size])
               for k in range(0, len(order), batch_size))


def test_length_grouped_order_is_a_seeded_permutation_with_less_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 400, size=200).tolist()
    plain, grouped = EpochShuffleSampler(200, seed=3), EpochShuffleSampler(200, seed=3, lengths=lengths,
                                                                           batch_size=4)
    again = EpochShuffleSampler(200, seed=3, lengths=lengths, batch_size=4)
    grouped.set_epoch(1)
    again.set_epoch(1)
    order = list(grouped)
    assert sorted(order) == list(range(200)) and list(again) == order
    grouped.set_epoch(2)
    assert list(grouped) != order  # still reshuffled every epoch
    assert _padded_tokens(order, lengths, 4) < 0.8 * _padded_tokens(list(plain), lengths, 4)
    assert lengths[order[0]] == max(lengths)  # the longest batch first: an OOM shows at once
    with pytest.raises(ValueError, match="3 lengths for 200"):
        EpochShuffleSampler(200, seed=3, lengths=[1, 2, 3])


def test_group_by_length_batches_pairs_of_similar_length(tiny_model_dir, tmp_path, cache_dir):
    rng = np.random.default_rng(1)
    words = rng.integers(1, 40, size=64).tolist()
    rows = [{"prompt": "Q?", "chosen": " ".join(["word"] * n), "rejected": "No."} for n in words]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    padded = {}
    for flag in (False, True):
        seen: list[int] = []
        train(config(tiny_model_dir, path, tmp_path / f"g{flag}", cache_dir, batch_size=4, max_steps=16,
                     group_by_length=flag), on_batch=lambda _s, idx, seen=seen: seen.extend(idx))
        assert sorted(seen) == list(range(64))  # one epoch, every pair once
        padded[flag] = _padded_tokens(seen, words, 4)
    assert padded[True] < 0.8 * padded[False]


def test_gradient_checkpointing_changes_memory_not_results(
        tiny_model_dir, pairs_file, cache_dir, tmp_path):
    for name, flag in (("plain", False), ("ckpt", True)):
        train(config(tiny_model_dir, pairs_file, tmp_path / name, cache_dir, max_steps=3,
                     gradient_checkpointing=flag, spo=True, spo_levels=2))
    plain = read_metrics(tmp_path / "plain" / "metrics.jsonl")
    ckpt = read_metrics(tmp_path / "ckpt" / "metrics.jsonl")
    for a, b in zip(plain, ckpt, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["spo/loss"] == pytest.approx(a["spo/loss"], rel=1e-5)


def test_overwrite_replaces_a_previous_run(tiny_model_dir, pairs_file, cache_dir, tmp_path):
    from realspo.outputs import mark_output

    out = tmp_path / "run"
    out.mkdir()
    mark_output(out, "train-run")  # only a marked training run is replaced
    (out / "stale.txt").write_text("old")
    train(config(tiny_model_dir, pairs_file, out, cache_dir, overwrite=True))
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").exists()


def test_eval_data_is_evaluated_separately(tiny_model_dir, pairs_file, cache_dir, tmp_path):
    held_out = write_pairs(tmp_path / "eval.jsonl", n=5)
    out = tmp_path / "run"
    train(config(tiny_model_dir, pairs_file, out, cache_dir, eval_data=str(held_out), max_steps=2,
                 eval_steps=1))
    evals = [r for r in read_metrics(out / "metrics.jsonl") if "eval/loss" in r]
    assert [r["step"] for r in evals] == [1, 2]
    assert evals[0]["eval/loss"] != pytest.approx(evals[1]["eval/loss"])


def test_unknown_lora_target_is_a_config_error(tiny_model_dir, pairs_file, cache_dir, tmp_path):
    with pytest.raises(ConfigError, match="--lora-target nonexistent_proj"):
        train(config(tiny_model_dir, pairs_file, tmp_path / "run", cache_dir, lora_r=2,
                     lora_target=["nonexistent_proj"]))


def test_reference_columns_in_the_input_are_used_as_given(tiny_model_dir, tmp_path):
    rows = [json.loads(line) for line in write_pairs(tmp_path / "p.jsonl", n=4).read_text().splitlines()]
    with (tmp_path / "with_ref.jsonl").open("w") as fh:
        for row in rows:
            fh.write(json.dumps({**row, "ref_chosen_logps": -100.0, "ref_rejected_logps": -50.0}) + "\n")
    out = tmp_path / "run"
    train(config(tiny_model_dir, tmp_path / "with_ref.jsonl", out, str(tmp_path / "cache"), beta=0.1))
    first = read_metrics(out / "metrics.jsonl")[0]
    assert first["rewards/chosen"] == pytest.approx(0.1 * (first["logps/chosen"] + 100.0), rel=1e-5)
    assert first["rewards/rejected"] == pytest.approx(0.1 * (first["logps/rejected"] + 50.0), rel=1e-5)
