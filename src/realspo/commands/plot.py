"""``realspo plot``: draw a run's training and evaluation curves to a PNG.

Reads ``RUN/metrics.jsonl`` (written by ``realspo train``) and draws one panel per metric
family: loss, reward accuracy, reward margins, chosen/rejected rewards, and, for SPO runs,
the degree loss and accuracy. Training records are lines, ``eval/`` records are markers.

A malformed ``metrics.jsonl`` (a line that is not a JSON object, a record without a numeric
``step``, a plotted value that is not a number or null) stops it with one line naming the
file, the line and the field. A torn last line (no newline: the run was killed while writing
it) is skipped with a warning, as ``train --resume`` does: it is the one damage a kill can do,
and the records before it are whole.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from realspo.config import add_options, option, resolve
from realspo.errors import InputError
from realspo.outputs import atomic_path, check_writable

# (panel title, metric names drawn in it)
PANELS = (
    ("loss", ("loss",)),
    ("rewards/accuracies", ("rewards/accuracies",)),
    ("rewards/margins", ("rewards/margins",)),
    ("rewards", ("rewards/chosen", "rewards/rejected")),
    ("spo/loss", ("spo/loss",)),
    ("spo/accuracy", ("spo/accuracy",)),
)


@dataclass
class PlotConfig:
    run: str = option(help="run directory of `realspo train` (or its metrics.jsonl)", cli=False,
                      path="input")
    out: str | None = option(None, help="PNG to write (unset: RUN/curves.png)", path="output")
    overwrite: bool = option(False, help="replace an existing PNG")

    def validate(self) -> None:
        # what is read is RUN/metrics.jsonl, so --out RUN/curves.png stays allowed
        if not Path(self.run).is_file():
            self.run = str(Path(self.run) / "metrics.jsonl")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN",
                        help="run directory of `realspo train` (or its metrics.jsonl)")
    add_options(parser, PlotConfig)


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [p[0] for p in points], [p[1] for p in points]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_plot_records(metrics_path: Path) -> list[dict[str, Any]]:
    """The records of ``metrics_path``, each checked: a numeric ``step``, and every plotted
    metric a number or null (``train`` writes a non-finite value as null)."""
    from realspo.training.run_dir import numbered_metrics

    plotted = {k for _, keys in PANELS for key in keys for k in (key, f"eval/{key}")}
    records = []
    for number, record in numbered_metrics(metrics_path):
        if not _is_number(record.get("step")):
            raise InputError(str(metrics_path), f"expected a number, got {record.get('step')!r:.60}",
                             where=f"line {number}", field="step")
        for key in plotted.intersection(record):
            if record[key] is not None and not _is_number(record[key]):
                raise InputError(str(metrics_path), f"expected a number or null, got {record[key]!r:.60}",
                                 where=f"line {number}", field=key)
        records.append(record)
    return records


def plot_metrics(metrics_path: Path, png: Path, overwrite: bool = False) -> Path:
    """Draw the curves of ``metrics_path`` into ``png`` (atomically); returns ``png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    check_writable(png, overwrite)  # before any drawing
    if not metrics_path.is_file():
        raise InputError(str(metrics_path), "no such file (expected the metrics.jsonl of a training run)")
    records = read_plot_records(metrics_path)
    if not records:
        raise InputError(str(metrics_path), "no metrics records to plot")
    panels = [(title, keys) for title, keys in PANELS
              if any(k in r or f"eval/{k}" in r for r in records for k in keys)]
    if not panels:  # another tool's metrics.jsonl: steps, but none of the metrics train logs
        known = ", ".join(key for _, keys in PANELS for key in keys)
        raise InputError(str(metrics_path), f"none of its {len(records)} records holds a metric "
                                            f"realspo plots ({known}); not the metrics of `realspo train`?")
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, (title, keys) in zip(axes.flat, panels, strict=False):
        for key in keys:
            steps, values = _series(records, key)
            if steps:
                ax.plot(steps, values, label=f"train {key}" if len(keys) > 1 else "train")
            steps, values = _series(records, f"eval/{key}")
            if steps:
                ax.plot(steps, values, "o--", label=f"eval {key}" if len(keys) > 1 else "eval")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(str(metrics_path.parent.name or metrics_path))
    fig.tight_layout()
    with atomic_path(png, overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return png


def run(args: argparse.Namespace) -> int:
    cfg = resolve(PlotConfig, args)
    metrics = Path(cfg.run)  # validate() made a run directory its metrics.jsonl
    png = Path(cfg.out) if cfg.out else metrics.parent / "curves.png"
    print(plot_metrics(metrics, png, cfg.overwrite))
    return 0
