"""SPO's manipulation check without training: do the degree variants lower the oracle reward?

``realspo demo`` scores, with the oracle, every degree variant SPO trained on (the chosen and
rejected responses of the main budget's DPO+SPO pairs, all strategies) and reports the share
whose reward falls below the original's (:mod:`realspo.arms.manipulation`). Those responses
are fixed before any training: the SFT model's candidates, the simulated labels and the
strategies' selections. This script rebuilds exactly them for a preset's seeds and scores the
variants of every SPO variant mode (``--removal`` x ``--selection``), so a change to the
variants can be measured in a minute instead of a demo run.

Run (default preset, 3 seeds: about a minute with the SFT model cached)::

    OMP_NUM_THREADS=1 .venv/bin/python experiments/spo_manipulation.py

The candidates and selections are cached in ``--cache`` (JSON) so that a second run only
re-scores. Prints one table per mode: per level and role, the share below / equal / above.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from realspo.arms.manipulation import spo_manipulation  # noqa: E402
from realspo.arms.plan import budget_label, make_plan  # noqa: E402
from realspo.proving_ground.world import build_world  # noqa: E402
from realspo.selection.budget import resolve_budget  # noqa: E402
from realspo.spo.variants import REMOVALS, SELECTIONS, SPOConfig, variants_for  # noqa: E402


def spo_responses(preset: str) -> list[dict[str, Any]]:
    """Per seed, the (prompt, response, oracle reward, role) of every distinct response the
    demo's DPO+SPO runs train on at the main budget (as :func:`realspo.demo.run.run_seed`)."""
    import torch

    from realspo.arms.candidate_pool import build_candidates, selected_pairs
    from realspo.generation.sampling import load_generator_model
    from realspo.proving_ground.sft import get_sft_model

    torch.set_num_threads(1)
    plan = make_plan(preset, device="cpu")
    world = build_world(plan.world)
    model, tokenizer = load_generator_model(str(get_sft_model(plan.world, plan.sft)), device="cpu")
    out = []
    for seed in plan.seeds:
        cands = build_candidates(world, model, tokenizer, plan, seed, {})
        by_row = {v: k for k, v in cands.pair_index.items()}
        seen: set[tuple[str, int, int]] = set()
        for strategy in plan.strategies:
            ranked = selected_pairs(cands, strategy, seed)
            n = resolve_budget(budget_label(plan.budget), len(selected_pairs(cands, "random", seed)))
            for row in ranked[:n]:
                g, i, j = by_row[row]
                c, x = (i, j) if cands.a_preferred[row] else (j, i)
                for role, k in (("chosen", c), ("rejected", x)):
                    if (role, g, k) not in seen:
                        seen.add((role, g, k))
                        group = cands.groups[g]
                        out.append({"seed": seed, "role": role, "prompt": group.prompt,
                                    "response": group.responses[k], "original": group.scores[k]})
    return out


def score(responses: list[dict[str, Any]], cfg: SPOConfig, preset: str) -> dict[str, Any]:
    """The manipulation table of ``cfg``'s variants of ``responses`` (demo.manipulation's)."""
    oracle = build_world(make_plan(preset).world).oracle
    records = []
    for r in responses:
        variants = variants_for(r["response"], cfg)
        levels = None if variants is None else oracle.score_batch(
            [r["prompt"]] * (len(variants) - 1), [v.text for v in variants[1:]])
        records.append({"seed": r["seed"], "role": r["role"], "original": r["original"],
                        "levels": levels})
    return spo_manipulation(records, cfg.levels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--cache", default="/tmp/realspo-spo-manipulation.json")
    parser.add_argument("--levels", type=int, default=SPOConfig().levels)
    parser.add_argument("--removal", default=",".join(REMOVALS))
    parser.add_argument("--selection", default=",".join(SELECTIONS))
    parser.add_argument("--show", type=int, default=0, help="print N example variants per mode")
    args = parser.parse_args()
    cache = Path(args.cache)
    started = time.perf_counter()
    if cache.is_file():
        responses = json.loads(cache.read_text(encoding="utf-8"))
    else:
        responses = spo_responses(args.preset)
        cache.write_text(json.dumps(responses), encoding="utf-8")
    print(f"{len(responses)} distinct (role, response) of the {args.preset} preset's SPO runs "
          f"({time.perf_counter() - started:.0f}s)")
    for removal in args.removal.split(","):
        for selection in args.selection.split(","):
            cfg = replace(SPOConfig(), levels=args.levels, removal=removal, selection=selection)
            table = score(responses, cfg, args.preset)
            print(f"\nremoval={removal} selection={selection} levels={cfg.levels}: share below "
                  f"{table['share_below']:.3f}, lowest cell {table['lowest_share_below']:.3f}, "
                  f"graded {table['responses_graded']}, skipped {table['responses_skipped']}, "
                  f"graded with reward > 0: {table['positive_share']}")
            for c in table["by_level"]:
                print(f"  level {c['level']} {c['role']:8s} n={c['n_variants']:5d} below "
                      f"{c['share_below']:.3f} equal {c['share_equal']:.3f} above "
                      f"{c['share_above']:.3f} mean change {c['mean_change']:+.3f} | of responses "
                      f"with reward > 0: n={c['n_positive']:4d} below {c['share_below_positive']:.3f}")
            for r in responses[: args.show]:
                variants = variants_for(r["response"], cfg)
                print("   ", [v.text for v in variants] if variants else None)


if __name__ == "__main__":
    main()
