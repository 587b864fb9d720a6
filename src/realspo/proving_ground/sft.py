"""The proving ground's SFT model: built on first use, cached by its config, loaded like any model.

:func:`get_sft_model` returns the directory of a ``save_pretrained`` (safetensors) Llama-style
causal LM with its byte-level BPE tokenizer, both trained here, offline, on the world's
mixed-quality corpus (:attr:`World.sft_corpus`). The directory is
``<cache>/<key>``, where ``<cache>`` is ``$REALSPO_CACHE/proving-ground`` (default
``~/.cache/realspo/proving-ground``) and ``<key>`` hashes the world config, the SFT config and
:data:`BUILD_VERSION`; a second call with the same configs returns it without training. The
build writes into a temporary directory that is renamed into place (:func:`outputs.atomic_dir`)
under a file lock, so a killed or concurrent build never leaves a half-written model.

Training is plain supervised fine-tuning: the next-token cross-entropy on the response tokens
and a final EOS (prompt tokens are masked), AdamW, linear warm-up then cosine decay. The
prompt and response are tokenised separately and concatenated, which is how generation sees
them (prompt ids, then sampled ids). ``build_info.json`` beside the weights records the
configs, the parameter count, the loss curve and the build time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from realspo.errors import ConfigError
from realspo.outputs import atomic_dir
from realspo.proving_ground.world import World, WorldConfig, build_world

if TYPE_CHECKING:  # torch is imported where a model is built: `realspo demo --help` reads SFTConfig
    import torch

log = logging.getLogger(__name__)

# Bump when the world's text or the training recipe changes, so old cached models are not reused.
BUILD_VERSION = "1"
CACHE_ENV = "REALSPO_CACHE"


@dataclass(frozen=True)
class SFTConfig:
    """Size and training recipe of the SFT model (all of it enters the cache key)."""

    hidden_size: int = 192
    num_layers: int = 3
    num_heads: int = 4
    intermediate_size: int = 512
    vocab_size: int = 1024        # the tokenizer's target size; the world needs few words
    max_length: int = 96          # tokens of prompt + response (+ EOS) kept for training
    steps: int = 600
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 20
    weight_decay: float = 0.01
    seed: int = 0

    def validate(self) -> None:
        positive = ("hidden_size", "num_layers", "num_heads", "vocab_size", "max_length", "steps",
                    "batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"proving ground SFT: {name} must be >= 1")
        if self.hidden_size % self.num_heads:
            raise ConfigError("proving ground SFT: hidden_size must be divisible by num_heads")
        if not self.lr > 0:
            raise ConfigError("proving ground SFT: lr must be > 0")


def default_cache_dir() -> Path:
    """``$REALSPO_CACHE/proving-ground``, or ``~/.cache/realspo/proving-ground``."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "realspo"
    return Path(root).expanduser() / "proving-ground"


def cache_key(world_cfg: WorldConfig, sft_cfg: SFTConfig) -> str:
    """16 hex chars of SHA-256 over the two configs and :data:`BUILD_VERSION`. A world's
    ``coupling`` enters only when it is not 0 and ``kind`` only when it is not ``default``, so
    the default world keeps its models' keys."""
    world = asdict(world_cfg)
    if not world["coupling"]:
        del world["coupling"]
    if world["kind"] == "default":
        del world["kind"]
    blob = json.dumps({"version": BUILD_VERSION, "world": world, "sft": asdict(sft_cfg)},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def get_sft_model(world_cfg: WorldConfig | None = None, sft_cfg: SFTConfig | None = None,
                  cache_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """The directory of the SFT model for these configs: cached, or built now and cached.

    ``cache_dir`` holds one subdirectory per cache key (default :func:`default_cache_dir`).
    Load the result with :func:`realspo.models.load_model` / ``load_tokenizer``.
    """
    world_cfg, sft_cfg = world_cfg or WorldConfig(), sft_cfg or SFTConfig()
    sft_cfg.validate()
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = root / cache_key(world_cfg, sft_cfg)
    if _complete(path):
        return path
    root.mkdir(parents=True, exist_ok=True)
    with _build_lock(root / f".{path.name}.lock"):
        if _complete(path):  # another process built it while we waited
            return path
        log.info("building the proving-ground SFT model in %s", path)
        with atomic_dir(path, overwrite=True, kind="proving-ground-sft", replace_unmarked=True) as tmp:
            train_sft(build_world(world_cfg), sft_cfg, tmp, progress=progress)
    return path


def _complete(path: Path) -> bool:
    return (path / "build_info.json").is_file() and any(path.glob("*.safetensors"))


@contextlib.contextmanager
def _build_lock(lock_path: Path):
    """An exclusive advisory lock (POSIX ``flock``); a no-op where ``fcntl`` is missing."""
    try:
        import fcntl
    except ImportError:  # Windows: atomic_dir still keeps every build whole
        yield
        return
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def encode_corpus(tokenizer, corpus: list[tuple[str, str]], max_length: int
                  ) -> list[tuple[list[int], int]]:
    """Token ids of prompt + response + EOS, and the number of prompt tokens, per pair."""
    prompts = tokenizer([p for p, _ in corpus], add_special_tokens=False)["input_ids"]
    responses = tokenizer([r for _, r in corpus], add_special_tokens=False)["input_ids"]
    return [((p + r + [tokenizer.eos_token_id])[:max_length], len(p))
            for p, r in zip(prompts, responses, strict=True)]


def collate(examples: list[tuple[list[int], int]], pad_id: int
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (-100 off the response).

    All three are ``(batch, longest sequence)``.
    """
    import torch

    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, n_prompt) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
        labels[row, n_prompt: len(ids)] = torch.tensor(ids[n_prompt:])
    return input_ids, mask, labels


def length_grouped_batches(lengths: list[int], batch_size: int, rng: random.Random
                           ) -> list[list[int]]:
    """One epoch of batches of similar length (less padding), in random order.

    Shuffle, sort windows of 16 batches by length, cut them into batches, shuffle the batches.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = 16 * batch_size
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lengths.__getitem__)
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def train_sft(world: World, cfg: SFTConfig, out_dir: str | os.PathLike,
              progress: bool = True) -> dict:
    """Train tokenizer and model on ``world.sft_corpus``; save both and ``build_info.json``."""
    import torch
    from tqdm.auto import tqdm

    from realspo.toy_models import build_causal_lm, train_tokenizer

    start, cpu_start = time.perf_counter(), time.process_time()
    corpus = world.sft_corpus
    tokenizer = train_tokenizer([p + r for p, r in corpus], vocab_size=cfg.vocab_size)
    examples = encode_corpus(tokenizer, corpus, cfg.max_length)
    model = build_causal_lm(
        len(tokenizer), hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
        num_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
        max_positions=max(cfg.max_length, 256), seed=cfg.seed,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98),
                                  weight_decay=cfg.weight_decay)

    def lr_factor(step: int) -> float:  # linear warm-up, then cosine decay to 10%
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    rng = random.Random(cfg.seed)
    batches: list[list[int]] = []
    losses: list[float] = []
    model.train()
    bar = tqdm(range(cfg.steps), desc="proving-ground SFT", disable=not progress)
    for _ in bar:
        if not batches:
            batches = length_grouped_batches([len(ids) for ids, _ in examples], cfg.batch_size, rng)
        batch = batches.pop()
        input_ids, mask, labels = collate([examples[i] for i in batch], tokenizer.pad_token_id)
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(round(loss.item(), 4))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    out = Path(out_dir)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    info = {
        "build_version": BUILD_VERSION, "world": asdict(world.config), "sft": asdict(cfg),
        "parameters": sum(p.numel() for p in model.parameters()),
        "corpus_pairs": len(corpus), "final_loss": losses[-1] if losses else None,
        "losses": losses, "seconds": round(time.perf_counter() - start, 2),
        "cpu_seconds": round(time.process_time() - cpu_start, 2),
        "torch_threads": torch.get_num_threads(),
    }
    (out / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
