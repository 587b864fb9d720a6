"""Listing the commands and their options loads no heavy stack: ``realspo --help`` and
``realspo CMD --help`` (and building the full parser) import neither torch nor transformers,
so help comes in a fraction of the time importing torch takes (``benchmarks/bench_startup.py``).

Each check runs in a fresh interpreter, since this test session has long imported torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from realspo.cli import COMMANDS

SRC = str(Path(__file__).resolve().parents[1] / "src")
HEAVY = ("torch", "transformers")

# Parse the command line, let argparse print help and exit, then report what got imported.
PROBE = """
import json, sys
from realspo.cli import build_parser, main
argv = json.loads(sys.argv[1])
try:
    build_parser() if argv is None else main(argv)
except SystemExit:
    pass
sys.stdout.flush()
print("\\nMODULES " + json.dumps(sorted(sys.modules)))
"""


def _imported(argv: list[str] | None) -> tuple[set[str], str]:
    """The modules imported by ``main(argv)`` (None: by ``build_parser()``), and its output."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv)], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    head, _, modules = proc.stdout.rpartition("\nMODULES ")
    return set(json.loads(modules)), head


@pytest.mark.parametrize("argv", [["--help"], *([name, "--help"] for name in COMMANDS)],
                         ids=lambda argv: " ".join(argv))
def _heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in HEAVY}


@pytest.mark.parametrize("argv", [["--help"], *([name, "--help"] for name in COMMANDS)],
                         ids=lambda argv: " ".join(argv))
def test_help_imports_neither_torch_nor_transformers(argv):
    modules, printed = _imported(argv)
    assert "usage: realspo" in printed  # help was really printed
    assert not _heavy(modules), f"realspo {' '.join(argv)} imported {sorted(_heavy(modules))[:5]}"


def test_top_level_help_lists_every_command_and_imports_none():
    modules, printed = _imported(["--help"])
    assert all(name in printed for name in COMMANDS)
    assert not {m for m in modules if m.startswith("realspo.commands.")}


def test_a_command_imports_only_its_own_module_to_parse():
    modules, _ = _imported(["plot", "--help"])
    assert {m for m in modules if m.startswith("realspo.commands.")} == {"realspo.commands.plot"}


def test_building_the_full_parser_imports_neither_torch_nor_transformers():
    modules, _ = _imported(None)
    assert {f"realspo.commands.{c.module}" for c in COMMANDS.values()} <= modules
    assert not _heavy(modules)


@pytest.mark.parametrize("argv, named", [
    (["demo", "--world", "premise"], "--world premise"),  # --world-coupling, shortened
    (["demo", "--quic"], "--quic"),                        # --quick, shortened
    (["generate", "--temp", "0.7"], "--temp 0.7"),         # --temperature, shortened
])
def test_abbreviated_options_are_errors_on_one_line(argv, named, capsys):
    from realspo.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and err.startswith(f"realspo {argv[0]}: error: ")
    assert f"unrecognized arguments: {named}" in err


def test_every_parser_refuses_abbreviations():
    from realspo.cli import build_parser

    parser = build_parser()
    assert parser.allow_abbrev is False
    assert all(p.allow_abbrev is False for p in parser.command_parsers.values())
