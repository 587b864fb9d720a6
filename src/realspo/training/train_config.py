"""Options of ``realspo train``: one dataclass, validated once (see :mod:`realspo.config`).

:class:`TrainConfig` holds every option of a run. Per-batch code never sees it: it gets the
small :class:`BatchSettings` (the loss, its hyper-parameters, the SPO options, the token
limits), built once per run by :meth:`TrainConfig.batch_settings`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from realspo.chat_format import CHAT_TEMPLATE_HELP, CHAT_TEMPLATE_MODES
from realspo.config import option
from realspo.errors import ConfigError
from realspo.spo.variants import (
    LABEL_MODES,
    POOLINGS,
    REMOVALS,
    SELECTIONS,
    SPO_DEFAULTS,
    SPOConfig,
)
from realspo.training.losses import LOSSES, LossConfig, get_loss, loss_help
from realspo.training.tokenization import TRUNCATION_MODES
from realspo.training.trackers import TRACKERS, check_report_to

log = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "bfloat16", "float16")
PREFIX_SHARING = ("auto", "on", "off")
SCHEDULERS = ("linear", "cosine", "constant_with_warmup")
# Default peak learning rates (--lr unset). Full fine-tuning: 1e-6, DPO's (Rafailov et al.
# 2023, appendix B). LoRA trains a low-rank delta B A whose B starts at zero, through few
# parameters, and needs a much larger step: the LoRA paper (Hu et al. 2021) uses 2e-4 for
# GPT-2, QLoRA (Dettmers et al. 2023) 1e-4 to 2e-4, and TRL's DPO script raises its rate 10x
# for LoRA (5e-7 -> 5e-6). At 1e-6 an adapter barely moves in a short run.
FULL_LR, LORA_LR = 1e-6, 1e-4


def _rate(value: float) -> str:
    """``1e-4`` for 0.0001: a learning rate as people write it."""
    return f"{value:.0e}".replace("e-0", "e-")


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/realspo/reference`` (``~/.cache/realspo/reference``)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "realspo", "reference")


@dataclass(frozen=True)
class BatchSettings:
    """What one micro-batch needs of the run's options (:func:`realspo.training.step.forward_batch`).

    ``loss`` is a name in :data:`realspo.training.losses.LOSSES`; ``spo`` is None without
    ``--spo``; ``max_length``, ``truncation`` and ``chat_template`` tokenize the SPO degree
    variants like the pairs.
    """

    loss: str
    loss_config: LossConfig
    spo: SPOConfig | None
    max_length: int
    truncation: str
    chat_template: str = "auto"


@dataclass
class TrainConfig:
    """Options of ``realspo train`` (and of :func:`train`)."""

    data: str = option(help="preference pairs: TRL rows (prompt, chosen, rejected) as a file, "
                            "dataset directory or hub id", metavar="PATH", path="input")
    model: str = option(help="the model to train, also the reference: a directory, .gguf file "
                             "or hub id", metavar="MODEL", path="input")
    out: str = option(help="run directory: the trained model, config.yaml, metrics.jsonl, "
                           "checkpoints/", metavar="DIR", path="output")
    split: str = option("train", help="split to read from a dataset directory or hub id")
    loss: str = option("sigmoid", help=loss_help(), choices=tuple(LOSSES))
    beta: float = option(0.1, help="inverse temperature beta of the loss (rewards = beta * log-ratio)")
    label_smoothing: float = option(0.0, help="label-flip rate eps for cdpo and robust (0 <= eps < 0.5)")
    gamma: float = option(0.5, help="SimPO's target reward margin")
    nll_weight: float = option(0.0, help="weight of the NLL term on the chosen response (RPO-style)")
    spo: bool = option(False, help="add SPO's self-supervised preference-degree loss")
    spo_weight: float = option(SPO_DEFAULTS.weight, help="lambda: weight of the degree loss")
    spo_levels: int = option(SPO_DEFAULTS.levels, help="D: degree levels per response (level 0 = original)")
    spo_labels: str = option(SPO_DEFAULTS.labels, help="separate: 2D classes (chosen/rejected apart); "
                                                       "shared: D classes", choices=LABEL_MODES)
    spo_pooling: str = option(SPO_DEFAULTS.pooling, help="hidden state fed to the degree head: the "
                                                         "last response token or the mean", choices=POOLINGS)
    spo_selection: str = option(SPO_DEFAULTS.selection, help="which key phrases a level removes first: "
                                                             "facts (numbers and sentence-final phrases, "
                                                             "then names), top (RAKE's ranking) or a "
                                                             "seeded random subset",
                                choices=SELECTIONS)
    spo_removal: str = option(SPO_DEFAULTS.removal, help="what a level removes: the key phrases "
                                                         "(phrases) or the whole sentences holding "
                                                         "them (sentences)", choices=REMOVALS)
    spo_sample_levels: int | None = option(1, help="degree levels drawn per response per step besides "
                                                   "the original (always used, at no cost); D - 1 or "
                                                   "more (or null in YAML): every level")
    spo_head_hidden: int | None = option(None, help="width of the degree head's hidden layer "
                                                    "(unset: min(hidden size, 512))")
    lr: float | None = option(None, help=f"peak learning rate (AdamW); unset: {_rate(FULL_LR)}, "
                                         f"or {_rate(LORA_LR)} with --lora-r")
    weight_decay: float = option(0.0, help="AdamW weight decay")
    lr_scheduler: str = option("linear", help="learning-rate schedule after warmup", choices=SCHEDULERS)
    warmup_ratio: float = option(0.1, help="fraction of the steps spent warming up the learning rate")
    epochs: int = option(1, help="passes over the training pairs (ignored when --max-steps is set)")
    max_steps: int | None = option(None, help="optimizer steps to run (overrides --epochs)")
    batch_size: int = option(8, help="pairs per micro-batch per process")
    eval_batch_size: int | None = option(None, help="pairs per evaluation batch (unset: --batch-size)")
    group_by_length: bool = option(False, help="batch pairs of similar length together (less "
                                   "padding); the order is still shuffled per epoch, in groups "
                                   "of about 50 batches")
    grad_accum: int = option(1, help="micro-batches accumulated per optimizer step")
    max_grad_norm: float = option(1.0, help="clip the gradient norm to this (0 = no clipping)")
    max_length: int = option(1024, help="longest prompt + response, in tokens")
    truncation: str = option("keep_end", help="what a too-long pair loses: keep_end drops the start "
                                              "of the prompt, keep_start cuts the responses' ends",
                             choices=TRUNCATION_MODES)
    chat_template: str = option("auto", help=CHAT_TEMPLATE_HELP, choices=CHAT_TEMPLATE_MODES)
    eval_fraction: float = option(0.0, help="fraction of the pairs held out for evaluation")
    eval_data: str | None = option(None, help="separate evaluation pairs (instead of --eval-fraction)",
                                   path="input")
    logging_steps: int = option(10, help="write a metrics record every N steps")
    report_to: list[str] = option(["none"], help="also log each metrics record to these trackers "
                                                 f"(accelerate's; one or more of {', '.join(TRACKERS)}, "
                                                 "or none), logging into OUT/runs", metavar="NAME")
    eval_steps: int = option(0, help="evaluate every N steps (0: only at the end)")
    save_steps: int = option(0, help="save a checkpoint every N steps (0: none)")
    keep_checkpoints: int = option(2, help="keep only the newest N checkpoints (0: all)")
    seed: int = option(0, help="seed of the data order, SPO variants and initialisation")
    gradient_checkpointing: bool = option(False, help="recompute activations in the backward pass")
    pass_tokens: int | None = option(None, help="run a micro-batch in forward/backward passes of whole pairs of "
                                             "at most this many tokens: the same gradient, one pass's activations "
                                             "alive at a time (one process; with --spo each pair with its degree "
                                             "variants; on a CPU with a fused "
                                             "AdamW); 0: one pass per micro-batch, unfused AdamW; "
                                             "unset: 256 on CPU, one pass on a GPU")
    prefix_sharing: str = option("auto", help="run each pair's chosen, rejected and SPO variant "
                                              "sequences as one token tree, their common prefix "
                                              "(the prompt) once: the same log-probs within float "
                                              "rounding, fewer tokens; auto: on where the model takes "
                                              "a 4D attention mask (sdpa or eager attention, no "
                                              "sliding window shorter than --max-length)",
                                 choices=PREFIX_SHARING)
    dtype: str = option("auto", help="compute precision: auto = bf16 (or fp16) mixed precision on "
                                     "GPUs, fp32 on CPU; weights stay fp32", choices=DTYPES)
    lora_r: int = option(0, help="LoRA rank (0: train all weights)")
    lora_alpha: float = option(16.0, help="LoRA alpha (scale = alpha / r)")
    lora_dropout: float = option(0.0, help="dropout on the LoRA path")
    lora_target: list[str] = option(["all-linear"], help="module names LoRA adapts "
                                                         "(all-linear: every linear layer but the LM head)")
    merge: bool = option(True, help="merge LoRA into the exported model (--no-merge: save the adapter)")
    cache_dir: str | None = option(None, help="reference log-prob cache directory (unset: "
                                              "~/.cache/realspo/reference)")
    trust_remote_code: bool = option(False, help="allow model code from the hub (runs that code)")
    allow_pickle: bool = option(False, help="accept a model directory whose weights are only pickled "
                                            ".bin files (unpickling can run code: trusted sources only)")
    overwrite: bool = option(False, help="replace an existing --out")
    resume: bool = option(False, help="continue the run in --out from its last checkpoint")

    def validate(self) -> None:
        if self.lr is None:  # not given: the default of the kind of run, said once at start
            self.lr = LORA_LR if self.lora_r else FULL_LR
            if self.lora_r and os.environ.get("RANK", "0") == "0":
                log.info("lr %s (LoRA default; --lr to change)", _rate(self.lr))
        get_loss(self.loss)  # an unknown name lists the known ones
        check_report_to(self.report_to)  # an unknown or uninstalled tracker fails now
        self.loss_config().validate()
        if self.spo:
            self.spo_config().validate()
        positive = {"lr": self.lr, "batch_size": self.batch_size, "grad_accum": self.grad_accum,
                    "epochs": self.epochs, "logging_steps": self.logging_steps,
                    "max_length": self.max_length}
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"--{name.replace('_', '-')}: expected a positive number, got {value}")
        for name in ("max_steps", "eval_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')}: expected >= 1, got {value}")
        for name in ("eval_steps", "save_steps", "keep_checkpoints", "lora_r", "pass_tokens"):
            if (getattr(self, name) or 0) < 0:
                raise ConfigError(f"--{name.replace('_', '-')}: expected >= 0, got {getattr(self, name)}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"--warmup-ratio: expected 0 <= ratio < 1, got {self.warmup_ratio}")
        if not 0 <= self.eval_fraction < 1:
            raise ConfigError(f"--eval-fraction: expected 0 <= fraction < 1, got {self.eval_fraction}")
        if self.eval_fraction and self.eval_data:
            raise ConfigError("--eval-fraction and --eval-data: give one of them, not both")
        if self.max_grad_norm < 0 or self.weight_decay < 0:
            raise ConfigError("--max-grad-norm and --weight-decay must be >= 0")
        if self.lora_r == 0 and not self.merge:
            raise ConfigError("--no-merge only applies to LoRA runs (--lora-r > 0)")

    def loss_config(self) -> LossConfig:
        return LossConfig(beta=self.beta, label_smoothing=self.label_smoothing, gamma=self.gamma,
                          nll_weight=self.nll_weight)

    def spo_config(self) -> SPOConfig:
        return SPOConfig(levels=self.spo_levels, weight=self.spo_weight, labels=self.spo_labels,
                         pooling=self.spo_pooling, selection=self.spo_selection,
                         removal=self.spo_removal,
                         sample_levels=self.spo_sample_levels, seed=self.seed,
                         head_hidden=self.spo_head_hidden)

    def batch_settings(self) -> BatchSettings:
        """The options per-batch code reads, built once per run."""
        return BatchSettings(loss=self.loss, loss_config=self.loss_config(),
                             spo=self.spo_config() if self.spo else None,
                             max_length=self.max_length, truncation=self.truncation,
                             chat_template=self.chat_template)

    @property
    def uses_reference(self) -> bool:
        return not get_loss(self.loss).reference_free


def mixed_precision(dtype: str) -> str | None:
    """accelerate's ``mixed_precision`` for ``--dtype`` (None: leave it to accelerate's config)."""
    import torch  # here, not at the top: `realspo train --help` builds its options without torch

    if dtype == "auto":
        if os.environ.get("ACCELERATE_MIXED_PRECISION"):
            return None  # set by `accelerate launch` / `accelerate config`
        if torch.cuda.is_available():
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "no"
    if dtype == "float16" and not torch.cuda.is_available():
        raise ConfigError("--dtype float16: fp16 mixed precision needs a GPU; use bfloat16 or float32")
    return {"float32": "no", "bfloat16": "bf16", "float16": "fp16"}[dtype]
