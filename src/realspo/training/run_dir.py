"""What a training run writes into ``OUT/``, and how it reads it back to resume.

::

    OUT/
      .realspo-output.json                              marks OUT as a realspo training run
      config.json, model.safetensors, tokenizer files   the trained model (save_pretrained), or
                                                        adapter_config.json + adapter_model.safetensors
                                                        with --no-merge
      spo_head.safetensors, spo_head.json               the SPO degree head (with --spo)
      config.yaml                                       the resolved training configuration
      metrics.jsonl                                     one JSON record per logging step / evaluation
      checkpoints/step-000300/                          safetensors + JSON state
                                                        (:mod:`realspo.training.checkpoints`)

Every file appears atomically: checkpoints are written to a hidden temporary directory and
renamed into place (a directory named ``step-*`` is always complete), the exported model is
written to ``OUT/.export.tmp`` and each file renamed into ``OUT``, and metrics are appended
one flushed line at a time. ``--overwrite`` replaces only a directory marked as a training
run; the run holds ``.OUT.lock`` beside ``OUT`` while it writes (:func:`realspo.outputs.output_lock`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from realspo.errors import ConfigError, InputError, OutputExistsError, RealspoError
from realspo.outputs import MARKER, _json_safe, atomic_path, mark_output, output_kind, writing
from realspo.training.checkpoints import check_checkpoint_files, latest_checkpoint

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
RUN_CONFIG = "config.yaml"
RUN_KIND = "train-run"  # the kind in OUT's marker (realspo.outputs.MARKER)

# Options that fix the data order and the model being trained: a resumed run must keep them.
RESUME_INVARIANTS = ("data", "split", "eval_data", "eval_fraction", "model", "seed", "batch_size",
                     "group_by_length", "grad_accum", "max_length", "truncation", "loss", "spo", "spo_levels",
                     "spo_labels", "spo_head_hidden", "lora_r", "lora_target")


class RunExistsError(OutputExistsError):
    """``--out`` already holds a run and neither ``--resume`` nor ``--overwrite`` was given."""

    def __init__(self, path: str) -> None:
        RealspoError.__init__(self, f"{path}: already exists; pass --resume to continue that run "
                                    "or --overwrite to replace it")


class RunStart(NamedTuple):
    """What :func:`check_run_dir` decided: the checkpoint to resume from (None: step 0), and
    whether ``--resume`` found no checkpoint and starts the run over."""

    resume_from: Path | None
    restart: bool = False


def check_run_dir(out: Path, *, resume: bool, overwrite: bool) -> RunStart:
    """Decide what to do with ``OUT`` before any work.

    A missing or empty ``OUT`` starts a new run. An existing one needs ``--resume`` (continue
    from its last checkpoint) or ``--overwrite`` (replace it); with both, a checkpoint is
    resumed if there is one. Only a directory marked as a realspo training run is ever
    emptied: ``--overwrite``, and ``--resume`` of a run killed before its first checkpoint
    (started over), refuse anything else, and nothing is deleted. ``--resume`` of a finished
    run without checkpoints is refused, so a trained model is never silently replaced.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    if not out.exists() or not any(out.iterdir()):
        return RunStart(None)
    if not (resume or overwrite):
        raise RunExistsError(str(out))
    last = latest_checkpoint(out) if resume else None
    if last is not None:
        check_checkpoint_files(last)  # refuses a pickle or a malformed file before any work
        return RunStart(last)
    kind = None if out.is_symlink() else output_kind(out)
    if kind != RUN_KIND:
        what = (f"is a realspo {kind} output, not a training run" if kind else
                "is a symbolic link, which is not emptied" if out.is_symlink() else
                f"is not a realspo training run (no {MARKER}; a run written before realspo marked "
                "its runs lacks it: delete such a run by hand)")
        if resume:
            raise ConfigError(f"--out {out}: no checkpoint to resume from, and it {what}; "
                              "refusing to start it over")
        raise OutputExistsError(f"--out {out}", what)
    if overwrite:
        return RunStart(None)
    if _exported(out):
        raise ConfigError(f"--out {out}: no checkpoint to resume from, and the run has finished "
                          "(it holds the trained model); pass --overwrite to train it again")
    return RunStart(None, restart=True)


def _exported(out: Path) -> bool:
    return any((out / name).exists() for name in ("model.safetensors", "model.safetensors.index.json",
                                                  "adapter_model.safetensors"))


def clear_run_dir(out: Path) -> None:
    """Empty ``OUT`` for a new run (``--overwrite``, or a restart) and mark it as a training run."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    mark_output(out, RUN_KIND)


def check_resume_config(out: Path, config: dict[str, Any]) -> None:
    """Refuse to resume with options that change the data order or the model."""
    path = out / RUN_CONFIG
    if not path.is_file():
        return
    saved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    changed = [k for k in RESUME_INVARIANTS if k in saved and saved[k] != config.get(k)]
    if changed:
        detail = ", ".join(f"{k}: {saved[k]!r} -> {config.get(k)!r}" for k in changed)
        raise ConfigError(f"--resume: {path} was trained with different options ({detail}); "
                          "resume with the same ones or pass --overwrite")


def write_run_config(out: Path, config: dict[str, Any]) -> None:
    with atomic_path(out / RUN_CONFIG, overwrite=True) as tmp:
        tmp.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def publish_export(tmp: Path, out: Path) -> None:
    """Move every file of the finished export dir ``tmp`` into ``out`` (each an atomic rename)."""
    for item in sorted(tmp.iterdir()):
        target = out / item.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(item, target)
    tmp.rmdir()


class MetricsLog:
    """``OUT/metrics.jsonl``: one record per line, appended and flushed as it is written."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (logged after the checkpoint a resumed run starts from)."""
        if not self.path.exists():
            return
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        with atomic_path(self.path, overwrite=True) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        with writing(self.path), self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(_json_safe(record)) + "\n")
            fh.flush()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (see :func:`numbered_metrics`)."""
    return [record for _, record in numbered_metrics(Path(path))]


def numbered_metrics(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` of each record of a ``metrics.jsonl``.

    A line that is not a JSON object stops the reading with an :class:`InputError` naming
    the file and line, except a last line without its newline: that is a record torn by a
    kill (each record is written as one line ending in a newline), skipped with a warning.
    """
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")  # the last item is "" when the file ends with a newline
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        torn = number == len(lines)
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if torn:
                log.warning("%s:line %d: skipping a torn last record (the run was killed while "
                            "writing it)", path, number)
                return
            raise InputError(str(path), f"not valid JSON ({exc.msg}, column {exc.colno})",
                             where=f"line {number}") from None
        if not isinstance(record, dict):
            raise InputError(str(path), f"a JSON {type(record).__name__}, expected an object (a "
                             "metrics record)", where=f"line {number}")
        yield number, record


def export_model(accelerator: Any, model: Any, tokenizer: Any, cfg: Any, out: Path) -> None:
    """Save the trained policy and tokenizer into ``OUT`` (``save_pretrained``, safetensors):
    LoRA merged unless ``cfg.merge`` is off (then the adapter), and the SPO head as
    ``spo_head.safetensors`` beside, never inside, the model. Under FSDP / DeepSpeed the
    weights are gathered first (:func:`realspo.training.sharding.whole_model`), so the export
    is the same as a one-process run's."""
    from realspo.training.sharding import whole_model

    accelerator.wait_for_everyone()
    trained = whole_model(accelerator, model, cfg)  # every process: it may gather shards
    if accelerator.is_main_process:
        tmp = out / ".export.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            _export(trained, tokenizer, cfg, tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone once published; else a failed export
        log.info("saved the trained model to %s", out)
    accelerator.wait_for_everyone()


def _export(trained: Any, tokenizer: Any, cfg: Any, tmp: Path, out: Path) -> None:
    from realspo.spo.head import save_head

    policy = trained.policy
    if cfg.lora_r and cfg.merge:
        policy = policy.merge_and_unload()
    policy.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if trained.head is not None:
        save_head(trained.head, tmp, cfg=cfg.spo_config())
    publish_export(tmp, out)
