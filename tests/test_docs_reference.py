"""The site's generated reference pages (docs/gen_reference.py) cover what they claim to.

The CLI reference must list every command and every option its parser takes, and the API
reference every public module, whatever moves: nothing in them is hand-typed.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import re
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


# the committed run reports are records of their time; the pages are kept true
PAGES = [ROOT / "README.md", *(p for p in (ROOT / "docs").rglob("*.md")
                               if p.relative_to(ROOT / "docs").parts[0] not in ("demo", "grid", "leaderboard", "experiments"))]
DOTTED = re.compile(r"\brealspo(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
FROM_IMPORT = re.compile(r"^\s*from (realspo(?:\.\w+)*) import ([\w, ]+)", re.M)


def _module_file(dotted: str) -> Path | None:
    base = ROOT / "src" / Path(*dotted.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _top_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _resolves(dotted: str) -> bool:
    """Whether ``dotted`` names a module of src/realspo, or a name defined at its top level."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = _module_file(".".join(parts[:cut]))
        if module is not None:
            rest = parts[cut:]
            return not rest or rest[0] in _top_level_names(module)
    return False


def test_every_realspo_name_in_the_docs_exists():
    """A module moved or a function renamed fails here, not in a reader's terminal."""
    missing = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        names = set(DOTTED.findall(text))
        names |= {f"{module}.{name.strip()}" for module, names_ in FROM_IMPORT.findall(text)
                  for name in names_.split(",") if name.strip()}
        missing += [f"{page.relative_to(ROOT)}: {n}" for n in sorted(names) if not _resolves(n)]
    assert not missing, "names the docs use that the package lacks:\n" + "\n".join(missing)


def test_every_repository_file_the_docs_name_exists():
    path = re.compile(r"\b(?:src|tests|benchmarks|experiments)/[\w/.-]+\.py\b")
    missing = [f"{page.relative_to(ROOT)}: {p}" for page in PAGES
               for p in sorted(set(path.findall(page.read_text(encoding="utf-8"))))
               if not (ROOT / p).is_file()]
    assert not missing, "files the docs name that the repository lacks:\n" + "\n".join(missing)
