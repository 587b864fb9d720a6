"""Finished or cut: ``generate`` marks responses cut at --max-new-tokens, ``select`` and ``label``
carry the flag, ``select --drop-unfinished`` leaves cut responses out."""

from __future__ import annotations

import json

import numpy as np

from realspo.cli import main
from realspo.formats.registry import load_groups

# p1: response 2 is cut; without it the least similar pair is (0, 1). p2: nothing cut.
MULTI = [
    {"prompt_id": "p1", "prompt": "Q1", "responses": ["a", "b", "c"], "scores": [1, 3, 2],
     "finished": [True, True, False]},
    {"prompt_id": "p2", "prompt": "Q2", "responses": ["d", "e"], "scores": [1, 2],
     "finished": [True, True]},
]
EMB = np.array([[1, 0, 0], [0, 1, 0], [-1, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float32)


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _pool(tmp_path, rows=MULTI):
    data = tmp_path / "pool.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    np.save(tmp_path / "emb.npy", EMB)
    return data, tmp_path / "emb.npy"


def test_generate_writes_finished_beside_responses_and_prints_the_cut(tiny_model_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "The capital of France is"}) + "\n")
    out = tmp_path / "cands.jsonl"
    assert main(["generate", "--model", tiny_model_dir, "--prompts", str(prompts), "--out", str(out),
                 "--num-responses", "3", "--max-new-tokens", "3"]) == 0
    row = _read_jsonl(out)[0]
    assert len(row["finished"]) == len(row["responses"]) and all(isinstance(f, bool) for f in row["finished"])
    cut = row["finished"].count(False)
    assert f"{cut} of {len(row['responses'])} cut at --max-new-tokens 3" in capsys.readouterr().out
    groups, _ = load_groups(str(out))
    assert groups[0].finished == row["finished"]


def test_multi_reader_reads_the_optional_finished_list(tmp_path):
    data, _ = _pool(tmp_path)
    groups, _ = load_groups(str(data))
    assert groups[0].finished == [True, True, False] and not groups[0].is_finished(2)
    data.write_text(json.dumps({"prompt": "Q", "responses": ["a", "b"]}) + "\n")
    assert load_groups(str(data))[0][0].finished is None


def test_select_carries_the_flags_and_drop_unfinished_leaves_cut_responses_out(tmp_path, capsys):
    data, emb = _pool(tmp_path)
    assert main(["select", "--data", str(data), "--embeddings", str(emb), "--out", str(tmp_path / "a.jsonl")]) == 0
    rows = {r["prompt_id"]: r for r in _read_jsonl(tmp_path / "a.jsonl")}
    assert (rows["p1"]["chosen"], rows["p1"]["rejected"]) == ("c", "a")  # (0, 2) least similar
    assert rows["p1"]["chosen_finished"] is False and rows["p1"]["rejected_finished"] is True
    capsys.readouterr()
    assert main(["select", "--data", str(data), "--embeddings", str(emb), "--drop-unfinished",
                 "--out", str(tmp_path / "b.jsonl")]) == 0
    assert "responses left out: 1 (cut at the generation limit" in capsys.readouterr().out
    rows = {r["prompt_id"]: r for r in _read_jsonl(tmp_path / "b.jsonl")}
    assert (rows["p1"]["chosen"], rows["p1"]["rejected"]) == ("b", "a")
    assert (rows["p1"]["chosen_index"], rows["p1"]["rejected_index"]) == (1, 0)  # original indices
    assert rows["p1"]["chosen_finished"] is True and rows["p2"]["rejected_finished"] is True


def test_label_carries_the_flags_from_annotation_rows(tmp_path):
    unlabeled = [{k: v for k, v in r.items() if k != "scores"} for r in MULTI]
    data, emb = _pool(tmp_path, unlabeled)
    assert main(["select", "--data", str(data), "--embeddings", str(emb), "--out", str(tmp_path / "pairs.jsonl")]) == 0
    pairs = {r["prompt_id"]: r for r in _read_jsonl(tmp_path / "pairs.jsonl")}
    assert (pairs["p1"]["finished_a"], pairs["p1"]["finished_b"]) == (True, False)
    scored = tmp_path / "scored.jsonl"
    scored.write_text("".join(json.dumps({**r, "score_a": 0.0, "score_b": 1.0}) + "\n"
                              for r in pairs.values()))
    assert main(["label", "--pairs", str(scored), "--from-scores", "--out", str(tmp_path / "prefs.jsonl")]) == 0
    prefs = {r["prompt_id"]: r for r in _read_jsonl(tmp_path / "prefs.jsonl")}
    assert prefs["p1"]["chosen_finished"] is False and prefs["p1"]["rejected_finished"] is True
