"""Hostile and careless use, through the real command line: each attack ends with exit code 2,
one line on stderr and nothing written (the directory tree hashed before and after), or, where
the input is legitimate but absurd, with a bounded run that says what it cut.

Sections: outputs that would overwrite inputs (path roles); input and environment failures;
nothing left behind that blocks the next run; CSV files safe in a spreadsheet; bounded cost.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from realspo.cli import main

MULTI = [
    {"prompt": "Name a fruit.", "responses": ["An apple.", "A pear, ripe and sweet.", "Rocks."],
     "scores": [2.0, 3.0, 0.0]},
    {"prompt": "Name a colour.", "responses": ["Blue.", "Seven.", "A deep green."],
     "scores": [2.0, 0.0, 3.0]},
]
FORMULAS = ['=HYPERLINK("http://evil.example","click")', "+cmd|' /C calc'!A0", "-2+3",
            "@SUM(A1:A2)", "\tTabbed", "\rReturn", "'quoted", "''twice", "[1, 2]", " {\"a\": 1}",
            "[not json", "plain text"]


def _write_jsonl(path: Path, rows: list) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows),
                    encoding="utf-8")
    return str(path)


def _embeddings(path: Path, rows: int = 6) -> str:
    np.save(path, np.random.default_rng(0).normal(size=(rows, 8)).astype(np.float32))
    return str(path)


def _tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a digest of its content (directories: "dir")."""
    found = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink() or p.is_dir():
            found[str(p.relative_to(root))] = "dir"
        elif p.is_file():
            found[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            found[str(p.relative_to(root))] = "special"
    return found


def _refused(argv: list[str], capsys, root: Path, *fragments: str, late: bool = False) -> str:
    """Run ``argv``: exit 2, one stderr line containing ``fragments``, ``root`` unchanged.
    ``late``: an error found after work began (progress bars may precede its line)."""
    before = _tree(root)
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()[-1:] if late else err.strip().splitlines()
    assert code == 2, (out, err)
    assert len(lines) == 1, err
    assert lines[0].startswith(f"realspo {argv[0]}: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert _tree(root) == before
    return lines[0]


def _pairs(path: Path, a: list[str] | None = None, scores: bool = False) -> str:
    texts = a or ["Answer 0.", "Answer 1."]
    return _write_jsonl(path, [
        {"pair_id": f"q{i}:0-1", "prompt": f"Question {i}?", "response_a": t,
         "response_b": f"Other answer {i}.", "prompt_id": f"q{i}", "index_a": 0, "index_b": 1,
         **({"score_a": 1.0, "score_b": 0.0} if scores else {})}
        for i, t in enumerate(texts)])


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path) -> Path:
    out = tmp_path / "M"
    shutil.copytree(tiny_model_dir, out)
    return out


# --- 1. an output that is, contains or lies inside an input ----------------------------------------


def test_select_out_containing_its_data_is_refused(tmp_path, capsys):
    data = _write_jsonl(tmp_path / "d" / "data.jsonl", MULTI)
    emb = _embeddings(tmp_path / "e.npy")
    _refused(["select", "--data", data, "--embeddings", emb, "--out", str(tmp_path / "d"),
              "--overwrite"], capsys, tmp_path, "--out", "contains the input --data")


def test_select_out_that_is_its_embeddings_is_refused(tmp_path, capsys):
    data = _write_jsonl(tmp_path / "data.jsonl", MULTI)
    emb = _embeddings(tmp_path / "E.npy")
    _refused(["select", "--data", data, "--embeddings", emb, "--out", emb, "--overwrite"],
             capsys, tmp_path, "is the input --embeddings")


def test_plot_out_that_is_its_run_directory_is_refused(tmp_path, capsys):
    run = tmp_path / "RUN"
    _write_jsonl(run / "metrics.jsonl", [{"step": 1, "loss": 0.7}, {"step": 2, "loss": 0.6}])
    _refused(["plot", str(run), "--out", str(run), "--overwrite"], capsys, tmp_path,
             "contains the input")


def test_plot_may_still_write_into_its_run_directory(tmp_path, capsys):
    run = tmp_path / "RUN"
    _write_jsonl(run / "metrics.jsonl", [{"step": 1, "loss": 0.7}, {"step": 2, "loss": 0.6}])
    assert main(["plot", str(run), "--out", str(run / "curves.png")]) == 0
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_train_out_that_is_its_model_is_refused(model_copy, tmp_path, capsys):
    data = _write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Q?", "chosen": "A.", "rejected": "B."}])
    _refused(["train", "--model", str(model_copy), "--data", data, "--out", str(model_copy),
              "--overwrite"], capsys, tmp_path, "is the input --model")


def test_train_out_containing_its_data_is_refused(tiny_model_dir, tmp_path, capsys):
    data = _write_jsonl(tmp_path / "D" / "p.jsonl", [{"prompt": "Q?", "chosen": "A.", "rejected": "B."}])
    _refused(["train", "--model", tiny_model_dir, "--data", data, "--out", str(tmp_path / "D"),
              "--overwrite"], capsys, tmp_path, "contains the input --data")


def test_label_out_that_is_its_pairs_is_refused(tmp_path, capsys):
    pairs = _pairs(tmp_path / "X.jsonl", scores=True)
    _refused(["label", "--pairs", pairs, "--from-scores", "--out", pairs, "--overwrite"], capsys,
             tmp_path, "is the input --pairs")


def test_a_hub_id_is_not_a_local_path(tmp_path, monkeypatch):
    from realspo.config import resolve
    from realspo.training.train_config import TrainConfig

    data = _write_jsonl(tmp_path / "data" / "p.jsonl", [{"prompt": "Q?", "chosen": "A.", "rejected": "B."}])
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # --out . would contain ./HuggingFaceTB/SmolLM2-135M, were it a path
    cfg = resolve(TrainConfig, {"model": "HuggingFaceTB/SmolLM2-135M", "data": data, "out": "."})
    assert cfg.model == "HuggingFaceTB/SmolLM2-135M"


# --- 2. input and environment failures: one line, nothing written -----------------------------------


@pytest.mark.parametrize("name, content, fragments", [
    ("big.jsonl", '{"prompt": "P?", "responses": ["x", "y"], "scores": [1e999, 1]}\n',
     ["line 1", "scores[0]", "finite"]),
    ("bigint.jsonl", '{"prompt": "P?", "responses": ["x", "y"], "scores": [1' + "0" * 400 + ', 1]}\n',
     ["line 1", "scores[0]", "too large for a float"]),
    ("digits.jsonl", '{"prompt": "P?", "responses": ["x", "y"], "scores": [1' + "0" * 5000 + ', 1]}\n',
     ["line 1", "malformed JSON"]),
    ("big.json", '[{"prompt": "P?", "responses": ["x", "y"], "scores": [1, -1e999]}]',
     ["row 0", "scores[1]", "finite"]),
    ("big.csv", 'prompt,chosen,rejected,score_chosen,score_rejected\nP?,x,y,1e999,1\n',
     ["row 2", "finite"]),
    ("surrogate.json", '[{"prompt": "P\\ud800?", "responses": ["x", "y"]}]',
     ["row 0", "lone surrogate"]),
    ("surrogate.jsonl", '{"prompt": "P?", "responses": ["x\\udfff", "y"]}\n',
     ["line 1", "lone surrogate"]),
    ("deep.jsonl", '{"prompt": "P?", "responses": ["x", "y"], "z": ' + "[" * 100_000 + "]" * 100_000 + "}\n",
     ["line 1", "nested too deeply"]),
    ("deep.json", "[" * 100_000 + "]" * 100_000, ["nested too deeply"]),
])
def test_hostile_data_is_one_line(tmp_path, capsys, name, content, fragments):
    data = tmp_path / name
    data.write_text(content, encoding="utf-8")
    emb = _embeddings(tmp_path / "e.npy", 2)
    _refused(["select", "--data", str(data), "--embeddings", emb, "--out",
              str(tmp_path / "out" / "p.jsonl")], capsys, tmp_path, str(data), *fragments)


def _seed_argv(command: str, tmp: Path) -> list[str]:
    data = _write_jsonl(tmp / "d.jsonl", MULTI)
    return {
        "select": ["select", "--data", data, "--embeddings", str(tmp / "e.npy"), "--out", str(tmp / "o.jsonl")],
        "label": ["label", "--pairs", str(tmp / "pairs.jsonl"), "--export-tasks", str(tmp / "t.csv")],
        "generate": ["generate", "--model", "m", "--prompts", data, "--out", str(tmp / "o.jsonl")],
        "evaluate": ["evaluate", "--model", "m", "--baseline", "b", "--prompts", data, "--judge",
                     "proving-ground", "--out", str(tmp / "o.json")],
        "train": ["train", "--model", "m", "--data", data, "--out", str(tmp / "run")],
        "spo-preview": ["spo-preview", "--data", data],
        "demo": ["demo", "--out", str(tmp / "demo")],
        "leaderboard": ["leaderboard", "--out", str(tmp / "leaderboard")],
    }[command]


@pytest.mark.parametrize("command", ["select", "label", "generate", "evaluate", "train",
                                     "spo-preview", "demo", "leaderboard"])
@pytest.mark.parametrize("seed", ["-1", str(2**64)])
def test_a_seed_out_of_range_is_one_line(tmp_path, capsys, command, seed):
    argv = _seed_argv(command, tmp_path) + ["--seed", seed]
    _refused(argv, capsys, tmp_path, "--seed", "expected an integer from 0 to")


@pytest.mark.parametrize("header", [struct.pack("<Q", 2**62) + b"{}",
                                    struct.pack("<Q", 16) + b"{garbage not json",
                                    struct.pack("<Q", 2) + b"[]", b"\x01"])
def test_a_forged_safetensors_header_is_named(model_copy, tmp_path, capsys, header):
    (model_copy / "model.safetensors").write_bytes(header + b"\x00" * 64)
    data = _write_jsonl(tmp_path / "d.jsonl", MULTI)
    _refused(["select", "--data", data, "--model", str(model_copy), "--out",
              str(tmp_path / "o" / "p.jsonl"), "--no-progress"], capsys, tmp_path,
             str(model_copy / "model.safetensors"), "not a safetensors file")


def test_select_finds_a_read_only_output_before_embedding(model_copy, tmp_path, capsys, monkeypatch):
    import realspo.embeddings.embed as embed

    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != ro and real_access(p, mode, **kw))
    monkeypatch.setattr(embed, "embed_responses", lambda *a, **k: pytest.fail("embedded anyway"))
    data = _write_jsonl(tmp_path / "d.jsonl", MULTI)
    _refused(["select", "--data", data, "--model", str(model_copy), "--out", str(ro / "sub" / "p.jsonl"),
              "--no-progress"], capsys, tmp_path, f"{ro} is not writable")


def test_a_read_only_file_system_is_found_before_training(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import realspo.training.loop as loop  # `realspo train` imports it when it runs

    class ReadOnly:
        f_flag, f_blocks, f_bavail, f_frsize = os.ST_RDONLY, 100, 100, 4096

    monkeypatch.setattr(os, "statvfs", lambda p: ReadOnly())
    monkeypatch.setattr(loop, "train", lambda *a, **k: pytest.fail("trained anyway"))
    data = _write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Q?", "chosen": "A.", "rejected": "B."}])
    _refused(["train", "--model", tiny_model_dir, "--data", data, "--out", str(tmp_path / "run")],
             capsys, tmp_path, "read-only file system")


def test_a_full_disk_is_found_before_the_work(tmp_path, capsys, monkeypatch):
    class Full:
        f_flag, f_blocks, f_bavail, f_frsize = 0, 100, 0, 4096

    monkeypatch.setattr(os, "statvfs", lambda p: Full())
    data = _write_jsonl(tmp_path / "d.jsonl", MULTI)
    _refused(["select", "--data", data, "--embeddings", _embeddings(tmp_path / "e.npy"), "--out",
              str(tmp_path / "o.jsonl")], capsys, tmp_path, "full file system")


def test_an_output_under_proc_is_refused_up_front(tmp_path, capsys):
    data = _write_jsonl(tmp_path / "d.jsonl", MULTI)
    _refused(["select", "--data", data, "--embeddings", _embeddings(tmp_path / "e.npy"), "--out",
              "/proc/realspo-attack/p.jsonl"], capsys, tmp_path, "/proc refuses new files")


def test_an_output_whose_parent_is_a_file_is_refused(tmp_path, capsys):
    data = _write_jsonl(tmp_path / "d.jsonl", MULTI)
    (tmp_path / "afile").write_text("x")
    _refused(["select", "--data", data, "--embeddings", _embeddings(tmp_path / "e.npy"), "--out",
              str(tmp_path / "afile" / "sub" / "p.jsonl")], capsys, tmp_path,
             f"{tmp_path / 'afile'} is a file, not a directory")


def test_a_fifo_input_is_not_a_regular_file(tmp_path, capsys):
    fifo = tmp_path / "data.jsonl"
    os.mkfifo(fifo)
    _refused(["select", "--data", str(fifo), "--embeddings", _embeddings(tmp_path / "e.npy"),
              "--out", str(tmp_path / "o.jsonl")], capsys, tmp_path, "not a regular file")


def test_semicolon_separated_annotations_are_read_and_said_so(tmp_path, capsys):
    pairs = _pairs(tmp_path / "pairs.jsonl")
    tasks = tmp_path / "tasks.csv"
    assert main(["label", "--pairs", pairs, "--export-tasks", str(tasks)]) == 0
    export_id = json.loads((tmp_path / "tasks.key.jsonl").read_text().splitlines()[0])["export_id"]
    answers = tmp_path / "answers.csv"
    answers.write_text(f"pair_id;answer;export_id\nq0:0-1;A;{export_id}\nq1:0-1;B;{export_id}\n",
                       encoding="utf-8")
    capsys.readouterr()
    assert main(["label", "--pairs", pairs, "--annotations", str(answers), "--key",
                 str(tmp_path / "tasks.key.jsonl"), "--out", str(tmp_path / "labels.jsonl")]) == 0
    assert f"note: {answers}: read as ';'-separated" in capsys.readouterr().out


def test_a_sheet_whose_delimiter_cannot_be_told_is_refused_naming_it(tmp_path, capsys):
    pairs = _pairs(tmp_path / "pairs.jsonl")
    tasks = tmp_path / "tasks.csv"
    assert main(["label", "--pairs", pairs, "--export-tasks", str(tasks)]) == 0
    answers = tmp_path / "answers.csv"
    answers.write_text("pair_id|answer\nq0:0-1|A\n", encoding="utf-8")
    _refused(["label", "--pairs", pairs, "--annotations", str(answers), "--key",
              str(tmp_path / "tasks.key.jsonl"), "--out", str(tmp_path / "labels.jsonl")],
             capsys, tmp_path, "lacks pair_id and answer", "delimiter looks wrong ('|')")


# --- 3. nothing left behind that blocks the next run ------------------------------------------------


def test_an_input_error_after_embedding_leaves_no_sidecar(tiny_model_dir, tmp_path, capsys, one_thread):
    tied = [{**g, "scores": [1.0, 1.0, 1.0]} for g in MULTI]
    data = _write_jsonl(tmp_path / "d.jsonl", tied)
    out = tmp_path / "p.jsonl"
    argv = ["select", "--data", data, "--model", tiny_model_dir, "--out", str(out), "--no-progress",
            "--checkpoint-every", "1", "--batch-size", "2"]
    _refused(argv, capsys, tmp_path, "selected pairs were dropped", late=True)
    _write_jsonl(tmp_path / "d.jsonl", MULTI)  # corrected; rerun without --resume or --overwrite
    assert main(argv) == 0
    assert out.exists() and not (tmp_path / "p.jsonl.embeddings-partial").exists()


def test_two_outputs_on_one_path_are_refused_up_front(tmp_path, capsys):
    pairs = _pairs(tmp_path / "pairs.jsonl")
    tasks = str(tmp_path / "T.csv")
    _refused(["label", "--pairs", pairs, "--export-tasks", tasks, "--key", tasks], capsys, tmp_path,
             "the same path as --export-tasks")


def test_a_default_key_path_that_is_the_pairs_file_is_refused(tmp_path, capsys):
    pairs = _pairs(tmp_path / "T.key.jsonl")  # the default key of T.csv
    _refused(["label", "--pairs", pairs, "--export-tasks", str(tmp_path / "T.csv"), "--overwrite"],
             capsys, tmp_path, "is the input --pairs")


# --- 4. CSV files safe to open in a spreadsheet, and read back unchanged -----------------------------


def _cells(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [cell for row in csv.reader(fh) for cell in row]


def test_tasks_csv_neutralises_formulas_and_reads_back_exactly(tmp_path):
    from realspo.sources import read_rows

    pairs = _pairs(tmp_path / "pairs.jsonl", FORMULAS)
    tasks = tmp_path / "tasks.csv"
    assert main(["label", "--pairs", pairs, "--export-tasks", str(tasks)]) == 0
    assert not [c for c in _cells(tasks) if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    rows = [r.data for r in read_rows(tasks)]
    assert {r["A"] for r in rows} | {r["B"] for r in rows} == \
        set(FORMULAS) | {f"Other answer {i}." for i in range(len(FORMULAS))}


def test_annotations_answered_in_the_exported_csv_round_trip(tmp_path, capsys):
    from realspo.outputs import write_rows
    from realspo.sources import read_rows

    pairs = _pairs(tmp_path / "pairs.jsonl", FORMULAS[:4])
    tasks = tmp_path / "tasks.csv"
    assert main(["label", "--pairs", pairs, "--export-tasks", str(tasks)]) == 0
    answered = [{**r.data, "answer": "A"} for r in read_rows(tasks)]
    write_rows(tasks, answered, overwrite=True)
    out = tmp_path / "labels.jsonl"
    assert main(["label", "--pairs", pairs, "--annotations", str(tasks), "--out", str(out)]) == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 4


def test_preference_rows_csv_reads_back_like_jsonl(tmp_path):
    from realspo.outputs import write_rows
    from realspo.schema import preference_row, read_preference_rows

    messages = [{"role": "system", "content": "-be brief"}, {"role": "user", "content": "=1+1"}]
    rows = [preference_row(messages if i % 2 else text, text, f"not {text}", prompt_id=f"q{i}")
            for i, text in enumerate(FORMULAS)]
    write_rows(tmp_path / "p.csv", rows)
    write_rows(tmp_path / "p.jsonl", rows)
    as_csv = [r.data for r in read_preference_rows(tmp_path / "p.csv")]
    as_jsonl = [r.data for r in read_preference_rows(tmp_path / "p.jsonl")]
    assert as_csv == as_jsonl
    assert [r["chosen"] for r in as_csv] == FORMULAS
    assert not [c for c in _cells(tmp_path / "p.csv") if c[:1] in ("=", "+", "-", "@", "\t", "\r")]


def test_candidates_csv_with_message_prompts_reads_back_like_jsonl(tmp_path):
    from realspo.formats.registry import load_groups
    from realspo.outputs import write_rows

    rows = [{"prompt_id": f"p{i}", "prompt": [{"role": "user", "content": f"{f} ?"}] if i % 2 else f,
             "responses": [f, f"other {i}", "-1"]} for i, f in enumerate(FORMULAS)]
    write_rows(tmp_path / "c.csv", rows)
    write_rows(tmp_path / "c.jsonl", rows)
    groups_csv, _ = load_groups(str(tmp_path / "c.csv"))
    groups_jsonl, _ = load_groups(str(tmp_path / "c.jsonl"))
    def fields(g):
        return g.prompt_id, g.prompt, g.responses, g.scores, g.preferences

    assert [fields(g) for g in groups_csv] == [fields(g) for g in groups_jsonl]
    assert [g.responses[0] for g in groups_csv] == FORMULAS


def test_a_foreign_csv_cell_starting_with_an_apostrophe_is_kept(tmp_path):
    from realspo.sources import read_rows

    path = tmp_path / "foreign.csv"
    path.write_text("prompt,chosen\n'Tis the season,'=kept as a formula escape\n", encoding="utf-8")
    (row,) = read_rows(path)
    assert row.data == {"prompt": "'Tis the season", "chosen": "=kept as a formula escape"}


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv", ".parquet"])
def test_every_table_format_reads_back(tmp_path, suffix):
    from realspo.outputs import write_rows
    from realspo.sources import read_rows

    rows = [{"prompt": f, "responses": [f, "b"]} for f in FORMULAS]
    write_rows(tmp_path / f"t{suffix}", rows)
    assert [r.data for r in read_rows(tmp_path / f"t{suffix}")] == rows


def test_a_long_csv_cell_reads_back(tmp_path):
    from realspo.outputs import write_rows
    from realspo.sources import read_rows

    long = "word " * 100_000  # 500 kB: past the csv module's default field limit
    write_rows(tmp_path / "long.csv", [{"prompt": "P?", "chosen": long, "rejected": "short"}])
    (row,) = read_rows(tmp_path / "long.csv")
    assert row.data["chosen"] == long


# --- 5. bounded cost on absurd input -----------------------------------------------------------------


def test_a_huge_response_is_cut_before_tokenizing_and_counted(tiny_model_dir, tmp_path, capsys, one_thread):
    huge = "The capital of France is Paris. " * 160_000  # ~5 MB
    groups = [{**MULTI[0], "responses": [huge, *MULTI[0]["responses"][1:]]}, MULTI[1]]
    data = _write_jsonl(tmp_path / "d.jsonl", groups)
    out = tmp_path / "p.jsonl"
    assert main(["select", "--data", data, "--model", tiny_model_dir, "--out", str(out),
                 "--no-progress", "--max-length", "64"]) == 0
    err = capsys.readouterr().err
    assert "1 of 6 texts were longer than 2048 characters" in err
    assert out.read_text(encoding="utf-8").splitlines()


def test_clip_texts_keeps_what_the_token_limit_keeps():
    from realspo.models import CHARS_PER_TOKEN, clip_texts

    texts = ["short", "x" * (10 * CHARS_PER_TOKEN + 5)]
    assert clip_texts(texts, 10) == ["short", "x" * (10 * CHARS_PER_TOKEN)]
    assert clip_texts(["ab" * 400], 10, keep_end=True)[0] == ("ab" * 400)[-10 * CHARS_PER_TOKEN:]
    assert clip_texts(None, 10) is None and clip_texts(texts, None) is texts


def test_an_absurd_training_response_is_cut_before_tokenizing_and_gets_no_eos(tiny_model_dir, caplog):
    from transformers import AutoTokenizer

    from realspo.models import CHARS_PER_TOKEN
    from realspo.training.tokenization import tokenize_pairs

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    huge = "Paris is the capital. " * (16 * CHARS_PER_TOKEN)  # > 16 x 32 characters
    rows = [{"prompt": "Capital of France?", "chosen": huge, "rejected": "Berlin."}]
    with caplog.at_level("WARNING"):
        (pair,) = tokenize_pairs(tokenizer, rows, max_length=16, source="p.jsonl")
    assert "1 texts were longer than 512 characters" in caplog.text
    assert pair.truncated and len(pair.prompt_ids) + len(pair.chosen_ids) <= 16
    assert pair.chosen_ids[-1] != tokenizer.eos_token_id
    assert pair.rejected_ids[-1] == tokenizer.eos_token_id  # the short one keeps its EOS
