"""Experiment trackers (``realspo train --report-to``): accelerate's, fed what ``metrics.jsonl`` gets.

Each record training writes to ``OUT/metrics.jsonl`` is also logged, at its step and under the
same names (TRL's: ``loss``, ``rewards/margins``, ``rewards/accuracies``, ``logps/chosen``, ...;
evaluation records under ``eval/``), through accelerate's trackers (``Accelerator(log_with=...)``,
``init_trackers``, ``accelerator.log``, ``end_training``), on the main process only. Trackers
that keep local files keep them in ``OUT/runs`` (TensorBoard: ``OUT/runs/realspo/``).
A tracker named but not installed stops the run at its start: accelerate would silently
leave it out.

Torch-free at import: :class:`realspo.training.train_config.TrainConfig` checks ``--report-to`` with it.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path
from typing import Any

from realspo.errors import ConfigError

NO_TRACKER = "none"
# --report-to name -> the packages accelerate logs through (any one of them will do)
TRACKERS = {"tensorboard": ("tensorboard", "tensorboardX"), "trackio": ("trackio",), "wandb": ("wandb",)}
TRACKERS_DIR = "runs"  # inside OUT
PROJECT = "realspo"  # the trackers' project name (TensorBoard's subdirectory, wandb's project)


def check_report_to(names: list[str]) -> list[str]:
    """The trackers ``--report-to`` asks for, without repeats (``[]`` for ``none``).

    :class:`ConfigError` for an unknown name, ``none`` next to a tracker, or a tracker whose
    package is not installed.
    """
    known = (*TRACKERS, NO_TRACKER)
    for name in names:
        if name not in known:
            raise ConfigError(f"--report-to: unknown tracker {name!r}; expected one or more of "
                              f"{', '.join(known)}")
    trackers = list(dict.fromkeys(n for n in names if n != NO_TRACKER))
    if trackers and NO_TRACKER in names:
        raise ConfigError(f"--report-to: '{NO_TRACKER}' cannot go with a tracker "
                          f"({', '.join(trackers)})")
    for name in trackers:
        if not any(find_spec(package) for package in TRACKERS[name]):
            raise ConfigError(f"--report-to {name}: the {name} package is not installed "
                              f"(pip install {TRACKERS[name][0]}), or use --report-to none")
    return trackers


def tracker_options(names: list[str], out: Path) -> dict[str, Any]:
    """``Accelerator`` keyword arguments for these trackers, logging into ``OUT/runs`` (none
    without trackers, so a run without them builds its accelerator as before)."""
    trackers = check_report_to(names)
    if not trackers:
        return {}
    from accelerate.utils import ProjectConfiguration

    return {"log_with": trackers, "project_config": ProjectConfiguration(
        project_dir=str(out), logging_dir=str(out / TRACKERS_DIR))}


def start_trackers(accelerator: Any, config: dict[str, Any], out: Path) -> None:
    """``init_trackers`` with the run's options as its configuration (main process)."""
    if not accelerator.log_with:
        return
    # TensorBoard's hparams take only numbers, strings and booleans
    shown = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in config.items()}
    accelerator.init_trackers(PROJECT, config=shown,
                              init_kwargs={"wandb": {"dir": str(out / TRACKERS_DIR)}})


def tracker_values(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of a ``metrics.jsonl`` record, under its names, less ``step`` (the
    tracker's step) and values that are not numbers (a null metric)."""
    return {k: v for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def end_trackers(accelerator: Any) -> None:
    """accelerate's ``end_training`` where trackers run (the main process): flush and close
    them. Called once the run is exported, after the last collective (it also ends the
    process group)."""
    if accelerator.trackers:
        accelerator.end_training()
