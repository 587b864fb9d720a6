"""What a training run writes into ``OUT/``, and how it reads it back to resume.

::

    OUT/
      config.json, model.safetensors, tokenizer files   the trained model (save_pretrained), or
                                                        adapter_config.json + adapter_model.safetensors
                                                        with --no-merge
      spo_head.safetensors, spo_head.json               the SPO degree head (with --spo)
      config.yaml                                       the resolved training configuration
      metrics.jsonl                                     one JSON record per logging step / evaluation
      checkpoints/step-000300/                          accelerate state + trainer_state.json

Every file appears atomically: checkpoints are written to a hidden temporary directory and
renamed into place (a directory named ``step-*`` is always complete), the exported model is
written to ``OUT/.export.tmp`` and each file renamed into ``OUT``, and metrics are appended
one flushed line at a time.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from realspo.errors import ConfigError, OutputExistsError, RealspoError
from realspo.outputs import _json_safe, atomic_path

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"
RUN_CONFIG = "config.yaml"
TRAINER_STATE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")

# Options that fix the data order and the model being trained: a resumed run must keep them.
RESUME_INVARIANTS = ("data", "split", "eval_data", "eval_fraction", "model", "seed", "batch_size",
                     "group_by_length", "grad_accum", "max_length", "truncation", "loss", "spo", "spo_levels",
                     "spo_labels", "spo_head_hidden", "lora_r", "lora_target")


class RunExistsError(OutputExistsError):
    """``--out`` already holds a run and neither ``--resume`` nor ``--overwrite`` was given."""

    def __init__(self, path: str) -> None:
        RealspoError.__init__(self, f"{path}: already exists; pass --resume to continue that run "
                                    "or --overwrite to replace it")


def checkpoints(out: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``OUT/checkpoints``, as ``(step, path)``, oldest first."""
    root = out / CHECKPOINTS
    found = []
    if root.is_dir():
        for child in root.iterdir():
            match = _STEP_DIR.match(child.name)
            if match and (child / TRAINER_STATE).is_file():
                found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(out: Path) -> Path | None:
    found = checkpoints(out)
    return found[-1][1] if found else None


def check_run_dir(out: Path, *, resume: bool, overwrite: bool) -> Path | None:
    """Decide what to do with ``OUT`` before any work: the checkpoint to resume from, or None.

    A missing or empty ``OUT`` starts a new run. An existing one needs ``--resume`` (continue
    from its last checkpoint) or ``--overwrite`` (replace it); with both, a checkpoint is
    resumed if there is one. ``--resume`` alone on a run without a checkpoint is an error,
    so a finished or broken run is never silently restarted.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    if not out.exists() or not any(out.iterdir()):
        return None
    last = latest_checkpoint(out) if resume else None
    if last is not None:
        return last
    if overwrite:
        return None
    if resume:
        raise ConfigError(f"--out {out}: no checkpoint to resume from (checkpoints are written every "
                          "--save-steps steps); pass --overwrite to start over")
    raise RunExistsError(str(out))


def clear_run_dir(out: Path) -> None:
    """Empty ``OUT`` for a new run (``--overwrite``)."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)


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


def read_trainer_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))


def checkpoint_paths(out: Path, step: int) -> tuple[Path, Path]:
    """``(temporary dir, final dir)`` of the checkpoint at ``step``."""
    root = out / CHECKPOINTS
    return root / f".step-{step:06d}.tmp", root / f"step-{step:06d}"


def finish_checkpoint(tmp: Path, final: Path, state: dict[str, Any], keep: int) -> None:
    """Write ``trainer_state.json`` into the filled ``tmp`` dir, rename it to ``final``, and
    delete all but the newest ``keep`` checkpoints (``keep=0`` keeps all)."""
    (tmp / TRAINER_STATE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep > 0:
        for _, old in checkpoints(final.parent.parent)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


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
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(_json_safe(record)) + "\n")
            fh.flush()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (a torn last line, from a kill, is skipped)."""
    return list(_records(Path(path)))


def _records(path: Path) -> Iterator[dict[str, Any]]:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s: skipping a malformed line", path)


def save_checkpoint(accelerator: Any, out: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """``accelerator.save_state`` (model, optimizer, scheduler, RNG states of every process)
    into a temporary directory, renamed to ``OUT/checkpoints/step-NNNNNN`` once complete."""
    tmp, final = checkpoint_paths(out, step)
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        finish_checkpoint(tmp, final, state, keep)
    accelerator.wait_for_everyone()
    return final


def export_model(accelerator: Any, model: Any, tokenizer: Any, cfg: Any, out: Path) -> None:
    """Save the trained policy and tokenizer into ``OUT`` (``save_pretrained``, safetensors):
    LoRA merged unless ``cfg.merge`` is off (then the adapter), and the SPO head as
    ``spo_head.safetensors`` beside, never inside, the model."""
    from accelerate.utils import DistributedType

    from realspo.spo.head import save_head

    accelerator.wait_for_everyone()
    full_state = None
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        full_state = accelerator.get_state_dict(model)  # gathered onto the main process
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        tmp = out / ".export.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        policy, kwargs = unwrapped.policy, {}
        if cfg.lora_r and cfg.merge:
            policy = policy.merge_and_unload()
        elif full_state is not None and not cfg.lora_r:
            kwargs["state_dict"] = {k.removeprefix("policy."): v for k, v in full_state.items()
                                    if k.startswith("policy.")}
        policy.save_pretrained(tmp, safe_serialization=True, **kwargs)
        tokenizer.save_pretrained(tmp)
        if unwrapped.head is not None:
            save_head(unwrapped.head, tmp, cfg=cfg.spo_config())
        publish_export(tmp, out)
        log.info("saved the trained model to %s", out)
    accelerator.wait_for_everyone()
