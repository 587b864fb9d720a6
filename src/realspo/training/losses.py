"""The DPO family of preference losses, as a table.

Every loss here is a function of the same few quantities, computed once by
:func:`compute_margins` from per-example summed log-probs (see :mod:`realspo.training.logprobs`):

* log-ratios ``r_c = log pi(y_c|x) - log pi_ref(y_c|x)``, ``r_r`` likewise (summed over the
  response tokens),
* the margin ``d = r_c - r_r``,
* its length-normalised version ``d'`` (per-token log-probs instead of sums; for IPO),
* the reference-free per-token difference ``avg logp_c - avg logp_r`` (for SimPO).

Each loss is a short function ``(Margins, LossConfig) -> Tensor (B,)``, registered in
:data:`LOSSES` under its CLI name as a :class:`Loss` entry that also says whether it needs
the reference model and how its reward is defined; :func:`preference_loss` looks one up,
adds the optional NLL term on the chosen response and computes the rewards training logs.
All arithmetic is in fp32 (bf16/fp16 inputs are upcast) and uses ``F.logsigmoid``, which
stays finite for any finite margin.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from realspo.errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor

# torch is imported by the functions that compute, not here: `realspo train --help` lists
# the table's losses without loading torch.


@dataclass(frozen=True)
class LossConfig:
    """Hyper-parameters shared by the losses.

    ``gamma`` is SimPO's target reward margin in the paper's units: the loss is
    ``-log sigmoid(beta * (avg_c - avg_r) - gamma)`` (TRL's ``simpo_gamma`` is the same number;
    its ``gamma_beta_ratio`` is ``gamma / beta``).
    """

    beta: float = 0.1
    label_smoothing: float = 0.0  # eps, the assumed label-flip rate, for cdpo / robust
    gamma: float = 0.5  # simpo target margin (paper units)
    nll_weight: float = 0.0  # RPO-style weight of the chosen response's mean per-token NLL

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values no loss can use."""
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise ConfigError(f"--beta: expected a positive number, got {self.beta}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ConfigError(
                f"--label-smoothing: expected 0 <= eps < 0.5, got {self.label_smoothing}"
            )
        if not math.isfinite(self.gamma):
            raise ConfigError(f"--gamma: expected a finite number, got {self.gamma}")
        if not (math.isfinite(self.nll_weight) and self.nll_weight >= 0):
            raise ConfigError(f"--nll-weight: expected a number >= 0, got {self.nll_weight}")


@dataclass
class PolicyLogps:
    """The policy's log-probs of a batch of pairs, each of shape (B,).

    ``chosen``/``rejected`` are summed over the response tokens; ``*_tokens`` are the
    numbers of response tokens scored (float, > 0).
    """

    chosen: Tensor
    rejected: Tensor
    chosen_tokens: Tensor
    rejected_tokens: Tensor


@dataclass
class Margins:
    """The quantities every loss is built from, each of shape (B,), fp32."""

    chosen_logratios: Tensor  # r_c = logp_c - ref_c (summed); logp_c when reference-free
    rejected_logratios: Tensor  # r_r
    logits: Tensor  # d = r_c - r_r
    avg_logits: Tensor  # d' = (logp_c - ref_c)/len_c - (logp_r - ref_r)/len_r
    policy_avg_diff: Tensor  # logp_c/len_c - logp_r/len_r (no reference)


def compute_margins(
    policy: PolicyLogps, ref_chosen: Tensor | None, ref_rejected: Tensor | None
) -> Margins:
    """Log-ratios and margins of a batch; ``ref_* = None`` means no reference (taken as 0).

    Inputs of any float dtype are upcast to fp32 (keeping the graph), so bf16/fp16 log-probs
    do not lose the small differences the losses depend on.

    Args:
        policy: the policy's summed response log-probs and response token counts, (B,) each.
        ref_chosen: the reference model's summed log-probs of the chosen responses (B,), or
            None (with ``ref_rejected``) for no reference.
        ref_rejected: the same for the rejected responses.

    Returns:
        The log-ratios ``r_c``, ``r_r``, the margin ``d = r_c - r_r``, its length-normalised
        form ``d'`` and the policy's per-token log-prob difference, (B,) fp32 each.
    """
    import torch

    if (ref_chosen is None) != (ref_rejected is None):
        raise ValueError("give both ref_chosen and ref_rejected, or neither")
    logp_c, logp_r = policy.chosen.float(), policy.rejected.float()
    len_c, len_r = policy.chosen_tokens.float(), policy.rejected_tokens.float()
    if ref_chosen is None or ref_rejected is None:
        ref_c, ref_r = torch.zeros_like(logp_c), torch.zeros_like(logp_r)
    else:
        ref_c = ref_chosen.to(device=logp_c.device, dtype=torch.float32)
        ref_r = ref_rejected.to(device=logp_r.device, dtype=torch.float32)
    r_c, r_r = logp_c - ref_c, logp_r - ref_r
    return Margins(
        chosen_logratios=r_c,
        rejected_logratios=r_r,
        logits=r_c - r_r,
        avg_logits=r_c / len_c - r_r / len_r,
        policy_avg_diff=logp_c / len_c - logp_r / len_r,
    )


def sigmoid_loss(m: Margins, cfg: LossConfig) -> Tensor:
    """DPO (Rafailov et al. 2023, "Direct Preference Optimization", eq. 7).

    ``L = -log sigmoid(beta * d)``: a logistic regression of the preference on the
    implicit reward margin. Shape (B,).
    """
    import torch.nn.functional as F

    return -F.logsigmoid(cfg.beta * m.logits)


def ipo_loss(m: Margins, cfg: LossConfig) -> Tensor:
    """IPO (Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from
    Human Preferences"), with TRL's length normalisation.

    ``L = (d' - 1/(2 beta))^2`` with ``d'`` from per-token (length-normalised) log-probs:
    regresses the margin to a fixed target instead of pushing it to infinity. Shape (B,).
    """
    return (m.avg_logits - 1.0 / (2.0 * cfg.beta)) ** 2


def cdpo_loss(m: Margins, cfg: LossConfig) -> Tensor:
    """Conservative DPO (Mitchell 2023, "A note on DPO with noisy preferences").

    ``L = -(1-eps) log sigmoid(beta d) - eps log sigmoid(-beta d)``: DPO with label
    smoothing, assuming each label is flipped with probability ``eps``. Shape (B,).
    """
    import torch.nn.functional as F

    eps, z = cfg.label_smoothing, cfg.beta * m.logits
    return -(1.0 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)


def robust_loss(m: Margins, cfg: LossConfig) -> Tensor:
    """Robust DPO (Chowdhury et al. 2024, "Provably Robust DPO: Aligning Language Models
    with Noisy Feedback").

    ``L = [-(1-eps) log sigmoid(beta d) + eps log sigmoid(-beta d)] / (1 - 2 eps)``: an
    unbiased estimate of the clean-label DPO loss under label-flip rate ``eps``. Shape (B,).
    """
    import torch.nn.functional as F

    eps, z = cfg.label_smoothing, cfg.beta * m.logits
    return (-(1.0 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1.0 - 2.0 * eps)


def hinge_loss(m: Margins, cfg: LossConfig) -> Tensor:
    """SLiC-HF hinge (Zhao et al. 2023, "SLiC-HF: Sequence Likelihood Calibration with
    Human Feedback"), on the reference-relative margin as in TRL.

    ``L = max(0, 1 - beta d)``: zero once the margin exceeds ``1/beta``. Shape (B,).
    """
    import torch

    return torch.relu(1.0 - cfg.beta * m.logits)


def simpo_loss(m: Margins, cfg: LossConfig) -> Tensor:
    """SimPO (Meng et al. 2024, "SimPO: Simple Preference Optimization with a
    Reference-Free Reward").

    ``L = -log sigmoid(beta (avg logp_c - avg logp_r) - gamma)``: the reward is the
    policy's per-token log-prob, no reference model; ``gamma`` is a target margin. Shape (B,).
    """
    import torch.nn.functional as F

    return -F.logsigmoid(cfg.beta * m.policy_avg_diff - cfg.gamma)


def log_ratio_rewards(policy: PolicyLogps, m: Margins) -> tuple[Tensor, Tensor]:
    """DPO's implicit reward before ``beta``: the summed log-ratios ``(r_c, r_r)``, each (B,)."""
    return m.chosen_logratios, m.rejected_logratios


def per_token_rewards(policy: PolicyLogps, m: Margins) -> tuple[Tensor, Tensor]:
    """SimPO's reward before ``beta``: the per-token policy log-probs ``(avg logp_c, avg logp_r)``,
    each (B,); no reference."""
    return (policy.chosen.float() / policy.chosen_tokens.float(),
            policy.rejected.float() / policy.rejected_tokens.float())


@dataclass(frozen=True)
class Loss:
    """One entry of the table: a loss, whether it needs the reference model, and its reward.

    ``fn`` maps ``(Margins, LossConfig)`` to per-example losses (B,); ``reward`` maps
    ``(PolicyLogps, Margins)`` to the chosen and rejected rewards (B,) before ``beta``, which
    training logs as ``rewards/*``. A ``reference_free`` loss never reads the reference
    log-probs, so training skips the reference pass. ``method`` is the short name help texts
    use (``fn``'s docstring names the paper and its equation).
    """

    name: str
    fn: Callable[[Margins, LossConfig], Tensor]
    method: str
    reference_free: bool = False
    reward: Callable[[PolicyLogps, Margins], tuple[Tensor, Tensor]] = log_ratio_rewards


# The registry: adding a loss is one entry here (the CLI's --loss choices and help follow).
LOSSES: dict[str, Loss] = {loss.name: loss for loss in (
    Loss("sigmoid", sigmoid_loss, "DPO"),
    Loss("ipo", ipo_loss, "IPO"),
    Loss("cdpo", cdpo_loss, "cDPO"),
    Loss("robust", robust_loss, "rDPO"),
    Loss("hinge", hinge_loss, "SLiC hinge"),
    Loss("simpo", simpo_loss, "SimPO", reference_free=True, reward=per_token_rewards),
)}
"""The losses table: ``--loss NAME`` -> its :class:`Loss` entry (function, method, whether it
needs the reference model, its reward). ``sigmoid`` (DPO), ``ipo``, ``cdpo``, ``robust``
(rDPO), ``hinge`` (SLiC) and the reference-free ``simpo``; every function's docstring names
its paper and equation."""


def get_loss(name: str) -> Loss:
    """The loss registered as ``name``.

    Args:
        name: a key of :data:`LOSSES`.

    Returns:
        Its :class:`Loss` entry.

    Raises:
        ConfigError: an unknown name (the message lists the known ones).
    """
    try:
        return LOSSES[name]
    except KeyError:
        raise ConfigError(
            f"--loss: unknown loss '{name}'; expected one of {', '.join(LOSSES)}"
        ) from None


def loss_help() -> str:
    """``--loss``'s help: every registered loss with its method."""
    return "preference loss: " + ", ".join(
        f"{name} ({loss.method}{', no reference model' if loss.reference_free else ''})"
        for name, loss in LOSSES.items())


@dataclass
class PreferenceOutput:
    """What one batch's preference loss produces.

    ``loss`` is the scalar to minimise: ``mean(losses) + nll_weight * mean(nll)``.
    ``losses`` (B,) is the preference loss per example, ``nll`` (B,) the chosen response's
    mean per-token negative log-likelihood. ``rewards_*`` (B,) are the implicit rewards
    ``beta * reward`` (detached), with the entry's reward: the log-ratio ``r`` as TRL logs it,
    or ``avg logp`` for reference-free ``simpo`` (SimPO's reward).
    """

    loss: Tensor
    losses: Tensor
    rewards_chosen: Tensor
    rewards_rejected: Tensor
    nll: Tensor

    @property
    def margins(self) -> Tensor:
        """``rewards_chosen - rewards_rejected`` (B,), logged as ``rewards/margins``."""
        return self.rewards_chosen - self.rewards_rejected

    @property
    def accuracies(self) -> Tensor:
        """1.0 where the chosen reward exceeds the rejected one (B,): ``rewards/accuracies``."""
        return (self.rewards_chosen > self.rewards_rejected).float()


def preference_loss(
    name: str,
    policy: PolicyLogps,
    ref_chosen: Tensor | None,
    ref_rejected: Tensor | None,
    cfg: LossConfig,
) -> PreferenceOutput:
    """The loss ``name`` on one batch, plus the NLL term and the implicit rewards.

    Args:
        name: a key of :data:`LOSSES` (``--loss``).
        policy: (B,) summed response log-probs with gradients, and the token counts.
        ref_chosen: (B,) reference log-probs of the chosen responses (constants), or None for
            a reference-free loss.
        ref_rejected: the same for the rejected responses.
        cfg: ``beta``, ``label_smoothing``, ``gamma``, ``nll_weight``.

    Returns:
        The scalar loss to minimise, the per-example losses, the chosen response's NLL and the
        implicit rewards (:class:`PreferenceOutput`).

    Raises:
        ConfigError: an unknown loss, bad loss options, or no reference for a loss that
            needs one.
    """
    entry = get_loss(name)
    cfg.validate()
    if ref_chosen is None and not entry.reference_free:
        free = sorted(n for n, loss in LOSSES.items() if loss.reference_free)
        raise ConfigError(f"--loss {name} needs reference log-probs; only "
                          f"{', '.join(free)} can train without them")
    margins = compute_margins(policy, ref_chosen, ref_rejected)
    losses = entry.fn(margins, cfg)
    nll = -policy.chosen.float() / policy.chosen_tokens.float()
    loss = losses.mean()
    if cfg.nll_weight:
        loss = loss + cfg.nll_weight * nll.mean()
    reward_c, reward_r = entry.reward(policy, margins)
    return PreferenceOutput(
        loss=loss,
        losses=losses,
        rewards_chosen=(cfg.beta * reward_c).detach(),
        rewards_rejected=(cfg.beta * reward_r).detach(),
        nll=nll.detach(),
    )
