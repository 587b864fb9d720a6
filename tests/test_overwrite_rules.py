"""``--overwrite`` replaces only realspo's own output of the same kind, and never an input.

The rule (docs/reliability.md): an output may replace only a file or a directory of
the same kind that realspo wrote (directories carry a marker), and never a path that is,
contains, or lies inside one of the command's inputs, resolved through symlinks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from realspo.config import option, resolve
from realspo.errors import ConfigError, OutputExistsError
from realspo.outputs import MARKER, atomic_dir, check_outputs_apart, output_kind, write_rows


def _tree(path):
    return {str(p.relative_to(path)): p.read_bytes() if p.is_file() else None
            for p in sorted(path.rglob("*"))}


def test_a_file_output_never_replaces_a_directory(tmp_path):
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "data.jsonl").write_text("{}\n")
    before = _tree(d)
    with pytest.raises(OutputExistsError, match="is a directory"):
        write_rows(d, [{"a": 1}], overwrite=True)
    assert _tree(d) == before


def test_a_directory_output_replaces_only_its_own_kind(tmp_path):
    out = tmp_path / "report"
    with atomic_dir(out, kind="demo-report") as tmp:
        (tmp / "a.md").write_text("old")
    assert output_kind(out) == "demo-report"
    with pytest.raises(OutputExistsError, match="not a train-run output"):
        with atomic_dir(out, overwrite=True, kind="train-run"):
            pass
    with atomic_dir(out, overwrite=True, kind="demo-report") as tmp:
        (tmp / "a.md").write_text("new")
    assert (out / "a.md").read_text() == "new"


def test_a_foreign_directory_is_never_replaced(tmp_path):
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputExistsError, match=f"no {MARKER}"):
        with atomic_dir(foreign, overwrite=True, kind="demo-report"):
            pass
    assert (foreign / "thesis.tex").read_text() == "years of work"


def test_a_directory_output_never_replaces_a_file(tmp_path):
    f = tmp_path / "out"
    f.write_text("x")
    with pytest.raises(OutputExistsError, match="is not a directory"):
        with atomic_dir(f, overwrite=True, kind="demo-report"):
            pass
    assert f.read_text() == "x"


@pytest.mark.parametrize(("out", "inp", "how"), [
    ("e.npy", "e.npy", "is"),
    ("d", "d/data.jsonl", "contains"),
    ("m/run", "m", "lies inside"),
])
def test_an_output_may_not_be_contain_or_lie_inside_an_input(tmp_path, out, inp, how):
    (tmp_path / "d").mkdir()
    (tmp_path / "m").mkdir()
    with pytest.raises(ConfigError, match=f"{how} the input --in"):
        check_outputs_apart({"--in": str(tmp_path / inp)}, {"--out": str(tmp_path / out)})


def test_inputs_are_compared_through_symlinks(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "data")
    with pytest.raises(ConfigError, match="is the input"):
        check_outputs_apart({"--data": str(tmp_path / "alias")}, {"--out": str(tmp_path / "data")})


def test_separate_paths_pass(tmp_path):
    check_outputs_apart({"--data": str(tmp_path / "a" / "d.jsonl")}, {"--out": str(tmp_path / "b")})
    check_outputs_apart({"--data": str(tmp_path / "ab")}, {"--out": str(tmp_path / "a")})


@dataclass
class _Cmd:
    data: str = option(help="input", path="input")
    out: str = option(help="output", path="output")
    more: list[str] = option([], "more inputs", path="input")


def test_resolve_checks_declared_paths(tmp_path):
    ok = resolve(_Cmd, {"data": str(tmp_path / "d.jsonl"), "out": str(tmp_path / "o.jsonl")})
    assert ok.out.endswith("o.jsonl")
    with pytest.raises(ConfigError, match=r"--out .*: is the input --more\[1\]"):
        resolve(_Cmd, {"data": str(tmp_path / "d.jsonl"), "out": str(tmp_path / "x"),
                       "more": [str(tmp_path / "y"), str(tmp_path / "x")]})


def test_a_second_run_on_a_busy_output_is_refused(tmp_path):
    from realspo.outputs import output_lock

    out = tmp_path / "run"
    with output_lock(out) as lock:
        assert lock.read_text().split() == ["realspo-lock", str(os.getpid())]
        with pytest.raises(OutputExistsError, match=f"another run \\(PID {os.getpid()}"):
            with output_lock(out):
                pass
    assert not lock.exists()


def test_a_stale_lock_is_named_and_taken_over(tmp_path, caplog):
    import subprocess
    import sys

    from realspo.outputs import output_lock

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    out = tmp_path / "run"
    lock = tmp_path / ".run.lock"
    lock.write_text(dead.stdout)
    with caplog.at_level("WARNING"), output_lock(out):
        assert lock.read_text().split() == ["realspo-lock", str(os.getpid())]
    assert "stale lock" in caplog.text and dead.stdout.strip() in caplog.text
