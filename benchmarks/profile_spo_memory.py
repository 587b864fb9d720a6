"""Where the memory of one SPO training step goes on SmolLM2-135M, against plain DPO's.

One micro-batch (the first ``--batch-size`` pairs of ``benchmarks/smollm2.py``'s workload, LoRA
r 16, fp32, CPU) runs through ``realspo.training.passes.run_passes`` and the optimizer, for
``--steps`` steps, in a fresh process per mode (so each peak RSS is its own):

* ``DPO``: no ``--spo``, the default ``--pass-tokens`` (256 on a CPU);
* ``DPO+SPO (defaults)`` / ``(all levels)``: ``--spo`` at its defaults / ``--spo-sample-levels`` all,
  at the default ``--pass-tokens``;
* ``... one pass: before``: the same with ``--pass-tokens 0``, the whole micro-batch (pairs and
  variants) in one forward and backward, as ``--spo`` ran at any budget before.

Measured per pass: the tokens it runs (sequences apart, and as token trees with prefix sharing),
and the tensors its forward saves for the backward (``torch.autograd.graph.saved_tensors_hooks``,
distinct storages, the model's own weights left out): the activations alive at the backward.
Per process: RSS after set-up, and the peak (``VmHWM``) of each step (reset before it through
``/proc/self/clear_refs`` where the kernel allows). Reference log-probs are constants here
(they cost no step memory).

    .venv/bin/python benchmarks/profile_spo_memory.py [--steps 3] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fmt_bytes, markdown_table, quiet_training_run, section, write_section  # noqa: E402

MEMORY_TARGET = 1.3  # issue 24: SPO's peak at most 1.3x DPO's
ALL = {"spo": True, "spo_sample_levels": None}
MODES = {
    "DPO": {},
    "DPO+SPO (defaults)": {"spo": True},
    "DPO+SPO (all levels)": ALL,
    "DPO+SPO (defaults; one pass: before)": {"spo": True, "pass_tokens": 0},
    "DPO+SPO (all levels; one pass: before)": {**ALL, "pass_tokens": 0},
}


def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key + ":"))


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def profile_mode(workdir: Path, options: dict, args: argparse.Namespace) -> dict:
    """One mode in this process: per-pass tokens and saved activations, per-step peak RSS."""
    import torch

    import realspo.training.passes as passes
    from realspo.models import load_model, load_tokenizer
    from realspo.training.data import PairCollator, PairDataset, read_pairs
    from realspo.training.prefix_tree import pair_groups, tree_tokens
    from realspo.training.step import _stack_padded, build_model
    from realspo.training.train_config import TrainConfig

    cfg = TrainConfig(data=str(workdir / "pairs.jsonl"), model=str(workdir / "model"), out="unused",
                      batch_size=args.batch_size, max_length=256, chat_template="off", lora_r=16,
                      lora_alpha=16.0, lora_dropout=0.0, dtype="float32", **options)
    cfg.validate()
    tokenizer = load_tokenizer(cfg.model)
    pairs = read_pairs(cfg.data)[: args.batch_size]
    for pair in pairs:
        pair.ref_chosen, pair.ref_rejected = -150.0, -160.0
    dataset = PairDataset(pairs, tokenizer, cfg.max_length, cfg.truncation, cfg.chat_template)
    batch = PairCollator(tokenizer.pad_token_id, True)([dataset[i] for i in range(len(pairs))])
    model = build_model(cfg, load_model(cfg.model, dtype=torch.float32))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6, fused=True)
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    budget = passes.pass_budget(cfg.pass_tokens, torch.device("cpu"))
    records: list[dict] = []
    original = passes.forward_pass

    def measured(model_, part, settings, variants, **kw):
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            if storage.data_ptr() not in weights:
                saved[storage.data_ptr()] = storage.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            result = original(model_, part, settings, variants, **kw)
        n = len(part["index"])
        ids, mask, groups = part["input_ids"], part["attention_mask"], pair_groups(n)
        variant_tokens = 0
        if variants is not None and "input_ids" in variants:
            variant_tokens = int(variants["attention_mask"].sum())
            ids, mask = _stack_padded(ids, variants["input_ids"], 0), _stack_padded(mask, variants["attention_mask"], 0)
            groups = pair_groups(n, variants["pairs"].tolist())
        records.append({"pairs": n, "pair_tokens": int(part["attention_mask"].sum()), "variant_tokens": variant_tokens,
                        "tree_tokens": tree_tokens(mask, ids, groups),
                        "pooled": 0 if variants is None else len(variants["labels"]),
                        "saved_bytes": sum(saved.values())})
        return result

    passes.forward_pass = measured
    rss_setup = _status("VmRSS")
    steps = []
    for step in range(args.steps):
        reset = _reset_peak()
        records.clear()
        cpu, wall = time.process_time(), time.perf_counter()
        passes.run_passes(model, batch, cfg.batch_settings(), tokenizer, step, budget, lambda loss: loss.backward())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps.append({"passes": list(records), "peak_rss": _status("VmHWM"), "peak_reset": reset,
                      "cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall})
    return {"rss_setup": rss_setup, "steps": steps, "peak_rss": _status("VmHWM"), "budget": budget}


def run_mode(workdir: Path, name: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--mode", name, "--workdir", str(workdir),
           "--steps", str(args.steps), "--batch-size", str(args.batch_size)]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", TQDM_DISABLE="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"{name} failed (exit {proc.returncode})")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--write", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    info = quiet_training_run(1)
    if args.mode:
        result = profile_mode(Path(args.workdir), MODES[args.mode], args)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    import smollm2

    names = [m.strip() for m in args.modes.split(",") if m.strip()]
    results = {}
    with tempfile.TemporaryDirectory(prefix="profile-spo-") as tmp:
        work = Path(tmp)
        smollm2.make_workload(work, argparse.Namespace(pairs=max(32, args.batch_size), seed=0))
        for name in names:
            load = os.getloadavg()[0]
            results[name] = {**run_mode(work, name, args), "load": load}
            print(f"{name}: {json.dumps(results[name])}", flush=True)
    base = results["DPO"]["peak_rss"] if "DPO" in results else None
    # CPU seconds of the steps after the first (robust to other processes' load, unlike wall time)
    cpu = {name: sum(s["cpu_s"] for s in r["steps"][1:]) / max(1, len(r["steps"]) - 1) for name, r in results.items()}
    rows = []
    for name, r in results.items():
        last = r["steps"][-1]["passes"]
        saved = [x["saved_bytes"] for x in last]
        biggest = max(last, key=lambda x: x["saved_bytes"])
        tokens = biggest["tree_tokens"]
        rows.append([name, str(len(last)),
                     f"{sum(x['pair_tokens'] for x in last)} + {sum(x['variant_tokens'] for x in last)}",
                     f"{biggest['pair_tokens'] + biggest['variant_tokens']} / {tokens}",
                     fmt_bytes(max(saved)), f"{max(saved) / tokens / 2**20:.2f} MiB",
                     str(sum(x["pooled"] for x in last)), fmt_bytes(r["rss_setup"]),
                     " / ".join(fmt_bytes(s["peak_rss"]) for s in r["steps"]),
                     f"{r['peak_rss'] / base:.2f}x" if base else "-", f"{cpu[name]:.1f}",
                     f"{cpu[name] / cpu['DPO']:.2f}x" if "DPO" in cpu else "-", f"{r['load']:.1f}"])
    table = markdown_table(["mode", "passes per step", "tokens per step: pairs + variants (apart)",
                            "largest pass: tokens apart / as trees", "its saved activations",
                            "per tree token", "pooled rows (degree head input)", "RSS after set-up",
                            "peak RSS of each step", "process peak / DPO", "CPU s per step (after the first)",
                            "CPU time / DPO", "load (1 min)"], rows)
    print(table)
    if args.write:
        sizes = {"model": "SmolLM2-135M-Instruct (fp32, CPU), LoRA r 16, prefix sharing on",
                 "batch": f"the first {args.batch_size} pairs of the SmolLM2 workload (benchmarks/smollm2.py), "
                          f"{args.steps} steps, each with the optimizer",
                 "passes": "the default --pass-tokens (256 on a CPU), or 0 for the one-pass rows"}
        notes = ["Saved activations: distinct storages the pass's forward saves for its backward "
                 "(`saved_tensors_hooks`), the frozen weights left out; they are alive together at the "
                 "start of the pass's backward, on top of the model, the optimizer and the allocator's "
                 "free blocks. Peak RSS of a step: `VmHWM` reset before it where the kernel allows "
                 f"(reset here: {all(s['peak_reset'] for r in results.values() for s in r['steps'])})."]
        verdict = "see 4b for the whole runs"
        if base and "DPO+SPO (defaults)" in results:
            ratio = results["DPO+SPO (defaults)"]["peak_rss"] / base
            verdict = (f"DPO+SPO at the defaults <= {MEMORY_TARGET}x plain DPO's peak RSS on this step: "
                       f"**{'met' if ratio <= MEMORY_TARGET else 'not met'}** ({ratio:.2f}x)")
        write_section("spo_memory_profile", section(
            "4c. Where the memory of an SPO step goes (SmolLM2-135M)", sizes=sizes, table=table,
            verdict=verdict, notes=notes, info=info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
