"""The DPO-family losses against their formulas, evaluated by hand on small inputs."""

from __future__ import annotations

import math

import pytest
import torch

from realspo.errors import ConfigError
from realspo.training.losses import (
    LOSSES,
    LossConfig,
    PolicyLogps,
    compute_margins,
    preference_loss,
)

# One pair, numbers chosen so the hand arithmetic is short:
# r_c = -10 - (-12) = 2, r_r = -14 - (-13) = -1, d = 3;
# per token: d' = 2/4 - (-1)/2 = 1; policy per-token diff = -10/4 - (-14/2) = 4.5.
POLICY = dict(chosen=-10.0, rejected=-14.0, chosen_tokens=4.0, rejected_tokens=2.0)
REF_C, REF_R = -12.0, -13.0


def policy(**overrides: float) -> PolicyLogps:
    values = {**POLICY, **overrides}
    return PolicyLogps(**{k: torch.tensor([v]) for k, v in values.items()})


def ref(c: float = REF_C, r: float = REF_R) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([c]), torch.tensor([r])


def loss_value(name: str, cfg: LossConfig, reference: bool = True) -> float:
    ref_c, ref_r = ref() if reference else (None, None)
    return preference_loss(name, policy(), ref_c, ref_r, cfg).loss.item()


def softplus(x: float) -> float:
    """-log sigmoid(-x) = log(1 + e^x), written out by hand."""
    return math.log1p(math.exp(x))


def test_margins_are_log_ratio_differences():
    m = compute_margins(policy(), *ref())
    assert m.chosen_logratios.item() == pytest.approx(2.0)
    assert m.rejected_logratios.item() == pytest.approx(-1.0)
    assert m.logits.item() == pytest.approx(3.0)
    assert m.avg_logits.item() == pytest.approx(1.0)
    assert m.policy_avg_diff.item() == pytest.approx(4.5)


def test_margins_without_reference_use_policy_logps():
    m = compute_margins(policy(), None, None)
    assert m.logits.item() == pytest.approx(4.0)  # -10 - (-14)


def test_sigmoid_is_dpo_logistic_loss():
    # -log sigmoid(0.5 * 3) = log(1 + e^-1.5)
    assert loss_value("sigmoid", LossConfig(beta=0.5)) == pytest.approx(softplus(-1.5), rel=1e-6)


def test_ipo_regresses_length_normalised_margin_to_half_inverse_beta():
    # (d' - 1/(2 * 0.25))^2 = (1 - 2)^2 = 1
    assert loss_value("ipo", LossConfig(beta=0.25)) == pytest.approx(1.0, rel=1e-6)


def test_cdpo_is_label_smoothed_dpo():
    expected = 0.9 * softplus(-1.5) + 0.1 * softplus(1.5)
    cfg = LossConfig(beta=0.5, label_smoothing=0.1)
    assert loss_value("cdpo", cfg) == pytest.approx(expected, rel=1e-6)


def test_robust_is_unbiased_noisy_label_dpo():
    expected = (0.9 * softplus(-1.5) - 0.1 * softplus(1.5)) / (1 - 0.2)
    cfg = LossConfig(beta=0.5, label_smoothing=0.1)
    assert loss_value("robust", cfg) == pytest.approx(expected, rel=1e-6)


def test_hinge_is_slic_margin_loss():
    assert loss_value("hinge", LossConfig(beta=0.1)) == pytest.approx(1 - 0.3, rel=1e-6)
    assert loss_value("hinge", LossConfig(beta=0.5)) == 0.0  # margin 1.5 past the hinge


def test_simpo_uses_per_token_policy_logps_and_gamma():
    # -log sigmoid(2 * 4.5 - 1) = log(1 + e^-8)
    cfg = LossConfig(beta=2.0, gamma=1.0)
    assert loss_value("simpo", cfg, reference=False) == pytest.approx(softplus(-8.0), rel=1e-6)


def test_simpo_ignores_the_reference():
    cfg = LossConfig(beta=2.0, gamma=1.0)
    assert loss_value("simpo", cfg, reference=True) == loss_value("simpo", cfg, reference=False)


@pytest.mark.parametrize("name", ["sigmoid", "cdpo", "robust"])
def test_policy_equal_to_reference_gives_log_2(name):
    same = policy(chosen=REF_C, rejected=REF_R)
    cfg = LossConfig(beta=0.1, label_smoothing=0.2)
    out = preference_loss(name, same, *ref(), cfg)
    assert out.loss.item() == pytest.approx(math.log(2), rel=1e-6)


def test_policy_equal_to_reference_gives_1_for_hinge():
    same = policy(chosen=REF_C, rejected=REF_R)
    assert preference_loss("hinge", same, *ref(), LossConfig()).loss.item() == 1.0


def test_policy_equal_to_reference_gives_quarter_inverse_beta_squared_for_ipo():
    same = policy(chosen=REF_C, rejected=REF_R)
    out = preference_loss("ipo", same, *ref(), LossConfig(beta=0.1))
    assert out.loss.item() == pytest.approx(1 / (4 * 0.1**2), rel=1e-6)


def test_nll_term_adds_weighted_mean_per_token_nll_of_chosen():
    cfg = LossConfig(beta=0.5, nll_weight=0.5)
    out = preference_loss("sigmoid", policy(), *ref(), cfg)
    assert out.nll.item() == pytest.approx(2.5)  # 10 nats over 4 tokens
    assert out.loss.item() == pytest.approx(softplus(-1.5) + 0.5 * 2.5, rel=1e-6)
    assert out.losses.item() == pytest.approx(softplus(-1.5), rel=1e-6)


def test_nll_term_carries_gradient_to_chosen_logps():
    chosen = torch.tensor([-10.0], requires_grad=True)
    p = PolicyLogps(chosen, torch.tensor([-14.0]), torch.tensor([4.0]), torch.tensor([2.0]))
    out = preference_loss("hinge", p, *ref(), LossConfig(beta=0.5, nll_weight=2.0))
    (grad,) = torch.autograd.grad(out.loss, chosen)
    assert grad.item() == pytest.approx(-2.0 / 4)  # hinge is flat here; only the NLL acts


def test_rewards_are_beta_times_log_ratios_and_detached():
    p = policy()
    p.chosen.requires_grad_(True)
    out = preference_loss("sigmoid", p, *ref(), LossConfig(beta=0.5))
    assert out.rewards_chosen.item() == pytest.approx(1.0)
    assert out.rewards_rejected.item() == pytest.approx(-0.5)
    assert out.margins.item() == pytest.approx(1.5)
    assert out.accuracies.item() == 1.0
    assert not out.rewards_chosen.requires_grad


def test_simpo_rewards_are_beta_times_per_token_logps():
    out = preference_loss("simpo", policy(), None, None, LossConfig(beta=2.0))
    assert out.rewards_chosen.item() == pytest.approx(-5.0)
    assert out.rewards_rejected.item() == pytest.approx(-14.0)


def test_loss_is_batch_mean_of_per_example_losses():
    p = PolicyLogps(torch.tensor([-10.0, -5.0]), torch.tensor([-14.0, -5.0]),
                    torch.tensor([4.0, 1.0]), torch.tensor([2.0, 1.0]))
    out = preference_loss("sigmoid", p, torch.tensor([-12.0, -5.0]), torch.tensor([-13.0, -5.0]),
                          LossConfig(beta=0.5))
    assert out.losses.shape == (2,)
    assert out.losses[1].item() == pytest.approx(math.log(2), rel=1e-6)
    assert out.loss.item() == pytest.approx((softplus(-1.5) + math.log(2)) / 2, rel=1e-6)


def test_sigmoid_gradient_matches_its_derivative():
    chosen = torch.tensor([-10.0], requires_grad=True)
    p = PolicyLogps(chosen, torch.tensor([-14.0]), torch.tensor([4.0]), torch.tensor([2.0]))
    out = preference_loss("sigmoid", p, *ref(), LossConfig(beta=0.5))
    (grad,) = torch.autograd.grad(out.loss, chosen)
    # d/dlogp_c [-log sigmoid(beta d)] = -beta * sigmoid(-beta d)
    assert grad.item() == pytest.approx(-0.5 / (1 + math.exp(1.5)), rel=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_extreme_log_ratios_stay_finite(name, dtype, sign):
    # |d| = 1e4 (fp16 tops out at 65504): logsigmoid must not overflow to inf or nan.
    chosen = torch.tensor([sign * 1e4 - 2e4], dtype=dtype, requires_grad=True)
    p = PolicyLogps(chosen, torch.tensor([-2e4], dtype=dtype),
                    torch.tensor([1.0], dtype=dtype), torch.tensor([1.0], dtype=dtype))
    zeros = torch.zeros(1, dtype=dtype)
    out = preference_loss(name, p, zeros, zeros, LossConfig(beta=1.0, label_smoothing=0.1))
    (grad,) = torch.autograd.grad(out.loss, chosen)
    assert out.loss.dtype == torch.float32
    assert torch.isfinite(out.loss) and torch.isfinite(grad).all()


def test_registry_holds_the_six_losses():
    assert set(LOSSES) == {"sigmoid", "ipo", "cdpo", "robust", "hinge", "simpo"}
    assert {name for name, loss in LOSSES.items() if loss.reference_free} == {"simpo"}


def test_unknown_loss_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown loss 'kto'.*sigmoid, ipo, cdpo"):
        preference_loss("kto", policy(), *ref(), LossConfig())


def test_reference_based_loss_without_reference_is_an_error():
    with pytest.raises(ConfigError, match="needs reference log-probs"):
        preference_loss("sigmoid", policy(), None, None, LossConfig())


@pytest.mark.parametrize("field,value", [("beta", 0.0), ("beta", -1.0), ("label_smoothing", 0.5),
                                         ("nll_weight", -0.1), ("gamma", math.nan)])
def test_invalid_config_is_rejected(field, value):
    with pytest.raises(ConfigError):
        preference_loss("robust", policy(), *ref(), LossConfig(**{field: value}))
