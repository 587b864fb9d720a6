"""Checkpoint state as JSON + safetensors (``realspo.training.state_files``,
``realspo.training.checkpoints``): every piece comes back exactly, and reading builds
nothing but plain data and tensors."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from realspo.training.checkpoints import rng_state, set_rng_state
from realspo.training.state_files import StateFileError, decode, encode, read_state, write_state


def _trained_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.95), weight_decay=0.1)
    for _ in range(3):
        model(torch.randn(5, 4)).pow(2).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer


def _same(a, b) -> bool:
    """Equal values of equal types, tensors bit for bit (with dtype and shape)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_optimizer_state_comes_back_exactly_through_json_and_safetensors(tmp_path):
    _, optimizer = _trained_optimizer()
    saved = optimizer.state_dict()
    written = write_state(tmp_path, "optimizer", saved)
    assert written == ["optimizer.json", "optimizer.safetensors"]
    tree = json.loads((tmp_path / "optimizer.json").read_text())
    assert tree["param_groups"][0]["betas"] == {"$tuple": [0.8, 0.95]}  # a tuple stays a tuple
    assert _same(read_state(tmp_path, "optimizer"), saved)

    _, fresh = _trained_optimizer()  # the same run again: a second optimizer to load into
    fresh.load_state_dict(read_state(tmp_path, "optimizer"))
    assert _same(fresh.state_dict(), saved)


def test_a_scheduler_state_comes_back_exactly(tmp_path):
    from transformers import get_scheduler

    _, optimizer = _trained_optimizer()
    scheduler = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=2, num_training_steps=10)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    write_state(tmp_path, "scheduler", scheduler.state_dict())
    assert not (tmp_path / "scheduler.safetensors").exists()  # no tensors in it
    assert _same(read_state(tmp_path, "scheduler"), scheduler.state_dict())


def test_rng_states_restore_the_same_draws(tmp_path):
    write_state(tmp_path, "rng_state_0", rng_state())
    first = (random.random(), np.random.rand(3).tolist(), torch.rand(3))
    set_rng_state(read_state(tmp_path, "rng_state_0"))
    again = (random.random(), np.random.rand(3).tolist(), torch.rand(3))
    assert first[:2] == again[:2] and torch.equal(first[2], again[2])


def test_an_object_that_is_not_plain_data_is_refused_when_written(tmp_path):
    with pytest.raises(TypeError, match="a Linear cannot be stored"):
        write_state(tmp_path, "x", {"module": torch.nn.Linear(1, 1)})


@pytest.mark.parametrize("tree", [
    {"$tensor": "missing"},
    {"$call": ["os.system", "echo hi"]},
    {"$tuple": [1], "other": 2},
    {"$items": [[1]]},
    {"$items": [[[1, 2], "unhashable key"]]},
])
def test_decode_builds_nothing_it_does_not_know(tree):
    with pytest.raises((ValueError, TypeError)):
        decode(tree, {})


def test_a_malformed_state_file_is_named(tmp_path):
    (tmp_path / "scheduler.json").write_text('{"last_epoch": ')
    with pytest.raises(StateFileError, match=r"scheduler\.json: JSONDecodeError"):
        read_state(tmp_path, "scheduler")
    (tmp_path / "optimizer.json").write_text('{"state": {"$tensor": "a"}}')
    (tmp_path / "optimizer.safetensors").write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(StateFileError, match=r"optimizer\.safetensors: SafetensorError"):
        read_state(tmp_path, "optimizer")


def test_tensors_of_any_dtype_and_shape_survive_encoding():
    tensors: dict[str, torch.Tensor] = {}
    values = {"step": torch.tensor(3.0), "bf16": torch.ones(2, 2, dtype=torch.bfloat16),
              "bytes": torch.arange(5, dtype=torch.uint8), 7: (None, float("inf"), True)}
    assert _same(decode(json.loads(json.dumps(encode(values, tensors))), tensors), values)


class _OneProcess:
    """What the checkpoint functions use of an ``accelerate.Accelerator``, for one process."""

    num_processes, process_index, is_main_process, step = 1, 0, True, 0

    def unwrap_model(self, model):
        return model

    def wait_for_everyone(self) -> None:
        pass


def _parts():
    from transformers import get_scheduler

    model, optimizer = _trained_optimizer()
    scheduler = get_scheduler("linear", optimizer=optimizer, num_warmup_steps=1, num_training_steps=9)
    scaler = torch.amp.GradScaler("cpu", init_scale=512.0)
    return {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}


def test_a_checkpoint_restores_every_part_and_the_micro_batch_counter(tmp_path):
    from realspo.training.checkpoints import restore_checkpoint, save_checkpoint

    acc, parts = _OneProcess(), _parts()
    parts["optimizer"].step()
    parts["scheduler"].step()
    parts["scaler"].scale(torch.tensor(1.0))
    parts["scaler"].update(100.0)
    acc.step = 5
    state = {"step": 3, "num_processes": 1}
    path = save_checkpoint(acc, parts, tmp_path, 3, state, keep=0)
    assert path == tmp_path / "checkpoints" / "step-000003"
    assert sorted(p.name for p in path.iterdir()) == [
        "model.safetensors", "optimizer.json", "optimizer.safetensors", "rng_state_0.json",
        "rng_state_0.safetensors", "scaler.json", "scheduler.json", "trainer_state.json"]
    expected = {k: v.state_dict() for k, v in parts.items()}
    assert expected["scaler"]["scale"] == 100.0 and expected["scheduler"]["last_epoch"] == 1
    draw = torch.rand(2)

    again, fresh = _OneProcess(), _parts()
    restored = restore_checkpoint(again, fresh, path)
    assert restored["step"] == 3 and again.step == 5
    for name, part in fresh.items():
        assert _same(part.state_dict(), expected[name]), name
    assert torch.equal(torch.rand(2), draw)  # the RNG is back where it was when saved


def test_a_failed_checkpoint_write_leaves_no_temporary(tmp_path, monkeypatch):
    import realspo.training.checkpoints as checkpoints_module

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints_module, "write_state", fail)
    with pytest.raises(OSError):
        checkpoints_module.save_checkpoint(_OneProcess(), _parts(), tmp_path, 1, {"step": 1}, keep=0)
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_a_scheduler_state_setting_other_attributes_is_refused(tmp_path):
    from realspo.errors import InputError
    from realspo.training.checkpoints import restore_checkpoint, save_checkpoint

    parts = _parts()
    path = save_checkpoint(_OneProcess(), parts, tmp_path, 1, {"step": 1, "num_processes": 1}, keep=0)
    tree = json.loads((path / "scheduler.json").read_text())
    (path / "scheduler.json").write_text(json.dumps({**tree, "optimizer": None}))
    with pytest.raises(InputError, match=r"scheduler\.json: not a valid realspo checkpoint file "
                                         r"\(ValueError: unexpected keys \['optimizer'\]\)"):
        restore_checkpoint(_OneProcess(), _parts(), path)


@pytest.mark.parametrize(("change", "named", "reason"), [
    (lambda p: (p / "notes.txt").write_text("x"), "notes.txt", "unexpected"),
    (lambda p: (p / "rng_state_1.json").write_text("{}"), "rng_state_1.json", "unexpected"),
    (lambda p: (p / "optimizer.json").unlink(), "optimizer.json", "missing"),
    (lambda p: (p / "rng_state_0.json").unlink(), "rng_state_0.json", "missing"),
    (lambda p: (p / "trainer_state.json").write_text('{"format": "realspo-checkpoint/1", "step": 1, '
                                                     '"num_processes": 1000000000000, "accelerator_step": 0}'),
     "rng_state_1.json", "missing"),
    (lambda p: (p / "trainer_state.json").write_text('{"format": "realspo-checkpoint/1", "step": true, '
                                                     '"num_processes": 1, "accelerator_step": 0}'),
     "trainer_state.json", "no integer"),
    (lambda p: (p / "scheduler.json").write_text('{"$call": 1}'), "scheduler.json", "ValueError: unknown or malformed tag"),
])
def test_a_checkpoint_is_checked_file_by_file_before_any_work(change, named, reason, tmp_path):
    from realspo.errors import InputError
    from realspo.training.checkpoints import check_checkpoint_files, save_checkpoint

    path = save_checkpoint(_OneProcess(), _parts(), tmp_path, 1, {"step": 1, "num_processes": 1}, keep=0)
    check_checkpoint_files(path)
    change(path)
    with pytest.raises(InputError, match=f"{named}: not a valid realspo checkpoint file \\({reason}"):
        check_checkpoint_files(path)
