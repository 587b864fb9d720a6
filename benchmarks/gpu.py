"""One command for the GPU benchmarks: training (LoRA and full), SPO overhead, embedding and
generation in bf16 on CUDA, each reported as model FLOP utilisation (MFU) against the device's
bf16 matmul ceiling measured in the same run.

    .venv/bin/python benchmarks/gpu.py                     # SmolLM2-135M-Instruct on cuda, bf16
    .venv/bin/python benchmarks/gpu.py --model ./my-1b --pairs 256 --steps 30
    .venv/bin/python benchmarks/gpu.py --smoke             # tiny model, CPU allowed: the code path only

What runs (all in-process, one model):

- ceiling: ``torch.mm`` in bf16 at 4096^3 and at the model's own linear shapes (best of 10);
- training: ``realspo train`` (:func:`realspo.training.loop.train`) with ``--dtype bfloat16``
  (accelerate bf16 autocast over fp32 master weights), LoRA r=16 and full fine-tune;
  MFU = tokens/s x FLOPs per token / ceiling, FLOPs per token ``6 N`` for a full fine-tune and
  ``4 N`` with LoRA (no weight gradients for the frozen base), N the model's weights;
  reference log-probs are computed before training and not timed;
- SPO: the same LoRA run with ``--spo`` at its defaults and with every level
  (``--spo-sample-levels`` all): step time and peak memory (``torch.cuda.max_memory_allocated``
  over the run, reset before it) over the plain DPO LoRA run's;
- embedding: :func:`realspo.embeddings.embed.embed_with_causal_lm` (conditioned), ``2 N_body``
  FLOPs per token;
- generation: ``realspo generate``'s loop against ``model.generate`` (``bench_generation.py``),
  tokens/s;
- served generation (vLLM): the same prompts through ``realspo generate --model openai:policy``
  against ``vllm serve MODEL`` started here (after the in-process model is freed), at
  ``--vllm-concurrency`` requests in flight; tokens/s from the replies' ``usage``. Runs when
  ``--vllm-python`` (default: this Python) can import ``vllm``; otherwise the row says so.

Attention is the model's default implementation in transformers (SDPA where the model has it;
the run prints which); realspo's training batches are padded per length group, not packed
padding-free, so padding tokens cost FLOPs that the MFU does not count. With ``--write`` the
results replace BENCHMARKS.md's GPU section (``<!-- bench:gpu -->``); ``--smoke`` never writes.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import markdown_table, quiet_training_run, section, write_section

WORDS = ("the model answers each question with care and a short example so that the reader "
         "can follow every step of the reasoning from the first idea to the final result").split()


def synthetic_pairs(path: Path, n: int, seed: int = 0) -> Path:
    """``n`` TRL preference rows of English words (responses 30-110 words)."""
    rng = np.random.default_rng(seed)

    def words(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS, int(rng.integers(lo, hi))))

    rows = [{"prompt": words(8, 30) + "?", "chosen": words(30, 110) + ".",
             "rejected": words(30, 110) + "."} for _ in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_ceiling(device: torch.device, dtype: torch.dtype, shapes: list[tuple[int, int]],
                   rows: int, square: int, repeats: int = 10) -> dict[str, float]:
    """TFLOP/s of ``torch.mm`` at ``square``^3 and at (rows x k) @ (k x n) for each shape."""
    out = {}
    for label, (m, k, n) in [(f"{square}^3", (square, square, square)),
                             *[(f"{rows}x{k} @ {k}x{n}", (rows, k, n)) for k, n in shapes]]:
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        torch.mm(a, b)
        sync(device)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            sync(device)
            best = min(best, time.perf_counter() - start)
        out[label] = 2.0 * m * k * n / best / 1e12
    return out


def linear_shapes(model: Any) -> list[tuple[int, int]]:
    return sorted({(m.in_features, m.out_features) for m in model.modules()
                   if isinstance(m, torch.nn.Linear)})


def weights(model: Any, body_only: bool = False) -> int:
    """Weights that multiply every token: the linear layers (the LM head unless ``body_only``)."""
    head = model.get_output_embeddings()
    return sum(m.weight.numel() for m in model.modules()
               if isinstance(m, torch.nn.Linear) and not (body_only and m is head))


def train_run(args: argparse.Namespace, data: Path, work: Path, name: str, **options: Any
              ) -> dict[str, float | None]:
    """One in-process ``realspo train``: median seconds per optimizer step (after the first two),
    tokens/s from its metrics, and its peak ``torch.cuda.max_memory_allocated`` in bytes (None
    off CUDA)."""
    from realspo.training.loop import train
    from realspo.training.run_dir import read_metrics
    from realspo.training.train_config import TrainConfig

    stamps: list[float] = []
    cfg = TrainConfig(data=str(data), model=args.model_path, out=str(work / name),
                      cache_dir=str(work / "cache"), batch_size=args.batch_size,
                      max_length=args.max_length, max_steps=args.steps, logging_steps=1,
                      eval_fraction=0.0, dtype=args.dtype, lr=1e-5, overwrite=True, **options)
    cfg.validate()
    cuda = torch.cuda.is_available() and torch.device(args.device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    train(cfg, on_batch=lambda step, _: stamps.append(time.perf_counter()))
    peak = float(torch.cuda.max_memory_allocated()) if cuda else None
    steps = np.diff(stamps)[2:] if len(stamps) > 3 else np.diff(stamps)
    rates = [r["tokens_per_second"] for r in read_metrics(work / name / "metrics.jsonl")
             if r.get("step", 0) >= 3 and "tokens_per_second" in r]
    return {"step_s": float(statistics.median(steps)) if len(steps) else float("nan"),
            "tokens_per_s": float(statistics.median(rates)) if rates else float("nan"), "peak_bytes": peak}


SPO_RUNS = {"spo": {}, "spo all levels": {"spo_sample_levels": None}}  # results key: extra options


def _gib(n: float | None) -> str:
    return f"{n / 2**30:.2f} GiB" if n else "-"


def embedding_run(model: Any, tokenizer: Any, n: int, batch_size: int, device: torch.device
                  ) -> tuple[float, int]:
    """Seconds and tokens of a conditioned embedding pass over ``n`` prompt + response texts."""
    from realspo.embeddings.embed import embed_with_causal_lm

    rng = np.random.default_rng(1)
    prompts = [" ".join(rng.choice(WORDS, int(rng.integers(8, 30)))) for _ in range(n)]
    responses = [" ".join(rng.choice(WORDS, int(rng.integers(40, 160)))) for _ in range(n)]
    embed_with_causal_lm(model, tokenizer, responses[:batch_size], prompts[:batch_size],
                         batch_size=batch_size, show_progress=False)  # warm-up
    sync(device)
    start = time.perf_counter()
    embed_with_causal_lm(model, tokenizer, responses, prompts, batch_size=batch_size,
                         show_progress=False)
    sync(device)
    tokens = sum(len(tokenizer(p + " " + r)["input_ids"]) for p, r in zip(prompts, responses, strict=True))
    return time.perf_counter() - start, tokens


def generation_run(model: Any, tokenizer: Any, args: argparse.Namespace) -> dict[str, float]:
    """tokens/s of realspo's sampling loop and of ``model.generate`` (same prompts, settings)."""
    from bench_generation import PROMPTS, realspo_generate, reference_generate

    from realspo.chat_format import PromptFormat
    from realspo.generation.prompts import PromptRecord
    from realspo.generation.sampling import SamplingSettings, stop_token_ids

    texts = (PROMPTS * 8)[:args.gen_prompts]
    records = [PromptRecord(index=i, prompt_id=f"p{i}", prompt=t) for i, t in enumerate(texts)]
    settings = SamplingSettings(num_responses=4, temperature=1.0, top_p=0.95,
                                max_new_tokens=args.gen_tokens, seed=0)
    fmt = PromptFormat.of(tokenizer, "auto")
    stops = sorted(stop_token_ids(model, tokenizer))
    start = time.perf_counter()
    ours = realspo_generate(model, tokenizer, records, settings, args.gen_batch)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    theirs = reference_generate(model, tokenizer, [fmt.prompt_ids(t) for t in texts], k=4,
                                temperature=1.0, top_p=0.95, max_new_tokens=args.gen_tokens,
                                stops=stops, batch_size=args.gen_batch, device=model.device)
    theirs_s = time.perf_counter() - start
    return {"realspo": ours / ours_s, "model.generate": theirs / theirs_s}


def vllm_generation_run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """tokens/s of ``realspo generate`` through ``vllm serve`` (see the module docstring), or
    ``{"skipped": why}`` when vLLM is not importable by ``--vllm-python``."""
    import subprocess
    import urllib.request

    from bench_generation import PROMPTS

    from realspo.generation.prompts import PromptRecord
    from realspo.generation.sampling import SamplingSettings
    from realspo.generation.served import generate_served
    from realspo.served.options import ServedOptions

    probe = subprocess.run([args.vllm_python, "-c", "import vllm"], capture_output=True)
    if probe.returncode != 0:
        return {"skipped": "vllm is not importable by --vllm-python"}
    port = 18000 + int(time.time()) % 1000
    server = subprocess.Popen([args.vllm_python, "-m", "vllm.entrypoints.openai.api_server",
                               "--model", args.model_path, "--served-model-name", "policy",
                               "--host", "127.0.0.1", "--port", str(port), "--dtype", args.dtype,
                               "--gpu-memory-utilization", "0.8"],
                              stdout=open(work / "vllm.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                urllib.request.urlopen(f"{url}/models", timeout=2)  # noqa: S310
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    return {"skipped": f"vllm serve did not start (see {work / 'vllm.log'})"}
                time.sleep(2)
        texts = (PROMPTS * 8)[:args.gen_prompts]
        records = [PromptRecord(index=i, prompt_id=f"p{i}", prompt=t) for i, t in enumerate(texts)]
        settings = SamplingSettings(num_responses=4, temperature=1.0, top_p=0.95,
                                    max_new_tokens=args.gen_tokens, seed=0)
        options = ServedOptions(base_url=url, concurrency=args.vllm_concurrency, timeout=600,
                                cache_dir=str(work / "served-cache"))
        start = time.perf_counter()
        _, usage = generate_served("policy", records, work / "vllm.jsonl", settings, options,
                                   progress=False)
        seconds = time.perf_counter() - start
        return {"tokens_per_s": usage["completion_tokens"] / seconds,
                "concurrency": args.vllm_concurrency}
    finally:
        server.terminate()
        server.wait(timeout=60)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=None, help="model directory (default: SmolLM2-135M-Instruct)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    p.add_argument("--pairs", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--embed-texts", type=int, default=512)
    p.add_argument("--gen-prompts", type=int, default=32)
    p.add_argument("--gen-tokens", type=int, default=128)
    p.add_argument("--gen-batch", type=int, default=16)
    p.add_argument("--vllm-python", default=sys.executable,
                   help="the Python whose vllm serves the served-generation row")
    p.add_argument("--vllm-concurrency", type=int, default=32)
    p.add_argument("--smoke", action="store_true",
                   help="a tiny random model and tiny sizes, on CPU if there is no GPU: runs every "
                        "code path in seconds, measures nothing, writes nothing")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--write", action=argparse.BooleanOptionalAction, default=False,
                   help="replace BENCHMARKS.md's GPU section with this run's results")
    args = p.parse_args(argv)
    if args.smoke:
        args.pairs, args.steps, args.batch_size, args.max_length = 8, 4, 2, 64
        args.embed_texts, args.gen_prompts, args.gen_tokens, args.gen_batch = 4, 2, 4, 2
        args.write = False
        if not torch.cuda.is_available():
            args.device = "cpu"
    return args


def _vllm_row(served: dict[str, Any], local: float) -> list[str]:
    name = "generation: realspo generate via vllm serve / in-process"
    if "skipped" in served:
        return [name, f"not run: {served['skipped']}", ""]
    return [name, f"{served['tokens_per_s']:.0f} / {local:.0f} tokens/s (--concurrency "
                  f"{served['concurrency']})", f"{served['tokens_per_s'] / local:.2f}x"]


def smoke_model(path: Path) -> str:
    from realspo.toy_models import save_tiny_model

    corpus = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))]
    save_tiny_model(path, corpus, vocab_size=300, hidden_size=32, num_layers=2, num_heads=4)
    return str(path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; run with --smoke to check the code path on CPU")
    info = quiet_training_run(None)
    logging.disable(logging.WARNING)
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    from realspo.models import load_model, load_tokenizer

    with tempfile.TemporaryDirectory(prefix="realspo-gpu-bench-") as tmp:
        work = Path(tmp)
        if args.smoke:
            args.model_path = smoke_model(work / "tiny")
        else:
            from real_model import smollm2_dir

            args.model_path = args.model or smollm2_dir()
        tokenizer = load_tokenizer(args.model_path)
        model = load_model(args.model_path, "causal-lm", dtype=dtype, device=device).eval()
        n_all, n_body = weights(model), weights(model, body_only=True)
        attention = getattr(model.config, "_attn_implementation", "?")
        print(f"model {Path(args.model_path).name}: {n_all / 1e6:.1f}M linear weights; attention "
              f"{attention}; {args.dtype} on {device}", flush=True)
        rows = args.batch_size * args.max_length // 4
        ceiling = matmul_ceiling(device, dtype, linear_shapes(model), rows,
                                 square=256 if args.smoke else 4096)
        peak = max(ceiling.values())  # TFLOP/s: the best the device reached in this run
        print("matmul TFLOP/s: " + ", ".join(f"{k}: {v:.3g}" for k, v in ceiling.items()), flush=True)

        results: dict[str, Any] = {"ceiling_tflops": ceiling, "attention": attention}
        data = synthetic_pairs(work / "pairs.jsonl", args.pairs)
        runs = {"LoRA r=16": ({"lora_r": 16}, 4), "full fine-tune": ({}, 6)}
        for name, (options, per_token) in runs.items():
            r = train_run(args, data, work, name.split()[0].lower(), **options)
            r["mfu"] = r["tokens_per_s"] * per_token * n_all / (peak * 1e12)
            results[f"train {name}"] = r
            print(f"train {name}: {r}", flush=True)
        dpo = results["train LoRA r=16"]
        for key, options in SPO_RUNS.items():
            spo = train_run(args, data, work, key, lora_r=16, spo=True, **options)
            memory = spo["peak_bytes"] / dpo["peak_bytes"] if spo["peak_bytes"] and dpo["peak_bytes"] else None
            results[key] = {**spo, "overhead": spo["step_s"] / dpo["step_s"], "memory": memory}
            print(f"{key}: {results[key]}", flush=True)

        seconds, tokens = embedding_run(model, tokenizer, args.embed_texts, 2 * args.batch_size, device)
        results["embedding"] = {"tokens_per_s": tokens / seconds,
                                "mfu": 2.0 * n_body * tokens / seconds / (peak * 1e12)}
        print(f"embedding: {results['embedding']}", flush=True)
        results["generation"] = generation_run(model, tokenizer, args)
        print(f"generation tokens/s: {results['generation']}", flush=True)
        del model  # vLLM takes the GPU memory it is given
        if device.type == "cuda":
            torch.cuda.empty_cache()
        results["served generation (vLLM)"] = {"skipped": "not in --smoke"} if args.smoke \
            else vllm_generation_run(args, work)
        print(f"served generation: {results['served generation (vLLM)']}", flush=True)

    table = markdown_table(["benchmark", "result", "MFU / ratio"], [
        *[[k, f"{v['tokens_per_s']:.0f} tokens/s, {v['step_s']:.3f} s/step", f"{v['mfu']:.1%}"]
          for k, v in results.items() if k.startswith("train ")],
        *[[f"SPO (LoRA, {label}) over DPO", f"{results[key]['step_s']:.3f} s/step, peak "
           f"{_gib(results[key]['peak_bytes'])} (DPO {_gib(results['train LoRA r=16']['peak_bytes'])})",
           f"{results[key]['overhead']:.2f}x step time, "
           + (f"{results[key]['memory']:.2f}x peak memory" if results[key]["memory"] else "peak memory -")]
          for key, label in (("spo", "defaults"), ("spo all levels", "all levels"))],
        ["embedding (conditioned)", f"{results['embedding']['tokens_per_s']:.0f} tokens/s",
         f"{results['embedding']['mfu']:.1%}"],
        ["generation: realspo / model.generate",
         f"{results['generation']['realspo']:.0f} / {results['generation']['model.generate']:.0f} tokens/s",
         f"{results['generation']['realspo'] / results['generation']['model.generate']:.2f}x"],
        _vllm_row(results["served generation (vLLM)"], results["generation"]["realspo"])])
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if args.write:
        sizes = {"model": f"{Path(args.model_path).name}, {args.dtype}, {attention} attention",
                 "training": f"{args.pairs} pairs, batch {args.batch_size}, max length "
                             f"{args.max_length}, {args.steps} steps",
                 "ceiling": ", ".join(f"{k}: {v:.3g} TFLOP/s" for k, v in ceiling.items())}
        write_section("gpu", section("5. GPU (bf16)", sizes=sizes, table=table,
                                     verdict="MFU against the measured bf16 matmul ceiling",
                                     info=info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
