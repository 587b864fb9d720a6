"""Python state (``state_dict()``s, RNG states) as JSON plus safetensors: no pickle either way.

:func:`write_state` splits an object tree into its tensors, written to ``NAME.safetensors``,
and the rest, written to ``NAME.json``, where each tensor is ``{"$tensor": key}``. Only
plain data survives the trip: ``None``, booleans, numbers, strings, lists, tuples
(``{"$tuple": [...]}``), dicts (``{"$items": [[key, value], ...]}`` when a key is not a
plain string, as an optimizer's integer parameter ids are) and tensors; any other object
is refused when written. Reading a file can build nothing but these, so a planted file can
at worst fail to load: it cannot run code (``pickle``, and ``torch.load`` unless restricted to
weights, rebuild arbitrary objects by calling them).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch in the functions: `train` checks a run directory before loading it
    import torch

TENSOR, TUPLE, ITEMS = "$tensor", "$tuple", "$items"


def encode(obj: Any, tensors: dict[str, torch.Tensor], name: str = "") -> Any:
    """The JSON-able form of ``obj``; its tensors are moved (on the CPU) into ``tensors``."""
    import torch

    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Tensor):
        key = name or "tensor"
        if key in tensors:  # two paths that read alike ("a.b" and ["a"]["b"])
            key = f"{key}#{len(tensors)}"
        tensors[key] = obj.detach().to("cpu").contiguous()
        return {TENSOR: key}
    if isinstance(obj, tuple):
        return {TUPLE: [encode(v, tensors, f"{name}.{i}".lstrip(".")) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode(v, tensors, f"{name}.{i}".lstrip(".")) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in obj):
            return {k: encode(v, tensors, f"{name}.{k}".lstrip(".")) for k, v in obj.items()}
        return {ITEMS: [[encode(k, tensors, f"{name}.key"), encode(v, tensors, f"{name}.{k}".lstrip("."))]
                        for k, v in obj.items()]}
    raise TypeError(f"a {type(obj).__name__} cannot be stored in a checkpoint (plain data and "
                    "tensors only)")


def decode(node: Any, tensors: dict[str, Any]) -> Any:
    """Inverse of :func:`encode`; ``ValueError`` for anything :func:`encode` does not write."""
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, list):
        return [decode(v, tensors) for v in node]
    if not isinstance(node, dict):
        raise ValueError(f"unexpected {type(node).__name__}")
    tagged = [k for k in node if k.startswith("$")]
    if not tagged:
        return {k: decode(v, tensors) for k, v in node.items()}
    if len(node) != 1:
        raise ValueError(f"a tag {tagged[0]!r} among other keys")
    tag, value = next(iter(node.items()))
    if tag == TENSOR:
        if not isinstance(value, str) or value not in tensors:
            raise ValueError(f"names a tensor {value!r} that its .safetensors file lacks")
        return tensors[value]
    if tag == TUPLE and isinstance(value, list):
        return tuple(decode(v, tensors) for v in value)
    if tag == ITEMS and isinstance(value, list) and all(
            isinstance(p, list) and len(p) == 2 for p in value):
        return {decode(k, tensors): decode(v, tensors) for k, v in value}
    raise ValueError(f"unknown or malformed tag {tag!r}")


def write_state(directory: Path, name: str, obj: Any) -> list[str]:
    """Write ``obj`` as ``NAME.json`` (and ``NAME.safetensors`` if it holds tensors); the
    file names written."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    tree = encode(obj, tensors)
    written = [f"{name}.json"]
    (directory / written[0]).write_text(json.dumps(tree) + "\n", encoding="utf-8")
    if tensors:
        written.append(f"{name}.safetensors")
        save_file(tensors, str(directory / written[1]))
    return written


def read_json(path: Path) -> Any:
    """A JSON file, read without any object hook."""
    return json.loads(path.read_text(encoding="utf-8"))


def read_state(directory: Path, name: str, *, tensors: bool = True) -> Any:
    """What :func:`write_state` wrote as ``NAME``: plain data and CPU tensors only.

    ``tensors=False`` reads only the safetensors header (each tensor becomes None): a cheap
    check of both files. Raises :class:`StateFileError` naming the file that failed.
    """
    path = directory / f"{name}.json"
    try:
        tree = read_json(path)
    except Exception as exc:  # missing, not UTF-8, not JSON, nested too deep, ...
        raise StateFileError(path, exc) from None
    weights = directory / f"{name}.safetensors"
    found = read_tensors(weights, load=tensors) if weights.exists() else {}
    try:
        return decode(tree, found)
    except (ValueError, TypeError, RecursionError) as exc:
        raise StateFileError(path, exc) from None


def read_tensors(path: Path, *, load: bool = True) -> dict[str, Any]:
    """The tensors of a safetensors file on the CPU (``load=False``: its keys, each mapped to
    None, from the header alone). Raises :class:`StateFileError`."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        if load:
            return load_file(str(path), device="cpu")
        with safe_open(str(path), framework="pt") as fh:
            return dict.fromkeys(fh.keys())
    except Exception as exc:  # not a safetensors file (e.g. a pickle), truncated, ...
        raise StateFileError(path, exc) from None


class StateFileError(Exception):
    """A state file that cannot be read back: ``path`` and the underlying ``reason``."""

    def __init__(self, path: Path, reason: BaseException | str) -> None:
        self.path = path
        if isinstance(reason, BaseException):
            text = str(reason).strip().splitlines()
            reason = f"{type(reason).__name__}: {text[0]}" if text else type(reason).__name__
        self.reason = reason
        super().__init__(f"{path}: {reason}")


MAX_STATE_INT = 1 << 40  # steps, epochs, counters: far beyond any run


def check_like(value: Any, reference: Any, where: str = "") -> None:
    """Refuse (ValueError naming the entry) ``value`` unless it has ``reference``'s shape:
    the same types, list lengths and keys, finite numbers of a sane size.

    ``reference`` is the live object's own ``state_dict()``: a loaded scheduler or optimizer
    state may differ from it in values, never in kind. An integer must stay within
    ``±MAX_STATE_INT``; a float must be finite and at most 1000 times the size of its
    reference (or 1), so ``base_lrs: [1e30]`` or ``_step_count: 1e300`` is refused before
    it can train the weights to nonsense.

    Args:
        value: the state read from a file.
        reference: the state the object has now.
        where: the path of ``value`` in the state, for the message.
    """
    at = where or "(top)"
    if isinstance(reference, bool) or reference is None or isinstance(reference, str):
        if reference is not None and type(value) is not type(reference):
            raise ValueError(f"{at}: expected {type(reference).__name__}, got {_shown(value)}")
        if reference is None and not (value is None or isinstance(value, (bool, int, float, str))):
            raise ValueError(f"{at}: expected a plain value, got {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{at}: expected a finite number, got {value}")
    elif isinstance(reference, int):
        if type(value) is not int or abs(value) > MAX_STATE_INT:
            raise ValueError(f"{at}: expected an integer of at most {MAX_STATE_INT}, got {_shown(value)}")
    elif isinstance(reference, float):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
                or abs(value) > 1000 * max(abs(reference), 1.0):
            raise ValueError(f"{at}: expected a finite number near {reference:g}, got {_shown(value)}")
    elif isinstance(reference, (list, tuple)):
        if not isinstance(value, (list, tuple)) or len(value) != len(reference):
            raise ValueError(f"{at}: expected a list of {len(reference)}, got {_shown(value)}")
        for i, (item, ref) in enumerate(zip(value, reference, strict=True)):
            check_like(item, ref, f"{where}[{i}]")
    elif isinstance(reference, dict):
        if not isinstance(value, dict):
            raise ValueError(f"{at}: expected a mapping, got {_shown(value)}")
        for key, item in value.items():
            if key in reference:
                check_like(item, reference[key], f"{where}.{key}" if where else str(key))
    elif isinstance(reference, torch.Tensor):
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{at}: expected a tensor, got {_shown(value)}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"{at}: holds non-finite numbers")


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"
