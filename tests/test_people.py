"""People in the loop: several annotators, every way answers come back, export ids, aggregation,
the agreement and premise report, and the bad input they may bring."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from realspo.cli import main
from realspo.labels.aggregate import aggregate_votes
from realspo.labels.answers import AnswerRow, read_answer_sets
from realspo.labels.assignment import assign_pairs
from realspo.labels.premise import disagreement


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _pairs(tmp_path: Path, n: int = 12) -> Path:
    """n pairs, response_a the GOOD one; similarity rises with the index."""
    return _jsonl(tmp_path / "pairs.jsonl", [
        {"pair_id": f"q{i}:0-1", "prompt": f"Question {i}?", "response_a": f"GOOD answer {i}.",
         "response_b": f"bad answer {i}.", "similarity": i / n, "prompt_id": f"q{i}",
         "index_a": 0, "index_b": 1} for i in range(n)])


def _csv_rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _answer_good(task: dict) -> str:
    """The shown letter of the GOOD response (what a careful annotator answers)."""
    return "A" if task["A"].startswith("GOOD") else "B"


def _export_dir(tmp_path: Path, *extra: str, annotators: int = 3, overlap: int = 2) -> Path:
    out = tmp_path / "tasks"
    assert main(["label", "--pairs", str(_pairs(tmp_path)), "--export-tasks", str(out),
                 "--annotators", str(annotators), "--overlap", str(overlap), *extra]) == 0
    return out


def _refused(argv: list[str], capsys, root: Path, *fragments: str) -> str:
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing written
    return lines[0]


# --- several annotators: who labels what ---------------------------------------------------------


def test_every_pair_goes_to_exactly_overlap_annotators_with_balanced_loads():
    given = assign_pairs(10, 3, 2, seed=4)
    counts = [sum(i in g for g in given) for i in range(10)]
    assert counts == [2] * 10
    assert sorted(len(g) for g in given) == [6, 7, 7]  # 20 assignments over 3 people
    assert given != assign_pairs(10, 3, 2, seed=5)


def test_export_for_three_annotators_writes_a_file_each_and_one_key(tmp_path):
    out = _export_dir(tmp_path)
    files = sorted(out.glob("annotator-*.csv"))
    assert [f.name for f in files] == ["annotator-1.csv", "annotator-2.csv", "annotator-3.csv"]
    seen: dict[str, int] = {}
    for f in files:
        for task in _csv_rows(f):
            seen[task["pair_id"]] = seen.get(task["pair_id"], 0) + 1
            assert task["annotator"] == f.stem and task["answer"] == ""
    assert set(seen.values()) == {2} and len(seen) == 12
    key = _read_jsonl(out / "key.jsonl")
    assert len({k["export_id"] for k in key}) == 1
    assert all(len(k["annotators"]) == 2 for k in key)


def test_gold_pairs_are_in_every_file_unmarked_and_score_the_annotators(tmp_path, capsys):
    gold = _jsonl(tmp_path / "gold.jsonl", [
        {"pair_id": f"gold-{i}", "prompt": f"Known {i}?", "response_a": f"Right {i}.",
         "response_b": f"Wrong {i}.", "answer": "A"} for i in range(3)])
    out = _export_dir(tmp_path, "--gold", str(gold))
    key = {k["pair_id"]: k for k in _read_jsonl(out / "key.jsonl")}
    gold_ids = {p for p, k in key.items() if "gold" in k}
    assert len(gold_ids) == 3 and not any("gold" in p for p in gold_ids)
    for f in sorted(out.glob("annotator-*.csv")):
        tasks = _csv_rows(f)
        assert gold_ids <= {t["pair_id"] for t in tasks}
        for t in tasks:  # annotator-3 gets every gold pair wrong, the others right
            right = "A" if t["A"].startswith(("GOOD", "Right")) else "B"
            t["answer"] = ("B" if right == "A" else "A") if (
                f.stem == "annotator-3" and t["pair_id"] in gold_ids) else right
        _write_csv(f, tasks)
    labels = tmp_path / "labels.jsonl"
    assert main(["label", "--pairs", str(tmp_path / "pairs.jsonl"), "--annotations",
                 *map(str, sorted(out.glob("annotator-*.csv"))), "--out", str(labels)]) == 0
    report = json.loads((tmp_path / "labels.report.json").read_text())
    accuracy = report["agreement"]["gold_accuracy"]
    assert accuracy["annotator-1"]["estimate"] == 1.0 and accuracy["annotator-3"]["estimate"] == 0.0
    assert len(_read_jsonl(labels)) == 12  # gold pairs never become training labels


# --- reading answers back ------------------------------------------------------------------------


def _answered_dir(tmp_path: Path, wrong: str | None = None) -> Path:
    """Three annotators' files, answered with the GOOD response (``wrong`` answers the other)."""
    out = _export_dir(tmp_path)
    for f in sorted(out.glob("annotator-*.csv")):
        tasks = _csv_rows(f)
        for t in tasks:
            good = _answer_good(t)
            t["answer"] = ("B" if good == "A" else "A") if f.stem == wrong else good
        _write_csv(f, tasks)
    return out


def test_several_files_aggregate_with_counts_agreement_and_a_report(tmp_path, capsys):
    out = _answered_dir(tmp_path, wrong="annotator-3")
    labels = tmp_path / "labels.jsonl"
    assert main(["label", "--pairs", str(tmp_path / "pairs.jsonl"), "--annotations",
                 *map(str, sorted(out.glob("annotator-*.csv"))), "--out", str(labels)]) == 0
    printed = capsys.readouterr().out
    assert "Krippendorff's alpha" in printed and "premise:" in printed
    rows = {r["pair_id"]: r for r in _read_jsonl(labels)}
    key = {k["pair_id"]: k["annotators"] for k in _read_jsonl(out / "key.jsonl")}
    for pair_id, holders in key.items():
        if "annotator-3" in holders:  # one right, one wrong: a split majority is no label
            assert pair_id not in rows
        else:
            assert rows[pair_id]["chosen"].startswith("GOOD")
            assert rows[pair_id]["n_annotators"] == 2 and rows[pair_id]["agreement"] == 1.0
    report = json.loads((tmp_path / "labels.report.json").read_text())
    assert report["aggregate"]["outcomes"]["contested"] == sum("annotator-3" in h for h in key.values())
    assert len(report["agreement"]["cohen_kappa"]) == 3  # every two annotators share pairs
    with_aggregate = report["agreement"]["agreement_with_aggregate"]
    assert with_aggregate["annotator-1"]["estimate"] == 1.0
    assert "annotator-3" not in with_aggregate  # every pair it answered is contested
    assert {"spearman", "deciles", "top_minus_bottom_fifth", "verdict"} <= set(report["premise"])
    assert (tmp_path / "labels.premise.png").read_bytes()[:4] == b"\x89PNG"


def test_one_file_with_an_annotator_column_is_several_annotators(tmp_path):
    out = _answered_dir(tmp_path)
    merged = [t for f in sorted(out.glob("annotator-*.csv")) for t in _csv_rows(f)]
    one = _write_csv(tmp_path / "all.csv", merged)
    rows = read_answer_sets([one], out / "key.jsonl")
    assert {r.annotator for r in rows} == {"annotator-1", "annotator-2", "annotator-3"}
    assert len(rows) == 24 and all(r.answer == "A" for r in rows)  # the key undid the order


def test_an_export_directory_reads_its_answered_files_and_key(tmp_path):
    out = _answered_dir(tmp_path)
    rows = read_answer_sets([out])
    assert len(rows) == 24 and {r.annotator for r in rows} == {f"annotator-{i}" for i in (1, 2, 3)}


def test_a_journal_applies_undos_in_order(tmp_path):
    out = _export_dir(tmp_path)
    key = _read_jsonl(out / "key.jsonl")
    export_id, first, second = key[0]["export_id"], key[0], key[1]
    shown_good = {k["pair_id"]: "B" if k["swapped"] else "A" for k in key}
    campaign = tmp_path / "campaign"
    (campaign / "journals").mkdir(parents=True)
    (campaign / "key.jsonl").write_text((out / "key.jsonl").read_text())
    events = [
        {"event": "label", "seq": 1, "pair_id": first["pair_id"], "answer": "tie", "export_id": export_id},
        {"event": "undo", "seq": 2, "undoes": 1},
        {"event": "label", "seq": 3, "pair_id": first["pair_id"], "answer": shown_good[first["pair_id"]],
         "export_id": export_id, "comment": "on second thought"},
        {"event": "label", "seq": 4, "pair_id": second["pair_id"], "answer": "skip", "export_id": export_id},
    ]
    _jsonl(campaign / "journals" / "ann.jsonl", events)
    rows = read_answer_sets([campaign])
    assert [(r.pair_id, r.answer, r.annotator, r.comment) for r in rows] == [
        (first["pair_id"], "A", "ann", "on second thought"), (second["pair_id"], "skip", "ann", None)]


def test_spreadsheet_quirks_are_accepted_and_blank_rows_counted(tmp_path, capsys):
    pairs = _pairs(tmp_path, 3)
    tasks = tmp_path / "tasks.csv"
    assert main(["label", "--pairs", str(pairs), "--export-tasks", str(tasks)]) == 0
    shown = _csv_rows(tasks)
    export_id = shown[0]["export_id"]
    lines = ["pair_id\texport_id\tanswer"]
    lines += [f"{t['pair_id']}\t{export_id}\t  {_answer_good(t).lower()} " for t in shown]
    lines.insert(2, "\t\t")  # a blank spreadsheet row
    answers = tmp_path / "answers.csv"
    answers.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8"))  # BOM + CRLF + tabs
    capsys.readouterr()
    out = tmp_path / "labels.jsonl"
    assert main(["label", "--pairs", str(pairs), "--annotations", str(answers),
                 "--key", str(tmp_path / "tasks.key.jsonl"), "--out", str(out)]) == 0
    assert "read as tab-separated" in capsys.readouterr().out
    assert all(r["chosen"].startswith("GOOD") for r in _read_jsonl(out)) and len(_read_jsonl(out)) == 3
    assert json.loads((tmp_path / "labels.report.json").read_text())["answers"]["blank_rows"] == 1


def test_cut_off_responses_carry_a_visible_marker(tmp_path):
    pairs = _jsonl(tmp_path / "pairs.jsonl", [{"pair_id": "p", "prompt": "Q?", "response_a": "Whole.",
                                               "response_b": "To be honest", "finished_b": False}])
    tasks = tmp_path / "tasks.csv"
    assert main(["label", "--pairs", str(pairs), "--export-tasks", str(tasks)]) == 0
    task = _csv_rows(tasks)[0]
    cut = "A" if task["A"].startswith("To be honest") else "B"
    assert "cut off here" in task[cut] and task[f"{cut}_cut_off"] == "CUT OFF"
    assert "cut off" not in task["B" if cut == "A" else "A"]


# --- aggregation and the premise's arithmetic ------------------------------------------------------


def _rows(votes: dict[str, list[str]]) -> list[AnswerRow]:
    return [AnswerRow(p, v, f"a{i}") for p, vs in votes.items() for i, v in enumerate(vs)]


@pytest.mark.parametrize("method", ["majority", "dawid-skene", "glad"])
def test_aggregate_methods_follow_a_clear_majority(method):
    votes = {f"p{i}": ["A", "A", "B"] if i % 2 else ["B", "B", "B"] for i in range(8)}
    got = aggregate_votes(_rows(votes), list(votes), method)
    assert [g.outcome for g in got] == ["B", "A"] * 4
    assert all(g.n_annotators == 3 for g in got)
    assert got[1].agreement == pytest.approx(2 / 3)
    assert (got[1].confidence is None) == (method == "majority")


def test_unanimous_and_min_agreement_leave_out_contested_pairs():
    votes = {"p0": ["A", "A", "B"], "p1": ["B", "B", "B"], "p2": ["skip"]}
    assert [g.outcome for g in aggregate_votes(_rows(votes), list(votes), "unanimous")] == \
        ["contested", "B", "skip"]
    got = aggregate_votes(_rows(votes), [*votes, "p9"], "majority", min_agreement=0.9)
    assert [g.outcome for g in got] == ["contested", "B", "skip", "unanswered"]


def test_disagreement_is_the_chance_two_votes_differ():
    assert disagreement(["A", "A"]) == 0 and disagreement(["A", "B"]) == 1
    assert disagreement(["A", "A", "B"]) == pytest.approx(2 / 3)
    assert disagreement(["A"]) != disagreement(["A"])  # NaN: one vote says nothing


# --- an export and its answers stay together ----------------------------------------------------------


def test_answers_of_one_export_with_the_key_of_another_are_refused(tmp_path, capsys):
    """Issue 21, "Labels silently wrong": a sheet answered for a first export, read with the
    key of a second export of the same pairs (another --seed, same key path), flipped labels
    and exited 0."""
    pairs = _pairs(tmp_path, 4)
    tasks, again = tmp_path / "tasks.csv", tmp_path / "again.csv"
    key = tmp_path / "tasks.key.jsonl"
    assert main(["label", "--pairs", str(pairs), "--export-tasks", str(tasks), "--seed", "1"]) == 0
    first_id = _csv_rows(tasks)[0]["export_id"]
    answered = [{**t, "answer": _answer_good(t)} for t in _csv_rows(tasks)]
    sheet = _write_csv(tmp_path / "answered.csv", answered)
    assert main(["label", "--pairs", str(pairs), "--export-tasks", str(again), "--key", str(key),
                 "--seed", "2", "--overwrite"]) == 0
    second_id = _read_jsonl(key)[0]["export_id"]
    assert first_id != second_id
    line = _refused(["label", "--pairs", str(pairs), "--annotations", str(sheet), "--key", str(key),
                     "--out", str(tmp_path / "labels.jsonl")], capsys, tmp_path, "field 'export_id'")
    assert first_id in line and second_id in line


def test_several_annotators_files_from_another_export_are_refused(tmp_path, capsys):
    out = _answered_dir(tmp_path)
    other = tmp_path / "other"
    assert main(["label", "--pairs", str(tmp_path / "pairs.jsonl"), "--export-tasks", str(other),
                 "--annotators", "3", "--overlap", "2", "--seed", "9"]) == 0
    _refused(["label", "--pairs", str(tmp_path / "pairs.jsonl"), "--annotations",
              str(out / "annotator-1.csv"), "--key", str(other / "key.jsonl"),
              "--out", str(tmp_path / "labels.jsonl")], capsys, tmp_path, "export_id", "is of export")


# --- bad input: one line, exit 2, nothing written -------------------------------------------------------


def test_the_same_annotator_answering_a_pair_twice_differently_is_refused(tmp_path, capsys):
    out = _answered_dir(tmp_path)
    tasks = _csv_rows(out / "annotator-1.csv")
    twice = {**tasks[0], "answer": "B" if tasks[0]["answer"] == "A" else "A"}
    sheet = _write_csv(tmp_path / "twice.csv", [*tasks, twice])
    _refused(["label", "--pairs", str(tmp_path / "pairs.jsonl"), "--annotations", str(sheet),
              "--key", str(out / "key.jsonl"), "--out", str(tmp_path / "l.jsonl")], capsys, tmp_path,
             "annotator 'annotator-1' answered pair", "twice differently")


def test_an_annotator_with_no_answers_is_refused(tmp_path, capsys):
    out = _export_dir(tmp_path)
    _refused(["label", "--pairs", str(tmp_path / "pairs.jsonl"), "--annotations",
              str(out / "annotator-2.csv"), "--out", str(tmp_path / "l.jsonl")], capsys, tmp_path,
             "annotator-2.csv", "no answers")


def test_an_unknown_pair_id_is_refused_with_the_spreadsheet_row(tmp_path, capsys):
    out = _answered_dir(tmp_path)
    tasks = _csv_rows(out / "annotator-1.csv")
    tasks[1]["pair_id"] = "q99:0-1"
    sheet = _write_csv(tmp_path / "bad.csv", tasks)
    _refused(["label", "--pairs", str(tmp_path / "pairs.jsonl"), "--annotations", str(sheet),
              "--key", str(out / "key.jsonl"), "--out", str(tmp_path / "l.jsonl")], capsys, tmp_path,
             "bad.csv:row 3", "unknown pair id 'q99:0-1'")


@pytest.mark.parametrize("missing", ["answer", "pair_id"])
def test_a_header_error_names_exactly_the_missing_column(tmp_path, capsys, missing):
    out = _answered_dir(tmp_path)
    tasks = [{k: v for k, v in t.items() if k != missing} for t in _csv_rows(out / "annotator-1.csv")]
    sheet = _write_csv(tmp_path / "cut.csv", tasks)
    line = _refused(["label", "--pairs", str(tmp_path / "pairs.jsonl"), "--annotations", str(sheet),
                     "--key", str(out / "key.jsonl"), "--out", str(tmp_path / "l.jsonl")], capsys,
                    tmp_path, f"the header lacks {missing} (columns:")
    assert " and " not in line.split("lacks")[1].split("(")[0]


@pytest.mark.parametrize("flags, fragment", [
    (["--annotators", "2", "--overlap", "3"], "need 1 <= --overlap <= --annotators"),
    (["--annotators", "0"], "need 1 <= --overlap <= --annotators"),
    (["--annotators", "3", "--export-tasks", "t.csv"], "give a directory path"),
])
def test_overlap_beyond_the_annotators_is_refused(tmp_path, capsys, flags, fragment):
    pairs = _pairs(tmp_path, 3)
    _refused(["label", "--pairs", str(pairs), "--export-tasks", str(tmp_path / "t"), *flags],
             capsys, tmp_path, fragment)  # a later --export-tasks wins over the first


@pytest.mark.parametrize("value", ["-0.1", "1.5", "nan"])
def test_min_agreement_outside_zero_one_is_refused(tmp_path, capsys, value):
    out = _answered_dir(tmp_path)
    _refused(["label", "--pairs", str(tmp_path / "pairs.jsonl"), "--annotations",
              str(out / "annotator-1.csv"), "--min-agreement", value,
              "--out", str(tmp_path / "l.jsonl")], capsys, tmp_path, "--min-agreement")
