"""Write the site's generated reference pages at build time (run by the mkdocs-gen-files plugin).

Nothing here is hand-typed, so nothing goes stale when a command gains an option or a module
moves:

* ``reference/cli.md``: every ``realspo`` command, its usage and options, read from the
  argparse parsers that ``realspo.cli.build_parser`` builds from the commands' registry.
* ``reference/api/``: one page per public module under ``src/realspo`` (a ``::: module``
  directive that mkdocstrings fills from the docstrings), found by walking the package, and a
  ``SUMMARY.md`` that mkdocs-literate-nav turns into the section's navigation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
sys.path.insert(0, str(SRC))  # the checkout's own realspo, whatever is installed

from realspo.cli import COMMANDS, build_parser  # noqa: E402

# documented by the CLI reference instead (their modules only parse and print)
API_SKIP = ("realspo.commands", "realspo.cli")


def _cell(text: str) -> str:
    """``text`` made safe for one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;")


def _option_rows(parser: argparse.ArgumentParser) -> list[str]:
    formatter = parser._get_formatter()
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        names = ", ".join(f"`{name}`" for name in action.option_strings) or f"`{action.dest}`"
        if action.metavar and action.option_strings:
            names += f" `{action.metavar}`"
        elif action.choices and action.nargs != 0:
            names += " `{" + ",".join(str(c) for c in action.choices) + "}`"
        help_text = formatter._expand_help(action) if action.help else ""
        rows.append(f"| {names} | {_cell(help_text)} |")
    return rows


def cli_reference() -> str:
    """The CLI reference page: one section per command, in the registry's (pipeline) order."""
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    lines = [
        "# Command line reference",
        "",
        "Generated from the argparse parsers when the site is built, so it lists exactly what "
        "`realspo COMMAND --help` prints. Every command also reads its options from "
        "`--config run.yaml` (keys are the option names with `_`; flags override the file).",
        "",
        "```text",
        parser.format_usage().strip(),
        "```",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    lines += [f"| [`{name}`](#realspo-{name}) | {_cell(command.help)} |"
              for name, command in COMMANDS.items()]
    for name, sub in subparsers.choices.items():
        lines += ["", f"## realspo {name}", "", _cell(sub.description or ""), "", "```text",
                  sub.format_usage().strip(), "```", "", "| option | meaning |", "|---|---|"]
        lines += _option_rows(sub)
    return "\n".join(lines) + "\n"


def public_modules() -> list[str]:
    """Dotted names of the public modules and packages under ``src/realspo``, sorted."""
    names = []
    for path in sorted((SRC / "realspo").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(part.startswith("_") for part in parts):
            continue
        name = ".".join(parts)
        if not name.startswith(API_SKIP):
            names.append(name)
    return names


def _first_line(module: str) -> str:
    """The first line of ``module``'s docstring, read without importing it."""
    import ast

    parts = module.split(".")
    path = SRC / Path(*parts) / "__init__.py"
    if not path.exists():
        path = (SRC / Path(*parts)).with_suffix(".py")
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def api_reference() -> None:
    import mkdocs_gen_files

    """One ``::: module`` page per public module, an overview, and the literate-nav summary.

    Modules of the top-level package get one section each; modules inside a subpackage are
    listed in the subpackage's section, after the subpackage itself.
    """
    modules = public_modules()
    top = [m for m in modules if m.count(".") == 1]
    summary = ["* [Overview](index.md)"]
    overview = ["# Python API", "",
                "Generated from the docstrings when the site is built: one page per public "
                "module of `src/realspo`. The command modules (`realspo.commands`) are "
                "documented by the [command line reference](../cli.md).", "",
                "| module | what it holds |", "|---|---|"]
    for name in modules:
        parts = name.split(".")
        is_package = (SRC / Path(*parts) / "__init__.py").exists()
        if name == "realspo":
            page = Path("realspo.md")
        elif is_package:
            page = Path(*parts[1:], "index.md")
        else:
            page = Path(*parts[1:]).with_suffix(".md")
        source = Path(*parts, "__init__.py") if is_package else Path(*parts).with_suffix(".py")
        with mkdocs_gen_files.open(Path("reference/api") / page, "w") as fh:
            fh.write(f"# `{name}`\n\n::: {name}\n")
        mkdocs_gen_files.set_edit_path(Path("reference/api") / page, Path("..") / "src" / source)
        overview.append(f"| [`{name}`]({page.as_posix()}) | {_cell(_first_line(name))} |")
        if name == "realspo":
            summary.append(f"* [`{name}`]({page.as_posix()})")
        elif name in top and is_package:
            summary.append(f"* {parts[1]}")
            summary.append(f"    * [`{name}`]({page.as_posix()})")
        elif name in top:
            summary.append(f"* [`{name}`]({page.as_posix()})")
        else:
            summary.append(f"    * [`{name}`]({page.as_posix()})")
    with mkdocs_gen_files.open("reference/api/index.md", "w") as fh:
        fh.write("\n".join(overview) + "\n")
    with mkdocs_gen_files.open("reference/api/SUMMARY.md", "w") as fh:
        fh.write("\n".join(summary) + "\n")


def main() -> None:
    import mkdocs_gen_files

    with mkdocs_gen_files.open("reference/cli.md", "w") as fh:
        fh.write(cli_reference())
    api_reference()


if __name__ in ("__main__", "<run_path>"):  # mkdocs-gen-files runs the script as a file
    main()
