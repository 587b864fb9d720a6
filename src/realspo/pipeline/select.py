"""The pipeline of ``realspo select``: choose which response pairs to label (or train on), following REAL.

Three stages, each usable alone from Python:

1. :func:`realspo.formats.registry.load_groups`: any supported file / dataset -> prompt groups;
2. :func:`realspo.embeddings.embed.embed_responses` (or :func:`~realspo.embeddings.embed.load_embeddings`):
   one unit vector per response;
3. :func:`realspo.selection.strategies.select_pairs` + :func:`realspo.selection.rows.build_rows`: one pair per
   prompt, ranked across the dataset and cut to the budget, then output rows.

:func:`select_from_config` runs them in order, as the command does. The output path is checked
before anything expensive, and nothing is written unless every stage succeeded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from realspo.errors import InputError, RealspoError
from realspo.formats.registry import load_groups
from realspo.output_lock import main_process_lock
from realspo.outputs import check_writable, write_rows
from realspo.pipeline.select_config import SelectConfig, progress_dir
from realspo.schema import num_responses
from realspo.selection.budget import count_eligible, resolve_budget
from realspo.selection.rows import build_rows, response_keys, restore_indices, without_unfinished
from realspo.selection.strategies import Selection, select_pairs


@dataclass
class SelectResult:
    """What :func:`select_from_config` did: enough for the summary and for tests."""

    format: str
    prompts: int
    eligible: int
    kind: str
    rows: list[dict]
    dropped: dict[str, int]
    selection: Selection
    out: Path
    rows_skipped: dict[str, int] = field(default_factory=dict)  # input rows the reader skipped
    unfinished_dropped: int = 0  # responses left out by --drop-unfinished


def is_main_process() -> bool:
    # Under torchrun / accelerate launch every process gets all embeddings; one writes.
    return int(os.environ.get("RANK", "0")) == 0


def select_from_config(cfg: SelectConfig) -> SelectResult:
    """Load, embed, select and write, as ``realspo select`` does; returns what was done."""
    check_writable(cfg.out, cfg.overwrite)
    if cfg.save_embeddings:
        check_writable(cfg.save_embeddings, cfg.overwrite)
    rows_skipped: dict[str, int] = {}
    groups, fmt = load_groups(cfg.data, cfg.format, cfg.split, skipped=rows_skipped)
    work, origin, cut = groups, None, 0  # the groups selected from (--drop-unfinished: no cut ones)
    if cfg.drop_unfinished:
        work, _, origin, cut = without_unfinished(groups, None)
    sizes = [len(g.responses) for g in work]
    keys = response_keys(work)
    eligible = count_eligible(sizes, keys)
    if eligible == 0:
        raise InputError(cfg.data, f"none of the {len(work)} prompts has two distinct responses"
                                   + (f" ({cut} cut responses left out)" if cut else "")
                                   + "; nothing to select")
    # a budget too large fails before embedding (design: up to --pairs-per-prompt per prompt)
    resolve_budget(cfg.budget, eligible * cfg.pairs_per_prompt)
    check_scorers(cfg)  # the scoring models' configs, before any model loads
    with main_process_lock(cfg.out):  # one run per output, before any work
        return _embed_select_write(cfg, groups, work, origin, cut, fmt, eligible, rows_skipped)


def _embed_select_write(cfg: SelectConfig, groups: list, work: list, origin: Any, cut: int, fmt: str,
                        eligible: int, rows_skipped: dict[str, int]) -> SelectResult:
    """The work of :func:`select_from_config` once inputs and outputs are checked and the
    output is locked (``pick_device`` checks ``--device`` when a model loads)."""
    # inputs and outputs are checked: now torch and the models
    from realspo.embeddings.embed import embed_responses, load_embeddings
    from realspo.embeddings.progress import check_interrupted_run, remove_progress

    emb, reference_logps = None, None
    if cfg.embeddings:
        emb = load_embeddings(cfg.embeddings, num_responses(groups))
    else:
        check_interrupted_run(progress_dir(cfg.out), resume=cfg.resume, overwrite=cfg.overwrite)
        shared = shared_pass(cfg, work)
        if shared is not None:
            emb, reference_logps = shared
    if emb is None:
        # every response when the embeddings are saved (a file matching the data), else the kept ones
        emb = embed_responses(
            groups if cfg.save_embeddings else work, cfg.embedder_name() or "",
            conditioned=cfg.conditioned, chat_template=cfg.chat_template, batch_size=cfg.batch_size,
            max_length=cfg.max_length, device=cfg.device, dtype=cfg.dtype,
            trust_remote_code=cfg.trust_remote_code, allow_pickle=cfg.allow_pickle,
            show_progress=cfg.progress, checkpoint=progress_dir(cfg.out), resume=cfg.resume,
            checkpoint_every=cfg.checkpoint_every,
            served=cfg.check_served(cfg.embedder, "--embedder", cfg.base_url, "--base-url"),
        )
    try:
        return _select_and_write(cfg, groups, work, origin, cut, fmt, emb, eligible, rows_skipped,
                                 reference_logps)
    except RealspoError:
        # An input error found after embedding: the corrected rerun embeds other texts, which
        # could not resume from the sidecar, so it must not be refused for it. (A kill, Ctrl-C
        # or an environment failure such as a full disk keeps it, for --resume.)
        if not cfg.embeddings:
            remove_progress(progress_dir(cfg.out))
        raise


def check_scorers(cfg: SelectConfig) -> None:
    """Before any model loads: see :func:`realspo.pipeline.candidate_scores.check_scorers`."""
    if cfg.policy is not None or cfg.reward_model is not None:
        from realspo.pipeline.candidate_scores import check_scorers as check

        check(cfg.policy, cfg.reference_name(), cfg.reward_model, trust_remote_code=cfg.trust_remote_code)


def shared_pass(cfg: SelectConfig, work: list) -> tuple[np.ndarray, np.ndarray] | None:
    """The embeddings and the reference log-probs of ``work`` from one forward per candidate,
    when the embedding model is the reference (``--model``, ``--conditioned``, margins with
    ``--policy`` and no ``--reference``, the default chat template) in one process without
    ``--resume`` or ``--cache-dir`` (a cached reference pass is cheaper still); else (or when a
    sequence is too long for one pass) None: separate passes."""
    if not (cfg.model and cfg.conditioned and cfg.policy and cfg.reference is None
            and cfg.chat_template == "auto" and not cfg.resume and int(os.environ.get("WORLD_SIZE", "1")) == 1
            and not (cfg.save_embeddings and cfg.drop_unfinished) and cfg.cache_dir is None):
        return None
    from realspo.pipeline.candidate_scores import shared_embed_and_score

    return shared_embed_and_score(cfg.model, work, max_length=cfg.max_length, batch_size=cfg.batch_size,
                                  device=cfg.device, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code,
                                  allow_pickle=cfg.allow_pickle)


def pair_scores(cfg: SelectConfig, groups: list, reference_logps: np.ndarray | None = None
                ) -> dict[str, np.ndarray]:
    """The per-response inputs the strategy reads (:func:`realspo.pipeline.candidate_scores.candidate_scores`)."""
    if cfg.policy is None and cfg.reward_model is None:
        return {}
    from realspo.pipeline.candidate_scores import candidate_scores

    return candidate_scores(groups, policy=cfg.policy, reference=cfg.reference_name(), beta=cfg.beta,
                            reward_model=cfg.reward_model, cache_dir=cfg.cache_dir, device=cfg.device,
                            dtype=cfg.dtype, batch_size=cfg.batch_size, progress=cfg.progress,
                            trust_remote_code=cfg.trust_remote_code, allow_pickle=cfg.allow_pickle,
                            reference_logps=reference_logps)


def _select_and_write(cfg: SelectConfig, groups: list, work: list, origin: Any, cut: int,
                      fmt: str, emb: np.ndarray, eligible: int, rows_skipped: dict[str, int],
                      reference_logps: np.ndarray | None = None) -> SelectResult:
    """Select from ``work`` (the groups less cut responses with --drop-unfinished; ``origin``
    maps back to ``groups``' indices) and write the rows."""
    from realspo.embeddings.embed import save_embeddings

    sizes, keys = [len(g.responses) for g in work], response_keys(work)
    all_emb = emb
    if origin is not None and emb.shape[0] != num_responses(work):
        _, emb, _, _ = without_unfinished(groups, emb)
    scores = pair_scores(cfg, work, reference_logps)
    selection = select_pairs(emb, sizes, cfg.strategy, cfg.budget, seed=cfg.seed, response_keys=keys,
                             design_ridge=cfg.design_ridge, pairs_per_prompt=cfg.pairs_per_prompt,
                             **scores)
    if origin is not None:
        selection = restore_indices(selection, origin)
    rows, dropped, kind = build_rows(groups, selection, cfg.strategy)
    if not rows:
        reasons = ", ".join(f"{n} {r}" for r, n in dropped.items())
        raise InputError(cfg.data, f"all {len(selection)} selected pairs were dropped ({reasons}); "
                                   "nothing to write")
    if is_main_process():
        if cfg.save_embeddings:
            # .npy has no room for metadata; safetensors keeps what produced the rows
            meta = {"embedder": cfg.embedder_name() or "", "conditioned": str(cfg.conditioned)}
            save_embeddings(cfg.save_embeddings, all_emb, overwrite=cfg.overwrite,
                            metadata=meta if cfg.save_embeddings.lower().endswith(".safetensors") else None)
        write_rows(cfg.out, rows, overwrite=cfg.overwrite)
        if not cfg.embeddings:
            from realspo.embeddings.progress import remove_progress

            remove_progress(progress_dir(cfg.out))  # the result is safely written
    return SelectResult(fmt, len(groups), eligible, kind, rows, dropped, selection, Path(cfg.out),
                        rows_skipped, cut)


