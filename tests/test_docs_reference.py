"""The site's generated reference pages (docs/gen_reference.py) cover what they claim to.

The CLI reference must list every command and every option its parser takes, and the API
reference every public module, whatever moves: nothing in them is hand-typed.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from realspo.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parent.parent


def _generator():
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs" / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # as a module, not as mkdocs-gen-files' script: writes nothing
    return module


def test_cli_reference_lists_every_command_and_option():
    page = _generator().cli_reference()
    subparsers = next(a for a in build_parser()._actions
                      if isinstance(a, argparse._SubParsersAction))
    assert list(subparsers.choices) == list(COMMANDS)
    for name, parser in subparsers.choices.items():
        section = page.split(f"\n## realspo {name}\n", 1)[1].split("\n## realspo ", 1)[0]
        options = [s for a in parser._actions for s in a.option_strings if s not in ("-h", "--help")]
        assert options, name
        for option in options:
            assert f"`{option}`" in section, f"{name}: {option} missing from the CLI reference"


def test_api_reference_walks_the_package():
    modules = _generator().public_modules()
    on_disk = {".".join(p.relative_to(ROOT / "src").with_suffix("").parts)
               for p in (ROOT / "src" / "realspo").rglob("*.py")
               if not any(part.startswith("_") for part in p.relative_to(ROOT / "src").parts)}
    expected = {m for m in on_disk if not m.startswith(("realspo.commands", "realspo.cli"))}
    assert expected <= set(modules) and len(expected) > 50
    assert not any(m.startswith("realspo.commands") for m in modules)
