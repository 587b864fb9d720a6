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
    (["demo", "--world-coup", "1"], "--world-coup 1"),     # --world-coupling, shortened
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


# Checks that need no model come first: parse -> resolve -> input files' shape -> outputs ->
# torch, transformers and the models. Each case fails one of the first checks; it must fail
# with one line and exit code 2 before torch or transformers is imported.
CHECK_FIRST = """
import sys
from realspo.cli import main
code = main(sys.argv[1:])
print("EXIT", code, "HEAVY", ",".join(sorted(m for m in ("torch", "transformers") if m in sys.modules)))
"""


def _check_first_files(tmp: Path) -> dict[str, str]:
    files = {
        "no_preferences": '{"prompt": "a", "response": "b"}\n',
        "preferences": '{"prompt": "a", "chosen": "b", "rejected": "c"}\n',
        "no_prompt": '{"text": "a"}\n',
        "prompts": '{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "c"}\n',
        "pairs": '{"pair_id": "x", "prompt": "a", "response_a": "b", "response_b": "c"}\n',
        "candidates": '{"prompt": "a", "responses": ["b", "c"]}\n',
    }
    paths = {}
    for name, text in files.items():
        (tmp / f"{name}.jsonl").write_text(text)
        paths[name] = str(tmp / f"{name}.jsonl")
    (tmp / "existing.csv").write_text("x\n")
    (tmp / "existing-run").mkdir()
    (tmp / "existing-run" / "notes.txt").write_text("x\n")
    (tmp / "judge.gguf").write_bytes(b"GGUF")
    return {**paths, "existing": str(tmp / "existing.csv"), "existing_run": str(tmp / "existing-run"),
            "gguf": str(tmp / "judge.gguf"), "model": str(tmp / "model"), "out": str(tmp / "out")}


CHECK_FIRST_CASES = {
    "train, pairs without preferences": (
        "train --data {no_preferences} --model {model} --out {out}", "field 'chosen': missing"),
    "train, run directory exists": (
        "train --data {preferences} --model {model} --out {existing_run}", "already exists"),
    "label --export-tasks --model, tasks exist": (
        "label --pairs {pairs} --export-tasks {existing} --model {model}", "already exists"),
    "label --reward-model x.gguf": (
        "label --pairs {pairs} --reward-model {gguf} --out {out}", "must be a sequence classifier"),
    "generate, prompts without prompt": (
        "generate --model {model} --prompts {no_prompt} --out {out}", "field 'prompt': missing"),
    "generate, output exists": (
        "generate --model {model} --prompts {prompts} --out {existing}", "already exists"),
    "select, unknown columns": (
        "select --data {no_prompt} --model {model} --out {out}", "cannot detect the format"),
    "select, output exists": (
        "select --data {candidates} --model {model} --out {existing}", "already exists"),
    "evaluate, prompts without prompt": (
        "evaluate --model {model} --baseline {model} --prompts {no_prompt} --judge proving-ground "
        "--out {out}", "field 'prompt': missing"),
    "evaluate, output exists": (
        "evaluate --model {model} --baseline {model} --prompts {prompts} --judge proving-ground "
        "--out {existing}", "already exists"),
    "evaluate --judge x.gguf": (
        "evaluate --model {gguf} --baseline {gguf} --prompts {prompts} --judge {gguf} --out {out}",
        "must be a sequence classifier"),
    "train, no such model": (
        "train --data {preferences} --model {model} --out {out}", "--model: no such model directory"),
    "generate, no such model": (
        "generate --model {model} --prompts {prompts} --out {out}", "--model: no such model directory"),
    "evaluate, no such baseline": (
        "evaluate --model {gguf} --baseline {model} --prompts {prompts} --judge proving-ground "
        "--out {out}", "--baseline: no such model directory"),
    "chat, no such model": ("chat --model {model}", "--model: no such model directory or file"),
    "rounds, output exists": (
        "rounds --model {model} --prompts {prompts} --judge proving-ground --budget 3 --out {existing_run}",
        "already exists"),
}


@pytest.mark.parametrize("case", list(CHECK_FIRST_CASES))
def test_input_and_output_checks_come_before_torch_and_transformers(case, tmp_path):
    command, expected = CHECK_FIRST_CASES[case]
    argv = command.format(**_check_first_files(tmp_path)).split()
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", CHECK_FIRST, *argv], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.stdout.split() == ["EXIT", "2", "HEAVY"], (proc.stdout, proc.stderr[-300:])
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"realspo {argv[0]}: error: ")
    assert expected in proc.stderr
    assert not (tmp_path / "out").exists()
