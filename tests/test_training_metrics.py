"""Training metrics travel by name: a step's per-pair rows and sums, and the record they become."""

from __future__ import annotations

import pytest
import torch

from realspo.training.metrics import (
    BATCH_METRICS,
    METRIC_KEYS,
    PAIR_METRICS,
    Metrics,
    metric_record,
)


def per_pair() -> Metrics:
    """Two pairs; every metric's value encodes its column (10 * column + pair)."""
    return Metrics.stack({name: torch.tensor([10.0 * i, 10.0 * i + 1]) for i, name in enumerate(PAIR_METRICS)})


def test_a_metric_is_read_by_name_from_rows_and_from_sums():
    rows = per_pair()
    assert rows.values.shape == (2, len(PAIR_METRICS)) and rows.values.dtype == torch.float32
    assert rows["rewards/accuracies"].tolist() == [40.0, 41.0]
    assert rows.sum()["logps/rejected"].item() == 60.0 + 61.0


def test_sums_of_a_step_hold_every_metric_in_record_order():
    batch = Metrics.stack({"nll_loss": torch.tensor(1.5), "spo/loss": torch.tensor(2.0),
                           "spo/accuracy": torch.tensor(0.5)})
    sums = per_pair().sum().cat(batch)
    assert sums.names == METRIC_KEYS
    assert sums.select(BATCH_METRICS).values.tolist() == [1.5, 2.0, 0.5]
    assert (sums + sums)["spo/loss"].item() == 4.0


def test_metrics_with_different_names_do_not_add_or_repeat():
    sums = per_pair().sum()
    with pytest.raises(ValueError, match="cannot add"):
        sums + sums.select(PAIR_METRICS[::-1])
    with pytest.raises(ValueError, match="given twice"):
        sums.cat(sums)


def test_record_is_the_mean_under_trl_names_without_switched_off_metrics():
    sums = Metrics(METRIC_KEYS, torch.arange(len(METRIC_KEYS), dtype=torch.float32) * 4)
    full = metric_record(sums, 4, nll=True, spo=True, prefix="eval/")
    assert list(full) == [f"eval/{k}" for k in METRIC_KEYS]
    assert full["eval/rewards/margins"] == 3.0 and full["eval/spo/accuracy"] == 9.0
    plain = metric_record(sums, 4, nll=False, spo=False)
    assert list(plain) == list(PAIR_METRICS)
