"""REAL selection strategies against brute-force references, budgets and determinism."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.cluster import KMeans

import realspo.selection.strategies as selection
from realspo.errors import ConfigError
from realspo.selection.budget import count_eligible, parse_budget, resolve_budget
from realspo.selection.strategies import select_pairs

TIE = 1e-6  # the documented tie tolerance for k-means distances


def _random_pool(seed: int, n_groups: int = 120, dim: int = 12, duplicates: int = 25):
    """Mixed K (1..6) random embeddings; some responses share a key with their predecessor."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 7, size=n_groups)
    n = int(sizes.sum())
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    keys = np.arange(n)
    dup = rng.choice(np.arange(1, n), duplicates, replace=False)
    keys[dup] = keys[dup - 1]
    return emb, sizes, keys


def _scores(n: int) -> dict[str, np.ndarray]:
    """Per-response inputs of the strategies that need them (ignored by the others)."""
    rng = np.random.default_rng(n)
    return {"implicit_rewards": rng.normal(size=n), "rewards": rng.normal(size=n)}


def _reference(emb, sizes, keys, strategy):
    """Python loops over every pair of every prompt; sklearn k-means for centroid."""
    out, start = {}, 0
    for g, k in enumerate(sizes):
        x = emb[start : start + k].astype(np.float64)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        pairs = [(i, j) for i, j in itertools.combinations(range(k), 2)
                 if keys[start + i] != keys[start + j]]
        start += k
        if not pairs:
            continue
        sim = {p: float(x[p[0]] @ x[p[1]]) for p in pairs}
        easy = min(pairs, key=lambda p: sim[p])  # min() keeps the first of equals
        if strategy == "easy":
            out[g] = easy
        elif strategy == "hard":
            out[g] = max(pairs, key=lambda p: sim[p])
        else:
            km = KMeans(n_clusters=2, init=x[list(easy)], n_init=1, tol=0.0, max_iter=300,
                        algorithm="lloyd").fit(x)
            picks = []
            for c in range(2):
                members = np.flatnonzero(km.labels_ == c)
                d = ((x[members] - km.cluster_centers_[c]) ** 2).sum(1)
                picks.append(members[np.flatnonzero(d <= d.min() + TIE)[0]])
            pair = (min(picks), max(picks))
            out[g] = pair if pair in sim else easy
    return out


def _as_dict(sel):
    return {int(g): (int(a), int(b)) for g, a, b in zip(sel.group_index, sel.index_a, sel.index_b, strict=True)}


@pytest.mark.parametrize("strategy", ["easy", "hard", "centroid"])
@pytest.mark.parametrize("seed", [0, 1])
def test_strategy_matches_brute_force_reference(strategy, seed):
    emb, sizes, keys = _random_pool(seed)
    sel = select_pairs(emb, sizes, strategy, response_keys=keys)
    expected = _reference(emb, sizes, keys, strategy)
    assert _as_dict(sel) == expected
    # similarity reported is the pair's cosine
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    cos = (unit[starts[sel.group_index] + sel.index_a] * unit[starts[sel.group_index] + sel.index_b]).sum(1)
    np.testing.assert_allclose(sel.similarity, cos, atol=1e-5)


@pytest.mark.parametrize("strategy", ["easy", "hard", "random", "centroid"])
def test_result_does_not_depend_on_chunk_size(strategy, monkeypatch):
    emb, sizes, keys = _random_pool(2)
    whole = select_pairs(emb, sizes, strategy, seed=5, response_keys=keys)
    monkeypatch.setattr(selection, "CHUNK_ELEMENTS", 40)  # a few prompts per chunk
    chunked = select_pairs(emb, sizes, strategy, seed=5, response_keys=keys)
    assert _as_dict(chunked) == _as_dict(whole)
    np.testing.assert_array_equal(chunked.group_index, whole.group_index)


def test_all_similarities_cover_every_valid_pair():
    emb, sizes, keys = _random_pool(3)
    sel = select_pairs(emb, sizes, "easy", response_keys=keys)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    n_valid = sum(keys[s + i] != keys[s + j] for s, k in zip(starts, sizes, strict=True)
                  for i, j in itertools.combinations(range(k), 2))
    assert len(sel.all_similarities) == n_valid
    assert sel.all_similarities.min() == pytest.approx(sel.similarity.min(), abs=1e-6)


def test_centroid_picks_one_response_from_each_cluster():
    # Two tight clusters around orthogonal directions; the easy init is the two outliers 0 and 3.
    base = np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32)
    emb = np.stack([base[0] + [0, 0, 0.3], base[0], base[0] + [0, 0, 0.1],
                    base[1] + [0, 0, -0.3], base[1], base[1] + [0, 0, -0.1]]).astype(np.float32)
    sel = select_pairs(emb, [6], "centroid")
    easy = select_pairs(emb, [6], "easy")
    assert (int(easy.index_a[0]), int(easy.index_b[0])) == (0, 3)
    # members nearest each cluster mean: 2 (offset 0.1 toward the mean 0.133) and 5
    assert (int(sel.index_a[0]), int(sel.index_b[0])) == (2, 5)


def test_random_picks_every_valid_pair_about_equally_often():
    # 3000 copies of one prompt with K=4 (6 pairs, but responses 2 and 3 are the same text).
    rng = np.random.default_rng(0)
    one = rng.normal(size=(4, 5)).astype(np.float32)
    emb = np.tile(one, (3000, 1))
    keys = np.tile([0, 1, 2, 2], 3000) + np.repeat(np.arange(3000) * 10, 4)
    sel = select_pairs(emb, [4] * 3000, "random", seed=1, response_keys=keys)
    pairs, counts = np.unique(np.stack([sel.index_a, sel.index_b], 1), axis=0, return_counts=True)
    assert [tuple(p) for p in pairs] == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3)]
    assert counts.min() > 500 and counts.max() < 700  # expected 600 each


def test_random_is_deterministic_under_a_seed_and_changes_with_it():
    emb, sizes, keys = _random_pool(4)
    a = select_pairs(emb, sizes, "random", 30, seed=7, response_keys=keys)
    b = select_pairs(emb, sizes, "random", 30, seed=7, response_keys=keys)
    c = select_pairs(emb, sizes, "random", 30, seed=8, response_keys=keys)
    assert _as_dict(a) == _as_dict(b)
    np.testing.assert_array_equal(a.group_index, b.group_index)
    assert not np.array_equal(a.group_index, c.group_index)


def _two_response_pool():
    """Five prompts with K=2 and known cosines 0.9, -0.5, 0.1, 0.7, -0.2."""
    cosines = [0.9, -0.5, 0.1, 0.7, -0.2]
    rows = []
    for c in cosines:
        rows += [[1.0, 0.0], [c, float(np.sqrt(1 - c * c))]]
    return np.array(rows, dtype=np.float32), [2] * len(cosines)


def test_easy_budget_keeps_the_least_similar_pairs_of_the_dataset():
    emb, sizes = _two_response_pool()
    sel = select_pairs(emb, sizes, "easy", 2)
    assert sel.group_index.tolist() == [1, 4]
    np.testing.assert_allclose(sel.similarity, [-0.5, -0.2], atol=1e-6)


def test_hard_budget_keeps_the_most_similar_pairs_of_the_dataset():
    emb, sizes = _two_response_pool()
    sel = select_pairs(emb, sizes, "hard", 2)
    assert sel.group_index.tolist() == [0, 3]


def test_centroid_ranks_like_easy():
    emb, sizes = _two_response_pool()
    sel = select_pairs(emb, sizes, "centroid", 3)
    assert sel.group_index.tolist() == [1, 4, 2]


def test_smaller_budget_is_a_prefix_of_a_larger_one():
    emb, sizes, keys = _random_pool(5)
    for strategy in selection.STRATEGIES:
        full = select_pairs(emb, sizes, strategy, None, seed=3, response_keys=keys, **_scores(len(emb)))
        part = select_pairs(emb, sizes, strategy, 10, seed=3, response_keys=keys, **_scores(len(emb)))
        np.testing.assert_array_equal(part.group_index, full.group_index[:10])


def test_ranking_ties_go_to_the_earlier_prompt():
    emb = np.tile(np.array([[1, 0], [0, 1]], dtype=np.float32), (4, 1))  # four equal pairs
    assert select_pairs(emb, [2] * 4, "easy", 2).group_index.tolist() == [0, 1]
    assert select_pairs(emb, [2] * 4, "hard", 2).group_index.tolist() == [0, 1]


def test_budget_fraction_is_rounded_share_of_eligible_prompts():
    emb, sizes, keys = _random_pool(6)
    eligible = count_eligible(sizes, keys)
    sel = select_pairs(emb, sizes, "easy", 0.25, response_keys=keys)
    assert len(sel) == int(np.floor(0.25 * eligible + 0.5))
    assert len(select_pairs(emb, sizes, "easy", "0.001", response_keys=keys)) == 1  # at least one


def test_budget_count_larger_than_eligible_prompts_names_both_numbers():
    emb, sizes, keys = _random_pool(6)
    eligible = count_eligible(sizes, keys)
    with pytest.raises(ConfigError, match=rf"asks for {eligible + 1} pairs, but only {eligible} prompts"):
        select_pairs(emb, sizes, "easy", eligible + 1, response_keys=keys)


def test_parse_budget_reads_counts_fractions_and_percentages():
    assert parse_budget("100") == 100 and isinstance(parse_budget("100"), int)
    assert parse_budget("0.5") == 0.5
    assert parse_budget("1.0") == 1.0 and isinstance(parse_budget("1.0"), float)
    assert parse_budget("25%") == 0.25
    assert parse_budget(7) == 7
    for bad in ("0", "1.5", "-3", "half", "0.0", True):
        with pytest.raises(ConfigError, match="--budget"):
            parse_budget(bad)
    assert resolve_budget(None, 9) == 9


def test_identical_responses_are_never_paired_and_short_prompts_are_counted():
    emb = np.random.default_rng(0).normal(size=(9, 4)).astype(np.float32)
    sizes = [3, 2, 1, 3]
    # group 0: texts A A B; group 1: C C (skipped); group 2: one response (skipped); group 3: D E F
    keys = np.array([0, 0, 1, 2, 2, 3, 4, 5, 6])
    for strategy in selection.STRATEGIES:
        sel = select_pairs(emb, sizes, strategy, response_keys=keys, **_scores(len(emb)))
        assert sorted(sel.group_index.tolist()) == [0, 3]
        assert sel.skipped == {"fewer than two distinct responses": 2}
        g0 = int(np.flatnonzero(sel.group_index == 0)[0])
        assert (sel.index_a[g0], sel.index_b[g0]) in [(0, 2), (1, 2)]
    assert len(select_pairs(emb, sizes, "easy", response_keys=keys).all_similarities) == 2 + 3
    assert count_eligible(sizes, keys) == 2


def test_memory_mapped_embeddings_are_read_without_copying_all(tmp_path):
    emb, sizes, keys = _random_pool(7)
    np.save(tmp_path / "e.npy", emb)
    mapped = np.load(tmp_path / "e.npy", mmap_mode="r")
    assert _as_dict(select_pairs(mapped, sizes, "easy", response_keys=keys)) == \
        _as_dict(select_pairs(emb, sizes, "easy", response_keys=keys))


def test_row_count_mismatch_and_unknown_strategy_are_config_errors():
    emb = np.zeros((5, 3), dtype=np.float32)
    with pytest.raises(ConfigError, match="5 rows, but the data has 6 responses"):
        select_pairs(emb, [3, 3], "easy")
    with pytest.raises(ConfigError, match="unknown strategy 'best'"):
        select_pairs(emb, [5], "best")


def test_non_finite_embedding_row_is_reported():
    emb = np.ones((4, 3), dtype=np.float32)
    emb[3, 1] = np.nan
    with pytest.raises(ConfigError, match="row 3 is not finite"):
        select_pairs(emb, [2, 2], "easy")
