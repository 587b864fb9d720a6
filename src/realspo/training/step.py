"""One training micro-batch: the policy forward, the preference loss and the SPO degree loss.

::

    one body pass over [chosen; rejected; variants], in length groups  -> final hidden states
    LM head on the pairs' response positions only  -> summed log-probs (2B,)
    preference_loss(loss, policy, ref_c, ref_r)     -> L_pref (+ nll_weight * NLL(chosen))
    with --spo: pooled hidden states of the degree variants -> degree head -> L_degree
    L = L_pref + spo_weight * L_degree

Where the time goes, and what is skipped (``fast=True``, the default):

* with prefix sharing (``--prefix-sharing``, on where the model supports it) each pair's
  chosen, rejected and variant sequences run as one token tree, their common prefixes once
  (:mod:`realspo.training.prefix_tree`); without it, sequences are run in groups of similar
  length (:func:`realspo.training.logprobs.grouped_hidden_states`), each padded only to its own
  longest member, not to the batch's (trees of similar size are grouped the same way);
* level-0 degree variants are the original responses: they are pooled from the pair
  sequences of the same pass instead of being run again;
* variants need hidden states only: no LM head runs on them.

``fast=False`` is the plain computation (pairs in one padded call, every variant in a
second one) that the tests compare the fast path with.

The policy and the SPO head form one module (:class:`PolicyWithHead`), so a distributed
wrapper (DDP, FSDP) sees a single forward per micro-batch and every trained weight in it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from realspo.chat_format import PromptFormat
from realspo.errors import ConfigError, TrainingDiverged
from realspo.spo.head import DegreeHead, degree_loss, pool_hidden, pool_positions
from realspo.spo.variants import num_classes, plan_variants
from realspo.training.logprobs import (
    grouped_hidden_states,
    last_hidden_states,
    logps_from_hidden,
    response_logps,
    unwrap_causal_lm,
)
from realspo.training.losses import PolicyLogps, preference_loss
from realspo.training.metrics import Metrics
from realspo.training.prefix_tree import (
    pair_groups,
    shared_hidden_states,
    shared_states,
    sharing_unsupported,
)
from realspo.training.tokenization import collate, tokenize_response
from realspo.training.train_config import BatchSettings, TrainConfig

log = logging.getLogger(__name__)


class PolicyWithHead(nn.Module):
    """The policy and the optional SPO degree head, trained (and wrapped) as one module."""

    def __init__(self, policy: nn.Module, head: nn.Module | None, pooling: str,
                 share_prefixes: bool = False) -> None:
        super().__init__()
        self.policy, self.head, self.pooling = policy, head, pooling
        self.share_prefixes = share_prefixes  # fast path: each pair and its variants as one token tree

    def _hidden(self, input_ids: Tensor, attention_mask: Tensor, n_pairs: int,
                variant_pairs: Tensor | None = None) -> Tensor:
        """Final hidden states of ``[chosen; rejected; variants]``: as token trees (one per pair,
        :mod:`realspo.training.prefix_tree`) or in length groups."""
        if self.share_prefixes:
            pairs = [] if variant_pairs is None else variant_pairs.tolist()
            return shared_hidden_states(self.policy, input_ids, attention_mask, pair_groups(n_pairs, pairs))
        return grouped_hidden_states(self.policy, input_ids, attention_mask)

    def _states(self, input_ids: Tensor, attention_mask: Tensor, n_pairs: int,
                variant_pairs: Tensor | None) -> tuple[Tensor, Tensor]:
        """:meth:`_hidden` before it is laid out: states (N, H) and each position's row in them
        (B, T) (:func:`realspo.training.prefix_tree.shared_states`)."""
        if self.share_prefixes:
            pairs = [] if variant_pairs is None else variant_pairs.tolist()
            return shared_states(self.policy, input_ids, attention_mask, pair_groups(n_pairs, pairs))
        hidden = grouped_hidden_states(self.policy, input_ids, attention_mask)
        index = torch.arange(hidden.shape[0] * hidden.shape[1], device=hidden.device)
        return hidden.reshape(-1, hidden.shape[-1]), index.reshape(input_ids.shape)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, response_mask: Tensor,
                variants: dict[str, Tensor] | None = None, fast: bool = True) -> dict[str, Tensor]:
        """``logps``, ``n_tokens`` (2B,) of the pairs ((2B, T) inputs); with a head, also the
        degree loss ``spo_loss`` and ``spo_accuracy`` (scalars) of ``variants`` (from
        :func:`variant_batch`): ``labels``, ``weights`` (V,), ``rows`` (V,) the row of each variant in
        ``[pair sequences; variant sequences]``, and the variant sequences that are not pair
        sequences, ``input_ids``, ``attention_mask``, ``response_mask`` (V', T') and the pair
        of each, ``pairs`` (V',), if any."""
        if self.head is None or variants is None:
            if fast:
                hidden = self._hidden(input_ids, attention_mask, input_ids.shape[0] // 2)
                logps, n_tokens = logps_from_hidden(self.policy, hidden, input_ids, response_mask)
            else:
                logps, n_tokens, _ = response_logps(self.policy, input_ids, attention_mask, response_mask)
            out = {"logps": logps, "n_tokens": n_tokens}
            if self.head is not None:
                # No graded variant in this batch: a zero that still touches every head weight,
                # so a distributed wrapper sees the same parameters used on every process.
                zero = sum(p.sum() for p in self.head.parameters()) * 0.0
                out["spo_loss"], out["spo_accuracy"] = zero, zero.detach()
            return out
        if not fast:
            logps, n_tokens, _ = response_logps(self.policy, input_ids, attention_mask, response_mask)
            hidden = last_hidden_states(self.policy, variants["input_ids"], variants["attention_mask"])
            pooled = pool_hidden(hidden, variants["response_mask"], self.pooling)
            pooled = pooled[variants["rows"] - input_ids.shape[0]]
        else:
            ids, mask, resp = input_ids, attention_mask, response_mask
            if "input_ids" in variants:  # one body pass over pairs and variants together
                ids, mask, resp = (_stack_padded(a, variants[k], pad) for a, k, pad in (
                    (input_ids, "input_ids", 0), (attention_mask, "attention_mask", 0),
                    (response_mask, "response_mask", False)))
            states, index = self._states(ids, mask, input_ids.shape[0] // 2, variants.get("pairs"))
            n, width = input_ids.shape
            # the pairs' states laid out for the LM head; of the variants', only the pooled positions
            hidden = states.index_select(0, index[:n, :width].reshape(-1)).reshape(n, width, -1)
            logps, n_tokens = logps_from_hidden(self.policy, hidden, input_ids, response_mask)
            rows = variants["rows"]
            pooled = pool_positions(states, index[rows], resp[rows], self.pooling)
        out = {"logps": logps, "n_tokens": n_tokens}
        out["spo_loss"], out["spo_accuracy"] = degree_loss(self.head, pooled, variants["labels"],
                                                           variants.get("weights"))
        return out

    # The policy's embeddings, seen by accelerate's FSDP2 set-up, which keeps a tied LM head
    # tied only through these (without them, under `accelerate launch`'s default
    # cpu_ram_efficient_loading the LM head came apart from the embedding and was never
    # trained: tests/test_sharded_cpu.py).
    def get_input_embeddings(self) -> nn.Module:
        return self.policy.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module | None:
        return self.policy.get_output_embeddings()

    def tie_weights(self, *args: Any, **kwargs: Any) -> None:
        self.policy.tie_weights(*args, **kwargs)


def _stack_padded(a: Tensor, b: Tensor, pad: int | bool) -> Tensor:
    """Rows of ``a`` (N, T) then ``b`` (M, T'), right-padded with ``pad`` to max(T, T')."""
    width = max(a.shape[1], b.shape[1])
    out = a.new_full((a.shape[0] + b.shape[0], width), pad)
    out[: a.shape[0], : a.shape[1]] = a
    out[a.shape[0]:, : b.shape[1]] = b.to(a.device)
    return out


@dataclass
class StepResult:
    """One micro-batch: the loss to back-propagate and its metrics."""

    loss: Tensor  # scalar, with gradients
    sums: Metrics  # every metric (METRIC_KEYS), (10,) fp32 sums over the batch's B pairs
    count: int  # B
    tokens: int  # non-padding tokens run through the policy (pairs + variants)
    per_pair: Metrics  # the per-pair metrics (PAIR_METRICS), (B, 7) fp32


def variant_batch(batch: dict[str, Any], settings: BatchSettings, tokenizer: Any, spo_step: int,
                  reuse_originals: bool = True) -> dict[str, Tensor] | None:
    """SPO degree variants of a batch's pairs, for :class:`PolicyWithHead`; None if none graded.

    Each graded response contributes its original (level 0) and ``--spo-sample-levels`` of
    its other levels, with loss weights that make the degree loss an unbiased estimate of
    the all-levels loss (:func:`realspo.spo.variants.plan_variants` with ``always_original``).
    With ``reuse_originals`` a level-0 variant (the original response) points at its pair
    sequence (row ``i`` for pair ``i``'s chosen, ``B + i`` for its rejected), so it is not run
    twice; the other variants are tokenized like the pairs and get rows ``2B, 2B + 1, ...``.
    Needs ``settings.spo``.
    """
    if settings.spo is None:
        raise ValueError("variant_batch needs SPO settings (--spo)")
    planned = plan_variants(batch["prompts"], batch["chosen"], batch["rejected"], settings.spo,
                            spo_step, always_original=True)
    if not planned:
        return None
    n = len(batch["prompts"])
    device = batch["input_ids"].device
    rows, sequences, pairs = [], [], []
    fmt = PromptFormat.of(tokenizer, settings.chat_template)  # rendered like the pairs
    for v in planned:
        if reuse_originals and v.level == 0:
            rows.append(v.pair if v.from_chosen else n + v.pair)
            continue
        rows.append(2 * n + len(sequences))
        pairs.append(v.pair)
        finished = batch["finished"][v.pair][0 if v.from_chosen else 1] if "finished" in batch else True
        sequences.append(tokenize_response(fmt, batch["prompts"][v.pair], v.text,
                                           settings.max_length, settings.truncation,
                                           finished=finished)[:2])
    variants = ({k: t.to(device) for k, t in collate(sequences, tokenizer.pad_token_id).items()}
                if sequences else {})
    if sequences:
        variants["pairs"] = torch.tensor(pairs, dtype=torch.long, device=device)
    variants["rows"] = torch.tensor(rows, dtype=torch.long, device=device)
    variants["labels"] = torch.tensor([v.label for v in planned], dtype=torch.long, device=device)
    variants["weights"] = torch.tensor([v.weight for v in planned], dtype=torch.float32, device=device)
    return variants


def forward_batch(model: nn.Module, batch: dict[str, Any], settings: BatchSettings, tokenizer: Any,
                  spo_step: int, fast: bool = True) -> StepResult:
    """Run one micro-batch through ``model`` (a prepared :class:`PolicyWithHead`) and the loss.

    ``spo_step`` seeds the choice of degree levels when ``--spo-sample-levels`` is set;
    ``fast=False`` runs the plain computation (see the module docstring).
    """
    variants = (variant_batch(batch, settings, tokenizer, spo_step, reuse_originals=fast)
                if settings.spo else None)
    return forward_pass(model, batch, settings, variants, fast=fast)


def forward_pass(model: nn.Module, batch: dict[str, Any], settings: BatchSettings,
                 variants: dict[str, Tensor] | None, fast: bool = True, degree_scale: float = 1.0
                 ) -> StepResult:
    """:func:`forward_batch` with the degree variants already built (:func:`variant_batch`).

    ``degree_scale`` multiplies the degree loss and accuracy: a pass of some of a micro-batch's
    pairs (:func:`realspo.training.passes.split_passes`) uses it so that its loss, times its
    pairs' share of the batch, adds up over the passes to the micro-batch's loss.

    Args:
        model: a prepared :class:`PolicyWithHead`.
        batch: the pairs, as :class:`realspo.training.data.PairCollator` builds them.
        settings: the run's batch settings.
        variants: the pairs' degree variants, or None (no SPO, or none graded).
        fast: False runs the plain computation (``variants`` built with ``reuse_originals=False``).
        degree_scale: the factor on the degree loss and accuracy.

    Returns:
        The pass's :class:`StepResult`.
    """
    n = len(batch["index"])
    spo = settings.spo
    out = model(batch["input_ids"], batch["attention_mask"], batch["response_mask"], variants=variants,
                fast=fast)
    logps, n_tokens = out["logps"], out["n_tokens"]
    policy = PolicyLogps(logps[:n], logps[n:], n_tokens[:n], n_tokens[n:])
    pref = preference_loss(settings.loss, policy, batch.get("ref_chosen"), batch.get("ref_rejected"),
                           settings.loss_config)
    loss = pref.loss
    zero = loss.detach() * 0.0
    spo_loss, spo_acc = out.get("spo_loss", zero), out.get("spo_accuracy", zero)
    if degree_scale != 1.0:
        spo_loss, spo_acc = spo_loss * degree_scale, spo_acc * degree_scale
    # without SPO the degree loss is that zero, and so is its weighted term
    spo_weight = spo.weight if spo is not None else 0.0
    if spo is not None:
        loss = loss + spo_weight * spo_loss
    # per pair: the same total the batch loss averages (preference + NLL + lambda * degree)
    pair_loss = (pref.losses.detach() + settings.loss_config.nll_weight * pref.nll
                 + spo_weight * spo_loss.detach())
    per_pair = Metrics.stack({
        "loss": pair_loss, "rewards/chosen": pref.rewards_chosen,
        "rewards/rejected": pref.rewards_rejected, "rewards/margins": pref.margins,
        "rewards/accuracies": pref.accuracies, "logps/chosen": policy.chosen.detach(),
        "logps/rejected": policy.rejected.detach()})
    per_batch = Metrics.stack({"nll_loss": pref.nll.sum(), "spo/loss": spo_loss.detach() * n,
                               "spo/accuracy": spo_acc * n})
    tokens = int(batch["attention_mask"].sum())
    if variants is not None and "attention_mask" in variants:
        tokens += int(variants["attention_mask"].sum())  # variant sequences actually run
    return StepResult(loss, per_pair.sum().cat(per_batch), n, tokens, per_pair)


def check_finite(accelerator: Any, loss: Tensor, step: int, last_checkpoint: Path | None) -> None:
    """Stop every process (TrainingDiverged) if any process's loss is not finite.

    Called before ``backward``, so the model is never updated from a non-finite loss.
    """
    losses = accelerator.gather(loss.detach().float().reshape(1))
    if bool(torch.isfinite(losses).all()):
        return
    kept = (f"the last good checkpoint is {last_checkpoint}" if last_checkpoint
            else "no checkpoint had been saved")
    raise TrainingDiverged(
        f"non-finite loss {[round(v, 4) for v in losses.tolist()]} at step {step}; stopped before "
        f"updating the model ({kept}); try a lower --lr or --beta, or --dtype float32")


def build_model(cfg: TrainConfig, policy: torch.nn.Module) -> torch.nn.Module:
    """Gradient checkpointing, LoRA and the SPO head around the loaded ``policy``."""
    head = unwrap_causal_lm(policy).get_output_embeddings()
    width = int(getattr(head, "in_features", 0) or policy.config.hidden_size)
    if cfg.gradient_checkpointing:
        # Non-reentrant checkpointing needs no input gradients, so it also works with LoRA.
        kwargs = {"use_reentrant": False}
        if hasattr(policy, "activation_checkpointing_enable"):  # transformers >= 5.x name
            policy.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if cfg.lora_r:
        from peft import LoraConfig, get_peft_model

        targets: Any = "all-linear" if cfg.lora_target == ["all-linear"] else cfg.lora_target
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=targets, task_type="CAUSAL_LM")
        try:
            policy = get_peft_model(policy, lora)
        except ValueError as exc:
            raise ConfigError(f"--lora-target {' '.join(cfg.lora_target)}: "
                              f"{str(exc).splitlines()[0]}") from None
    spo_head = None
    if cfg.spo:
        spo_head = DegreeHead(width, num_classes(cfg.spo_levels, cfg.spo_labels), cfg.spo_head_hidden)
        spo_head.to(next(policy.parameters()).device)
    return PolicyWithHead(policy, spo_head, cfg.spo_pooling, share_prefixes=use_prefix_sharing(cfg, policy))


def use_prefix_sharing(cfg: TrainConfig, policy: nn.Module) -> bool:
    """``--prefix-sharing``: auto is on where the model supports it; on where it does not is an error."""
    if cfg.prefix_sharing == "off":
        return False
    reason = sharing_unsupported(policy, cfg.max_length)
    if reason is not None and cfg.prefix_sharing == "on":
        raise ConfigError(f"--prefix-sharing on: not supported by this model: {reason}")
    log.info("prefix sharing: %s", "on" if reason is None else f"off ({reason})")
    return reason is None
