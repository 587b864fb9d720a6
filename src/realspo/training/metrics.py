"""Training metrics by name: what a micro-batch measures, how windows of them add up, and the
``metrics.jsonl`` record they become (under TRL's names).

A :class:`Metrics` keeps its values in one tensor whose last dimension follows its ``names``:
a batch's pairs are summed in one reduction and a logging window is reduced over the
processes in one collective, while every reader asks for a metric by its name.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

import torch
from torch import Tensor

# Measured per pair, then summed over the batch's pairs.
PAIR_METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins",
                "rewards/accuracies", "logps/chosen", "logps/rejected")
# Measured per batch (already summed over its pairs).
BATCH_METRICS = ("nll_loss", "spo/loss", "spo/accuracy")
# Every metric of a record, in the order metrics.jsonl writes them.
METRIC_KEYS = PAIR_METRICS + BATCH_METRICS


@dataclass
class Metrics:
    """Named metrics: ``values[..., i]`` is the metric ``names[i]``.

    ``values`` has shape (len(names),) for sums, or (B, len(names)) for one row per pair.
    """

    names: tuple[str, ...]
    values: Tensor

    @classmethod
    def stack(cls, columns: dict[str, Tensor]) -> Metrics:
        """Metrics from named tensors of one shape ((B,) each, or scalars), as fp32."""
        return cls(tuple(columns), torch.stack(list(columns.values()), dim=-1).float())

    @classmethod
    def zeros(cls, names: tuple[str, ...], device: torch.device | str | None = None) -> Metrics:
        """Zero sums (len(names),) fp32: the start of a window."""
        return cls(names, torch.zeros(len(names), device=device))

    def __getitem__(self, name: str) -> Tensor:
        """The metric ``name``: a scalar, or (B,) for per-pair rows."""
        return self.values[..., self.names.index(name)]

    def __add__(self, other: Metrics) -> Metrics:
        if other.names != self.names:
            raise ValueError(f"cannot add metrics {other.names} to {self.names}")
        return Metrics(self.names, self.values + other.values)

    def select(self, names: tuple[str, ...]) -> Metrics:
        """These metrics only, in this order."""
        return Metrics(names, self.values[..., [self.names.index(n) for n in names]])

    def cat(self, other: Metrics) -> Metrics:
        """This and ``other``'s metrics side by side (names must not repeat)."""
        if set(self.names) & set(other.names):
            raise ValueError(f"metrics {sorted(set(self.names) & set(other.names))} given twice")
        return Metrics(self.names + other.names, torch.cat([self.values, other.values], dim=-1))

    def sum(self) -> Metrics:
        """Per-pair rows (B, M) summed over the pairs: (M,)."""
        return Metrics(self.names, self.values.sum(0))

    def detach(self) -> Metrics:
        return Metrics(self.names, self.values.detach())

    def float(self) -> Metrics:
        return Metrics(self.names, self.values.float())


def metric_record(sums: Metrics, count: float, *, nll: bool, spo: bool, prefix: str = ""
                  ) -> dict[str, float]:
    """Means of summed metrics under TRL's names (``prefix="eval/"`` for evaluation), in
    :data:`METRIC_KEYS` order; ``nll_loss`` only with an NLL term, ``spo/*`` only with SPO."""
    values = (sums.values.float().cpu() / max(float(count), 1.0)).tolist()
    record = {}
    for key, value in zip(sums.names, values, strict=True):
        if (key == "nll_loss" and not nll) or (key.startswith("spo/") and not spo):
            continue
        record[prefix + key] = value
    return record


def peak_memory_mb() -> float:
    """Peak CUDA memory allocated by this process, or its peak resident set size on CPU."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
