"""Benchmark 3: training-step throughput, ``realspo train`` vs TRL's ``DPOTrainer`` (tokens/s, RSS).

Both sides train the same randomly initialised Llama-style model (saved once, loaded by each
side from the same directory) on the same synthetic preference pairs, with the same batch size,
``max_length``, optimizer (AdamW, same learning rate and schedule), loss (sigmoid DPO, beta 0.1),
gradient clipping, logging interval, fp32 and CPU. Reference log-probs are handled each tool's
best way: realspo computes them once before training into its cache (``realspo.training.reference``);
TRL with ``precompute_ref_log_probs=True`` (one pass before training, no reference model kept).

Each side runs in its own subprocess (so peak RSS is per side), launched by this script;
repeats alternate the sides. Throughput counts the non-padding tokens of the pairs each side
ran, over the steps after ``--warmup-steps``, divided by their wall time (from the end of one
optimizer step to the end of the next: data loading, forward, backward, clipping, optimizer
and logging included; setup, the reference pass and the final export excluded).

    .venv/bin/python benchmarks/bench_training.py [--pairs 64] [--repeats 3] [--no-write]

``--model smollm2`` runs the real-size workload instead (``benchmarks/smollm2.py``: SmolLM2-135M-Instruct,
32 pairs, prompts ~40 and responses 60-120 tokens, max length 256), for each of ``--configs``
(LoRA r=16 and full fine-tune) at each of ``--thread-counts``, and reports model FLOP utilisation
against the matmul ceiling measured in the same run; it writes its own section of BENCHMARKS.md:

    .venv/bin/python benchmarks/bench_training.py --model smollm2 [--configs lora,full] [--thread-counts 1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from training_workload import (
    _RUNS,
    _stopwords,
    describe,
    lengths,
    make_lexicon,
    make_text,
    median_of,
    run_side,
)

TARGET_SPEED = 1.5  # the target: >= 1.5x TRL's tokens/s, and no more peak memory


# ----------------------------------------------------------------------------- the workload

def make_workload(workdir: Path, args: argparse.Namespace) -> dict:
    """Write ``workdir/model`` (tokenizer + random model) and ``workdir/pairs.jsonl``; return sizes."""
    if args.model == "smollm2":
        import smollm2

        return smollm2.make_workload(workdir, args)
    from realspo.toy_models import build_causal_lm, train_tokenizer

    rng = np.random.default_rng(args.seed)
    lexicon, stop = make_lexicon(args.seed), _stopwords()
    n = args.pairs
    p_len = lengths(rng, n, args.prompt_words, 0.8, 4, args.max_words)
    c_len = lengths(rng, n, args.response_words, 0.7, 8, args.max_words)
    r_len = lengths(rng, n, args.response_words, 0.7, 8, args.max_words)
    # Responses start with a space (as in HH-RLHF), so that TRL, which tokenizes prompt + response
    # as one text, and realspo, which tokenizes them apart, get the same token ids.
    rows = [{"prompt": make_text(rng, lexicon, stop, int(p)), "chosen": " " + make_text(rng, lexicon, stop, int(c)),
             "rejected": " " + make_text(rng, lexicon, stop, int(r))}
            for p, c, r in zip(p_len, c_len, r_len, strict=True)]
    corpus = [make_text(rng, lexicon, stop, 40) for _ in range(1000)]
    tokenizer = train_tokenizer(corpus, vocab_size=min(args.vocab, 8000))
    model = build_causal_lm(args.vocab, hidden_size=args.hidden, num_layers=args.layers,
                            num_heads=args.heads, max_positions=max(512, args.max_length),
                            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id)
    model.save_pretrained(workdir / "model", safe_serialization=True)
    tokenizer.save_pretrained(workdir / "model")
    with (workdir / "pairs.jsonl").open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return {"params": sum(p.numel() for p in model.parameters()),
            "prompt_tokens": [count(r["prompt"]) for r in rows],
            "response_tokens": [count(r[k]) + 1 for r in rows for k in ("chosen", "rejected")]}


# ----------------------------------------------------------------------------- one side (subprocess)

def _rss_now() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))


def _throughput(times: list[float], tokens: list[int], warmup: int, cpu: list[float] | None = None) -> dict:
    """tokens/s over the steps after ``warmup`` (step i's time: end of step i-1 to end of step i);
    with ``cpu`` (the process's CPU seconds at the same moments), also tokens per CPU second."""
    if len(times) <= warmup + 1:
        raise SystemExit(f"only {len(times)} steps ran; need more than --warmup-steps + 1 = {warmup + 1}")
    span = times[-1] - times[warmup]
    counted = sum(tokens[warmup + 1:])
    result = {"tokens_per_s": counted / span, "step_s": span / (len(times) - warmup - 1),
              "timed_steps": len(times) - warmup - 1, "timed_tokens": counted, "epoch_tokens": sum(tokens)}
    if cpu:
        result["tokens_per_cpu_s"] = counted / (cpu[-1] - cpu[warmup])
    return result


def run_realspo(workdir: Path, args: argparse.Namespace, options: dict | None = None) -> dict:
    """``realspo.training.loop.train`` on the workload (plus ``options``, e.g. SPO's); throughput."""
    from realspo.models import load_tokenizer
    from realspo.training.data import read_pairs
    from realspo.training.loop import train
    from realspo.training.prefix_tree import token_tree
    from realspo.training.tokenization import tokenize_pair
    from realspo.training.train_config import TrainConfig

    out = workdir / f"run-realspo-{os.getpid()}-{next(_RUNS)}"  # a fresh run (and reference cache)
    settings = dict(data=str(workdir / "pairs.jsonl"), model=str(workdir / "model"), out=str(out),
                    cache_dir=str(out) + "-cache", batch_size=args.batch_size, max_length=args.max_length,
                    lr=1e-6, warmup_ratio=0.1, logging_steps=args.logging_steps, epochs=1, dtype="float32")
    if args.model == "smollm2":  # plain text on both sides (TRL applies no template to plain prompts)
        settings.update(chat_template="off", lora_r=args.lora_r, lora_alpha=16.0, lora_dropout=0.0)
    if args.pass_tokens is not None:
        settings["pass_tokens"] = args.pass_tokens
    cfg = TrainConfig(**{**settings, **(options or {})})
    tokenizer = load_tokenizer(cfg.model)
    sequences = [tokenize_pair(tokenizer, p.prompt, p.chosen, p.rejected, cfg.max_length, cfg.truncation,
                               chat_template=cfg.chat_template).sequences() for p in read_pairs(cfg.data)]
    per_pair = [sum(len(ids) for ids, _ in seqs) for seqs in sequences]
    # body tokens realspo runs with prefix sharing: each pair's chosen and rejected as one token tree
    tree = sum(len(token_tree([ids for ids, _ in seqs]).tokens) for seqs in sequences)
    scored = sum(len(ids) - start for seqs in sequences for ids, start in seqs)
    times: list[float] = []
    cpu: list[float] = []
    tokens: list[int] = []

    def on_batch(_step: int, indices: list[int]) -> None:
        times.append(time.perf_counter())
        cpu.append(time.process_time())
        tokens.append(sum(per_pair[i] for i in indices))

    rss_before = _rss_now()
    start = time.perf_counter()
    train(cfg, on_batch=on_batch)
    result = _throughput(times, tokens, args.warmup_steps, cpu)
    result.update(setup_s=times[0] - start, rss_before_train=rss_before, epoch_scored=scored,
                  epoch_tree_tokens=tree if cfg.prefix_sharing != "off" else None)
    return result


def run_trl(workdir: Path, args: argparse.Namespace) -> dict:
    """TRL's ``DPOTrainer`` on the workload, reference log-probs precomputed; same measures."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    rows = [json.loads(line) for line in (workdir / "pairs.jsonl").read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(workdir / "model")
    model = AutoModelForCausalLM.from_pretrained(workdir / "model", dtype=torch.float32)
    times: list[float] = []
    cpu: list[float] = []
    tokens: list[int] = []

    class Counting(DPOTrainer):
        def training_step(self, model, inputs, *rest, **kw):  # the non-padding tokens it runs
            tokens.append(int(inputs["attention_mask"].sum()))
            return super().training_step(model, inputs, *rest, **kw)

    class Clock(TrainerCallback):
        def on_step_end(self, *_a, **_k):
            times.append(time.perf_counter())
            cpu.append(time.process_time())

    config = DPOConfig(output_dir=str(workdir / f"run-trl-{os.getpid()}"),
                       per_device_train_batch_size=args.batch_size, max_length=args.max_length,
                       learning_rate=1e-6, warmup_steps=0.1, lr_scheduler_type="linear",
                       num_train_epochs=1, logging_steps=args.logging_steps, save_strategy="no",
                       report_to=[], precompute_ref_log_probs=True, beta=0.1, loss_type=["sigmoid"],
                       max_grad_norm=1.0, use_cpu=True, seed=0, dataloader_num_workers=0,
                       disable_tqdm=True, bf16=False, fp16=False)
    rss_before = _rss_now()
    start = time.perf_counter()
    peft_config = None
    if args.lora_r:
        from peft import LoraConfig

        peft_config = LoraConfig(r=args.lora_r, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                 task_type="CAUSAL_LM")
    trainer = Counting(model=model, args=config, train_dataset=Dataset.from_list(rows),
                       processing_class=tokenizer, callbacks=[Clock()], peft_config=peft_config)
    trainer.train()
    result = _throughput(times, tokens, args.warmup_steps, cpu)
    result.update(setup_s=times[0] - start, rss_before_train=rss_before)
    return result


def side_main(args: argparse.Namespace) -> int:
    """Child process: run one side and print one JSON line of results."""
    import logging

    import torch

    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    workdir = Path(args.workdir)
    if args.side == "trl":
        result = run_trl(workdir, args)
    else:
        result = run_realspo(workdir, args, json.loads(args.options) if args.options else None)
    result["peak_rss"] = _peak_rss()
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# ----------------------------------------------------------------------------- arguments

def add_workload_args(p: argparse.ArgumentParser, pairs: int = 32) -> None:
    p.add_argument("--model", choices=("tiny", "smollm2"), default="tiny",
                   help="tiny: a random 12.4M Llama-style model (the sizes below); smollm2: the real "
                        "SmolLM2-135M-Instruct workload of benchmarks/smollm2.py (its own sizes)")
    p.add_argument("--lora-r", type=int, default=0, help="LoRA rank on both sides (0: full fine-tune)")
    p.add_argument("--pass-tokens", type=int, default=None, help="realspo's --pass-tokens (unset: its default)")
    p.add_argument("--pairs", type=int, default=pairs, help="preference pairs (one epoch is trained)")
    p.add_argument("--batch-size", type=int, default=4, help="pairs per step, both sides")
    p.add_argument("--max-length", type=int, default=1024, help="prompt + response tokens (both tools' default)")
    p.add_argument("--hidden", type=int, default=256, help="model hidden size")
    p.add_argument("--layers", type=int, default=4, help="transformer layers")
    p.add_argument("--heads", type=int, default=4, help="attention heads")
    p.add_argument("--vocab", type=int, default=32000, help="model vocabulary (LM head width)")
    p.add_argument("--prompt-words", type=float, default=40, help="median prompt length (words, log-normal)")
    p.add_argument("--response-words", type=float, default=80, help="median response length (words)")
    p.add_argument("--max-words", type=int, default=300, help="longest prompt or response (words)")
    p.add_argument("--warmup-steps", type=int, default=1, help="steps not timed at the start")
    p.add_argument("--logging-steps", type=int, default=10, help="metrics logging interval, both sides")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads per side")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="runs per side, alternating (median reported)")
    p.add_argument("--write", action=argparse.BooleanOptionalAction, default=True,
                   help="update this benchmark's section of BENCHMARKS.md")
    # internal: run one side in this process
    p.add_argument("--side", choices=("realspo", "trl"), help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    p.add_argument("--options", help=argparse.SUPPRESS)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_workload_args(p)
    p.add_argument("--configs", default="lora,full", help="--model smollm2: lora (r 16) and/or full")
    p.add_argument("--thread-counts", default="1,2", help="--model smollm2: thread counts to run")
    p.add_argument("--section", default="training_smollm2", help="--model smollm2: BENCHMARKS.md section to write")
    args = p.parse_args(argv)
    if args.model == "smollm2" and "--max-length" not in (argv if argv is not None else sys.argv):
        args.max_length = 256  # the real-size workload's default
    return args


def workload_sizes(args: argparse.Namespace, facts: dict) -> dict[str, str]:
    """The Sizes line of a section: model, data, steps."""
    return {
        "model": f"Llama-style, random weights, hidden {args.hidden}, {args.layers} layers, {args.heads} heads, "
                 f"vocab {args.vocab} ({facts['params'] / 1e6:.1f}M parameters, tied embeddings), fp32, CPU",
        "data": f"{args.pairs} synthetic pairs of prose-like text (random words between English stopwords); "
                f"words round(LogNormal(ln {args.prompt_words:g}, 0.8)) per prompt and "
                f"round(LogNormal(ln {args.response_words:g}, 0.7)) per response, at most {args.max_words}; "
                f"measured tokens: prompts {describe(facts['prompt_tokens'])}; responses (EOS included) "
                f"{describe(facts['response_tokens'])}; no pair reaches --max-length {args.max_length}",
        "training": f"one epoch, batch {args.batch_size} pairs = {-(-args.pairs // args.batch_size)} steps, "
                    f"the first {args.warmup_steps} not timed; sigmoid DPO, beta 0.1, AdamW lr 1e-6, linear "
                    f"schedule, 10% warm-up, grad clip 1.0, logging every {args.logging_steps} steps; "
                    f"{args.threads} torch thread(s) per side",
        "repeats": f"{args.repeats} runs per side, alternating; medians reported",
    }


def main(argv: list[str] | None = None) -> int:
    import tempfile

    args = parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if args.side:
        return side_main(args)
    if args.model == "smollm2":
        import smollm2

        return smollm2.main_training(args)
    from common import fmt_bytes, machine, markdown_table, section, set_threads, write_section

    set_threads(args.threads)
    info = machine()
    import trl

    runs: dict[str, list[dict]] = {"realspo": [], "trl": []}
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        work = Path(tmp)
        facts = make_workload(work, args)
        print(f"model {facts['params'] / 1e6:.1f}M parameters; prompt tokens {describe(facts['prompt_tokens'])}; "
              f"response tokens {describe(facts['response_tokens'])}", flush=True)
        for _ in range(max(1, args.repeats)):
            for side in runs:
                result = run_side(side, work, args)
                runs[side].append(result)
                print(f"  {side}: {result['tokens_per_s']:.0f} tokens/s, {result['step_s']:.2f} s/step, "
                      f"peak RSS {fmt_bytes(result['peak_rss'])}, setup {result['setup_s']:.0f} s", flush=True)
    epoch_tokens = {side: r[0]["epoch_tokens"] for side, r in runs.items()}
    print(f"tokens per epoch: realspo {epoch_tokens['realspo']}, TRL {epoch_tokens['trl']}")
    tps = {side: median_of(r, "tokens_per_s") for side, r in runs.items()}
    rss = {side: median_of(r, "peak_rss") for side, r in runs.items()}
    speed, memory = tps["realspo"] / tps["trl"], rss["realspo"] / rss["trl"]
    names = {"realspo": "realspo train", "trl": f"TRL {trl.__version__} DPOTrainer"}
    rows = [[names[side], f"{tps[side]:.0f}",
             "-".join(f"{x:.0f}" for x in (min(r["tokens_per_s"] for r in runs[side]),
                                           max(r["tokens_per_s"] for r in runs[side]))),
             f"{median_of(runs[side], 'step_s'):.2f}", fmt_bytes(rss[side]),
             fmt_bytes(median_of(runs[side], "rss_before_train")), f"{median_of(runs[side], 'setup_s'):.0f}"]
            for side in runs]
    rows.append(["realspo / TRL", f"**{speed:.2f}x**", "", "", f"**{memory:.2f}x**", "", ""])
    table = markdown_table(["side", "tokens/s", "range", "s/step", "peak RSS", "RSS after imports",
                            "setup s (load, tokenize, reference pass, first step)"], rows)
    met = speed >= TARGET_SPEED and memory <= 1.0
    print(table)
    print(f"ratio realspo / TRL: {speed:.2f}x tokens/s, {memory:.2f}x peak RSS (target >= {TARGET_SPEED}x "
          f"and <= 1.0x: {'met' if met else 'NOT met'})")
    if args.write:
        verdict = (f">= {TARGET_SPEED}x TRL's tokens/s and no more peak memory: **{'met' if met else 'not met'}** "
                   f"({speed:.2f}x tokens/s, {memory:.2f}x peak RSS)")
        write_section("training", section("3. Training step throughput vs TRL", sizes=workload_sizes(args, facts),
                                          table=table, verdict=verdict, info=info,
                                          notes=[*TRAINING_NOTES, "Tokens per epoch (all steps): realspo "
                                                 f"{epoch_tokens['realspo']}, TRL {epoch_tokens['trl']}."]))
    return 0


TRAINING_NOTES = [
    "TRL installed for the benchmark only (`pip install trl`, the `bench` extra), torch and "
    "transformers unchanged. Reference log-probs, each tool's best way: realspo computes them once before training "
    "(one `inference_mode` pass, cached on disk by model, data and settings); TRL with "
    "`precompute_ref_log_probs=True` (one pass before training, no reference model kept in memory). "
    "Both passes are in the setup column, not in tokens/s.",
    "Tokens/s: non-padding tokens of the [chosen; rejected] sequences (prompt included in both) of "
    "the timed steps, over their wall time, end of one optimizer step to the end of the next. "
    "Responses start with a space and no pair is truncated, so both tools see the same tokens "
    "(the per-epoch token counts below agree).",
    "Peak RSS: each side's whole process (its own subprocess, `VmHWM`): imports, model, optimizer, "
    "reference pass and training.",
    "Where realspo's lead comes from: it runs the LM head (32000 x 256, the largest matrix of this "
    "model) only on response positions, while TRL's fused LM head scores every position (prompt and "
    "padding too) off CUDA/XPU; and realspo runs each batch in groups of similar length "
    "(`realspo.training.logprobs.grouped_hidden_states`) where TRL pads all 2B sequences to the longest "
    "(its `padding_free` is disabled in this version); realspo's LM-head backward also reuses one "
    "buffer in place (`realspo.training.logprobs._LinearHeadLogps`). On a GPU TRL scores only response positions, "
    "so the gap there would be smaller; not measured (no GPU lent).",
    "The machine is shared by several engineers (2 cores): absolute numbers are noisy; the sides "
    "alternate, so drifting load hits both.",
]


if __name__ == "__main__":
    sys.exit(main())
