"""Loading Hugging Face models and tokenizers, safely and the same way everywhere.

Every stage loads through these functions, so the security defaults hold everywhere:
``trust_remote_code`` is off unless the user asks for it, and weights are read from
safetensors only (a directory holding only a pickled ``.bin`` is refused unless
``allow_pickle=True``, because unpickling can run arbitrary code). A ``.gguf`` file, or a
directory holding one, is dequantized once into a cached safetensors directory
(:mod:`realspo.gguf`) and loaded from there.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from realspo.errors import ConfigError, InputError
from realspo.gguf import resolve_model_path

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def pick_device(device: str | None = None) -> torch.device:
    """``device`` if given, else the first of CUDA, MPS, CPU that is available."""
    import torch  # in the functions, not at the top: `realspo CMD --help` imports this module

    if device and device != "auto":
        return check_device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def check_device(device: str | None) -> torch.device | None:
    """The ``torch.device`` that ``--device`` names, refused (one line) unless this machine's
    torch has it: ``cuda`` on a build without CUDA or without that GPU, ``mps`` off Apple,
    ``tpu`` or a misspelling anywhere. ``auto`` / None: None (pick the best later).

    Args:
        device: the option's value.

    Returns:
        The device, or None for ``auto``.
    """
    import torch

    if not device or device == "auto":
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"--device {device}: not a device name; expected auto, cpu, cuda, "
                          "cuda:N or mps") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"--device {device}: this torch has no CUDA device "
                              f"(torch {torch.__version__}); use --device cpu or auto")
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"--device {device}: only {count} CUDA device(s) here (0..{count - 1})")
        return dev
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if not (mps and mps.is_available()):
            raise ConfigError(f"--device {device}: MPS (Apple GPUs) is not available here; "
                              "use --device cpu or auto")
        return dev
    backend = getattr(torch, dev.type, None)
    available = getattr(backend, "is_available", None)
    if callable(available) and available():
        return dev
    raise ConfigError(f"--device {device}: torch has no usable {dev.type} device here; expected "
                      "auto, cpu, cuda, cuda:N or mps")


def pick_dtype(device: torch.device, dtype: str = "auto") -> torch.dtype:
    """bf16 on GPUs that support it, else fp16 on GPUs, fp32 on CPU; or the named dtype."""
    import torch

    named = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype != "auto":
        if dtype not in named:
            raise InputError("--dtype", f"unknown dtype '{dtype}': expected auto, {', '.join(named)}")
        return named[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


MAX_SAFETENSORS_HEADER = 100 << 20  # the limit safetensors itself enforces


# Beyond any model that exists (the largest vocabularies are ~256k, widths ~16k, depths ~200):
# a config.json past these is forged or broken, and would ask for terabytes before failing.
CONFIG_LIMITS = {"vocab_size": 1 << 22, "hidden_size": 1 << 17, "intermediate_size": 1 << 19,
                 "num_hidden_layers": 4096, "num_attention_heads": 1 << 14,
                 "num_key_value_heads": 1 << 14, "max_position_embeddings": 1 << 24,
                 "n_embd": 1 << 17, "n_layer": 4096, "n_head": 1 << 14, "n_positions": 1 << 24}
MAX_CONFIG_BYTES = 16 << 20


def check_model_config(directory: Path, headers: list[dict[str, Any]] | None) -> None:
    """Refuse a ``config.json`` whose sizes are absurd, or larger than its weights can be.

    A config declaring ``vocab_size`` 2e9 and ``hidden_size`` 65536 makes transformers try to
    allocate an embedding of 10^14 numbers before any weight is read. Each size must be a
    positive integer under :data:`CONFIG_LIMITS`; with safetensors ``headers`` (one dict per
    file), the embedding the config implies (vocab x hidden) must fit in the weights, and the
    vocabulary and width must each be a dimension of some weight tensor.

    Args:
        directory: the model directory (its ``config.json`` is read).
        headers: the parsed safetensors headers, or None when the weights are pickles.
    """
    file = directory / "config.json"
    try:
        if file.stat().st_size > MAX_CONFIG_BYTES:
            raise InputError(str(file), f"larger than {MAX_CONFIG_BYTES >> 20} MiB; not a model config")
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise InputError(str(file), f"not a readable JSON model config ({exc})") from None
    if not isinstance(config, dict):
        raise InputError(str(file), "not a model config: expected a JSON object")
    sizes = {}
    for key, limit in CONFIG_LIMITS.items():
        value = config.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= limit:
            raise InputError(str(file), f"expected a positive integer of at most {limit}, got "
                                        f"{str(value)[:40]}", field=key)
        sizes[key] = value
    if not headers:
        return
    shapes = [tuple(entry.get("shape") or ()) for header in headers for name, entry in header.items()
              if name != "__metadata__" and isinstance(entry, dict)]
    total = sum(math.prod(int(d) for d in shape) for shape in shapes)
    dims = {int(d) for shape in shapes for d in shape}
    vocab, hidden = sizes.get("vocab_size"), sizes.get("hidden_size") or sizes.get("n_embd")
    if vocab and hidden and vocab * hidden > total:
        raise InputError(str(file), f"declares vocab_size {vocab} x hidden size {hidden} = "
                                    f"{vocab * hidden} embedding weights, but the weights hold "
                                    f"{total} numbers in all")
    for key, value in (("vocab_size", vocab), ("hidden_size", hidden)):
        if value and dims and value not in dims:
            raise InputError(str(file), f"{value} is no dimension of any weight tensor (the "
                                        "weights belong to another model)", field=key)


def check_safetensors_files(directory: Path) -> Path:
    """Refuse (InputError naming the file) a ``*.safetensors`` file in ``directory`` whose
    header is forged or torn: a length past the end of the file or over 100 MiB, or not a JSON
    object. The loader would fail on it with an error that names no file. Then the directory's
    ``config.json`` is checked against the headers (:func:`check_model_config`). Returns
    ``directory`` (anything that is not a directory is not checked)."""
    if not directory.is_dir():
        return directory
    headers: list[dict[str, Any]] = []
    for file in sorted(directory.glob("*.safetensors")):
        try:
            size = file.stat().st_size
            with file.open("rb") as fh:
                prefix = fh.read(8)
                length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
                if not 0 < length <= min(size - 8, MAX_SAFETENSORS_HEADER):
                    raise InputError(str(file), f"not a safetensors file: its header length "
                                                f"({length}) does not fit the file ({size} bytes)")
                header = json.loads(fh.read(length))
        except InputError:
            raise
        except OSError as exc:
            raise InputError(str(file), f"cannot read ({exc.strerror or exc})") from None
        except (ValueError, RecursionError):
            raise InputError(str(file), "not a safetensors file: its header is not valid "
                                        "JSON") from None
        if not isinstance(header, dict):
            raise InputError(str(file), "not a safetensors file: its header is not a JSON object")
        headers.append(header)
    if (directory / "config.json").is_file():
        check_model_config(directory, headers)
    return directory


CHARS_PER_TOKEN = 32  # generous: real tokens average 3-6 characters, long runs of symbols ~16


Texts = TypeVar("Texts", list[str], None)


def clip_texts(texts: Texts, max_tokens: int | None, keep_end: bool = False,
               what: str = "texts") -> Texts:
    """Cut each text to ``max_tokens * CHARS_PER_TOKEN`` characters before it is tokenized.

    A tokenizer tokenizes a whole text before truncating it: one 50 MB response costs minutes
    and gigabytes, for tokens that are then thrown away. Nothing a ``max_tokens`` limit keeps
    is lost (unless the text averages over :data:`CHARS_PER_TOKEN` characters per token).
    ``keep_end`` keeps the end (for prompts cut from the left). The number of texts cut is
    logged as a warning.
    """
    if texts is None or max_tokens is None:
        return texts
    limit = max_tokens * CHARS_PER_TOKEN
    cut = sum(len(t) > limit for t in texts)
    if not cut:
        return texts
    log.warning("%d of %d %s were longer than %d characters (%d tokens x %d) and were cut to that "
                "before tokenizing", cut, len(texts), what, limit, max_tokens, CHARS_PER_TOKEN)
    return [t if len(t) <= limit else t[-limit:] if keep_end else t[:limit] for t in texts]


def _check_weights(name: str, allow_pickle: bool) -> None:
    path = Path(name)
    if not path.exists():
        return  # a hub id: from_pretrained(use_safetensors=True) enforces the same rule
    if not path.is_dir():
        raise InputError(name, "expected a model directory (with config.json), a .gguf file or a hub id")
    if not (path / "config.json").exists():
        raise InputError(name, "not a model directory: config.json is missing")
    check_safetensors_files(path)
    has_safe = any(path.glob("*.safetensors"))
    has_pickle = any(path.glob("*.bin")) or any(path.glob("*.pt"))
    if not has_safe and has_pickle and not allow_pickle:
        raise InputError(
            name,
            "weights are only in pickle format (.bin), which can run arbitrary code when loaded;"
            " convert them to safetensors or pass --allow-pickle if you trust the source",
        )


def _common(trust_remote_code: bool, revision: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision:
        kwargs["revision"] = revision
    return kwargs


def load_tokenizer(name: str, *, trust_remote_code: bool = False, revision: str | None = None):
    """An ``AutoTokenizer`` with a pad token (falls back to EOS) and right padding."""
    from transformers import AutoTokenizer

    name = resolve_model_path(name)
    path = Path(name)
    if path.is_dir() and not any((path / f).exists() for f in
                                 ("config.json", "tokenizer_config.json", "tokenizer.json")):
        raise InputError(name, "not a model directory: config.json is missing (and there are no "
                               "tokenizer files)")
    if path.exists() and not path.is_dir():
        raise InputError(name, "expected a model directory (with config.json), a .gguf file or a hub id")
    try:
        tok = AutoTokenizer.from_pretrained(name, **_common(trust_remote_code, revision))
    except (OSError, ValueError) as exc:
        raise InputError(name, f"could not load tokenizer ({str(exc).splitlines()[0]})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    tok.padding_side = "right"
    return tok


def check_model_location(name: str, flag: str = "--model") -> None:
    """Refuse a model that is plainly a local path and does not exist, before transformers
    loads (which would take seconds to call it an invalid hub id). A hub id (``org/name``,
    no leading ``/``, ``.`` or ``~``) is left to the loaders.

    Args:
        name: the model as given.
        flag: the option that named it, for the message.
    """
    local = name.startswith(("/", ".", "~")) or name.count("/") > 1 or name.lower().endswith(".gguf")
    if local and not Path(name).expanduser().exists():
        raise InputError(name, f"{flag}: no such model directory or file")


ADAPTER_CONFIG = "adapter_config.json"


def adapter_base(name: str) -> str | None:
    """The base model of a LoRA adapter directory (``train --no-merge`` writes one: an
    ``adapter_config.json`` and no ``config.json``), as its config names it; None for anything else.

    Args:
        name: a model directory, file or hub id.

    Returns:
        the adapter's ``base_model_name_or_path``, or None.
    """
    path = Path(name)
    if not (path / ADAPTER_CONFIG).is_file() or (path / "config.json").exists():
        return None
    try:
        base = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        raise InputError(str(path / ADAPTER_CONFIG), "not a readable adapter config (JSON object)") from None
    if not isinstance(base, str) or not base:
        raise InputError(str(path / ADAPTER_CONFIG), "names no base model (base_model_name_or_path)")
    return base


def _load_adapter(name: str, base: str, kind: str, allow_pickle: bool, **kwargs: Any):
    """The base model with the LoRA adapter in ``name`` merged into it."""
    from peft import PeftModel

    check_safetensors_files(Path(name))
    if not (Path(name) / "adapter_model.safetensors").exists() and not allow_pickle:
        raise InputError(name, "the adapter's weights are not in adapter_model.safetensors (a pickled "
                               ".bin can run code when loaded; pass --allow-pickle if you trust it)")
    model = load_model(base, kind, allow_pickle=allow_pickle, **kwargs)
    device = next(model.parameters()).device
    try:
        merged = PeftModel.from_pretrained(model, name).merge_and_unload()
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(name, f"could not load the adapter ({str(exc).splitlines()[0]})") from None
    return merged.to(device)


def load_model(name: str, kind: str = "causal-lm", *, dtype: torch.dtype | None = None,
               device: torch.device | None = None, trust_remote_code: bool = False,
               allow_pickle: bool = False, revision: str | None = None, **kwargs: Any):
    """Load a model: ``kind`` is ``causal-lm``, ``base`` (no LM head) or ``sequence-classifier``.

    A causal LM may also be a LoRA adapter directory (:func:`adapter_base`): its base model is
    loaded and the adapter merged into it.
    """
    from safetensors import SafetensorError
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    base = adapter_base(name) if kind == "causal-lm" else None
    if base is not None:
        return _load_adapter(name, base, kind, allow_pickle, dtype=dtype, device=device,
                             trust_remote_code=trust_remote_code, revision=revision, **kwargs)
    name = resolve_model_path(name)
    _check_weights(name, allow_pickle)
    auto = {"causal-lm": AutoModelForCausalLM, "base": AutoModel,
            "sequence-classifier": AutoModelForSequenceClassification}[kind]
    try:
        model = auto.from_pretrained(
            name, dtype=dtype, use_safetensors=not allow_pickle or None,
            **_common(trust_remote_code, revision), **kwargs,
        )
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(name, f"could not load model ({text})") from None
    if device is not None:
        model.to(device)
    return model
