"""Options of ``realspo select``: one dataclass, validated once (see :mod:`realspo.config`).
Nothing here imports torch: ``realspo select --help`` reads it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from realspo.chat_format import CHAT_TEMPLATE_HELP, CHAT_TEMPLATE_MODES
from realspo.config import check_seed, option
from realspo.errors import ConfigError
from realspo.formats.registry import format_names
from realspo.selection.budget import parse_budget
from realspo.selection.strategies import get_strategy, strategy_help, strategy_names
from realspo.served.options import ServedFields, is_served

# Options that only matter when a model embeds the responses (not with --embeddings).
EMBEDDING_OPTIONS = ("conditioned", "chat_template", "batch_size", "max_length", "device", "dtype",
                     "trust_remote_code", "allow_pickle", "save_embeddings", "resume",
                     "checkpoint_every")


@dataclass
class SelectConfig(ServedFields):
    data: str = option(help="input data: a .jsonl/.json/.parquet/.csv file, a dataset directory "
                            "or a hub dataset id", metavar="PATH", path="input")
    out: str = option(help="output table: .parquet -> Parquet, .csv -> CSV, anything else -> JSON Lines",
                      metavar="PATH", path="output")
    format: str = option("auto", "input format (auto detects it from the columns)",
                         choices=("auto", *format_names()))
    split: str = option("train", "split to read when --data is a dataset directory or hub id")
    model: str | None = option(None, "causal LM (directory or hub id) whose final hidden layer "
                                     "embeds the responses", metavar="PATH", path="input")
    embedder: str | None = option(None, "a sentence-transformers model instead, written st:PATH, "
                                        "or a model behind a server's /embeddings, openai:NAME "
                                        "(--base-url)", metavar="st:PATH", path="input")
    base_url: str | None = option(None, "--embedder openai:NAME: the server's OpenAI-compatible "
                                        "base URL, e.g. http://127.0.0.1:8000/v1", metavar="URL")
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
        self.check_served(self.embedder, "--embedder", self.base_url, "--base-url")
        sentence_model = bool(self.embedder) and str(self.embedder).startswith("st:") \
            and len(str(self.embedder)) > 3
        if self.embedder is not None and not (sentence_model or is_served(self.embedder)):
            raise ConfigError(f"--embedder: expected st:PATH (a sentence-transformers model) or "
                              f"openai:NAME, got {self.embedder!r}; use --model for a causal LM")
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


def progress_dir(out: str | Path) -> Path:
    """Where embedding progress is saved while embedding for ``out`` (removed on success)."""
    out = Path(out)
    return out.with_name(out.name + ".embeddings-partial")
