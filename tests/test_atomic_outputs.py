"""Atomic outputs: an interrupted write leaves the old file or the new one, never a torn one,
and no command replaces an existing output without ``--overwrite``.

Two kinds of interruption are injected:

* an exception at *every* point of a write: a trace function counts the Python line events
  of one write and raises at the k-th, for every k (``finally`` clauses still run, as they
  do for Ctrl-C or an error);
* SIGKILL of a subprocess writing a large table, at several moments (nothing runs after it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from realspo.cli import main
from realspo.embeddings.embed import save_embeddings
from realspo.outputs import _mark_backup, atomic_dir, write_json, write_rows

OLD_ROWS = [{"prompt": "old", "chosen": "a", "rejected": "b"}]
NEW_ROWS = [{"prompt": f"new {i}", "chosen": "x" * i, "rejected": "y", "n": [i, 2.5]} for i in range(5)]


class _Injected(BaseException):  # like Ctrl-C: no `except Exception` swallows it
    pass


def _fail_at(k: int | None) -> tuple[Callable, list[int]]:
    """A trace function that counts call/line events and raises at the k-th (None: never)."""
    seen = [0]

    def tracer(frame, event, arg):
        if event in ("call", "line"):
            seen[0] += 1
            if seen[0] == k:
                raise _Injected
        return tracer

    return tracer, seen


def _traced(write: Callable[[], object], k: int | None) -> int:
    tracer, seen = _fail_at(k)
    sys.settrace(tracer)
    try:
        write()
    finally:
        sys.settrace(None)
    return seen[0]


def _snapshot(path: Path) -> object:
    if path.is_dir():
        return {p.name: p.read_bytes() for p in sorted(path.iterdir())}
    return path.read_bytes()


def _write_dir(path: Path, files: dict[str, str], overwrite: bool) -> None:
    with atomic_dir(path, overwrite=overwrite, kind="test-report") as tmp:
        for name, text in files.items():
            (tmp / name).write_text(text)


WRITERS: dict[str, tuple[str, Callable[[Path, bool], object], Callable[[Path, bool], object]]] = {
    # name: (file name, write old, write new)
    "jsonl": ("t.jsonl", lambda p, o: write_rows(p, OLD_ROWS, o), lambda p, o: write_rows(p, NEW_ROWS, o)),
    "csv": ("t.csv", lambda p, o: write_rows(p, OLD_ROWS, o), lambda p, o: write_rows(p, NEW_ROWS, o)),
    "parquet": ("t.parquet", lambda p, o: write_rows(p, OLD_ROWS, o),
                lambda p, o: write_rows(p, NEW_ROWS, o)),
    "json": ("r.json", lambda p, o: write_json(p, {"old": 1}, o),
             lambda p, o: write_json(p, {"new": [1.5, float("nan")]}, o)),
    "npy": ("e.npy", lambda p, o: save_embeddings(str(p), np.ones((2, 3)), o),
            lambda p, o: save_embeddings(str(p), np.arange(12.0).reshape(4, 3), o)),
    "safetensors": ("e.safetensors", lambda p, o: save_embeddings(str(p), np.ones((2, 3)), o),
                    lambda p, o: save_embeddings(str(p), np.eye(3), o, metadata={"m": "x"})),
    "directory": ("report", lambda p, o: _write_dir(p, {"a.md": "old"}, o),
                  lambda p, o: _write_dir(p, {"a.md": "new", "b.json": "{}"}, o)),
}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_an_exception_at_any_point_of_a_write_leaves_the_old_or_the_new_output(kind, tmp_path):
    _interrupt_at_every_point(tmp_path, *WRITERS[kind])


def test_a_directory_swapped_by_two_renames_is_never_lost(tmp_path, monkeypatch):
    import realspo.outputs

    monkeypatch.setattr(realspo.outputs, "_exchange", lambda a, b: False)  # not Linux
    _interrupt_at_every_point(tmp_path, *WRITERS["directory"])


def test_a_kill_between_the_two_renames_is_repaired_by_the_next_write(tmp_path):
    out = tmp_path / "report"
    _write_dir(out, {"a.md": "old"}, False)
    _mark_backup(out)  # killed after the first rename of a swap
    out.rename(tmp_path / ".report.old")
    with pytest.raises(Exception, match="already exists"):
        _write_dir(out, {"a.md": "new"}, False)  # the old report is back, and protected
    assert (out / "a.md").read_text() == "old" and sorted(os.listdir(tmp_path)) == ["report"]


def test_a_foreign_dot_old_directory_is_never_moved_or_deleted(tmp_path):
    """``.NAME.old`` is the reserved backup name of a swap, but a directory realspo did not
    put there (a user's ``.report.old/thesis.tex``) is neither moved into ``report`` nor
    deleted, with or without --overwrite."""
    foreign = tmp_path / ".report.old"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("my thesis")
    with pytest.raises(Exception, match="reserved for the backup of report"):
        _write_dir(tmp_path / "report", {"a.md": "new"}, False)
    assert not (tmp_path / "report").exists()
    assert (foreign / "thesis.tex").read_text() == "my thesis"


def _interrupt_at_every_point(tmp_path: Path, name: str, write_old: Callable, write_new: Callable) -> None:
    ref = tmp_path / "ref"
    ref.mkdir()
    write_new(ref / name, False)
    new = _snapshot(ref / name)
    work = tmp_path / "work"
    work.mkdir()
    write_old(work / name, False)
    old = _snapshot(work / name)
    total = _traced(lambda: write_new(work / name, True), None)
    assert _snapshot(work / name) == new and total > 20
    outcomes = set()
    for k in range(1, total + 1, max(1, total // 150)):  # every point, or ~150 spread out
        write_old(work / name, True)
        try:
            _traced(lambda: write_new(work / name, True), k)  # noqa: B023
            outcomes.add("finished")
        except (_Injected, Exception):  # C code (numpy) may turn ours into another exception
            outcomes.add("interrupted")
        state = _snapshot(work / name)
        assert state in (old, new), f"torn output after an exception at event {k} of {total}"
        assert sorted(p.name for p in work.iterdir()) == [name], f"leftovers at event {k}"
    assert "interrupted" in outcomes


WRITER_SCRIPT = textwrap.dedent("""
    import sys
    from realspo.outputs import write_rows
    rows = [{"i": i, "text": "new row %d " % i * 4} for i in range(int(sys.argv[2]))]
    print("writing", flush=True)
    write_rows(sys.argv[1], rows, overwrite=True)
    print("done", flush=True)
""")


def test_sigkill_during_a_large_write_leaves_the_old_or_the_new_table(tmp_path):
    out = tmp_path / "table.jsonl"
    old_rows = [{"i": -1, "text": "old"}]
    n_new = 150_000
    killed_mid_write = 0
    for delay in (0.0, 0.1, 0.25, 0.5, 1.0):
        write_rows(out, old_rows, overwrite=True)
        proc = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(out), str(n_new)],
                                stdout=subprocess.PIPE, env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert proc.stdout.readline() == b"writing\n"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        lines = out.read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines]  # a torn file would fail to parse here
        assert rows == old_rows or (len(rows) == n_new and rows[-1]["i"] == n_new - 1)
        strays = [p for p in tmp_path.iterdir() if p.name.startswith(".table.jsonl.")]
        if rows == old_rows and strays:
            killed_mid_write += 1
        for stray in strays:  # what a kill (unlike an exception) cannot clean up
            stray.unlink()
    assert killed_mid_write >= 1  # at least one kill landed while the table was being written


# --- no command replaces an existing output without --overwrite ----------------------------------


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


MULTI = [{"prompt": "Name a fruit.", "responses": ["Apple.", "Rocks."], "scores": [1.0, 0.0]}]
PAIRS = [{"pair_id": "a", "prompt": "Q?", "response_a": "x", "response_b": "y", "score_a": 1, "score_b": 0}]


def _command_cases(tmp: Path, model: str) -> dict[str, tuple[list[str], Path]]:
    """Command -> (argv whose output already exists, that output)."""
    data, emb = _jsonl(tmp / "pool.jsonl", MULTI), tmp / "emb.npy"
    np.save(emb, np.eye(2, dtype=np.float32), allow_pickle=False)
    pairs, prompts = _jsonl(tmp / "pairs.jsonl", PAIRS), _jsonl(tmp / "prompts.jsonl", [{"prompt": "Hi"}])
    preferences = _jsonl(tmp / "preferences.jsonl", [{"prompt": "Q?", "chosen": "x", "rejected": "y"}])
    run = tmp / "run"
    run.mkdir()
    _jsonl(run / "metrics.jsonl", [{"step": 0, "loss": 0.69}, {"step": 1, "loss": 0.5}])
    return {
        "generate": (["generate", "--model", model, "--prompts", prompts, "--max-new-tokens", "2",
                      "--out", str(tmp / "cands.jsonl")], tmp / "cands.jsonl"),
        "select": (["select", "--data", data, "--embeddings", str(emb), "--out",
                    str(tmp / "sel.jsonl")], tmp / "sel.jsonl"),
        "select --save-embeddings": (["select", "--data", data, "--model", model, "--out",
                                      str(tmp / "new.jsonl"), "--save-embeddings",
                                      str(tmp / "saved.npy")], tmp / "saved.npy"),
        "label": (["label", "--pairs", pairs, "--from-scores", "--out", str(tmp / "labeled.jsonl")],
                  tmp / "labeled.jsonl"),
        "label --export-tasks": (["label", "--pairs", pairs, "--export-tasks", str(tmp / "tasks.csv")],
                                 tmp / "tasks.csv"),
        "label --export-tasks (key)": (["label", "--pairs", pairs, "--export-tasks",
                                        str(tmp / "t2.csv")], tmp / "t2.key.jsonl"),
        "train": (["train", "--data", preferences, "--model", model, "--out", str(tmp / "trained")],
                  tmp / "trained"),
        "evaluate": (["evaluate", "--model", model, "--baseline", model, "--prompts", prompts,
                      "--judge", "proving-ground", "--out", str(tmp / "eval.json")], tmp / "eval.json"),
        "rounds": (["rounds", "--model", model, "--prompts", prompts, "--judge", model, "--budget",
                    "1", "--rounds", "1", "--out", str(tmp / "rounds")], tmp / "rounds"),
        "plot": (["plot", str(run), "--out", str(tmp / "curves.png")], tmp / "curves.png"),
        "demo": (["demo", "--quick", "--out", str(tmp / "demo")], tmp / "demo"),
        "leaderboard": (["leaderboard", "--quick", "--out", str(tmp / "leaderboard")],
                        tmp / "leaderboard"),
    }


CASES = ["generate", "select", "select --save-embeddings", "label", "label --export-tasks",
         "label --export-tasks (key)", "train", "rounds", "evaluate", "plot", "demo", "leaderboard"]


@pytest.mark.parametrize("case", CASES)
def test_existing_output_is_never_replaced_without_overwrite(case, tmp_path, tiny_model_dir, capsys):
    argv, existing = _command_cases(tmp_path, tiny_model_dir)[case]
    if existing.suffix:
        existing.write_text("precious\n")
    else:
        existing.mkdir()
        (existing / "precious.txt").write_text("precious\n")
    before = _snapshot(existing)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(existing) in err[0] and "already exists" in err[0]
    assert "--overwrite" in err[0]
    assert _snapshot(existing) == before


def test_every_command_that_writes_is_covered(tmp_path):
    from realspo.cli import COMMANDS

    covered = {case.split()[0] for case in CASES}
    # spo-preview and chat only print; annotate resumes its own campaigns and has no --overwrite
    # (test_annotate_refuses_a_foreign_directory below)
    assert covered | {"spo-preview", "chat", "annotate"} == set(COMMANDS)


def test_annotate_refuses_a_foreign_directory(tmp_path, capsys):
    pairs = _jsonl(tmp_path / "pairs.jsonl", PAIRS)
    existing = tmp_path / "campaign"
    existing.mkdir()
    (existing / "precious.txt").write_text("precious\n")
    before = _snapshot(existing)
    assert main(["annotate", "--pairs", pairs, "--out", str(existing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(existing) in err[0] and "refusing to replace it" in err[0]
    assert _snapshot(existing) == before
