"""A corpus of bad inputs, each run through the real CLI (``realspo.cli.main``, in process).

Every *fatal* case must exit with code 2, print exactly one line on stderr that names the
file, the line or row and the field (where the input has them), and leave nothing in the
output directory: no output file, no stray temporary file. Every *skip* case must succeed,
skip the offending prompt or row, and count it in the printed summary (or the log).

The files are generated here rather than kept under ``tests/data/bad/`` so that each case
reads as what it is: a few lines of broken input next to the error it must produce.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from realspo.cli import main

GOOD_MULTI = [
    {"prompt": "Name a fruit.", "responses": ["An apple.", "A pear, ripe and sweet.", "Rocks."],
     "scores": [2.0, 3.0, 0.0]},
    {"prompt": "Name a colour.", "responses": ["Blue.", "Seven.", "A deep green."],
     "scores": [2.0, 0.0, 3.0]},
]
TRL = {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Berlin."}


@dataclass
class Ctx:
    """Where a case writes its inputs, and the shared tiny models."""

    tmp: Path
    model: str
    reward_model: str
    pickle_model: str

    @property
    def out_dir(self) -> Path:
        return self.tmp / "out"

    def path(self, name: str) -> Path:
        return self.tmp / name

    def jsonl(self, name: str, rows: list) -> str:
        path = self.path(name)
        path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows),
                        encoding="utf-8")
        return str(path)

    def text(self, name: str, content: str | bytes) -> str:
        path = self.path(name)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return str(path)

    def embeddings(self, rows: int, name: str = "emb.npy") -> str:
        vectors = np.random.default_rng(0).normal(size=(rows, 8)).astype(np.float32)
        np.save(self.path(name), vectors, allow_pickle=False)
        return str(self.path(name))

    def select(self, data: str, *extra: str, rows: int = 6) -> list[str]:
        """``realspo select`` on ``data`` with precomputed embeddings (``rows`` of them)."""
        return ["select", "--data", data, "--embeddings", self.embeddings(rows),
                "--out", str(self.out_dir / "pairs.jsonl"), "--no-progress", *extra]

    def pairs(self) -> str:
        """Annotation rows as ``realspo select`` writes them (two pairs)."""
        return self.jsonl("pairs.jsonl", [
            {"pair_id": f"q{i}:0-1", "prompt": f"Question {i}?", "response_a": f"Answer {i}.",
             "response_b": f"Other answer {i}.", "prompt_id": f"q{i}", "index_a": 0, "index_b": 1}
            for i in range(2)])

    def tasks(self) -> str:
        """Exported annotator tasks of :meth:`pairs` (writes ``tasks.csv`` and its key)."""
        tasks = self.path("tasks.csv")
        assert main(["label", "--pairs", self.pairs(), "--export-tasks", str(tasks)]) == 0
        return str(tasks)

    def train(self, data: str, *extra: str) -> list[str]:
        return ["train", "--data", data, "--model", self.model, "--out", str(self.out_dir / "run"),
                "--max-steps", "1", "--batch-size", "2", "--cache-dir", str(self.tmp / "cache"),
                *extra]


Build = Callable[[Ctx], tuple[list[str], list[str]]]


def _bad_cases() -> dict[str, Build]:
    """Case id -> builder of ``(argv, fragments the one stderr line must contain)``."""
    cases: dict[str, Build] = {}

    def case(fn: Build) -> Build:
        cases[fn.__name__.removeprefix("_")] = fn
        return fn

    # --- containers ------------------------------------------------------------------------
    @case
    def _truncated_json(c):
        data = c.jsonl("d.jsonl", [GOOD_MULTI[0], GOOD_MULTI[1], '{"prompt": "Name a tree.", "respon'])
        return c.select(data), [data, "line 3", "malformed JSON"]

    @case
    def _truncated_json_array(c):
        data = c.text("d.json", json.dumps(GOOD_MULTI)[:-30])
        return c.select(data), [data, "line 1", "malformed JSON"]

    @case
    def _invalid_utf8(c):
        data = c.text("d.jsonl", json.dumps(GOOD_MULTI[0]).encode() + b"\n"
                      + b'{"prompt": "caf\xe9?", "responses": ["a", "b"]}\n')
        return c.select(data), [data, "line 2", "invalid UTF-8"]

    @case
    def _json_array_item_not_an_object(c):
        data = c.text("d.json", json.dumps([GOOD_MULTI[0], 5]))
        return c.select(data), [data, "row 1", "expected a JSON object, got int"]

    @case
    def _csv_row_with_extra_cells(c):
        data = c.text("d.csv", 'prompt,chosen,rejected\n"Q?",a,b,surplus\n')
        return c.select(data), [data, "row 2", "more cells than header columns"]

    @case
    def _corrupt_parquet(c):
        data = c.text("d.parquet", b"PAR1 this is not a parquet file")
        return c.select(data), [data, "unreadable Parquet file"]

    @case
    def _unknown_file_type(c):
        data = c.text("d.txt", "Name a fruit.\n")
        return c.select(data), [data, "unknown file type '.txt'"]

    # --- fields and values ---------------------------------------------------------------------
    @case
    def _wrong_type(c):
        data = c.jsonl("d.jsonl", [TRL, dict(TRL, chosen=5)])
        return c.select(data), [data, "line 2", "field 'chosen'", "got int 5"]

    @case
    def _missing_field(c):
        data = c.jsonl("d.jsonl", [TRL, {"prompt": "Q?", "chosen": "a"}])
        return c.select(data), [data, "line 2", "field 'rejected'", "missing"]

    @case
    def _empty_response(c):
        data = c.jsonl("d.jsonl", [GOOD_MULTI[0], {"prompt": "Q?", "responses": ["fine", ""]}])
        return c.select(data), [data, "line 2", "field 'responses[1]'", "empty response text"]

    @case
    def _whitespace_only_response(c):
        data = c.jsonl("d.jsonl", [{"prompt": "Q?", "responses": ["fine", " \n\t "]}])
        return c.select(data), [data, "line 1", "field 'responses[1]'", "empty response text"]

    @case
    def _empty_prompt_file(c):
        data = c.text("d.jsonl", "\n\n")
        return c.select(data), [data, "the dataset is empty"]

    @case
    def _duplicate_explicit_ids(c):
        data = c.jsonl("d.jsonl", [dict(GOOD_MULTI[0], prompt_id="q1"), dict(GOOD_MULTI[1], prompt_id="q1")])
        return c.select(data), [data, "line 2", "field 'prompt_id'", "duplicate id 'q1' (first at line 1)"]

    @case
    def _nan_score(c):
        data = c.text("d.jsonl", '{"prompt": "Q?", "responses": ["a", "b"], "scores": [1.0, NaN]}\n')
        return c.select(data), [data, "line 1", "field 'scores[1]'", "expected a finite number"]

    @case
    def _inf_score(c):
        data = c.text("d.jsonl", '{"prompt": "Q?", "completions": [{"response": "a", "score": Infinity},'
                                 ' {"response": "b", "score": 1}]}\n')
        return c.select(data), [data, "line 1", "field 'completions[0].score'", "expected a finite number"]

    @case
    def _non_numeric_csv_score(c):
        data = c.text("d.csv", 'prompt,chosen,rejected,score_chosen,score_rejected\nQ?,a,b,lots,1\n')
        return c.select(data), [data, "row 2", "field 'score_chosen'", "expected a number"]

    @case
    def _unknown_role(c):
        data = c.jsonl("d.jsonl", [dict(TRL, prompt=[{"role": "tool", "content": "{}"}])])
        return c.select(data), [data, "line 1", "field 'prompt[0].role'", "unknown role 'tool'"]

    @case
    def _shp_label_not_binary(c):
        row = {"post_id": "p1", "history": "Q?", "human_ref_A": "a", "human_ref_B": "b",
               "score_A": 3, "score_B": 1, "labels": 2}
        data = c.jsonl("d.jsonl", [row])
        return c.select(data), [data, "line 1", "field 'labels'", "expected 0 or 1"]

    @case
    def _hh_transcript_without_assistant_turn(c):
        data = c.jsonl("d.jsonl", [{"chosen": "Human: hi Assistant: yo", "rejected": "x"}])
        return c.select(data, "--format", "hh"), [data, "line 1", "field 'chosen'", "HH transcript"]

    # --- select: embeddings, models, budgets -----------------------------------------------------
    @case
    def _embeddings_wrong_row_count(c):
        data = c.jsonl("d.jsonl", GOOD_MULTI)
        return c.select(data, rows=5), [str(c.path("emb.npy")), "5 rows", "6 responses"]

    @case
    def _embeddings_pickled_object_array(c):
        data = c.jsonl("d.jsonl", GOOD_MULTI)
        argv = c.select(data)
        np.save(c.path("emb.npy"), np.array([{"a": 1}] * 6, dtype=object), allow_pickle=True)
        return argv, [str(c.path("emb.npy")), "could not read embeddings"]

    @case
    def _pickle_only_model(c):
        data = c.jsonl("d.jsonl", GOOD_MULTI)
        argv = ["select", "--data", data, "--model", c.pickle_model, "--out",
                str(c.out_dir / "pairs.jsonl"), "--no-progress"]
        return argv, [c.pickle_model, "pickle", "--allow-pickle"]

    @case
    def _model_path_that_is_not_a_model(c):
        data = c.jsonl("d.jsonl", GOOD_MULTI)
        c.path("empty-model").mkdir()
        argv = ["select", "--data", data, "--model", str(c.path("empty-model")), "--out",
                str(c.out_dir / "pairs.jsonl")]
        return argv, [str(c.path("empty-model")), "config.json is missing"]

    @case
    def _budget_larger_than_the_prompts(c):
        data = c.jsonl("d.jsonl", GOOD_MULTI)
        return c.select(data, "--budget", "5"), ["budget", "5", "2"]

    @case
    def _no_prompt_with_two_distinct_responses(c):
        data = c.jsonl("d.jsonl", [{"prompt": "Q?", "responses": ["same", "same "]},
                                   {"prompt": "R?", "responses": ["alone"]}])
        return c.select(data, rows=3), [data, "none of the 2 prompts has two distinct responses"]

    # --- configuration files -------------------------------------------------------------------
    @case
    def _config_unknown_key(c):
        data = c.jsonl("d.jsonl", GOOD_MULTI)
        config = c.text("run.yaml", "strategy: hard\nstrategi: easy\n")
        return c.select(data, "--config", config), [config, "unknown option 'strategi'"]

    @case
    def _config_wrong_type(c):
        data = c.jsonl("d.jsonl", GOOD_MULTI)
        config = c.text("run.yaml", "seed: ten\n")
        return c.select(data, "--config", config), [config, "'seed' expected int", "'ten'"]

    @case
    def _config_not_a_mapping(c):
        data = c.jsonl("d.jsonl", GOOD_MULTI)
        config = c.text("run.yaml", "- strategy\n- easy\n")
        return c.select(data, "--config", config), [config, "expected a mapping"]

    @case
    def _train_config_unknown_key(c):
        data = c.jsonl("d.jsonl", [TRL])
        config = c.text("run.yaml", "learning_rate: 1.0e-5\n")
        return c.train(data, "--config", config), [config, "unknown option 'learning_rate'"]

    # --- generate ------------------------------------------------------------------------------
    @case
    def _prompts_row_without_prompt(c):
        prompts = c.jsonl("prompts.jsonl", [{"prompt": "Hi?"}, {"question": "Hello?"}])
        argv = ["generate", "--model", c.model, "--prompts", prompts, "--out", str(c.out_dir / "c.jsonl")]
        return argv, [prompts, "line 2", "field 'prompt'", "missing"]

    @case
    def _prompts_row_with_blank_prompt(c):
        prompts = c.jsonl("prompts.jsonl", [{"prompt": "Hi?"}, {"prompt": "   "}])
        argv = ["generate", "--model", c.model, "--prompts", prompts, "--out", str(c.out_dir / "c.jsonl")]
        return argv, [prompts, "line 2", "field 'prompt'", "empty"]

    @case
    def _prompts_duplicate_ids(c):
        prompts = c.jsonl("prompts.jsonl", [{"id": 7, "prompt": "Hi?"}, {"id": 7, "prompt": "Yo?"}])
        argv = ["generate", "--model", c.model, "--prompts", prompts, "--out", str(c.out_dir / "c.jsonl")]
        return argv, [prompts, "line 2", "field 'id'", "duplicate id '7'"]

    @case
    def _num_responses_one(c):
        prompts = c.jsonl("prompts.jsonl", [{"prompt": "Hi?"}])
        argv = ["generate", "--model", c.model, "--prompts", prompts, "--num-responses", "1",
                "--out", str(c.out_dir / "c.jsonl")]
        return argv, ["--num-responses", "at least 2"]

    # --- label ---------------------------------------------------------------------------------
    @case
    def _annotations_unknown_pair_id(c):
        tasks = c.tasks()
        export_id = json.loads(Path(c.path("tasks.key.jsonl")).read_text().splitlines()[0])["export_id"]
        answers = c.text("answers.csv", f"pair_id,answer,export_id\nq0:0-1,A,{export_id}\n"
                                        f"q9:0-1,B,{export_id}\n")
        argv = ["label", "--pairs", str(c.path("pairs.jsonl")), "--annotations", answers,
                "--key", str(c.path("tasks.key.jsonl")), "--out", str(c.out_dir / "labeled.jsonl")]
        assert Path(tasks).exists()
        return argv, [answers, "row 3", "field 'pair_id'", "unknown pair id 'q9:0-1'"]

    @case
    def _annotations_invalid_answer(c):
        c.tasks()
        answers = c.text("answers.csv", "pair_id,answer\nq0:0-1,maybe\n")
        argv = ["label", "--pairs", str(c.path("pairs.jsonl")), "--annotations", answers,
                "--key", str(c.path("tasks.key.jsonl")), "--out", str(c.out_dir / "labeled.jsonl")]
        return argv, [answers, "row 2", "field 'answer'", "'maybe'"]

    @case
    def _pairs_row_without_response_b(c):
        pairs = c.jsonl("pairs.jsonl", [{"pair_id": "a", "prompt": "Q?", "response_a": "x"}])
        argv = ["label", "--pairs", pairs, "--from-scores", "--out", str(c.out_dir / "labeled.jsonl")]
        return argv, [pairs, "line 1", "field 'response_b'", "missing"]

    @case
    def _judge_that_is_not_a_sequence_classifier(c):
        argv = ["label", "--pairs", c.pairs(), "--reward-model", c.model, "--out",
                str(c.out_dir / "labeled.jsonl")]
        return argv, [c.model, "not a sequence classifier"]

    # --- train ---------------------------------------------------------------------------------
    @case
    def _train_pairs_missing_chosen(c):
        data = c.jsonl("d.jsonl", [TRL, {"prompt": "Q?", "rejected": "no"}])
        return c.train(data), [data, "line 2", "field 'chosen'"]

    @case
    def _train_pairs_empty_rejected(c):
        data = c.jsonl("d.jsonl", [TRL, dict(TRL, rejected="  ")])
        return c.train(data), [data, "line 2", "field 'rejected'", "empty"]

    @case
    def _train_pairs_nan_reference_logp(c):
        data = c.text("d.jsonl", '{"prompt": "Q?", "chosen": "a", "rejected": "b", '
                                 '"ref_chosen_logps": NaN, "ref_rejected_logps": -3.0}\n')
        return c.train(data), [data, "line 1", "field 'ref_chosen_logps'", "expected a finite number"]

    # --- evaluate ------------------------------------------------------------------------------
    @case
    def _evaluate_judge_that_is_not_a_sequence_classifier(c):
        prompts = c.jsonl("prompts.jsonl", [{"prompt": "Hi?"}])
        argv = ["evaluate", "--model", c.model, "--baseline", c.model, "--prompts", prompts,
                "--judge", c.model, "--out", str(c.out_dir / "eval.json"), "--max-new-tokens", "2"]
        return argv, [c.model, "not a sequence classifier"]

    @case
    def _evaluate_prompts_bad_row(c):
        prompts = c.jsonl("prompts.jsonl", [{"prompt": "Hi?"}, {"prompt": 3}])
        argv = ["evaluate", "--model", c.model, "--baseline", c.model, "--prompts", prompts,
                "--judge", "proving-ground", "--out", str(c.out_dir / "eval.json")]
        return argv, [prompts, "line 2", "field 'prompt'"]

    # --- spo-preview ---------------------------------------------------------------------------
    @case
    def _spo_preview_truncated_json(c):
        data = c.jsonl("d.jsonl", [TRL, '{"prompt": "Q?", "chosen": "a", "rej'])
        return ["spo-preview", "--data", data], [data, "line 2", "malformed JSON"]

    return cases


BAD = _bad_cases()


@pytest.fixture
def ctx(tmp_path, tiny_model_dir, tiny_reward_model_dir, pickle_only_model_dir) -> Ctx:
    return Ctx(tmp_path, tiny_model_dir, tiny_reward_model_dir, pickle_only_model_dir)


def test_the_corpus_has_at_least_25_distinct_fatal_cases():
    assert len(BAD) >= 25


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_exits_2_with_one_line_naming_file_row_and_field(name, ctx, capsys):
    argv, fragments = BAD[name](ctx)
    capsys.readouterr()  # drop what setting up the case printed
    code = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (out, err)
    assert len(lines) == 1, err
    assert lines[0].startswith(f"realspo {argv[0]}: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    # nothing half-written: no output, no temporary file, no progress sidecar
    assert not ctx.out_dir.exists() or sorted(p.name for p in ctx.out_dir.iterdir()) == []


# --- inputs that are accepted, or skipped and counted ---------------------------------------------


def _run_select(ctx: Ctx, data: str, rows: int, capsys, *extra: str) -> tuple[str, list[dict]]:
    argv = ctx.select(data, *extra, rows=rows)
    assert main(argv) == 0
    out = capsys.readouterr().out
    written = ctx.out_dir / "pairs.jsonl"
    return out, [json.loads(line) for line in written.read_text(encoding="utf-8").splitlines()]


def test_byte_order_mark_is_accepted(ctx, capsys):
    data = ctx.text("bom.jsonl", b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in GOOD_MULTI).encode())
    _, rows = _run_select(ctx, data, 6, capsys)
    assert [r["prompt"] for r in rows] != [] and {r["prompt"] for r in rows} == {"Name a fruit.", "Name a colour."}


def test_csv_with_quoted_newlines_is_accepted(ctx, capsys):
    path = ctx.path("d.csv")
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["prompt", "chosen", "rejected"])
        writer.writerow(["Write two lines.", "Roses are red,\nviolets are blue.", "One line."])
    _, rows = _run_select(ctx, str(path), 2, capsys)
    assert rows[0]["chosen"] == "Roses are red,\nviolets are blue."


def test_prompt_with_a_single_response_is_skipped_and_counted(ctx, capsys):
    data = ctx.jsonl("d.jsonl", [GOOD_MULTI[0], {"prompt": "Alone?", "responses": ["Only me."], "scores": [1.0]}])
    out, rows = _run_select(ctx, data, 4, capsys)
    assert "prompts read: 2; skipped 1 (fewer than two distinct responses)" in out
    assert [r["prompt"] for r in rows] == ["Name a fruit."]


def test_prompt_whose_responses_are_all_identical_is_skipped_and_counted(ctx, capsys):
    same = {"prompt": "Echo?", "responses": ["Echo.", "Echo.", " Echo. "], "scores": [1.0, 2.0, 3.0]}
    data = ctx.jsonl("d.jsonl", [same, GOOD_MULTI[1]])
    out, rows = _run_select(ctx, data, 6, capsys)
    assert "prompts read: 2; skipped 1 (fewer than two distinct responses)" in out
    assert [r["prompt"] for r in rows] == ["Name a colour."]


def test_hh_rows_whose_transcripts_diverge_early_are_skipped_and_counted(ctx, capsys):
    good = {"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello there!",
            "rejected": "\n\nHuman: Hi?\n\nAssistant: Go away."}
    forked = {"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello.\n\nHuman: Bye?\n\nAssistant: Bye!",
              "rejected": "\n\nHuman: Hi?\n\nAssistant: What?\n\nHuman: Never mind.\n\nAssistant: OK."}
    data = ctx.jsonl("hh.jsonl", [good, forked, good])
    out, rows = _run_select(ctx, data, 4, capsys)
    assert "rows skipped: 1 (chosen and rejected transcripts diverge before the last Assistant turn)" in out
    assert len(rows) == 2 and all(r["chosen"] == " Hello there!" for r in rows)


def test_extremely_long_response_is_truncated_and_counted(ctx, capsys, caplog):
    long = {"prompt": "Say a lot.", "responses": ["word " * 50_000, "Short."], "scores": [1.0, 0.0]}
    data = ctx.jsonl("d.jsonl", [long, GOOD_MULTI[0]])
    argv = ["select", "--data", data, "--model", ctx.model, "--max-length", "32", "--no-progress",
            "--out", str(ctx.out_dir / "pairs.jsonl")]
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    assert "1 of 5 sequences were longer than max_length=32 and were truncated" in caplog.text
    rows = [json.loads(line) for line in (ctx.out_dir / "pairs.jsonl").read_text().splitlines()]
    said = next(r for r in rows if r["prompt"] == "Say a lot.")
    assert said["chosen"] == long["responses"][0]  # only the embedding input was cut


def test_extremely_long_training_pair_is_truncated_and_counted(ctx, capsys):
    from realspo.training.run_dir import read_metrics

    long = {"prompt": "Human: Say a lot. " * 20_000 + "Assistant:", "chosen": " Fine.", "rejected": " No."}
    data = ctx.jsonl("d.jsonl", [TRL, long])
    assert main(ctx.train(data, "--max-length", "32")) == 0
    first = read_metrics(ctx.out_dir / "run" / "metrics.jsonl")[0]
    assert first["step"] == 0 and first["truncated_pairs"] == 1
