"""Pair orientation, output rows, and the ``realspo select`` command end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from realspo.cli import main
from realspo.schema import PromptGroup
from realspo.selection.rows import build_rows, orient_pair, response_keys
from realspo.selection.strategies import Selection


def _selection(groups, pairs):
    g, a, b = (np.array(v) for v in zip(*pairs, strict=True))
    return Selection(g, a, b, np.linspace(0.1, 0.2, len(pairs)), np.zeros(0), {})


# --- orientation and rows -----------------------------------------------------------------


def test_orient_pair_puts_the_higher_score_first():
    group = PromptGroup("p", "Q", ["a", "b", "c"], scores=[1.0, 3.0, 2.0])
    assert orient_pair(group, 0, 1) == (1, 0)
    assert orient_pair(group, 1, 2) == (1, 2)


def test_orient_pair_prefers_an_explicit_preference_over_scores():
    group = PromptGroup("p", "Q", ["a", "b"], scores=[5.0, 1.0], preferences=[(1, 0)])
    assert orient_pair(group, 0, 1) == (1, 0)


def test_orient_pair_returns_none_for_ties_and_missing_labels():
    assert orient_pair(PromptGroup("p", "Q", ["a", "b"], scores=[2.0, 2.0]), 0, 1) is None
    assert orient_pair(PromptGroup("p", "Q", ["a", "b", "c"], preferences=[(0, 1)]), 1, 2) is None


def test_build_rows_writes_oriented_preference_rows_and_counts_drops():
    groups = [
        PromptGroup("p1", "Q1", ["low", "high"], scores=[0.0, 1.0]),
        PromptGroup("p2", "Q2", ["x", "y"], scores=[2.0, 2.0]),
        PromptGroup("p3", "Q3", ["u", "v"]),
    ]
    rows, dropped, kind = build_rows(groups, _selection(groups, [(0, 0, 1), (1, 0, 1), (2, 0, 1)]), "easy")
    assert kind == "preference"
    assert dropped == {"tied scores": 1, "no label for the pair": 1}
    assert rows == [{
        "prompt": "Q1", "chosen": "high", "rejected": "low", "prompt_id": "p1",
        "chosen_index": 1, "rejected_index": 0, "chosen_score": 1.0, "rejected_score": 0.0,
        "similarity": 0.1, "strategy": "easy",
    }]


def test_build_rows_writes_annotation_rows_without_labels():
    groups = [PromptGroup("p1", "Q1", ["a", "b", "c"])]
    rows, dropped, kind = build_rows(groups, _selection(groups, [(0, 0, 2)]), "hard")
    assert (kind, dropped) == ("annotation", {})
    assert rows == [{
        "pair_id": "p1:0-2", "prompt": "Q1", "response_a": "a", "response_b": "c",
        "similarity": 0.1, "prompt_id": "p1", "index_a": 0, "index_b": 2, "strategy": "hard",
    }]


def test_response_keys_match_identical_texts():
    groups = [PromptGroup("p", "Q", ["a", "b ", "a"]), PromptGroup("q", "Q", ["b", "c"])]
    keys = response_keys(groups)
    assert keys[0] == keys[2] and keys[1] == keys[3] and len(set(keys.tolist())) == 3


# --- the command ----------------------------------------------------------------------------

# Four prompts: p1 has a clear least-similar pair (0, 2); p2 a score tie; p3 two copies of one
# text (skipped); p4 a least-similar pair (1, 2).
MULTI = [
    {"prompt_id": "p1", "prompt": "Q1", "responses": ["a", "b", "c"], "scores": [1, 3, 2]},
    {"prompt_id": "p2", "prompt": "Q2", "responses": ["d", "e"], "scores": [2, 2]},
    {"prompt_id": "p3", "prompt": "Q3", "responses": ["f", "f"], "scores": [0, 1]},
    {"prompt_id": "p4", "prompt": "Q4", "responses": ["g", "h", "i"], "scores": [0, 1, 5]},
]
EMB = np.array([
    [1, 0, 0], [0.8, 0.6, 0], [-1, 0.1, 0],    # p1: (0, 2) cos ~ -0.995
    [1, 0, 0], [0, 1, 0],                      # p2: cos 0
    [0, 0, 1], [0, 0, 1],                      # p3
    [0, 1, 0], [0.6, 0.8, 0], [0, -0.9, 0.44],  # p4: (0, 2) cos ~ -0.898 is least similar
], dtype=np.float32)


@pytest.fixture
def pool(tmp_path):
    data = tmp_path / "pool.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in MULTI))
    np.save(tmp_path / "emb.npy", EMB)
    return tmp_path


def _run(capsys, *args):
    code = main(["select", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_select_with_embeddings_file_writes_oriented_pairs_and_summary(pool, capsys):
    code, out, _ = _run(capsys, "--data", pool / "pool.jsonl", "--embeddings", pool / "emb.npy",
                        "--out", pool / "pairs.jsonl")
    assert code == 0
    rows = _read_jsonl(pool / "pairs.jsonl")
    # ranked by similarity: p1 (-0.995), p4 (-0.898); p2's tie dropped; p3 skipped
    assert [(r["prompt_id"], r["chosen"], r["rejected"]) for r in rows] == [("p1", "c", "a"), ("p4", "i", "g")]
    assert rows[0]["chosen_score"] == 2.0 and rows[0]["similarity"] == pytest.approx(-0.995, abs=1e-3)
    assert "format: multi (auto-detected)" in out
    assert "skipped 1 (fewer than two distinct responses)" in out
    assert "pairs dropped: 1 (tied scores)" in out
    assert "pairs written: 2 preference rows" in out
    assert out.splitlines()[-2].startswith("selected") and out.splitlines()[-1].startswith("all pairs")


def test_select_budget_count_keeps_the_least_similar(pool, capsys):
    code, _, _ = _run(capsys, "--data", pool / "pool.jsonl", "--embeddings", pool / "emb.npy",
                      "--budget", "1", "--out", pool / "pairs.jsonl")
    assert code == 0
    assert [r["prompt_id"] for r in _read_jsonl(pool / "pairs.jsonl")] == ["p1"]


def test_select_without_labels_writes_annotation_parquet(pool, capsys):
    import pyarrow.parquet as pq

    unlabeled = pool / "unlabeled.jsonl"
    unlabeled.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "scores"}) + "\n" for r in MULTI))
    code, out, _ = _run(capsys, "--data", unlabeled, "--embeddings", pool / "emb.npy",
                        "--strategy", "hard", "--out", pool / "pairs.parquet")
    assert code == 0
    rows = pq.read_table(pool / "pairs.parquet").to_pylist()
    # hard: most similar pair; p1 (0, 1) cos 0.8, p4 (0, 1) cos 0.8 -> tie, earlier prompt first
    assert [r["pair_id"] for r in rows] == ["p1:0-1", "p4:0-1", "p2:0-1"]
    assert rows[0]["response_a"] == "a" and rows[0]["response_b"] == "b"
    assert "3 annotation rows" in out


def test_select_with_tiny_model_saves_embeddings_that_reproduce_the_pairs(pool, capsys, tiny_model_dir):
    code, _, _ = _run(capsys, "--data", pool / "pool.jsonl", "--model", tiny_model_dir,
                      "--strategy", "centroid", "--save-embeddings", pool / "tiny.npy",
                      "--no-progress", "--out", pool / "a.jsonl")
    assert code == 0
    saved = np.load(pool / "tiny.npy")
    assert saved.shape[0] == len(EMB)
    np.testing.assert_allclose(np.linalg.norm(saved, axis=1), 1.0, atol=1e-5)
    code, _, _ = _run(capsys, "--data", pool / "pool.jsonl", "--embeddings", pool / "tiny.npy",
                      "--strategy", "centroid", "--out", pool / "b.jsonl")
    assert code == 0
    assert not (pool / "a.jsonl.embeddings-partial").exists()  # progress removed on success
    a, b = _read_jsonl(pool / "a.jsonl"), _read_jsonl(pool / "b.jsonl")
    assert [(r["prompt_id"], r["chosen_index"], r["rejected_index"]) for r in a] == \
        [(r["prompt_id"], r["chosen_index"], r["rejected_index"]) for r in b]
    assert [r["similarity"] for r in a] == pytest.approx([r["similarity"] for r in b], abs=1e-6)


def test_resume_reuses_rows_saved_by_an_interrupted_run(pool, capsys, caplog, tiny_model_dir):
    import logging

    from realspo.embeddings.embed import embed_responses
    from realspo.formats.registry import load_groups
    from realspo.pipeline.select import progress_dir

    # An interrupted run leaves its finished rows in OUT.embeddings-partial/.
    groups, _ = load_groups(str(pool / "pool.jsonl"))
    embed_responses(groups, tiny_model_dir, show_progress=False, checkpoint=progress_dir(pool / "o.jsonl"))
    assert progress_dir(pool / "o.jsonl").is_dir()
    with caplog.at_level(logging.INFO):
        code, _, _ = _run(capsys, "--data", pool / "pool.jsonl", "--model", tiny_model_dir,
                          "--resume", "--no-progress", "--out", pool / "o.jsonl")
    assert code == 0
    assert "10 of 10 responses were embedded before the interruption" in caplog.text
    assert not progress_dir(pool / "o.jsonl").exists()


def _assert_clean_failure(capsys, code, err, must_name, directory, before):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("realspo select: error:"), err
    for text in must_name:
        assert text in lines[0], lines[0]
    assert sorted(p.name for p in directory.iterdir()) == before  # nothing left behind


def _args(pool, *extra):
    return ["--data", pool / "pool.jsonl", "--embeddings", pool / "emb.npy", "--out", pool / "out.jsonl", *extra]


def test_budget_larger_than_eligible_prompts_fails_cleanly(pool, capsys):
    before = sorted(p.name for p in pool.iterdir())
    code, _, err = _run(capsys, *_args(pool, "--budget", "4"))
    _assert_clean_failure(capsys, code, err, ["--budget", "4 pairs", "only 3 prompts"], pool, before)


def test_embeddings_with_wrong_row_count_fail_cleanly(pool, capsys):
    np.save(pool / "emb.npy", EMB[:-1])
    before = sorted(p.name for p in pool.iterdir())
    code, _, err = _run(capsys, *_args(pool))
    _assert_clean_failure(capsys, code, err, ["emb.npy", "9 rows", "10 responses"], pool, before)


def test_malformed_json_line_fails_cleanly(pool, capsys):
    (pool / "pool.jsonl").write_text(json.dumps(MULTI[0]) + "\n{not json\n")
    before = sorted(p.name for p in pool.iterdir())
    code, _, err = _run(capsys, *_args(pool))
    _assert_clean_failure(capsys, code, err, ["pool.jsonl:line 2", "malformed JSON"], pool, before)


def test_unreadable_model_path_fails_cleanly(pool, capsys):
    (pool / "not-a-model").mkdir()
    before = sorted(p.name for p in pool.iterdir())
    code, _, err = _run(capsys, "--data", pool / "pool.jsonl", "--model", pool / "not-a-model",
                        "--out", pool / "out.jsonl")
    _assert_clean_failure(capsys, code, err, ["not-a-model"], pool, before)


def test_existing_output_is_kept_without_overwrite(pool, capsys):
    (pool / "out.jsonl").write_text("keep me\n")
    before = sorted(p.name for p in pool.iterdir())
    code, _, err = _run(capsys, *_args(pool))
    _assert_clean_failure(capsys, code, err, ["out.jsonl", "--overwrite"], pool, before)
    assert (pool / "out.jsonl").read_text() == "keep me\n"
    assert _run(capsys, *_args(pool, "--overwrite"))[0] == 0
    assert len(_read_jsonl(pool / "out.jsonl")) == 2


@pytest.mark.parametrize("extra, message", [
    ([], "exactly one of --model, --embedder, --embeddings (got none)"),
    (["--embeddings", "e.npy", "--model", "m"], "got --model and --embeddings"),
    (["--embeddings", "e.npy", "--batch-size", "4"], "--batch-size applies only when embedding"),
    (["--embeddings", "e.npy", "--resume"], "--resume applies only when embedding"),
    (["--embedder", "some/model"], "--embedder: expected st:PATH"),
])
def test_inconsistent_options_are_rejected(pool, capsys, extra, message):
    code, _, err = _run(capsys, "--data", pool / "pool.jsonl", "--out", pool / "o.jsonl", *extra)
    assert code == 2 and message in err


def test_console_script_runs_select(pool):
    script = Path(sys.executable).with_name("realspo")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(script), "select", "--data", str(pool / "pool.jsonl"), "--embeddings",
                           str(pool / "emb.npy"), "--budget", "0.5", "--out", str(pool / "p.jsonl")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "pairs written: 2 preference rows" in proc.stdout  # budget 0.5 of 3 eligible -> 2
    assert len(_read_jsonl(pool / "p.jsonl")) == 2


def test_an_interrupted_runs_progress_is_kept_unless_resume_or_overwrite(pool, capsys, tiny_model_dir):
    from realspo.embeddings.embed import embed_responses
    from realspo.formats.registry import load_groups
    from realspo.pipeline.select import progress_dir

    groups, _ = load_groups(str(pool / "pool.jsonl"))
    progress = progress_dir(pool / "o.jsonl")
    embed_responses(groups, tiny_model_dir, show_progress=False, checkpoint=progress)
    saved = sorted(p.name for p in progress.iterdir())
    args = ["--data", pool / "pool.jsonl", "--model", tiny_model_dir, "--no-progress",
            "--out", pool / "o.jsonl"]
    code, _, err = _run(capsys, *args)
    assert code == 2 and "--resume" in err and str(progress) in err
    assert sorted(p.name for p in progress.iterdir()) == saved  # the saved work is untouched
    assert not (pool / "o.jsonl").exists()
    code, _, _ = _run(capsys, *args, "--overwrite")
    assert code == 0 and (pool / "o.jsonl").exists() and not progress.exists()
