"""The ``realspo`` command line: one subcommand per pipeline stage.

Each subcommand lives in ``realspo.commands.<name>`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Errors the user can fix
(:class:`realspo.errors.RealspoError`) are printed on one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from realspo import __version__
from realspo.errors import RealspoError

# command name -> module under realspo.commands, in pipeline order
COMMANDS = {
    "generate": "generate",
    "select": "select",
    "label": "label",
    "train": "train",
    "spo-preview": "spo_preview",
    "plot": "plot",
    "evaluate": "evaluate",
    "demo": "demo",
}


def _available() -> dict[str, object]:
    modules = {}
    for name, module in COMMANDS.items():
        try:
            modules[name] = importlib.import_module(f"realspo.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"realspo.commands.{module}":
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="realspo",
        description="Data-efficient preference alignment: REAL pair selection and SPO training.",
    )
    parser.add_argument("--version", action="version", version=f"realspo {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in _available().items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP,  # type: ignore[attr-defined]
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)  # type: ignore[attr-defined]
        p.set_defaults(_run=module.run)  # type: ignore[attr-defined]
    return parser


def _close_progress_bars() -> None:
    """Close the progress bars a failed command left open, so its error gets a line of its own."""
    try:
        from tqdm import tqdm
    except ImportError:
        return
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


MAX_ERROR_CHARS = 300


def one_line(message: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``message`` on one line of at most ``limit`` characters (errors may quote user input)."""
    text = " ".join(message.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s" if args.verbose else "%(message)s",
        stream=sys.stderr,
    )
    run = args._run
    del args._run, args.verbose
    try:
        return int(run(args) or 0)
    except RealspoError as exc:
        _close_progress_bars()
        print(f"realspo {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        _close_progress_bars()
        print(f"realspo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
