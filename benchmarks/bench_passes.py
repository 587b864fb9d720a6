"""Benchmark: the embedding and reference log-prob passes on SmolLM2-135M-Instruct, against the
matmul ceiling of this machine measured with the model's own shapes in the same run.

- embedding pass: :func:`realspo.embeddings.embed.embed_with_causal_lm` with prompts
  (``select --conditioned``): the transformer body over prompt + response, response tokens pooled.
- reference pass: :func:`realspo.training.reference.score_sequences` (the training reference
  pass and ``select --strategy margin``'s log-probs): the body, then the LM head at response
  positions only.

FLOPs (forward, multiply-adds counted as 2): ``2 * N_body * tokens`` for the body, N_body the
parameters of the decoder layers (the linear layers' weights; norms are negligible, the
embedding table is a lookup), plus ``2 * hidden * vocab`` per scored response token for the LM
head; attention's score/value products (``4 * layers * hidden * T`` per token, about 6% at
T = 150) are left out, so the utilisation is a slight underestimate. Real tokens only (padding
is not counted as work). The ceiling: ``torch.mm`` at the shapes the passes multiply (tokens x
hidden by hidden x {q, k, v, o, up, gate, down} widths and by the LM head), weighted by the
FLOPs each shape does in the model.

When the embedding model is the reference model (``select --strategy margin --conditioned``
without ``--reference``), one forward per candidate serves both passes
(:func:`realspo.pipeline.candidate_scores.embed_and_score`); the table times it against the
two passes and checks that it gives their embeddings (1e-4 cosine) and log-probs (1e-4 relative).

    .venv/bin/python benchmarks/bench_passes.py [--responses 48] [--threads 1] [--no-write]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import numpy as np
import torch
from common import machine, markdown_table, section, set_threads, write_section
from real_model import smollm2_dir

TARGET = 0.60  # the target: >= 60% of the matmul ceiling
WORDS = ("the model answers each question with care and a short example so that the reader "
         "can follow every step of the reasoning from the first idea to the final result").split()


def texts(n: int, seed: int) -> tuple[list[str], list[str]]:
    """``n`` (prompt, response) texts of plain English words; responses 40-160 words."""
    rng = np.random.default_rng(seed)
    prompts = [" ".join(rng.choice(WORDS, int(rng.integers(8, 30)))) + "?" for _ in range(n)]
    responses = [" ".join(rng.choice(WORDS, int(rng.integers(40, 160)))) + "." for _ in range(n)]
    return prompts, responses


def linear_shapes(model) -> tuple[dict[tuple[int, int], int], tuple[int, int]]:
    """``({(in, out): count} of the decoder layers' linear maps, (in, out) of the LM head)``."""
    body: dict[tuple[int, int], int] = {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and ".layers." in f".{name}":
            body[(m.in_features, m.out_features)] = body.get((m.in_features, m.out_features), 0) + 1
    head = model.get_output_embeddings()
    return body, (head.in_features, head.out_features)


def matmul_rates(shapes: list[tuple[int, int]], rows: int, repeats: int = 5) -> dict[tuple[int, int], float]:
    """GFLOP/s of ``torch.mm`` (rows x k) @ (k x n) for each ``(k, n)``: best of ``repeats``."""
    rates = {}
    for k, n in shapes:
        a, b = torch.randn(rows, k), torch.randn(k, n)
        torch.mm(a, b)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
        rates[(k, n)] = 2.0 * rows * k * n / best / 1e9
    return rates


def ceiling(flops: dict[tuple[int, int], float], rates: dict[tuple[int, int], float]) -> float:
    """GFLOP/s of doing ``flops`` (per shape) at ``rates``: total FLOPs over total time."""
    return sum(flops.values()) / 1e9 / sum(f / 1e9 / rates[s] for s, f in flops.items())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--responses", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2, help="timed runs per pass (best reported)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--model", default=None, help="model directory (default: SmolLM2-135M-Instruct)")
    p.add_argument("--write", action=argparse.BooleanOptionalAction, default=True,
                   help="update the passes section of BENCHMARKS.md")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = set_threads(args.threads)
    logging.disable(logging.WARNING)
    from realspo.embeddings.embed import embed_with_causal_lm
    from realspo.models import load_model, load_tokenizer
    from realspo.pipeline.candidate_scores import embed_and_score
    from realspo.schema import PromptGroup
    from realspo.training.reference import score_sequences
    from realspo.training.tokenization import tokenize_response

    info = machine()
    path = args.model or smollm2_dir()
    tokenizer = load_tokenizer(path)
    model = load_model(path, "causal-lm", dtype=torch.float32, device="cpu").eval()
    prompts, responses = texts(args.responses, seed=0)
    sequences = []
    for prompt, response in zip(prompts, responses, strict=True):
        ids, start, _ = tokenize_response(tokenizer, prompt, response, 1024, "keep_end")
        sequences.append((ids, start))
    tokens = sum(len(s) for s, _ in sequences)
    scored = sum(len(s) - start for s, start in sequences)
    body, head_shape = linear_shapes(model)
    n_body = sum(k * n * c for (k, n), c in body.items())
    head = head_shape[0] * head_shape[1]
    mean_batch_tokens = int(tokens / len(sequences) * args.batch_size)
    rates = matmul_rates([*body, head_shape], mean_batch_tokens)
    body_flops = {s: 2.0 * k * n * c * tokens for s, c in body.items() for k, n in [s]}
    flops = {"embedding": body_flops, "reference": {**body_flops, head_shape: 2.0 * head * scored}}
    work = {name: sum(f.values()) for name, f in flops.items()}
    ceilings = {name: ceiling(f, rates) for name, f in flops.items()}
    passes = {
        "embedding": lambda: embed_with_causal_lm(model, tokenizer, responses, prompts,
                                                  batch_size=args.batch_size, max_length=1024,
                                                  show_progress=False),
        "reference": lambda: score_sequences(model, tokenizer, sequences, args.batch_size),
        "shared": lambda: embed_and_score(model, tokenizer, groups, batch_size=args.batch_size),
    }
    groups = [PromptGroup(f"p{i}", p, [r]) for i, (p, r) in enumerate(zip(prompts, responses, strict=True))]
    passes["embedding"]()  # warm-up
    seconds: dict[str, float] = {name: float("inf") for name in passes}
    results: dict[str, object] = {}
    for _ in range(max(1, args.repeats)):  # interleaved: drifting load hits every pass alike
        for name, fn in passes.items():
            start = time.perf_counter()
            results[name] = fn()
            seconds[name] = min(seconds[name], time.perf_counter() - start)
            print(f"  {name}: {time.perf_counter() - start:.2f} s", flush=True)
    shared_emb, shared_logps = results["shared"]
    cosine = float((shared_emb * results["embedding"]).sum(axis=1).min())
    relative = float(np.max(np.abs(shared_logps - results["reference"]) / np.abs(results["reference"])))
    agree = cosine > 1 - 1e-4 and relative < 1e-4
    print(f"shared pass vs the two passes: min cosine {cosine:.7f}, max relative log-prob "
          f"difference {relative:.1e}: {'equal' if agree else 'DIFFERENT'}")
    rows = []
    for name in ("embedding", "reference"):
        rate = work[name] / seconds[name] / 1e9
        rows.append([name, f"{seconds[name]:.2f}", f"{work[name] / 1e9:.1f}", f"{rate:.1f}",
                     f"{ceilings[name]:.1f}", f"{rate / ceilings[name]:.0%}"])
    both = seconds["embedding"] + seconds["reference"]
    rows.append(["embedding + reference (two passes)", f"{both:.2f}", "", "", "", ""])
    saved = both - seconds["shared"]
    rows.append(["shared: one forward for both (`embed_and_score`)",
                 f"{seconds['shared']:.2f} (saves {saved:.2f} s, {saved / both:.0%})", "", "", "", ""])
    table = markdown_table(["pass", "seconds (best)", "GFLOP", "GFLOP/s", "ceiling GFLOP/s",
                            "of ceiling"], rows)
    worst = min(work[n] / seconds[n] / 1e9 / ceilings[n] for n in ("embedding", "reference"))
    shown = ", ".join(f"{mean_batch_tokens}x{k} @ {k}x{n}: {r:.0f}" for (k, n), r in rates.items())
    print(f"torch.mm GFLOP/s: {shown}")
    print(table)
    print(f"lowest utilisation {worst:.0%} (target >= {TARGET:.0%}: {'met' if worst >= TARGET else 'NOT met'})")
    if args.write:
        sizes = {"model": f"SmolLM2-135M-Instruct, fp32, CPU; {n_body / 1e6:.1f}M body weights, "
                          f"LM head {head / 1e6:.1f}M",
                 "data": f"{len(sequences)} prompt + response sequences of English words, "
                         f"{tokens} tokens ({scored} response tokens scored)",
                 "batch size": str(args.batch_size), "threads": str(threads),
                 "matmul ceiling": "torch.mm at the model's shapes with the rows of a mean batch, "
                                   f"best of 5, GFLOP/s: {shown}; each pass's ceiling weights "
                                   "them by the FLOPs the pass does at each shape"}
        notes = ["FLOPs: 2 x body weights x real tokens, plus 2 x hidden x vocab per scored "
                 "response token (reference); attention products and padding not counted.",
                 "Shared pass (`realspo.pipeline.candidate_scores.embed_and_score`): one forward per "
                 f"candidate gives both; against the two passes: min cosine {cosine:.7f}, max "
                 f"relative log-prob difference {relative:.1e} ({'equal' if agree else 'DIFFERENT'} "
                 "within 1e-4)."]
        verdict = (f">= {TARGET:.0%} of the matmul ceiling: **{'met' if worst >= TARGET else 'not met'}** "
                   f"(lowest {worst:.0%})")
        write_section("passes", section("10. Embedding and reference passes vs the matmul ceiling "
                                        "(SmolLM2-135M)", sizes=sizes, table=table, verdict=verdict,
                                        notes=notes, info=info))
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
