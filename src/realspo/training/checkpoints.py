"""Training checkpoints: everything a run needs to continue exactly, and no pickle.

::

    OUT/checkpoints/step-000300/
      trainer_state.json         step, epoch, processes, micro-batch counter, format version
      model.safetensors          the trained module's weights (policy, LoRA, SPO head)
      optimizer.json             optimizer.state_dict() without its tensors: param_groups, ...
      optimizer.safetensors      ... and its tensors (AdamW's moments and step counts)
      scheduler.json             the learning-rate scheduler's state_dict()
      scaler.json                the fp16 loss scaler's state (fp16 mixed precision only)
      rng_state_<i>.json         process i's Python ``random`` and numpy generator states
      rng_state_<i>.safetensors  process i's torch CPU (and CUDA) generator states

The JSON/safetensors pairs are :mod:`realspo.training.state_files`. Only the main process
writes (each process's RNG state is gathered to it); each process restores its own RNG
state. A checkpoint is written into ``.step-NNNNNN.tmp`` and renamed when complete, so a
``step-*`` directory is always whole; the temporary is removed on any exception, and one a
kill left behind is removed when the run resumes.

Before anything is loaded, :func:`check_checkpoint_files` refuses a directory holding any
other file, such as accelerate's pickles (``optimizer.bin``, ``random_states_0.pkl``,
``custom_checkpoint_0.pkl``) from checkpoints of older versions, which are never read.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from realspo.errors import ConfigError, InputError
from realspo.outputs import writing
from realspo.training.state_files import (
    StateFileError,
    check_like,
    read_json,
    read_state,
    read_tensors,
    write_state,
)

CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer_state.json"
MODEL = "model.safetensors"
FORMAT = "realspo-checkpoint/1"
_STEP_DIR = re.compile(r"^step-(\d+)$")
_RNG = "rng_state_{}"
_RNG_FILE = re.compile(r"^rng_state_(\d+)$")
# What checkpoints of realspo <= this change held (accelerate's save_state): pickles.
_PICKLED = re.compile(r"^(custom_checkpoint_\d+\.pkl|random_states_\d+\.pkl|(optimizer|scheduler|"
                      r"sampler|dl_state_dict)(_\d+)?\.bin|scaler\.pt|pytorch_model(_\d+)?\.bin)$")


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


def checkpoint_paths(out: Path, step: int) -> tuple[Path, Path]:
    """``(temporary dir, final dir)`` of the checkpoint at ``step``."""
    root = out / CHECKPOINTS
    return root / f".step-{step:06d}.tmp", root / f"step-{step:06d}"


def remove_temporaries(out: Path) -> list[Path]:
    """Remove the hidden ``.*.tmp`` files and directories an interrupted run left in ``OUT``
    and ``OUT/checkpoints`` (a half-written checkpoint, export or metrics file); the paths
    removed."""
    removed = []
    for root in (out, out / CHECKPOINTS):
        if root.is_dir():
            for item in root.glob(".*.tmp"):
                if item.is_dir() and not item.is_symlink():
                    shutil.rmtree(item)
                else:
                    item.unlink()
                removed.append(item)
    return sorted(removed)


def check_supported(accelerator: Any, *, saving: bool, resuming: bool) -> None:
    """Checkpoints hold the whole module and optimizer state of one process: refuse them where
    these are sharded (FSDP, DeepSpeed, Megatron-LM) rather than save a part."""
    from accelerate.utils import DistributedType

    sharded = (DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM)
    if (saving or resuming) and accelerator.distributed_type in sharded:
        flag = "--resume" if resuming else "--save-steps"
        raise ConfigError(f"{flag}: checkpoints are not supported under "
                          f"{accelerator.distributed_type.value} (sharded state); use DDP or "
                          "--save-steps 0")


# -- writing -----------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """This process's generator states: Python ``random``, numpy, torch CPU and CUDA."""
    import torch  # here: `train` checks its run directory (this module) before torch loads

    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {"python": random.getstate(),
                             "numpy": (name, keys.tolist(), int(pos), int(has_gauss), float(cached)),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(accelerator: Any, parts: dict[str, Any], out: Path, step: int,
                    state: dict[str, Any], keep: int) -> Path:
    """Write the checkpoint of ``step`` (see the module docstring) and delete all but the
    newest ``keep`` checkpoints (``keep=0`` keeps all). ``parts`` holds the prepared
    ``model``, ``optimizer``, ``scheduler`` and, with fp16, ``scaler``. Every process calls it."""
    from accelerate.utils import gather_object

    rngs = gather_object([rng_state()]) if accelerator.num_processes > 1 else [rng_state()]
    tmp, final = checkpoint_paths(out, step)
    if accelerator.is_main_process:
        try:
            with writing(final):  # a full disk names the checkpoint
                if tmp.exists():
                    shutil.rmtree(tmp)
                tmp.mkdir(parents=True)
                _write(tmp, accelerator, parts, rngs)
                state = {**state, "format": FORMAT, "accelerator_step": accelerator.step}
                (tmp / TRAINER_STATE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
                if final.exists():
                    shutil.rmtree(final)
                os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if keep > 0:
            for _, old in checkpoints(out)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _write(directory: Path, accelerator: Any, parts: dict[str, Any], rngs: list[dict[str, Any]]) -> None:
    from safetensors.torch import save_model

    # save_model stores tied weights (embeddings and LM head) once, as load_model expects.
    save_model(accelerator.unwrap_model(parts["model"]), str(directory / MODEL))
    write_state(directory, "optimizer", parts["optimizer"].state_dict())
    write_state(directory, "scheduler", parts["scheduler"].state_dict())
    if parts.get("scaler") is not None:
        write_state(directory, "scaler", parts["scaler"].state_dict())
    for i, rng in enumerate(rngs):
        write_state(directory, _RNG.format(i), rng)


# -- reading -----------------------------------------------------------------------------------


def _invalid(path: Path, reason: str) -> InputError:
    return InputError(str(path), f"not a valid realspo checkpoint file ({reason})")


def check_checkpoint_files(checkpoint: Path) -> dict[str, Any]:
    """Check ``checkpoint``'s files, cheaply and before any work: their names (anything a
    realspo checkpoint does not hold is refused), that each parses (JSON; a safetensors
    header), and ``trainer_state.json``, which is returned."""
    path = checkpoint / TRAINER_STATE
    for item in sorted(checkpoint.iterdir()):
        if _PICKLED.match(item.name):
            raise _invalid(item, "a pickle, as older realspo versions wrote; pickles are never "
                                 "read: delete the run to start over")
    try:
        state = read_json(path)
        if not isinstance(state, dict):
            raise ValueError("not a JSON object")
    except Exception as exc:
        raise _invalid(path, StateFileError(path, exc).reason) from None
    if state.get("format") != FORMAT:
        raise _invalid(path, f"format {state.get('format')!r}, expected {FORMAT!r}")
    if not all(type(state.get(k)) is int and state[k] >= 0
               for k in ("step", "num_processes", "accelerator_step")) or not state["num_processes"]:
        raise _invalid(path, "no integer 'step', 'num_processes' and 'accelerator_step'")
    processes, pieces = state["num_processes"], set()
    for item in sorted(checkpoint.iterdir()):
        piece, _, ext = item.name.rpartition(".")
        rng = _RNG_FILE.match(piece)
        if item.name not in (TRAINER_STATE, MODEL):
            if ext not in ("json", "safetensors") or not (
                    piece in ("optimizer", "scheduler", "scaler") or rng and int(rng.group(1)) < processes):
                raise _invalid(item, "unexpected: a checkpoint holds only realspo's JSON and "
                                     "safetensors files")
            pieces.add(piece)
        if not item.is_file():
            raise _invalid(item, "not a file")
    required = (MODEL, "optimizer.json", "scheduler.json")
    for name in itertools.chain(required, (f"{_RNG.format(i)}.json" for i in range(processes))):
        if not (checkpoint / name).is_file():  # lazily: stops at the first one missing
            raise _invalid(checkpoint / name, "missing")
    try:  # every file parses (safetensors: the header), before any model is loaded
        read_tensors(checkpoint / MODEL, load=False)
        for piece in sorted(pieces):
            if not (checkpoint / f"{piece}.json").is_file():
                raise StateFileError(checkpoint / f"{piece}.json", "missing")
            read_state(checkpoint, piece, tensors=False)
    except StateFileError as exc:
        raise _invalid(exc.path, exc.reason) from None
    return state


def restore_checkpoint(accelerator: Any, parts: dict[str, Any], checkpoint: Path) -> dict[str, Any]:
    """Load ``checkpoint`` into ``parts`` (as for :func:`save_checkpoint`) and this process's
    RNG; its trainer state. Every process calls it. A file that is not what realspo writes
    stops the run with an :class:`InputError` naming it, and nothing in it is executed."""
    from safetensors.torch import load_model

    state = check_checkpoint_files(checkpoint)
    if state["num_processes"] != accelerator.num_processes:
        raise ConfigError(f"--resume: {checkpoint} was saved by {state['num_processes']} processes, "
                          f"this run has {accelerator.num_processes}; the data order would differ")
    try:
        load_model(accelerator.unwrap_model(parts["model"]), str(checkpoint / MODEL), strict=True)
    except Exception as exc:
        raise _invalid(checkpoint / MODEL, StateFileError(checkpoint / MODEL, exc).reason) from None
    _load(checkpoint, "optimizer", _checked_optimizer_state(parts["optimizer"]))
    _load(checkpoint, "scheduler", _same_keys(parts["scheduler"]))
    if parts.get("scaler") is not None and (checkpoint / "scaler.json").exists():
        _load(checkpoint, "scaler", _same_keys(parts["scaler"]))
    _load(checkpoint, _RNG.format(accelerator.process_index), set_rng_state)
    accelerator.step = state["accelerator_step"]  # its micro-batch counter: which micro-batch syncs
    return state


def _load(checkpoint: Path, name: str, apply: Any) -> None:
    try:
        apply(read_state(checkpoint, name))
    except StateFileError as exc:
        raise _invalid(exc.path, exc.reason) from None
    except Exception as exc:  # well-formed, but not state this run can take
        path = checkpoint / f"{name}.json"
        raise _invalid(path, StateFileError(path, exc).reason) from None


def _checked_optimizer_state(optimizer: Any) -> Any:
    """``optimizer.load_state_dict``, after the hyper-parameters of each group (``lr``,
    ``betas``, ...) are checked like the optimizer's own and every moment tensor is finite."""
    def apply(state: Any) -> None:
        own = optimizer.state_dict()
        if not isinstance(state, dict) or not isinstance(state.get("param_groups"), list):
            raise ValueError("expected a mapping with 'param_groups'")
        check_like(state["param_groups"], own["param_groups"], "param_groups")
        for key, moments in (state.get("state") or {}).items():
            for name, tensor in (moments.items() if isinstance(moments, dict) else ()):
                if hasattr(tensor, "is_floating_point") and tensor.is_floating_point() \
                        and not bool(tensor.isfinite().all()):
                    raise ValueError(f"state.{key}.{name}: holds non-finite numbers")
        optimizer.load_state_dict(state)
    return apply


def _same_keys(target: Any) -> Any:
    """``target.load_state_dict``, refusing a key ``target``'s own state lacks (a scheduler's
    load_state_dict sets whatever attributes it is given, ``optimizer`` included)."""
    def apply(state: Any) -> None:
        own = target.state_dict()
        if not isinstance(state, dict) or not set(state) <= set(own):
            unknown = sorted(set(state) - set(own)) if isinstance(state, dict) else state
            raise ValueError(f"unexpected keys {unknown!r:.80}")
        check_like(state, own)  # types and ranges, before anything is set
        target.load_state_dict(state)
    return apply
