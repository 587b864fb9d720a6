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
and is tested on a CPU machine (``tests/test_sharded_cpu.py``); FSDP1 cannot (its plugin needs a
device), and is refused with a message. ``accelerate launch --use_deepspeed`` on CPU is the
same (accelerate ignores DeepSpeed with ``cpu=True``): :func:`make_accelerator` hands the run to
DeepSpeed ZeRO, which runs on CPU over gloo (``tests/test_sharded_cpu.py``, where deepspeed is
installed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from realspo.errors import ConfigError
from realspo.training.trackers import tracker_options
from realspo.training.train_config import TrainConfig, mixed_precision

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
    elif multi_cpu and os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        _switch_to_deepspeed(accelerator)
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


def _switch_to_deepspeed(accelerator: Any) -> None:
    """Make ``accelerator`` (built for DDP over gloo) train with DeepSpeed ZeRO, as it would on
    GPUs. DeepSpeed joins the gloo process group already set up; the plugin reads ``accelerate
    launch``'s DeepSpeed options from the environment (``ACCELERATE_DEEPSPEED_*``)."""
    from accelerate.state import PartialState
    from accelerate.utils import DeepSpeedPlugin, DistributedType

    plugin = DeepSpeedPlugin()
    plugin.set_mixed_precision(accelerator.state.mixed_precision)
    plugin.select(_from_accelerator_state=True)
    accelerator.state.deepspeed_plugins = plugin
    accelerator.state.distributed_type = DistributedType.DEEPSPEED
    PartialState._shared_state["distributed_type"] = DistributedType.DEEPSPEED


def is_sharded(accelerator: Any) -> bool:
    """Whether no process holds the whole trained module (FSDP, DeepSpeed)."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def whole_model(accelerator: Any, model: Any, cfg: TrainConfig) -> Any:
    """The trained module (``PolicyWithHead``), whole and unsharded, on the main process (None
    on the others). Every process must call it: under sharding it gathers the weights."""
    if not is_sharded(accelerator):
        return accelerator.unwrap_model(model) if accelerator.is_main_process else None
    state = _full_state_dict(accelerator, model)  # a collective: the full weights, on the main process
    if not accelerator.is_main_process:
        return None
    from realspo.models import load_model
    from realspo.training.step import build_model

    # the main process alone: a ZeRO-3 (partitioned) build would wait forever for the others
    with _without_zero3_init():
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


@contextlib.contextmanager
def _without_zero3_init() -> Iterator[None]:
    """transformers builds every model under ``deepspeed.zero.Init`` while a ZeRO-3 run is on
    (accelerate registers its DeepSpeed config with transformers): partitioned, a collective of
    all processes. The export's unsharded copy is built by the main process alone, so it is built
    with that registration lifted."""
    try:
        from transformers.integrations import deepspeed as hf_deepspeed
    except ImportError:  # pragma: no cover - transformers without its DeepSpeed integration
        yield
        return
    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


def _full_state_dict(accelerator: Any, model: Any) -> dict[str, torch.Tensor] | None:
    """The whole trained model's state dict on the main process (a collective).

    Under DeepSpeed ZeRO-3 accelerate refuses unless ``stage3_gather_16bit_weights_on_model_save``
    is set (its own ``save_model`` writes the gathered weights); realspo gathers them either way:
    the parameters as DeepSpeed trains them (float32 under ``--mixed_precision no``, else the
    16-bit copies of its float32 master weights).
    """
    from accelerate.utils import DistributedType

    zero3 = (accelerator.distributed_type == DistributedType.DEEPSPEED
             and model.zero_optimization_partition_weights())
    if zero3:
        return model._zero3_consolidated_16bit_state_dict()
    return accelerator.get_state_dict(model)


def _is_tied(module: torch.nn.Module, name: str) -> bool:
    """Whether parameter ``name`` shares its storage with another parameter of ``module``."""
    params = dict(module.named_parameters(remove_duplicate=False))
    target = params.get(name)
    return target is not None and any(other is target for key, other in params.items() if key != name)
