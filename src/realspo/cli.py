"""The ``realspo`` command line: one subcommand per pipeline stage.

Each subcommand lives in ``realspo.commands.<name>`` and exposes ``add_arguments(parser)`` and
``run(args) -> int``; its one-line help is its entry in :data:`COMMANDS`, so that listing the
commands imports none of them, and running one imports only its own module (which in turn
imports torch and transformers only when it runs). Errors the user can fix
(:class:`realspo.errors.RealspoError`) are printed on one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from collections.abc import Iterable
from typing import NamedTuple, NoReturn

from realspo import __version__
from realspo.errors import RealspoError
from realspo.served.client import DryRun


class Command(NamedTuple):
    """A subcommand: its module under ``realspo.commands`` and its one-line help."""

    module: str
    help: str


# command name -> its module and help, in pipeline order
COMMANDS = {
    "generate": Command("generate", "sample K candidate responses per prompt from a model "
                                    "(multi-completion output for select)"),
    "select": Command("select", "select response pairs to label or train on (REAL: least similar "
                                "embeddings first)"),
    "label": Command("label", "label pairs: from scores, a reward model, an LLM judge, human "
                              "annotators (export/import) or a simulated annotator"),
    "annotate": Command("annotate", "serve a labeling page for a small team: one link per "
                                    "annotator, labels journaled for label --annotations"),
    "train": Command("train", "train a causal LM on preference pairs (the DPO family of losses, "
                              "see --loss; optionally + SPO)"),
    "rounds": Command("rounds", "multi-round active labeling: R rounds of generate -> select -> "
                                "label (automatic judge) -> train, resumable per round"),
    "chat": Command("chat", "talk to a model (a trained one, a .gguf, a hub id) under its chat "
                            "template, one message per line"),
    "spo-preview": Command("spo_preview", "print preference pairs with their SPO degree variants "
                                          "and the removed key phrases"),
    "plot": Command("plot", "plot the loss, reward and SPO curves of a training run "
                            "(metrics.jsonl) to PNG"),
    "evaluate": Command("evaluate", "judge a trained model against a baseline: win rate with a "
                                    "bootstrap interval, mean rewards"),
    "demo": Command("demo", "run the whole pipeline in the offline proving ground and report "
                            "whether REAL and SPO help"),
    "leaderboard": Command("leaderboard", "every selection strategy at equal label budgets in the "
                                          "proving ground, in one round and in R rounds"),
}


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (exit code 2), as every
    other realspo error is; ``--help`` still prints the full usage."""

    command_parsers: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The ``realspo`` parser, with the options of ``commands`` (None: of every command).

    Every command is listed; only those in ``commands`` have their module imported and their
    options added, so ``realspo --help`` imports no command module (:func:`main` passes the
    one command on the command line).
    """
    # allow_abbrev=False everywhere: a shortened flag (--world for --world-coupling) is an
    # error, not silently another option
    parser = OneLineParser(
        prog="realspo", allow_abbrev=False,
        description="Data-efficient preference alignment: REAL pair selection and SPO training.",
    )
    parser.add_argument("--version", action="version", version=f"realspo {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser.command_parsers = {}
    wanted = set(COMMANDS) if commands is None else set(commands)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help, allow_abbrev=False,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.command_parsers[name] = p
        if name in wanted:
            module = importlib.import_module(f"realspo.commands.{command.module}")
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def _command_in(argv: list[str]) -> str | None:
    """The command named on a command line (the first word not an option; the top-level
    options take no values), or None."""
    return next((word for word in argv if not word.startswith("-")), None)


def _progress_bars_open() -> bool:
    tqdm = sys.modules.get("tqdm")
    return bool(tqdm and getattr(getattr(tqdm, "tqdm", None), "_instances", None))


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


class _HeldLog(logging.Handler):
    """Log lines to stderr, held back until a command's work has visibly begun.

    A command checks its inputs before it works; an input error found then must be the only
    line on stderr, not the last of a few INFO lines about a run that never started. Held
    lines are written when a warning arrives, when a progress bar is open, after
    :data:`HOLD_S` seconds, or when the command ends well; they are dropped when it fails
    (:meth:`drop_held`).
    """

    HOLD_S = 10.0

    def __init__(self, level: int, fmt: str) -> None:
        super().__init__(level)
        self.setFormatter(logging.Formatter(fmt))
        self._held: list[str] | None = []
        self._until = time.monotonic() + self.HOLD_S

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 (logging must never raise)
            self.handleError(record)
            return
        if self._held is not None and record.levelno < logging.WARNING \
                and time.monotonic() < self._until and not _progress_bars_open():
            self._held.append(line)
            return
        self.flush_held()
        print(line, file=sys.stderr, flush=True)

    def flush_held(self) -> None:
        held, self._held = self._held, None
        for line in held or ():
            print(line, file=sys.stderr, flush=True)

    def drop_held(self) -> None:
        self._held = None


def _error_line(command: str, message: str) -> str:
    return f"realspo {command}: error: {one_line(message)}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = _command_in(argv)
    parser = build_parser([command] if command else [])
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # told by the command's parser, which names the command and its --help
        parser.command_parsers[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    handler = _HeldLog(logging.DEBUG if args.verbose else logging.INFO,
                       "%(levelname)s %(name)s: %(message)s" if args.verbose else "%(message)s")
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(min(root.level or logging.WARNING, handler.level))
    run = args._run
    del args._run, args.verbose
    try:
        code = int(run(args) or 0)
        handler.flush_held()
        return code
    except DryRun as plan:  # --dry-run of a served model: a count, not an error
        handler.flush_held()
        _close_progress_bars()
        print(f"realspo {args.command}: {plan}")
        return 0
    except RealspoError as exc:
        handler.drop_held()
        _close_progress_bars()
        print(_error_line(args.command, str(exc)), file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # the environment: a full disk, a read-only or vanished directory
        handler.drop_held()
        _close_progress_bars()
        where = f"{exc.filename}: " if exc.filename else ""
        print(_error_line(args.command, f"{where}{exc.strerror or exc}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        handler.flush_held()
        _close_progress_bars()
        print(f"realspo {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        root.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
