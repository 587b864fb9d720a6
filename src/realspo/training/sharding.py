"""Sharded training (FSDP, DeepSpeed ZeRO): the accelerator a run trains on, and the whole
trained model the export saves.

Under FSDP or ZeRO-3 no process holds the whole model: each holds a shard of every weight
(FSDP2: ``DTensor`` parameters). Saving, or merging LoRA into, the main process's module then
reads shards, or waits forever on a collective the other processes never join (an FSDP2
LoRA merge on the main process alone hung, measured). :func:`whole_model` therefore gathers
the full state dict on every process first, and the main process loads it into a fresh,
unsharded copy of the trained module (policy, LoRA, SPO head), which is exported exactly as a
one-process run's model is. That copy costs the main process one more model in CPU memory
while it exports.

On CPU, accelerate (1.15) builds FSDP only on accelerator devices: ``accelerate launch
--use_fsdp`` without a GPU silently trains with DDP instead. :func:`make_accelerator` turns
FSDP2 on there (torch's ``fully_shard`` runs on CPU over gloo), so the sharded code path runs
and is tested on a CPU machine (``tests/test_fsdp_cpu.py``); FSDP1 cannot (its plugin needs a
device), and is refused with a message.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import torch

from realspo.errors import ConfigError
from realspo.training.config import TrainConfig, mixed_precision
from realspo.training.trackers import tracker_options

log = logging.getLogger(__name__)


def make_accelerator(cfg: TrainConfig, out: Path) -> Any:
    """The ``Accelerator`` of a run: gloo on CPU with several processes, FSDP2 there when
    ``accelerate launch`` asked for FSDP."""
    from accelerate import Accelerator

    world = int(os.environ.get("WORLD_SIZE", "1"))
    # Several processes without a GPU (torchrun on CPU): accelerate needs cpu=True to use gloo.
    multi_cpu = world > 1 and not torch.cuda.is_available()
    if world == 1:
        # accelerate's state is process-wide and fixed by the first Accelerator: a process that
        # trains twice (the demo, a notebook, the tests) may change --dtype between runs.
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state()
    fsdp_on_cpu = multi_cpu and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if fsdp_on_cpu:
        _check_fsdp_version()
    accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum, cpu=multi_cpu,
                              mixed_precision=mixed_precision(cfg.dtype),
                              **tracker_options(cfg.report_to, out))
    if fsdp_on_cpu:
        _switch_to_fsdp2(accelerator)
    return accelerator


def _check_fsdp_version() -> None:
    version = os.environ.get("FSDP_VERSION", "1")
    if version != "2":
        raise ConfigError(f"FSDP version {version} on CPU: accelerate's FSDP1 needs a GPU; launch "
                          "with --fsdp_version 2 (fully_shard runs on CPU over gloo)")


def _switch_to_fsdp2(accelerator: Any) -> None:
    """Make ``accelerator`` (built for DDP over gloo) shard with FSDP2, as it would on GPUs.

    accelerate keeps the distributed type in two process-wide states; both are set, as its own
    FSDP set-up does. The plugin reads the rest of ``accelerate launch``'s FSDP options from
    the environment (``FSDP_*``).
    """
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin(fsdp_version=2)  # the rest from FSDP_* variables
    if accelerator.state.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.state.mixed_precision)
    accelerator.state.fsdp_plugin = plugin
    accelerator.state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP


def is_sharded(accelerator: Any) -> bool:
    """Whether no process holds the whole trained module (FSDP, DeepSpeed)."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def whole_model(accelerator: Any, model: Any, cfg: TrainConfig) -> Any:
    """The trained module (``PolicyWithHead``), whole and unsharded, on the main process (None
    on the others). Every process must call it: under sharding it gathers the weights."""
    if not is_sharded(accelerator):
        return accelerator.unwrap_model(model) if accelerator.is_main_process else None
    state = accelerator.get_state_dict(model)  # a collective: the full weights, on the main process
    if not accelerator.is_main_process:
        return None
    from realspo.models import load_model
    from realspo.training.step import build_model

    policy = load_model(cfg.model, dtype=torch.float32, device="cpu",
                        trust_remote_code=cfg.trust_remote_code, allow_pickle=cfg.allow_pickle)
    copy = build_model(dataclasses.replace(cfg, gradient_checkpointing=False), policy)
    dtype = next(copy.parameters()).dtype
    state = {k.removeprefix("module."): v.to(dtype) for k, v in state.items()}
    missing, unexpected = copy.load_state_dict(state, strict=False)
    # Tied weights (an LM head sharing the embedding) may be gathered once under one name.
    tied = {name for name in missing if _is_tied(copy, name)}
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"the gathered state does not fit the model: missing "
                           f"{sorted(set(missing) - tied)[:5]}, unexpected {sorted(unexpected)[:5]}")
    log.info("gathered the trained weights from %d %s shards for the export", accelerator.num_processes,
             accelerator.distributed_type.value)
    return copy


def _is_tied(module: torch.nn.Module, name: str) -> bool:
    """Whether parameter ``name`` shares its storage with another parameter of ``module``."""
    params = dict(module.named_parameters(remove_duplicate=False))
    target = params.get(name)
    return target is not None and any(other is target for key, other in params.items() if key != name)
