"""Kill and resume: ``select`` (embedding), ``generate`` and ``train`` are SIGKILLed midway in a
subprocess (``python -m realspo.cli``), rerun with ``--resume``, and must give exactly what an
uninterrupted run gives.

To kill *midway* reliably on any machine, the subprocess runs with
``REALSPO_TEST_SLOW_BATCH_S`` set (:mod:`realspo.faults`: a sleep after every batch), and the
test waits until the run has saved some progress (embedding chunks, sidecar lines, a
checkpoint) before it sends SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import realspo.embeddings.embed as embeddings_module
from realspo.cli import main
from realspo.embeddings.progress import EmbeddingCheckpoint
from realspo.errors import RealspoError
from realspo.faults import SLOW_BATCH_ENV
from realspo.schema import PromptGroup

WORDS = ["apples", "rivers", "engines", "sonnets", "glaciers", "violins", "tax law", "moss"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _pool(n_prompts: int = 10) -> list[dict]:
    return [{"prompt_id": f"q{i}", "prompt": f"Tell me about {WORDS[i % 8]}.",
             "responses": [f"{WORDS[(i + k) % 8].capitalize()} are {'very ' * k}interesting."
                           for k in range(3)],
             "scores": [float((i + k) % 3) for k in range(3)]}
            for i in range(n_prompts)]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def kill_when(argv: list[str], ready: Callable[[], bool], *, slow: float = 0.3,
              timeout: float = 180.0) -> None:
    """Run ``python -m realspo.cli ARGV`` slowed down, SIGKILL it once ``ready()`` holds."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", **{SLOW_BATCH_ENV: str(slow)})
    proc = subprocess.Popen([sys.executable, "-m", "realspo.cli", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"the run ended (code {proc.returncode}) before it could be killed:\n"
                            + proc.stderr.read().decode()[-2000:])
            if time.monotonic() > deadline:
                pytest.fail("the run saved no progress in time")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


class _Interrupt(Exception):
    pass


# --- the embedding stage, in process ----------------------------------------------------------


def _groups() -> list[PromptGroup]:
    return [PromptGroup(r["prompt_id"], r["prompt"], r["responses"]) for r in _pool(6)]


def test_embedding_interrupted_after_two_batches_resumes_to_identical_rows(
        tiny_model_dir, tmp_path, monkeypatch):
    groups, sidecar = _groups(), tmp_path / "progress"
    kwargs = dict(batch_size=4, device="cpu", show_progress=False)
    whole = embeddings_module.embed_responses(groups, tiny_model_dir, **kwargs)
    calls: list[int] = []

    def interrupt_after_two() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise _Interrupt

    monkeypatch.setattr(embeddings_module, "after_batch", interrupt_after_two)
    with pytest.raises(_Interrupt):
        embeddings_module.embed_responses(groups, tiny_model_dir, checkpoint=sidecar,
                                          checkpoint_every=1, **kwargs)
    assert len(list(sidecar.glob("chunk-*.safetensors"))) == 2
    calls.clear()
    monkeypatch.setattr(embeddings_module, "after_batch", lambda: calls.append(1))
    resumed = embeddings_module.embed_responses(groups, tiny_model_dir, checkpoint=sidecar,
                                                resume=True, checkpoint_every=1, **kwargs)
    assert len(calls) == 5 - 2  # 18 responses in batches of 4: only the 3 unfinished ran
    assert np.array_equal(resumed, whole)


def test_embedding_resume_refuses_progress_of_other_inputs(tiny_model_dir, tmp_path):
    sidecar = tmp_path / "progress"
    kwargs = dict(batch_size=8, device="cpu", show_progress=False, checkpoint=sidecar)
    embeddings_module.embed_responses(_groups(), tiny_model_dir, **kwargs)
    changed = _groups()
    changed[0].responses[0] = "Something else entirely."
    with pytest.raises(RealspoError, match="cannot resume: the data or embedding options differ"):
        embeddings_module.embed_responses(changed, tiny_model_dir, resume=True, **kwargs)
    # without resume the old progress is discarded and the run starts over
    embeddings_module.embed_responses(changed, tiny_model_dir, **kwargs)


def test_checkpoint_ignores_and_removes_a_half_written_chunk(tmp_path):
    store = EmbeddingCheckpoint(tmp_path / "p", "fp", every=1)
    store.add([3, 1], np.eye(2, dtype=np.float32))
    (tmp_path / "p" / ".chunk-r0-000001.safetensors.abc.tmp").write_bytes(b"torn")
    again = EmbeddingCheckpoint(tmp_path / "p", "fp")
    again.remove_temporaries()
    done = again.load()
    assert sorted(done) == [1, 3] and np.array_equal(done[1], [0.0, 1.0])
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [  # the chunk and the marker
        ".realspo-output.json", "chunk-r0-000000.safetensors"]


# --- SIGKILL midway, then --resume --------------------------------------------------------------


def test_select_killed_while_embedding_resumes_to_the_same_pairs_and_embeddings(
        tiny_model_dir, tmp_path, monkeypatch):
    data = _write_jsonl(tmp_path / "pool.jsonl", _pool())  # 30 responses: 15 batches of 2
    opts = ["--model", tiny_model_dir, "--batch-size", "2", "--device", "cpu", "--no-progress"]
    ref = tmp_path / "ref"
    assert main(["select", "--data", str(data), "--out", str(ref / "pairs.jsonl"), *opts,
                 "--save-embeddings", str(ref / "emb.npy")]) == 0

    out = tmp_path / "run" / "pairs.jsonl"
    progress = out.with_name("pairs.jsonl.embeddings-partial")
    argv = ["select", "--data", str(data), "--out", str(out), *opts, "--checkpoint-every", "1",
            "--save-embeddings", str(out.with_name("emb.npy"))]
    kill_when(argv, lambda: len(list(progress.glob("chunk-*.safetensors"))) >= 3)
    saved = len(list(progress.glob("chunk-*.safetensors")))
    assert not out.exists() and saved < 15
    computed: list[int] = []
    monkeypatch.setattr(embeddings_module, "after_batch", lambda: computed.append(1))
    assert main([*argv, "--resume"]) == 0
    assert len(computed) == 15 - saved  # the saved batches were not embedded again
    assert np.array_equal(np.load(out.with_name("emb.npy")), np.load(ref / "emb.npy"))
    assert _read_jsonl(out) == _read_jsonl(ref / "pairs.jsonl")
    assert not progress.exists()


def test_generate_killed_midway_resumes_to_the_same_candidates(tiny_model_dir, tmp_path):
    prompts = _write_jsonl(tmp_path / "prompts.jsonl",
                           [{"prompt": f"Tell me about {w}."} for w in WORDS])
    opts = ["--model", tiny_model_dir, "--prompts", str(prompts), "--num-responses", "2",
            "--max-new-tokens", "6", "--batch-size", "1", "--device", "cpu", "--seed", "5"]
    ref = tmp_path / "ref.jsonl"
    assert main(["generate", *opts, "--out", str(ref)]) == 0

    out = tmp_path / "cands.jsonl"
    sidecar = out.with_name("cands.jsonl.partial.jsonl")

    def two_prompts_done() -> bool:  # the header line plus two finished prompts
        return sidecar.exists() and sidecar.read_bytes().count(b"\n") >= 3

    kill_when(["generate", *opts, "--out", str(out)], two_prompts_done)
    assert not out.exists() and sidecar.read_bytes().count(b"\n") < 1 + len(WORDS)
    assert main(["generate", *opts, "--out", str(out), "--resume"]) == 0
    assert _read_jsonl(out) == _read_jsonl(ref)
    assert not sidecar.exists()


def test_train_killed_after_a_checkpoint_resumes_with_the_same_order_and_metrics(
        tiny_model_dir, tmp_path):
    from realspo.training.loop import train
    from realspo.training.run_dir import read_metrics
    from realspo.training.train_config import TrainConfig

    pairs = _write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": f"Human: Tell me about {w}. Assistant:", "chosen": f" {w.capitalize()} are fine.",
         "rejected": " I cannot help with that."} for w in WORDS])
    opts = dict(data=str(pairs), model=tiny_model_dir, cache_dir=str(tmp_path / "cache"),
                batch_size=3, max_length=48, max_steps=6, save_steps=2, logging_steps=1,
                lr=1e-3, warmup_ratio=0.0, seed=7)
    whole: list[tuple[int, list[int]]] = []
    train(TrainConfig(out=str(tmp_path / "ref"), **opts), on_batch=lambda s, i: whole.append((s, i)))

    out = tmp_path / "run"
    argv = ["train", "--out", str(out)] + [
        f"--{k.replace('_', '-')}={v}" for k, v in opts.items()]
    kill_when(argv, lambda: (out / "checkpoints" / "step-000002").is_dir())
    assert not (out / "model.safetensors").exists()
    resumed: list[tuple[int, list[int]]] = []
    cfg = TrainConfig(out=str(out), resume=True, **opts)
    train(cfg, on_batch=lambda s, i: resumed.append((s, i)))
    start = resumed[0][0]
    assert start > 2 and resumed == [b for b in whole if b[0] >= start]  # same data order
    ref_metrics, metrics = read_metrics(tmp_path / "ref" / "metrics.jsonl"), read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in metrics] == [r["step"] for r in ref_metrics] == list(range(7))
    for a, b in zip(ref_metrics, metrics, strict=True):
        for key in ("loss", "rewards/margins", "rewards/accuracies", "learning_rate"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6)
    from safetensors.torch import load_file

    final, ref = load_file(str(out / "model.safetensors")), load_file(str(tmp_path / "ref" / "model.safetensors"))
    assert all(torch.allclose(final[k], ref[k], atol=1e-5) for k in ref)


# --- what an interrupted train leaves behind never blocks the next run -----------------------------


def _train_setup(tmp_path: Path, tiny_model_dir: str) -> dict:
    pairs = _write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": f"Human: Tell me about {w}. Assistant:", "chosen": f" {w.capitalize()} are fine.",
         "rejected": " I cannot help with that."} for w in WORDS])
    return dict(data=str(pairs), model=tiny_model_dir, cache_dir=str(tmp_path / "cache"),
                batch_size=3, max_length=48, logging_steps=1, lr=1e-3, warmup_ratio=0.0, seed=7)


def _losses(path: Path) -> list[tuple[int, float]]:
    from realspo.training.run_dir import read_metrics

    return [(r["step"], round(r["loss"], 5)) for r in read_metrics(path) if "loss" in r]


def test_train_killed_before_its_first_checkpoint_resumes_from_the_start(tiny_model_dir, tmp_path, caplog):
    from realspo.training.loop import train
    from realspo.training.train_config import TrainConfig

    opts = _train_setup(tmp_path, tiny_model_dir) | {"max_steps": 4, "save_steps": 100}
    train(TrainConfig(out=str(tmp_path / "ref"), **opts))
    out = tmp_path / "run"
    argv = ["train", "--out", str(out)] + [f"--{k.replace('_', '-')}={v}" for k, v in opts.items()]
    kill_when(argv, lambda: (out / "metrics.jsonl").exists()
              and (out / "metrics.jsonl").read_bytes().count(b"\n") >= 2)
    assert (out / "config.yaml").exists() and not (out / "checkpoints").exists()
    with caplog.at_level("INFO"):
        train(TrainConfig(out=str(out), resume=True, **opts))
    assert "has no checkpoint yet" in caplog.text and "starting over from step 0" in caplog.text
    assert _losses(out / "metrics.jsonl") == _losses(tmp_path / "ref" / "metrics.jsonl")
    assert (out / "model.safetensors").exists()


def test_a_failed_checkpoint_write_leaves_no_temporary_and_resume_starts_over(
        tiny_model_dir, tmp_path, monkeypatch):
    import realspo.training.checkpoints as checkpoints_module
    from realspo.training.loop import train
    from realspo.training.train_config import TrainConfig

    real = checkpoints_module.write_state

    def disk_full_at_the_scheduler(directory, name, obj):
        if name == "scheduler":
            raise OSError(28, "No space left on device")
        return real(directory, name, obj)

    opts = _train_setup(tmp_path, tiny_model_dir) | {"max_steps": 2, "save_steps": 1}
    out = tmp_path / "run"
    monkeypatch.setattr(checkpoints_module, "write_state", disk_full_at_the_scheduler)
    with pytest.raises(OSError, match="No space left"):
        train(TrainConfig(out=str(out), **opts))
    assert list((out / "checkpoints").iterdir()) == []  # no .step-000001.tmp, no step-000001
    monkeypatch.setattr(checkpoints_module, "write_state", real)
    train(TrainConfig(out=str(out), resume=True, **opts))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000001", "step-000002"]
    assert [s for s, _ in _losses(out / "metrics.jsonl")] == [0, 1, 2]


def test_temporaries_left_by_a_kill_are_removed_when_resuming(tiny_model_dir, tmp_path):
    from realspo.training.loop import train
    from realspo.training.train_config import TrainConfig

    opts = _train_setup(tmp_path, tiny_model_dir) | {"max_steps": 3, "save_steps": 1}
    out = tmp_path / "run"
    assert train(TrainConfig(out=str(out), **opts), stop_after=1) is None
    left = [out / "checkpoints" / ".step-000002.tmp", out / ".export.tmp"]
    for path in left:
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"torn")
    (out / ".metrics.jsonl.0a1b2c.tmp").write_text('{"step": 9')
    train(TrainConfig(out=str(out), resume=True, **opts))
    assert sorted(p.name for p in out.rglob("*.tmp")) == []
    assert (out / "checkpoints" / "step-000003").is_dir() and (out / "model.safetensors").exists()


def test_resume_of_a_finished_run_without_checkpoints_is_refused(tiny_model_dir, tmp_path):
    from realspo.errors import ConfigError
    from realspo.training.loop import train
    from realspo.training.train_config import TrainConfig

    opts = _train_setup(tmp_path, tiny_model_dir) | {"max_steps": 1}
    out = tmp_path / "run"
    train(TrainConfig(out=str(out), **opts))
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="no checkpoint to resume from, and the run has finished"):
        train(TrainConfig(out=str(out), resume=True, **opts))
    assert (out / "model.safetensors").read_bytes() == before
