"""The resumable ``generate`` stage: K sampled candidates per prompt, written as
multi-completion rows ``{prompt_id, prompt, responses: [K strings], finished: [K bools]}``, the
format ``realspo select`` reads (sampling: :mod:`realspo.generation.sampling`). ``finished[j]``
is False when response ``j`` was cut at ``max_new_tokens`` (it never reached an end-of-sequence
or end-of-turn token): ``train`` then appends no EOS to it.

**Resuming.** Finished prompts are appended to ``OUT.partial.jsonl`` (flushed and fsynced
after each batch; its first line records the settings). ``resume=True`` checks the settings,
drops a torn last line, and continues with the next prompt. When every prompt is done the
final table is written atomically and the sidecar is removed.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from realspo.errors import ConfigError, RealspoError
from realspo.faults import after_batch
from realspo.generation.prompts import PromptRecord
from realspo.generation.sampling import SamplingSettings, iter_samples, load_generator_model
from realspo.outputs import check_writable, write_rows, writing

log = logging.getLogger(__name__)


def partial_path(out: str | os.PathLike) -> Path:
    """The progress sidecar of ``out``: ``OUT.partial.jsonl``."""
    out = Path(out)
    return out.with_name(out.name + ".partial.jsonl")


PARTIAL_TAG = "realspo_generate"  # the key of a progress sidecar's first line: its marker


def is_partial_file(sidecar: Path) -> bool:
    """Whether ``sidecar`` is a regular file whose first line is a realspo generate header
    (the marker that lets a run resume, truncate or delete it)."""
    if sidecar.is_symlink() or not sidecar.is_file():
        return False
    with sidecar.open("rb") as fh:
        first = fh.readline(1 << 16)
    if not first.endswith(b"\n"):  # a kill while the header was written: ours, torn
        return first.startswith(json.dumps({PARTIAL_TAG: {}})[:-3].encode())
    try:
        header = json.loads(first)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(header, dict) and isinstance(header.get(PARTIAL_TAG), dict)


def check_partial_owned(sidecar: Path) -> None:
    """Refuse to resume, cut or delete a file at the sidecar's name that realspo did not write."""
    if os.path.lexists(sidecar) and not is_partial_file(sidecar):
        raise RealspoError(f"{sidecar}: not a realspo generate progress file (this name is "
                           "reserved for the progress of --out); move it away")


def _read_partial(sidecar: Path, header: dict[str, Any],
                  prompts: Sequence[PromptRecord]) -> list[dict[str, Any]]:
    """Finished rows from a sidecar; a torn last line (from a kill mid-write) is cut off, but
    only once the file is known to be a realspo progress file."""
    check_partial_owned(sidecar)
    raw = sidecar.read_bytes()
    lines = raw.split(b"\n")
    complete = lines[:-1]  # text after the last newline was never finished
    try:
        parsed = [json.loads(line) for line in complete if line.strip()]
    except json.JSONDecodeError:
        raise RealspoError(f"{sidecar}: corrupt progress file; pass --overwrite to start over") from None
    if not parsed:  # killed while writing the first batch: nothing was finished
        sidecar.unlink()
        return []
    saved = parsed[0][PARTIAL_TAG]
    differ = [k for k in header if saved.get(k) != header[k]]
    if differ:
        raise ConfigError(
            f"{sidecar}: cannot resume, settings differ from the interrupted run: "
            + ", ".join(f"{k}={saved.get(k)!r} then, {header[k]!r} now" for k in differ))
    rows = parsed[1:]
    for row, prompt in zip(rows, prompts, strict=False):
        if row.get("prompt_id") != prompt.prompt_id:
            raise RealspoError(f"{sidecar}: row for {row.get('prompt_id')!r} does not match prompt "
                               f"{prompt.prompt_id!r}; pass --overwrite to start over")
    if len(rows) > len(prompts):
        raise RealspoError(f"{sidecar}: holds more rows than there are prompts; pass --overwrite")
    good = sum(len(line) + 1 for line in complete)
    if good != len(raw):
        log.info("%s: dropping an unfinished last line", sidecar)
        with sidecar.open("r+b") as fh:
            fh.truncate(good)
    return rows


def generate_candidates(model_name: str, prompts: Sequence[PromptRecord], out: str | os.PathLike,
                        settings: SamplingSettings, *, batch_size: int = 4, resume: bool = False,
                        overwrite: bool = False, device: str = "auto", dtype: str = "auto",
                        trust_remote_code: bool = False, progress: bool = True,
                        on_batch: Callable[[int, int], None] | None = None,
                        allow_pickle: bool = False) -> list[dict[str, Any]]:
    """Sample K responses per prompt with ``model_name`` and write ``out`` (multi-completion).

    The Python form of ``realspo generate``. Sample ``j`` of prompt ``i`` depends only on
    (seed, ``i``, ``j``), so the result does not depend on ``batch_size`` or on a resume.

    Args:
        model_name: a model directory, hub id or ``.gguf`` file.
        prompts: the prompts (:func:`realspo.generation.prompts.read_prompts` reads a file).
        out: the JSON Lines file to write; finished prompts go to a ``.partial.jsonl``
            sidecar beside it first.
        settings: K, temperature, top-p, maximum new tokens, seed, chat template.
        batch_size: prompts per decoding batch.
        resume: continue from the sidecar an interrupted run left.
        overwrite: replace an existing ``out`` and discard a sidecar.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        dtype: ``auto``, ``float32``, ``bfloat16`` or ``float16``.
        trust_remote_code: let the model's repository run its own code.
        progress: show a progress bar.
        on_batch: called as ``on_batch(done, total)`` after each batch has been saved to the
            sidecar (a test hook: raising there simulates an interruption).
        allow_pickle: accept weights only in pickled ``.bin`` files.

    Returns:
        The rows written, one per prompt: ``prompt_id``, ``prompt``, ``responses`` (K
        strings) and ``finished`` (K bools, false where ``max_new_tokens`` cut the response).
    """
    settings.validate()
    out = check_writable(out, overwrite)
    sidecar = partial_path(out)
    header = {"model": str(model_name), "prompts": len(prompts), **asdict(settings)}
    done: list[dict[str, Any]] = []
    if os.path.lexists(sidecar):
        check_partial_owned(sidecar)
        if resume:
            done = _read_partial(sidecar, header, prompts)
            log.info("resuming after %d of %d prompts", len(done), len(prompts))
        elif overwrite:
            sidecar.unlink()
        else:
            raise RealspoError(f"{sidecar}: an interrupted run left its progress here; pass "
                               "--resume to continue it or --overwrite to start over")
    elif resume:
        log.info("%s: nothing to resume, starting from the first prompt", sidecar)
    # The header goes in with the first finished batch, so a run that fails before any
    # prompt is done (bad model, bad option) leaves no sidecar behind.
    pending = [] if sidecar.exists() else [{PARTIAL_TAG: header}]
    remaining = prompts[len(done):]
    if remaining:
        model, tokenizer = load_generator_model(model_name, device=device, dtype=dtype,
                                                trust_remote_code=trust_remote_code,
                                                allow_pickle=allow_pickle)
        for batch, samples, finished in iter_samples(model, tokenizer, remaining, settings,
                                                     batch_size, progress, initial=len(done)):
            rows = [{"prompt_id": p.prompt_id, "prompt": p.prompt, "responses": s, "finished": f}
                    for p, s, f in zip(batch, samples, finished, strict=True)]
            sidecar.parent.mkdir(parents=True, exist_ok=True)
            _append(sidecar, pending + rows)
            pending = []
            done.extend(rows)
            if on_batch is not None:
                on_batch(len(done), len(prompts))
            after_batch()  # a no-op outside the kill-and-resume tests
    final = drop_empty(done)
    write_rows(out, final, overwrite=overwrite)
    sidecar.unlink()
    return final


def drop_empty(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows without empty responses (the multi-completion format has no empty ones); a prompt
    whose every sample is empty is left out. Both are logged as warnings."""
    kept = []
    for r in rows:
        flags = r.get("finished") or [True] * len(r["responses"])  # a sidecar from before the flag
        pairs = [(s, f) for s, f in zip(r["responses"], flags, strict=True) if s]
        kept.append({**r, "responses": [s for s, _ in pairs], "finished": [f for _, f in pairs]})
    empty = sum(len(r["responses"]) for r in rows) - sum(len(r["responses"]) for r in kept)
    if empty:
        log.warning("dropped %d empty response(s) (the model stopped at once)", empty)
    lost = [r["prompt_id"] for r in kept if not r["responses"]]
    if lost:
        log.warning("left out %d prompt(s) whose every sample was empty, e.g. %s", len(lost), lost[0])
    return [r for r in kept if r["responses"]]


def _append(path: Path, rows: list[dict[str, Any]]) -> None:
    with writing(path), path.open("a", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
