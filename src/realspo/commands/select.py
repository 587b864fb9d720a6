"""``realspo select``: choose which response pairs to label (or train on), following REAL.

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

import argparse
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from realspo.chat_format import CHAT_TEMPLATE_HELP, CHAT_TEMPLATE_MODES
from realspo.config import add_options, check_seed, option, resolve
from realspo.errors import ConfigError, InputError, RealspoError
from realspo.formats.registry import format_names, load_groups
from realspo.output_lock import main_process_lock
from realspo.outputs import check_writable, write_rows
from realspo.schema import num_responses
from realspo.selection.budget import count_eligible, parse_budget, resolve_budget
from realspo.selection.rows import build_rows, response_keys, restore_indices, without_unfinished
from realspo.selection.strategies import (
    SKIP_FEW_DISTINCT,
    Selection,
    get_strategy,
    select_pairs,
    strategy_help,
    strategy_names,
)

EPILOG = """\
examples:
  realspo select --data hh.jsonl --model ./my-sft-model --strategy easy --budget 0.5 --out pairs.jsonl
  realspo select --data pool.jsonl --embedder st:/models/all-MiniLM-L6-v2 --budget 200 --out pairs.parquet
  realspo select --data pool.jsonl --embeddings emb.npy --strategy centroid --out pairs.jsonl
  realspo select --data pool.jsonl --model ./sft --policy ./round1 --strategy margin --budget 200 --out pairs.jsonl
  realspo select --data pool.jsonl --embeddings emb.npy --reward-model ./rm --strategy reward-gap --out pairs.jsonl
  realspo select --data pool.jsonl --embeddings emb.npy --strategy design --budget 0.1 --out pairs.jsonl
"""

# Options that only matter when a model embeds the responses (not with --embeddings).
EMBEDDING_OPTIONS = ("conditioned", "chat_template", "batch_size", "max_length", "device", "dtype",
                     "trust_remote_code", "allow_pickle", "save_embeddings", "resume",
                     "checkpoint_every")


@dataclass
class SelectConfig:
    data: str = option(help="input data: a .jsonl/.json/.parquet/.csv file, a dataset directory "
                            "or a hub dataset id", metavar="PATH", path="input")
    out: str = option(help="output table: .parquet -> Parquet, .csv -> CSV, anything else -> JSON Lines",
                      metavar="PATH", path="output")
    format: str = option("auto", "input format (auto detects it from the columns)",
                         choices=("auto", *format_names()))
    split: str = option("train", "split to read when --data is a dataset directory or hub id")
    model: str | None = option(None, "causal LM (directory or hub id) whose final hidden layer "
                                     "embeds the responses", metavar="PATH", path="input")
    embedder: str | None = option(None, "a sentence-transformers model instead, written st:PATH",
                                  metavar="st:PATH", path="input")
    embeddings: str | None = option(None, "precomputed embeddings instead (.npy or .safetensors, one "
                                          "row per response in input order)", metavar="FILE",
                                    path="input")
    strategy: str = option("easy", strategy_help(), choices=strategy_names())
    budget: str | None = option(None, "pairs to keep, ranked across the dataset: a count (100) or "
                                      "a fraction of the prompts (0.5); unset keeps one per prompt",
                                metavar="N|FRACTION")
    seed: int = option(0, "seed of the random strategy (and of design's random projection)")
    policy: str | None = option(None, "the current policy, for the implicit-reward margins of "
                                      "--strategy margin/margin-large (and design's weights)",
                                metavar="PATH", path="input")
    reference: str | None = option(None, "the reference model of the margins (unset: --model)",
                                   metavar="PATH", path="input")
    beta: float = option(0.1, "beta of the implicit reward beta (log pi - log pi_ref)")
    reward_model: str | None = option(None, "a one-output sequence-classifier reward model, for "
                                            "--strategy reward-gap/reward-uncertain",
                                      metavar="PATH", path="input")
    design_ridge: float = option(1.0, "--strategy design: ridge lambda > 0 in "
                                      "log det(lambda I + sum w z z^T)")
    pairs_per_prompt: int = option(1, "--strategy design: at most N pairs per prompt (the budget "
                                      "then counts pairs)")
    cache_dir: str | None = option(None, "cache of the reference's candidate log-probs (unset: no "
                                         "cache)", metavar="DIR")
    conditioned: bool = option(False, "embed prompt + response and pool the response tokens only "
                                      "(--model only)")
    chat_template: str = option("auto", CHAT_TEMPLATE_HELP + "; the prompt of --conditioned "
                                        "embeddings", choices=CHAT_TEMPLATE_MODES)
    drop_unfinished: bool = option(False, "leave out responses cut at the generation limit "
                                          "(finished: false in the candidates)")
    batch_size: int = option(16, "responses per embedding batch")
    max_length: int = option(512, "truncate embedded sequences to this many tokens")
    device: str | None = option(None, "embedding device: cpu, cuda, cuda:1, mps (None: the best available)")
    dtype: str = option("auto", "embedding dtype (auto: bf16/fp16 on GPU, fp32 on CPU)",
                        choices=("auto", "float32", "bfloat16", "float16"))
    trust_remote_code: bool = option(False, "allow model repositories to run their own code")
    allow_pickle: bool = option(False, "accept a --model directory whose weights are only pickled "
                                       ".bin files (unpickling can run code: trusted sources only)")
    save_embeddings: str | None = option(None, "also save the computed embeddings (.npy or "
                                               ".safetensors) for reuse with --embeddings",
                                         metavar="FILE", path="output")
    progress: bool = option(True, "show a progress bar while embedding")
    resume: bool = option(False, "reuse the rows an interrupted run saved in OUT.embeddings-partial/ "
                                 "(same data and embedding options); with --overwrite in its place "
                                 "that directory is cleared and embedding starts over")
    checkpoint_every: int = option(64, "save embedding progress (for --resume) every N batches")
    overwrite: bool = option(False, "replace existing output files")

    def reserved_paths(self) -> dict[str, str]:
        """The embedding progress ``OUT.embeddings-partial/``: a name select derives for itself."""
        return {"the embedding progress of --out": str(progress_dir(self.out))}

    def validate(self) -> None:
        sources = [f"--{n}" for n in ("model", "embedder", "embeddings") if getattr(self, n)]
        if len(sources) != 1:
            given = f"got {' and '.join(sources)}" if sources else "got none"
            raise ConfigError(f"give exactly one of --model, --embedder, --embeddings ({given})")
        if self.embedder is not None and (not self.embedder.startswith("st:") or len(self.embedder) < 4):
            raise ConfigError(f"--embedder: expected st:PATH (a sentence-transformers model), got "
                              f"{self.embedder!r}; use --model for a causal LM")
        if self.embeddings is not None:
            defaults = SelectConfig(data="", out="")
            changed = [n for n in EMBEDDING_OPTIONS if getattr(self, n) != getattr(defaults, n)]
            if changed:
                raise ConfigError(f"--{changed[0].replace('_', '-')} applies only when embedding "
                                  "(--model or --embedder), not with --embeddings")
        if self.embedder is not None and self.conditioned:
            raise ConfigError("--conditioned needs --model: sentence-transformers embed the response alone")
        if self.chat_template != "auto" and not self.conditioned:
            raise ConfigError("--chat-template applies only to --conditioned embeddings (the prompt "
                              "is embedded only then)")
        if self.batch_size < 1 or self.max_length < 1 or self.checkpoint_every < 1:
            raise ConfigError("--batch-size, --max-length and --checkpoint-every must be >= 1")
        check_seed(self.seed)
        self._validate_strategy_inputs()
        if self.budget is not None:
            parse_budget(self.budget)
        if self.save_embeddings is not None:
            if Path(self.save_embeddings).suffix.lower() not in (".npy", ".safetensors"):
                raise ConfigError(f"--save-embeddings: {self.save_embeddings} must end in .npy or .safetensors")
            if Path(self.save_embeddings).resolve() == Path(self.out).resolve():
                raise ConfigError("--save-embeddings and --out must be different files")
        if Path(self.out).resolve() == Path(self.data).resolve():
            raise ConfigError(f"--out {self.out} would replace the input data")

    def _validate_strategy_inputs(self) -> None:
        strategy = get_strategy(self.strategy)
        if "implicit_rewards" in strategy.needs and self.policy is None:
            raise ConfigError(f"--strategy {self.strategy} needs --policy PATH (the current policy; "
                              "--model or --reference is the reference)")
        if "rewards" in strategy.needs and self.reward_model is None:
            raise ConfigError(f"--strategy {self.strategy} needs --reward-model PATH")
        for flag, value, need in (("--policy", self.policy, "implicit_rewards"),
                                  ("--reference", self.reference, "implicit_rewards"),
                                  ("--cache-dir", self.cache_dir, "implicit_rewards"),
                                  ("--reward-model", self.reward_model, "rewards")):
            if value is not None and not strategy.uses(need):
                raise ConfigError(f"{flag} does not apply to --strategy {self.strategy}")
        if self.policy is not None and self.reference is None and self.model is None:
            raise ConfigError("--policy needs a reference model: --model, or --reference with "
                              "--embedder/--embeddings")
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise ConfigError(f"--beta must be > 0, got {self.beta}")
        if not (math.isfinite(self.design_ridge) and self.design_ridge > 0):
            raise ConfigError(f"--design-ridge must be > 0, got {self.design_ridge}")
        if self.pairs_per_prompt < 1:
            raise ConfigError(f"--pairs-per-prompt must be >= 1, got {self.pairs_per_prompt}")
        if not strategy.joint and (self.design_ridge != 1.0 or self.pairs_per_prompt != 1):
            raise ConfigError(f"--design-ridge and --pairs-per-prompt apply only to --strategy "
                              f"design, not {self.strategy}")

    def reference_name(self) -> str | None:
        """The reference model of the margins: ``--reference``, else ``--model``."""
        return self.reference if self.reference is not None else self.model

    def embedder_name(self) -> str | None:
        """The embedder spec for :func:`realspo.embeddings.embed.embed_responses` (None: from a file)."""
        return self.model if self.model is not None else self.embedder


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


def _is_main_process() -> bool:
    # Under torchrun / accelerate launch every process gets all embeddings; one writes.
    return int(os.environ.get("RANK", "0")) == 0


def progress_dir(out: str | Path) -> Path:
    """Where embedding progress is saved while embedding for ``out`` (removed on success)."""
    out = Path(out)
    return out.with_name(out.name + ".embeddings-partial")


def select_from_config(cfg: SelectConfig) -> SelectResult:
    """Load, embed, select and write, as ``realspo select`` does; returns what was done."""
    check_writable(cfg.out, cfg.overwrite)
    if cfg.save_embeddings:
        check_writable(cfg.save_embeddings, cfg.overwrite)
    with main_process_lock(cfg.out):  # one run per output, before any work
        return _select_locked(cfg)


def _select_locked(cfg: SelectConfig) -> SelectResult:  # (pick_device checks --device)
    from realspo.embeddings.embed import embed_responses, load_embeddings
    from realspo.embeddings.progress import check_interrupted_run, remove_progress

    check_scorers(cfg)
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
    """Before any model loads: see :func:`realspo.training.candidate_scores.check_scorers`."""
    if cfg.policy is not None or cfg.reward_model is not None:
        from realspo.training.candidate_scores import check_scorers as check

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
    from realspo.training.candidate_scores import shared_embed_and_score

    return shared_embed_and_score(cfg.model, work, max_length=cfg.max_length, batch_size=cfg.batch_size,
                                  device=cfg.device, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code,
                                  allow_pickle=cfg.allow_pickle)


def pair_scores(cfg: SelectConfig, groups: list, reference_logps: np.ndarray | None = None
                ) -> dict[str, np.ndarray]:
    """The per-response inputs the strategy reads (:func:`realspo.training.candidate_scores.candidate_scores`)."""
    if cfg.policy is None and cfg.reward_model is None:
        return {}
    from realspo.training.candidate_scores import candidate_scores

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
    if _is_main_process():
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


# What the non-REAL strategies rank by, for the summary (REAL's strategies: the similarity).
RANKED_BY = {"margin": "|margin|", "margin-large": "|margin|", "design": "gain",
             "reward-gap": "reward gap", "reward-uncertain": "|p - 1/2|"}


def _quantile_line(label: str, values: np.ndarray) -> str:
    if values.size == 0:
        return f"{label:<10}" + "       -" * 5
    qs = np.quantile(values.astype(np.float64), [0.0, 0.25, 0.5, 0.75, 1.0])
    return f"{label:<10}" + "".join(f"{q:8.4f}" for q in qs)


def format_summary(result: SelectResult, cfg: SelectConfig) -> str:
    """The short report printed after a run: counts, drops, similarity quantiles."""
    sel = result.selection
    skipped = sel.skipped.get(SKIP_FEW_DISTINCT, 0)
    budget = "all prompts" if cfg.budget is None else f"budget {cfg.budget}"
    lines = [
        f"format: {result.format} ({'auto-detected' if cfg.format == 'auto' else 'given'})",
        *(f"input rows skipped: {n} ({reason})" for reason, n in result.rows_skipped.items()),
        f"prompts read: {result.prompts}; skipped {skipped} ({SKIP_FEW_DISTINCT})",
        *([f"responses left out: {result.unfinished_dropped} (cut at the generation limit, "
           "--drop-unfinished)"] if cfg.drop_unfinished else []),
        f"pairs selected: {len(sel)} of {result.eligible} eligible prompts "
        f"(strategy {cfg.strategy}, {budget})",
    ]
    for reason, n in result.dropped.items():
        lines.append(f"pairs dropped: {n} ({reason})")
    lines.append(f"pairs written: {len(result.rows)} {result.kind} rows -> {result.out}")
    lines.append("similarity" + "".join(f"{h:>8}" for h in ("min", "25%", "50%", "75%", "max")))
    lines.append(_quantile_line("selected", sel.similarity))
    lines.append(_quantile_line("all pairs", sel.all_similarities))
    if sel.key is not None and cfg.strategy in RANKED_BY:
        lines.append(_quantile_line(RANKED_BY[cfg.strategy], sel.key))
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    add_options(parser, SelectConfig)


def run(args: argparse.Namespace) -> int:
    cfg = resolve(SelectConfig, args)
    result = select_from_config(cfg)
    if _is_main_process():
        print(format_summary(result, cfg))
    return 0
