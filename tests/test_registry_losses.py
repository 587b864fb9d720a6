"""Every registered loss, end to end: its reference use, its reward, and a short training run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from realspo.cli import main
from realspo.errors import ConfigError
from realspo.training.loop import train
from realspo.training.losses import (
    LOSSES,
    LossConfig,
    PolicyLogps,
    compute_margins,
    preference_loss,
)
from realspo.training.run_dir import read_metrics
from realspo.training.train_config import TrainConfig

NAMES = sorted(LOSSES)
CFG = LossConfig(beta=0.1, label_smoothing=0.1, gamma=0.5, nll_weight=0.2)
PAIRS = [
    {"prompt": "Human: How do I boil an egg? Assistant:",
     "chosen": "Put the egg in boiling water for nine minutes.",
     "rejected": "I am sorry, but I cannot help with that request."},
    {"prompt": "Human: How do I bake bread? Assistant:",
     "chosen": "Mix flour, water, yeast and salt, then knead the dough.",
     "rejected": "The mitochondria is the powerhouse of the cell."},
] * 2

pytestmark = pytest.mark.usefixtures("one_thread")


def batch(requires_grad: bool = False) -> PolicyLogps:
    """Three pairs of summed log-probs (B = 3) with their response lengths."""
    chosen = torch.tensor([-12.0, -30.5, -7.25], requires_grad=requires_grad)
    return PolicyLogps(chosen, torch.tensor([-14.0, -28.0, -9.5]),
                       torch.tensor([4.0, 10.0, 3.0]), torch.tensor([5.0, 9.0, 2.0]))


REF = (torch.tensor([-12.5, -29.0, -8.0]), torch.tensor([-13.0, -29.5, -9.0]))
SHIFTED_REF = (REF[0] + 1.0, REF[1] - 0.5)


@pytest.mark.parametrize("name", NAMES)
def test_each_loss_is_finite_with_gradients_and_logs_its_reward(name):
    entry, policy = LOSSES[name], batch(requires_grad=True)
    out = preference_loss(name, policy, *REF, CFG)
    (grad,) = torch.autograd.grad(out.loss, policy.chosen)
    assert out.losses.shape == (3,) and torch.isfinite(out.losses).all()
    assert torch.isfinite(out.loss) and torch.isfinite(grad).all() and grad.abs().sum() > 0
    reward_c, reward_r = entry.reward(policy, compute_margins(policy, *REF))
    torch.testing.assert_close(out.rewards_chosen, (CFG.beta * reward_c).detach(), rtol=0, atol=0)
    torch.testing.assert_close(out.rewards_rejected, (CFG.beta * reward_r).detach(), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_each_loss_reads_the_reference_exactly_when_it_is_not_reference_free(name):
    entry = LOSSES[name]
    out, shifted = (preference_loss(name, batch(), *ref, CFG) for ref in (REF, SHIFTED_REF))
    if entry.reference_free:
        assert out.loss.item() == shifted.loss.item()
        assert torch.equal(out.rewards_chosen, shifted.rewards_chosen)
        no_ref = preference_loss(name, batch(), None, None, CFG)
        assert no_ref.loss.item() == out.loss.item()
    else:
        assert out.loss.item() != shifted.loss.item()
        assert not torch.equal(out.rewards_chosen, shifted.rewards_chosen)
        with pytest.raises(ConfigError, match=f"--loss {name} needs reference log-probs"):
            preference_loss(name, batch(), None, None, CFG)


@pytest.mark.parametrize("name", NAMES)
def test_each_loss_trains_two_steps_and_computes_the_reference_only_if_it_needs_it(
        name, tiny_model_dir, tmp_path, monkeypatch):
    import realspo.training.reference

    real, calls = realspo.training.reference.load_or_compute_reference, []

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(realspo.training.reference, "load_or_compute_reference", counted)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    cfg = TrainConfig(data=str(data), model=tiny_model_dir, out=str(tmp_path / "run"), loss=name,
                      cache_dir=str(tmp_path / "cache"), batch_size=2, max_length=48, max_steps=2,
                      logging_steps=1, lr=1e-3, label_smoothing=0.1, nll_weight=0.2)
    assert cfg.uses_reference == (not LOSSES[name].reference_free)
    assert train(cfg) == Path(cfg.out)
    assert len(calls) == int(cfg.uses_reference)
    records = [r for r in read_metrics(Path(cfg.out) / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in records] == [0, 1, 2]
    for record in records:
        assert all(math.isfinite(record[k]) for k in ("loss", "rewards/margins", "nll_loss"))
        assert record["rewards/margins"] == pytest.approx(
            record["rewards/chosen"] - record["rewards/rejected"], abs=1e-6)


def test_unknown_loss_is_an_error_listing_the_known_ones(tiny_model_dir, capsys):
    known = ", ".join(LOSSES)
    with pytest.raises(ConfigError, match=f"unknown loss 'kto'; expected one of {known}"):
        preference_loss("kto", batch(), *REF, CFG)
    with pytest.raises(ConfigError, match=f"unknown loss 'kto'; expected one of {known}"):
        TrainConfig(data="unused", model=tiny_model_dir, out="unused", loss="kto").validate()
    with pytest.raises(SystemExit):
        main(["train", "--data", "x", "--model", "y", "--out", "z", "--loss", "kto"])
    err = capsys.readouterr().err
    assert "--loss" in err and all(name in err for name in LOSSES)


def test_cli_loss_choices_and_help_come_from_the_registry(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for name, loss in LOSSES.items():
        assert f"{name} ({loss.method}" in help_text
    assert "{" + ",".join(LOSSES) + "}" in help_text
