"""One configuration mechanism for every command.

Each command declares a dataclass whose fields carry their help text (:func:`option`). From
it :func:`add_options` builds the argparse options, and :func:`resolve` merges, in order of
precedence, the dataclass defaults < a YAML file (``--config run.yaml``) < flags given on the
command line. Unknown YAML keys and wrongly typed values are rejected, never ignored. The
dataclass's ``validate()`` method, if it has one, runs once on the merged result.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from realspo.errors import ConfigError
from realspo.outputs import check_outputs_apart

T = TypeVar("T")


PATH_ROLES = ("input", "output")


def option(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None,
           choices: typing.Sequence[Any] | None = None, metavar: str | None = None,
           cli: bool = True, path: str | None = None) -> Any:
    """A dataclass field with its command-line help. ``default=MISSING`` makes it required.

    ``path="input"`` or ``path="output"`` declares a file or directory the command reads or
    writes: :func:`resolve` refuses an output that is, contains or lies inside an input (an
    input may be a value naming a model, ``llm:PATH``: see
    :func:`realspo.output_paths.local_input_path`). A config whose class has a
    ``reserved_paths()`` method (``{description: path}``: the names it derives for itself,
    such as a progress sidecar) has those checked against the inputs too.
    """
    if path is not None and path not in PATH_ROLES:
        raise ValueError(f"path must be one of {PATH_ROLES}, got {path!r}")
    meta = {"help": help, "flag": flag, "choices": choices, "metavar": metavar, "cli": cli,
            "path": path}
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(inner type, optional?) for ``X | None`` / ``Optional[X]``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def _fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def add_options(parser: argparse.ArgumentParser, cls: type, with_config: bool = True) -> None:
    """Add one flag per field of ``cls`` (defaults shown in help, values default to unset)."""
    for f, tp in _fields(cls):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        inner, _ = _base_type(tp)
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default_text = "required" if required else f"default: {_show_default(f)}"
        text = meta.get("help", "")
        # a help that says its own default ("(default: 3 ...)", "unset: ...") is not told twice
        says_default = "(default" in text or (f.default is None and ("unset" in text or "default" in text))
        help_text = (text if says_default and not required else f"{text} ({default_text})")
        help_text = help_text.replace("%", "%%")  # argparse formats help with %
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        if inner is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(inner) is list:
            (item,) = typing.get_args(inner) or (str,)
            kwargs.update(nargs="+", type=item)
        else:
            kwargs["type"] = inner if inner in (int, float) else str
            if meta.get("choices"):
                kwargs["choices"] = list(meta["choices"])
        parser.add_argument(flag, **kwargs)
    if with_config:
        parser.add_argument("--config", dest="_config", default=argparse.SUPPRESS, metavar="YAML",
                            help="read options from a YAML file; flags given here override it")


def _show_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def _coerce(value: Any, tp: Any, name: str, origin: str) -> Any:
    inner, optional = _base_type(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{origin}: '{name}' must not be empty")
    if inner is bool:
        if isinstance(value, bool):
            return value
    elif inner is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif inner is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):  # NaN would, e.g., silently turn clipping off
                raise ConfigError(f"{origin}: '{name}' must be a finite number, got {_short(value)}")
            return number
    elif inner is str or inner is Path:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif typing.get_origin(inner) is list:
        (item,) = typing.get_args(inner) or (str,)
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return [_coerce(v, item, name, origin) for v in value]
    else:
        return value
    expected = getattr(inner, "__name__", str(inner))
    raise ConfigError(f"{origin}: '{name}' expected {expected}, got {type(value).__name__} {_short(value)}")


def _suggest(name: str, known: Any) -> str:
    """`` (did you mean 'x'?)`` for a near miss among ``known`` option names, else ``""``."""
    import difflib

    close = difflib.get_close_matches(name, list(known), n=2)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: error lines stay one short line."""
    text = repr(value) if not isinstance(value, (list, dict)) else type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


MAX_YAML_BYTES = 1 << 20  # a configuration file is a few hundred bytes; refuse anything absurd
MAX_YAML_ALIASES = 20      # aliases (*name) in one file: bounds "billion laughs" expansion to ~3**7


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects duplicate keys and bounds alias use.

    PyYAML keeps the last of two equal keys without a word, so ``lr: 1e-5`` followed by
    ``lr: 1e-3`` would silently train at 1e-3; and a few hundred bytes of nested aliases
    expand into gigabytes when the value is walked or printed.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_YAML_ALIASES} aliases (*name)")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.YAMLError(f"duplicate key {str(key)[:60]!r} (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping of option names to values; duplicate keys and alias bombs are refused."""
    path = Path(path)
    try:
        if path.exists() and not path.is_file():
            raise ConfigError(f"{path}: not a regular file")
        with path.open("rb") as fh:
            raw = fh.read(MAX_YAML_BYTES + 1)
        if len(raw) > MAX_YAML_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_YAML_BYTES // 1024} KiB; not a config file")
        loader = _StrictLoader(raw.decode("utf-8"))  # a SafeLoader: plain data only
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({str(exc).splitlines()[0][:160]})") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML (nested too deeply)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values")
    return data


def resolve(cls: type[T], args: argparse.Namespace | dict[str, Any] | None = None,
            config_file: str | Path | None = None) -> T:
    """Build a validated ``cls`` from defaults < YAML file < explicit values."""
    given = dict(vars(args) if isinstance(args, argparse.Namespace) else (args or {}))
    config_file = given.pop("_config", None) or config_file
    given = {k: v for k, v in given.items() if not k.startswith("_") and k != "command"}
    fields = dict((f.name, (f, tp)) for f, tp in _fields(cls))
    values: dict[str, Any] = {}
    if config_file:
        for key, value in load_yaml(config_file).items():
            name = str(key).replace("-", "_")
            if name not in fields:
                raise ConfigError(f"{config_file}: unknown option {_short(key, 60)}{_suggest(name, fields)}")
            values[name] = _coerce(value, fields[name][1], name, str(config_file))
    for name, value in given.items():
        if name not in fields:
            raise ConfigError(f"unknown option {_short(name, 60)}{_suggest(name, fields)}")
        values[name] = _coerce(value, fields[name][1], name, "--" + name.replace("_", "-"))
    missing = [n for n, (f, _) in fields.items() if n not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError("missing required option(s): " + ", ".join("--" + m.replace("_", "-") for m in missing))
    for name, value in values.items():
        choices = fields[name][0].metadata.get("choices")
        if choices and value is not None and value not in choices:
            raise ConfigError(f"'{name}' must be one of {', '.join(map(str, choices))}, got {_short(value)}")
    cfg = cls(**values)
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()
    inputs = declared_paths(cfg, "input")
    if config_file:
        inputs["--config"] = str(config_file)
    outputs = declared_paths(cfg, "output")
    check_outputs_apart({}, outputs)  # an empty or duplicated output, before deriving names from it
    reserved = getattr(cfg, "reserved_paths", None)
    check_outputs_apart(inputs, outputs, reserved() if callable(reserved) else None)
    return cfg


def declared_paths(cfg: Any, role: str) -> dict[str, str]:
    """``{flag: path}`` of the fields of ``cfg`` declared ``option(path=role)`` that are set."""
    found = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        empty_output = role == "output" and isinstance(value, str) and not value.strip()
        if f.metadata.get("path") == role and (value not in (None, "") or empty_output):
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            for i, item in enumerate(value if isinstance(value, list) else [value]):
                found[flag if not isinstance(value, list) else f"{flag}[{i}]"] = str(item)
    return found


def to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved configuration as plain data (saved beside outputs)."""
    return dataclasses.asdict(cfg)


MAX_SEED = 2**32 - 1  # the widest range every random generator realspo seeds accepts


def check_seed(seed: int, flag: str = "--seed") -> None:
    """Refuse a seed outside ``0..2**32-1`` (numpy rejects negative seeds with a traceback)."""
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{flag}: expected an integer from 0 to {MAX_SEED}, got {seed}")
