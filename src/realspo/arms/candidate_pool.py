"""A seed's candidate pool on the proving ground: K samples per training prompt from a model,
their oracle rewards, embeddings and one simulated label per distinct pair
(:class:`realspo.arms.records.Candidates`), and an arm's ranked pairs from that pool."""

from __future__ import annotations

from typing import Any

import numpy as np

from realspo.arms.knobs import with_confusion
from realspo.arms.plan import DemoPlan
from realspo.arms.records import Candidates
from realspo.arms.timings import timed
from realspo.generation.prompts import PromptRecord
from realspo.generation.sampling import SamplingSettings, iter_samples
from realspo.labels.annotator import label_errors, simulate_labels
from realspo.proving_ground.world import World
from realspo.schema import PromptGroup
from realspo.selection.strategies import select_pairs

WRITER_SEED_OFFSET = 7_000_000_000  # written candidates never repeat the SFT corpus's draws


def sample_responses(model: Any, tokenizer: Any, prompts: list[str], settings: SamplingSettings,
                     batch_size: int = 32) -> list[list[str]]:
    """K samples per prompt (``settings.num_responses``); sample ``j`` of prompt ``i`` draws its
    noise from ``(settings.seed, i, j)`` only (see :mod:`realspo.generation.sampling`)."""
    return [s for s, _ in sample_responses_finished(model, tokenizer, prompts, settings, batch_size)]


def sample_responses_finished(model: Any, tokenizer: Any, prompts: list[str],
                              settings: SamplingSettings, batch_size: int = 32
                              ) -> list[tuple[list[str], list[bool]]]:
    """:func:`sample_responses` with, per sample, whether it ended at EOS (False: cut)."""
    records = [PromptRecord(i, f"p{i}", p) for i, p in enumerate(prompts)]
    return [(s, f) for _, batch, flags in iter_samples(model, tokenizer, records, settings,
                                                       batch_size, progress=False)
            for s, f in zip(batch, flags, strict=True)]


def build_candidates(world: World, model: Any, tokenizer: Any, plan: DemoPlan, seed: int,
                     timings: dict[str, float]) -> Candidates:
    """Sample, embed, and label every candidate pair of one seed."""
    from realspo.embeddings.embed import embed_with_causal_lm

    prompts = world.train_prompts[: plan.n_train_prompts]
    settings = SamplingSettings(num_responses=plan.num_candidates, temperature=plan.temperature,
                                max_new_tokens=plan.max_new_tokens, seed=seed)
    with timed(timings, "candidates"):
        if plan.candidates == "world":
            samples = written_responses(world, prompts, plan.num_candidates, seed)
        else:
            samples = sample_responses_finished(model, tokenizer, prompts, settings)
    groups = scored_groups(world, range(len(prompts)), prompts, samples)
    with timed(timings, "embeddings"):
        flat = [r for g in groups for r in g.responses]
        embeddings = embed_with_causal_lm(model, tokenizer, flat, show_progress=False)
    cands = labelled_candidates(groups, embeddings, plan, seed)
    return with_confusion(cands, world, plan.annotator_confusion, seed)  # K = 0: labels unchanged


def written_responses(world: World, prompts: list[str], k: int, seed: int
                      ) -> list[tuple[list[str], list[bool]]]:
    """``k`` responses per prompt from the world's own writer (the SFT corpus's distribution,
    fresh draws: seeded by ``seed`` and the prompt's position, apart from the corpus's seeds),
    all finished. The ``premise`` world's candidates: its small SFT model cannot tell, before it
    writes an answer, how good that answer will be, so its samples lose the ladder's coupling."""
    return [(world.responses_for(p, k, seed=WRITER_SEED_OFFSET + seed * 1_000_003 + i), [True] * k)
            for i, p in enumerate(prompts)]


def scored_groups(world: World, prompt_ids: Any, prompts: list[str],
                  samples: list[tuple[list[str], list[bool]]]) -> list[PromptGroup]:
    """One group per training prompt (``train-{id}``) with its non-empty samples, their
    finished flags and oracle rewards; a prompt whose samples are all empty is left out (an
    empty sample has nothing to embed or label)."""
    groups = []
    for i, prompt, (responses, finished) in zip(prompt_ids, prompts, samples, strict=True):
        kept = [(r, f) for r, f in zip(responses, finished, strict=True) if r]
        if kept:
            texts = [r for r, _ in kept]
            groups.append(PromptGroup(f"train-{i}", prompt, texts,
                                      scores=world.oracle.score_batch([prompt] * len(kept), texts),
                                      finished=[f for _, f in kept]))
    return groups


def labelled_candidates(groups: list[PromptGroup], embeddings: np.ndarray, plan: DemoPlan,
                        label_seed: int) -> Candidates:
    """Every distinct-text pair within each group, with its cosine similarity, oracle rewards
    and one simulated label (seeded by ``label_seed``)."""
    from realspo.selection.rows import response_keys

    keys = response_keys(groups)
    index: dict[tuple[int, int, int], int] = {}
    sims, ra, rb = [], [], []
    start = 0
    for g, group in enumerate(groups):
        k = len(group.responses)
        for i in range(k):
            for j in range(i + 1, k):
                if keys[start + i] == keys[start + j]:
                    continue  # identical texts: never a candidate pair
                index[g, i, j] = len(sims)
                sims.append(float(embeddings[start + i] @ embeddings[start + j]))
                ra.append(group.scores[i])
                rb.append(group.scores[j])
        start += k
    reward_a, reward_b = np.asarray(ra, dtype=np.float64), np.asarray(rb, dtype=np.float64)
    a_preferred = simulate_labels(reward_a, reward_b, plan.tau, plan.flip, seed=label_seed)
    return Candidates(groups, embeddings, keys, index, np.asarray(sims), reward_a, reward_b,
                      a_preferred, label_errors(a_preferred, reward_a, reward_b))


def selected_pairs(cands: Candidates, strategy: str, seed: int) -> list[int]:
    """Rows of ``cands``' pair arrays, in the strategy's rank order (every eligible prompt)."""
    sizes = [len(g.responses) for g in cands.groups]
    sel = select_pairs(cands.embeddings, sizes, strategy, None, seed=seed, response_keys=cands.keys)
    return [cands.pair_index[g, a, b] for g, a, b in
            zip(sel.group_index.tolist(), sel.index_a.tolist(), sel.index_b.tolist(), strict=True)]


