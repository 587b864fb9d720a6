"""What ``bench_training.py`` and ``smollm2.py`` share: prose-like synthetic text, summaries of
token counts, and one side of the realspo-vs-TRL comparison run in a fresh interpreter (which
runs ``bench_training.py --side``). Kept apart so that neither of the two imports the other's
module for it."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import string
import subprocess
import sys
from pathlib import Path

import numpy as np

_RUNS = itertools.count()


def _stopwords() -> list[str]:
    from importlib.resources import files

    text = files("realspo").joinpath("data/stopwords_en.txt").read_text(encoding="utf-8")
    return [w for w in text.split() if not w.startswith("#") and w.isalpha()]


def make_lexicon(seed: int = 0, words: int = 3000) -> list[str]:
    rng = np.random.default_rng(seed)
    letters = np.array(list(string.ascii_lowercase))
    return sorted({"".join(rng.choice(letters, int(rng.integers(4, 10)))) for _ in range(words)})


def make_text(rng: np.random.Generator, lexicon: list[str], stop: list[str], n_words: int) -> str:
    """``n_words`` words of prose-like text: runs of 1-3 content words between stopwords, with
    commas and full stops, so RAKE finds key phrases (SPO's degree variants need them)."""
    out: list[str] = []
    while len(out) < n_words:
        out.extend(rng.choice(lexicon, int(rng.integers(1, 4))).tolist())
        out.extend(rng.choice(stop, int(rng.integers(1, 3))).tolist())
        if rng.random() < 0.15:
            out[-1] += "," if rng.random() < 0.5 else "."
    text = " ".join(out[:n_words])
    return text.rstrip(",.") + "."


def lengths(rng: np.random.Generator, n: int, median: float, sigma: float, lo: int, hi: int) -> np.ndarray:
    """``n`` lengths round(LogNormal(ln median, sigma)) clipped to [lo, hi]."""
    return np.clip(np.round(rng.lognormal(np.log(median), sigma, n)), lo, hi).astype(int)


def describe(values: list[int]) -> str:
    v = np.asarray(values)
    return f"median {np.median(v):.0f}, mean {v.mean():.0f}, p90 {np.quantile(v, 0.9):.0f}, max {v.max()}"


def median_of(runs: list[dict], key: str) -> float:
    return float(np.median([r[key] for r in runs]))



SHARED = ("model", "lora_r", "pass_tokens", "pairs", "batch_size", "max_length", "hidden", "layers", "heads", "vocab", "prompt_words",
          "response_words", "max_words", "warmup_steps", "logging_steps", "threads", "seed")


def shared_argv(args: argparse.Namespace) -> list[str]:
    return [x for name in SHARED if getattr(args, name) is not None
            for x in (f"--{name.replace('_', '-')}", str(getattr(args, name)))]


def run_side(side: str, workdir: Path, args: argparse.Namespace, options: dict | None = None) -> dict:
    """Launch one side in a fresh interpreter (its own peak RSS); its JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve().with_name("bench_training.py")), "--side", side, "--workdir", str(workdir),
           *shared_argv(args)]
    if options:
        cmd += ["--options", json.dumps(options)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", TQDM_DISABLE="1",
               OMP_NUM_THREADS=str(args.threads),
               HF_DATASETS_CACHE=str(workdir / f"hf-datasets-{next(_RUNS)}"),  # TRL's precompute: fresh
               WANDB_DISABLED="true")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"{side} side failed (exit {proc.returncode})")
    return json.loads(lines[-1].removeprefix("RESULT "))
