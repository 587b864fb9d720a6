"""Every registered selection strategy, end to end: through ``select_pairs`` and through
``realspo select --embeddings``, each with the pair it must pick on a hand-made prompt and the
order in which it must rank a dataset. A strategy added to the registry without an entry in
``EXPECTED`` fails here. Strategies that read per-response scores get the hand-made ``RHO``
(implicit rewards) and ``R`` (rewards) below; the others ignore them."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from realspo.cli import main
from realspo.errors import ConfigError
from realspo.selection.strategies import STRATEGIES, get_strategy, select_pairs, strategy_names

# One prompt, five responses on the unit circle at these angles (degrees). Cluster A is
# 0/30/60, cluster B is 200/240. Least similar pair: (2, 4), 180 degrees apart. Most similar:
# (0, 1) and (1, 2), both 30 degrees apart; the first in flattened order wins. k-means (k=2)
# from the easy pair splits A | B; A's member nearest its centre is 1 (30 degrees), B's two
# members tie and the lower index, 3, wins.
ANGLES = [0.0, 30.0, 60.0, 200.0, 240.0]
EMB = np.stack([np.cos(np.radians(ANGLES)), np.sin(np.radians(ANGLES))], 1).astype(np.float32)
VALID_PAIRS = [(i, j) for i in range(5) for j in range(i + 1, 5)]  # flattened (i*K+j) order
SEED = 0  # random's pick under it, (1, 4), is none of the others'
# Implicit rewards beta log pi/pi_ref: smallest |rho_i - rho_j| is (1, 2) (0.3), largest (0, 4)
# (4.1). design weighs |z|^2 by sigma(m)(1 - sigma(m)): (2, 3), 140 degrees apart at m = -2.0,
# scores w |z|^2 = 0.105 x 3.53 = 0.37, above (1, 3) (0.33) and (2, 4) (0.14).
RHO = np.array([-2.5, -2.0, -1.7, 0.3, 1.6])
# Rewards: highest 2, lowest 0 -> reward-gap (0, 2); closest pair (3, 4) (0.6) -> reward-uncertain.
R = np.array([-4.2, -1.1, 1.8, 0.4, 1.0])
SCORES = {"implicit_rewards": RHO, "rewards": R}

# Two-response prompts whose cosines are 0.5, -0.5, 0.9, 0.0 (one pair each), implicit-reward
# margins 0.2, -1.0, 0.05, 0.6 and reward gaps 1.0, -0.3, 2.0, 0.1.
PAIR_COSINES = [0.5, -0.5, 0.9, 0.0]
PAIR_MARGINS = [0.2, -1.0, 0.05, 0.6]
PAIR_GAPS = [1.0, -0.3, 2.0, 0.1]
POOL_SCORES = {"implicit_rewards": np.ravel([[0.0, -m] for m in PAIR_MARGINS]),
               "rewards": np.ravel([[g, 0.0] for g in PAIR_GAPS])}


def _two_response_pool() -> tuple[np.ndarray, list[int]]:
    rows = []
    for c in PAIR_COSINES:
        rows += [[1.0, 0.0], [c, float(np.sqrt(1 - c * c))]]
    return np.asarray(rows, dtype=np.float32), [2] * len(PAIR_COSINES)


def _random_pair(seed: int) -> tuple[int, int]:
    """The documented draw: the floor(u * n_valid)-th valid pair, u the prompt's first uniform."""
    u = np.random.default_rng(seed).random(1)[0]
    return VALID_PAIRS[int(u * len(VALID_PAIRS))]


def _random_order(seed: int, n: int) -> list[int]:
    """The documented ranking: after one uniform per prompt, a permutation of the same generator."""
    rng = np.random.default_rng(seed)
    rng.random(n)
    return rng.permutation(n).tolist()


# name -> (the pair picked on EMB, the order of the two-response pool's prompts)
EXPECTED = {
    "easy": ((2, 4), [1, 3, 0, 2]),
    "hard": ((0, 1), [2, 0, 3, 1]),
    "centroid": ((1, 3), [1, 3, 0, 2]),
    "random": (_random_pair(SEED), _random_order(SEED, len(PAIR_COSINES))),
    "margin": ((1, 2), [2, 0, 3, 1]),  # ascending |m|
    "margin-large": ((0, 4), [1, 3, 0, 2]),  # descending |m|
    # greedy log det in 2-D: w |z|^2 = 0.59 (prompt 1) first, then the directions matter
    "design": ((2, 3), [1, 3, 0, 2]),
    "reward-gap": ((0, 2), [2, 0, 1, 3]),  # descending |gap|
    "reward-uncertain": ((3, 4), [3, 1, 0, 2]),  # ascending |gap|
}


def test_every_registered_strategy_has_an_expectation_here():
    assert set(EXPECTED) == set(STRATEGIES) == set(strategy_names())


def test_registry_entries_are_named_by_their_key():
    for name, strategy in STRATEGIES.items():
        assert strategy.name == name and get_strategy(name) is strategy and strategy.description


def test_the_hand_made_example_separates_the_strategies():
    assert len({pair for pair, _ in EXPECTED.values()}) == len(EXPECTED)


@pytest.mark.parametrize("name", strategy_names())
def test_strategy_picks_its_pair_through_select_pairs(name):
    sel = select_pairs(EMB, [5], name, seed=SEED, **SCORES)
    assert (int(sel.index_a[0]), int(sel.index_b[0])) == EXPECTED[name][0]
    a, b = EXPECTED[name][0]
    assert sel.similarity[0] == pytest.approx(float(EMB[a] @ EMB[b]), abs=1e-6)


@pytest.mark.parametrize("name", strategy_names())
def test_strategy_ranks_the_dataset_through_select_pairs(name):
    emb, sizes = _two_response_pool()
    sel = select_pairs(emb, sizes, name, seed=SEED, **POOL_SCORES)
    assert sel.group_index.tolist() == EXPECTED[name][1]
    part = select_pairs(emb, sizes, name, 2, seed=SEED, **POOL_SCORES)
    assert part.group_index.tolist() == EXPECTED[name][1][:2]


def test_random_reaches_every_valid_pair_over_seeds():
    seen = {tuple(int(v[0]) for v in (s.index_a, s.index_b))
            for s in (select_pairs(EMB, [5], "random", seed=seed) for seed in range(200))}
    assert seen == set(VALID_PAIRS)


@pytest.mark.parametrize("name", strategy_names())
def test_strategy_picks_its_pair_through_the_cli(name, tmp_path, capsys, monkeypatch):
    from realspo.pipeline import select as select_command

    data = tmp_path / "pool.jsonl"
    data.write_text(json.dumps({"prompt_id": "p1", "prompt": "Q", "responses": list("abcde")}) + "\n")
    np.save(tmp_path / "emb.npy", EMB)
    out = tmp_path / "pairs.jsonl"
    # The models' scores are stood in for by the hand-made ones (tests/test_selection_beyond_real.py
    # runs the real scorers end to end).
    monkeypatch.setattr(select_command, "check_scorers", lambda cfg: None)
    monkeypatch.setattr(select_command, "pair_scores", lambda cfg, groups, reference_logps=None: {
        k: v for k, v in SCORES.items()
        if (k == "implicit_rewards" and cfg.policy) or (k == "rewards" and cfg.reward_model)})
    strategy = get_strategy(name)
    extra = (["--policy", "pol", "--reference", "ref"] if strategy.uses("implicit_rewards") else []) + \
        (["--reward-model", "rm"] if strategy.uses("rewards") else [])
    code = main(["select", "--data", str(data), "--embeddings", str(tmp_path / "emb.npy"),
                 "--strategy", name, "--seed", str(SEED), "--out", str(out), *extra])
    capsys.readouterr()
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["index_a"], r["index_b"], r["strategy"]) for r in rows] == [(*EXPECTED[name][0], name)]


def test_unknown_strategy_errors_listing_the_known_ones():
    with pytest.raises(ConfigError, match="unknown strategy 'best'") as err:
        get_strategy("best")
    assert all(name in str(err.value) for name in STRATEGIES)
    with pytest.raises(ConfigError, match="expected one of " + ", ".join(STRATEGIES)):
        select_pairs(EMB, [5], "best")


def test_cli_strategy_choices_and_help_come_from_the_registry(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["select", "--help"])
    # argparse may wrap a line after a hyphen ("margin- large"): undo that before comparing
    help_text = re.sub(r"(\w)- ", r"\1-", " ".join(capsys.readouterr().out.split()))
    for strategy in STRATEGIES.values():
        assert f"{strategy.name}: {strategy.description}" in help_text
    with pytest.raises(SystemExit) as exit_:
        main(["select", "--data", "x.jsonl", "--embeddings", "e.npy", "--strategy", "best",
              "--out", str(tmp_path / "o.jsonl")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'best'" in err and all(f"'{name}'" in err for name in STRATEGIES)
