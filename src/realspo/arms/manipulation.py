"""SPO's manipulation check and dose: does removing key content make a response worse, and
did the degree task change the model at all?

SPO teaches the policy that a response with more of its key content removed is *less*
preferred. That only helps if it is true of the world's preference. The check scores every
degree variant SPO trained on with the oracle and reports, per level and for chosen and
rejected responses, the share of variants whose oracle reward is **below** the original's.
The check passes when that share is at least :data:`PASS_SHARE` in every (level, role) cell;
otherwise the SPO verdict is void (SPO taught the model something the oracle does not reward).

The dose: how well the degree head learned its task, on **held-out variants** (every level of
the chosen and rejected responses of up to :data:`HELDOUT_PAIRS` pairs the same strategy picked
on prompts it did not train on, labelled as in training; :func:`heldout_head_accuracy`), beside
the training-time ``spo/accuracy``; and the share of held-out answers that differ between the
DPO and the DPO+SPO model trained on the same pairs (same sampling noise: an unchanged model
gives the same answer).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from realspo.arms.plan import DemoPlan, budget_label
from realspo.arms.records import Candidates, DemoRun
from realspo.proving_ground.world import World
from realspo.spo.variants import SPOConfig, variants_for

PASS_SHARE = 0.8
ROLES = ("chosen", "rejected")
HELDOUT_PAIRS = 64


def heldout_head_accuracy(model_dir: Path, rows: list[dict[str, Any]], plan: DemoPlan
                          ) -> dict[str, Any] | None:
    """Accuracy of the trained degree head (``model_dir``'s ``spo_head.*``) on every degree
    variant of the TRL ``rows`` (pairs not trained on), pooled and tokenized as in training;
    None without a head or a graded variant."""
    import torch

    from realspo.generation.sampling import load_generator_model
    from realspo.spo.head import load_head, pool_hidden
    from realspo.spo.variants import plan_variants
    from realspo.training.logprobs import last_hidden_states
    from realspo.training.tokenization import collate, tokenize_response

    cfg = SPOConfig(levels=plan.spo_levels, weight=plan.spo_weight)
    if not rows or not (model_dir / "spo_head.json").is_file():
        return None
    prompts = [r["prompt"] for r in rows]
    planned = plan_variants(prompts, [r["chosen"] for r in rows], [r["rejected"] for r in rows], cfg, 0)
    if not planned:
        return None
    model, tokenizer = load_generator_model(str(model_dir), device=plan.device)
    device = next(model.parameters()).device
    head = load_head(model_dir, device=device).eval()
    correct = 0
    with torch.inference_mode():
        for lo in range(0, len(planned), 32):
            chunk = planned[lo:lo + 32]
            batch = collate([tokenize_response(
                tokenizer, prompts[v.pair], v.text, plan.max_length,
                finished=rows[v.pair]["chosen_finished" if v.from_chosen else "rejected_finished"])[:2]
                for v in chunk], tokenizer.pad_token_id)
            hidden = last_hidden_states(model, batch["input_ids"].to(device),
                                        batch["attention_mask"].to(device))
            logits = head(pool_hidden(hidden, batch["response_mask"], cfg.pooling))
            labels = torch.tensor([v.label for v in chunk], device=device)
            correct += int((logits.argmax(dim=-1) == labels).sum())
    return {"accuracy": correct / len(planned), "n_variants": len(planned), "n_pairs": len(rows)}


def score_variants(world: World, cands: Candidates, spo_pairs: dict[int, bool], plan: DemoPlan,
                   seed: int) -> list[dict[str, Any]]:
    """One record per distinct (role, response) SPO trained on in this seed: its oracle reward
    (``original``) and that of each degree variant (``levels``, level 1..D-1), or
    ``levels=None`` for a response SPO skips (not graded). ``spo_pairs``: row -> A chosen."""
    cfg = SPOConfig(levels=plan.spo_levels, weight=plan.spo_weight)
    by_row = {v: k for k, v in cands.pair_index.items()}
    seen: set[tuple[str, int, int]] = set()
    records, prompts, texts = [], [], []
    for row, a_chosen in spo_pairs.items():
        g, i, j = by_row[row]
        for role, k in zip(ROLES, (i, j) if a_chosen else (j, i), strict=True):
            if (role, g, k) in seen:
                continue
            seen.add((role, g, k))
            group = cands.groups[g]
            variants = variants_for(group.responses[k], cfg)
            record = {"seed": seed, "role": role, "original": float(group.scores[k]), "levels": None}
            if variants is not None:
                record["levels"] = [len(texts) + n for n in range(len(variants) - 1)]
                prompts += [group.prompt] * (len(variants) - 1)
                texts += [v.text for v in variants[1:]]
            records.append(record)
    scores = world.oracle.score_batch(prompts, texts) if texts else []
    for record in records:
        if record["levels"] is not None:
            record["levels"] = [float(scores[n]) for n in record["levels"]]
    return records


def spo_manipulation(records: list[dict[str, Any]], levels: int) -> dict[str, Any]:
    """Per level and role: variants, and the shares whose oracle reward is below, equal to or
    above the original's; ``passes`` when every cell's share below is >= 0.8.

    Beside each share below, ``share_below_positive``: the share among variants of responses
    whose own reward is positive (``n_positive`` variants). A response scoring 0 or less holds
    nothing the oracle rewards (no correct, asked fact), so removing content can only leave its
    reward or raise it (a wrong claim removed); the cell's share below cannot exceed the share
    of positive responses, which ``positive_share`` reports per role."""
    cells: dict[tuple[int, str], list[tuple[float, bool]]] = defaultdict(list)
    skipped = defaultdict(int)
    for r in records:
        if r["levels"] is None:
            skipped[r["role"]] += 1
            continue
        for level, reward in enumerate(r["levels"], start=1):
            cells[level, r["role"]].append((reward - r["original"], r["original"] > 0))
    table = []
    for level in range(1, levels):
        for role in ROLES:
            d = np.asarray([x for x, _ in cells[level, role]])
            pos = np.asarray([p for _, p in cells[level, role]], dtype=bool)
            table.append({"level": level, "role": role, "n_variants": int(d.size),
                          "share_below": float((d < 0).mean()) if d.size else None,
                          "share_equal": float((d == 0).mean()) if d.size else None,
                          "share_above": float((d > 0).mean()) if d.size else None,
                          "mean_change": float(d.mean()) if d.size else None,
                          "n_positive": int(pos.sum()),
                          "share_below_positive": float((d[pos] < 0).mean()) if pos.any() else None})
    every = np.concatenate([np.asarray([x for x, _ in v]) for v in cells.values()]) if cells else np.zeros(0)
    shares = [c["share_below"] for c in table if c["share_below"] is not None]
    by_role = {role: [c for c in table if c["role"] == role and c["share_below"] is not None]
               for role in ROLES}
    graded = {role: [r for r in records if r["role"] == role and r["levels"] is not None]
              for role in ROLES}
    return {"pass_share": PASS_SHARE, "by_level": table,
            "share_below": float((every < 0).mean()) if every.size else None,
            "lowest_share_below": min(shares) if shares else None,
            "passes": bool(shares) and min(shares) >= PASS_SHARE,
            "passes_by_role": {role: bool(cs) and min(c["share_below"] for c in cs) >= PASS_SHARE
                               for role, cs in by_role.items()},
            "positive_share": {role: float(np.mean([r["original"] > 0 for r in rs])) if rs else None
                               for role, rs in graded.items()},
            "responses_graded": sum(r["levels"] is not None for r in records),
            "responses_skipped": dict(skipped)}


def spo_dose(demo: DemoRun) -> dict[str, Any]:
    """The degree head's accuracy on held-out variants (pooled over the DPO+SPO runs) and at
    training time (mean over the last quarter of logged steps), beside chance, and the share
    of held-out answers that changed between DPO and DPO+SPO."""
    plan, main = demo.plan, budget_label(demo.plan.budget)
    accuracies, correct, total = [], 0.0, 0
    for run in demo.runs:
        if run.loss == "dpo+spo" and run.budget == main:
            values = [m["spo/accuracy"] for m in run.metrics if "spo/accuracy" in m]
            if values:
                accuracies.append(float(np.mean(values[-max(1, len(values) // 4):])))
            if run.spo_heldout:
                correct += run.spo_heldout["accuracy"] * run.spo_heldout["n_variants"]
                total += run.spo_heldout["n_variants"]
    dpo = {(r.seed, r.strategy): r for r in demo.runs if r.loss == "dpo" and r.budget == main}
    changed: dict[str, list[float]] = defaultdict(list)
    for run in demo.runs:
        other = dpo.get((run.seed, run.strategy))
        if run.loss == "dpo+spo" and run.budget == main and other and run.responses:
            diff = [a != b for a, b in zip(run.responses, other.responses, strict=True)]
            changed[run.strategy].append(float(np.mean(diff)))
    pooled = [v for values in changed.values() for v in values]
    classes = 2 * plan.spo_levels  # "separate" labels, the library default
    training = float(np.mean(accuracies)) if accuracies else None
    source = (f"held-out variants ({total} variants of the strategies' pairs on prompts they did "
              "not train on, every level)" if total else
              "training-time spo/accuracy (mean of the last quarter of logged steps; no held-out "
              "pairs at this budget)")
    return {"head_accuracy": correct / total if total else training,
            "head_accuracy_source": source, "head_accuracy_heldout_variants": total,
            "head_accuracy_training": training,
            "head_chance": 1.0 / classes,
            "changed_answers": float(np.mean(pooled)) if pooled else None,
            "changed_answers_by_strategy": {s: float(np.mean(v)) for s, v in changed.items()}}
