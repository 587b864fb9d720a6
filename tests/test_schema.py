"""The row tables of realspo.schema: builders, readers, and the id rules."""

from __future__ import annotations

import json

import pytest

from realspo.errors import InputError
from realspo.outputs import write_rows
from realspo.schema import (
    ANNOTATION_COLUMNS,
    PREFERENCE_COLUMNS,
    annotation_row,
    hashed_prompt_id,
    pair_id,
    preference_row,
    read_annotation_rows,
    read_preference_rows,
    reference_logps,
)


def _preference_rows():
    return [preference_row("Q0?", "good", "bad", pair_id="q0:0-1", prompt_id="q0", chosen_index=1,
                           rejected_index=0, chosen_score=None, rejected_score=None, similarity=0.25,
                           strategy="easy", label_source="human", oracle_chosen=1.0,
                           oracle_rejected=1.0, label_error=None),
            preference_row("Q1?", "yes", "no", pair_id="q1:0-1", prompt_id="q1", chosen_index=0,
                           rejected_index=1, chosen_score=2.0, rejected_score=1.0, similarity=0.5,
                           strategy="hard", label_source="scores", oracle_chosen=0.5,
                           oracle_rejected=0.75, label_error=True)]


def _annotation_rows():
    return [annotation_row(pair_id("q0", 0, 2), "Q0?", "first", "third", similarity=0.125,
                           prompt_id="q0", index_a=0, index_b=2, strategy="easy"),
            annotation_row(pair_id("q1", 1, 3), "Q1?", "x", "y", similarity=0.5, prompt_id="q1",
                           index_a=1, index_b=3, strategy="centroid")]


def test_preference_row_holds_the_given_columns_in_table_order():
    row = preference_row("p", "c", "r", strategy="easy", prompt_id="q", chosen_score=None)
    assert list(row.items()) == [("prompt", "p"), ("chosen", "c"), ("rejected", "r"),
                                 ("prompt_id", "q"), ("chosen_score", None), ("strategy", "easy")]
    assert [c.name for c in PREFERENCE_COLUMNS[:3]] == ["prompt", "chosen", "rejected"]


def test_annotation_row_holds_the_given_columns_in_table_order():
    row = annotation_row("q:0-1", "p", "a", "b", strategy="easy", similarity=0.5)
    assert list(row) == ["pair_id", "prompt", "response_a", "response_b", "similarity", "strategy"]
    assert [c.name for c in ANNOTATION_COLUMNS[:4]] == list(row)[:4]


def test_a_column_outside_the_table_is_refused():
    with pytest.raises(TypeError, match="not a preference column: response_a"):
        preference_row("p", "c", "r", response_a="x")
    with pytest.raises(TypeError, match="not a annotation column: chosen"):
        annotation_row("id", "p", "a", "b", chosen="x")


def test_pair_id_names_the_prompt_and_both_indices():
    assert pair_id("q7", 0, 3) == "q7:0-3"


def test_hashed_prompt_id_is_the_id_formats_give_a_row_without_one(tmp_path):
    from realspo.formats.registry import load_groups

    path = tmp_path / "multi.jsonl"
    path.write_text(json.dumps({"prompt": "Why?", "responses": ["a", "b"]}) + "\n")
    groups, _ = load_groups(str(path))
    assert groups[0].prompt_id == hashed_prompt_id("Why?") == "p-" + groups[0].prompt_id[2:]
    assert len(groups[0].prompt_id) == 14


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_preference_rows_round_trip(tmp_path, suffix):
    rows = _preference_rows()
    path = write_rows(tmp_path / f"pairs{suffix}", rows)
    assert [row.data for row in read_preference_rows(path)] == rows


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_annotation_rows_round_trip(tmp_path, suffix):
    rows = _annotation_rows()
    path = write_rows(tmp_path / f"pairs{suffix}", rows)
    pairs = read_annotation_rows(path)
    back = [annotation_row(p.pair_id, p.prompt, p.response_a, p.response_b, **p.meta) for p in pairs]
    assert back == rows  # CSV text cells come back as ints and floats where the table says so


def test_reference_logps_come_together_and_are_log_probs(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(preference_row("p", "c", "r", ref_chosen_logps=-1.5,
                                              ref_rejected_logps=-2)) + "\n")
    assert reference_logps(read_preference_rows(path)[0]) == (-1.5, -2.0)
    path.write_text(json.dumps({"prompt": "p", "chosen": "c", "rejected": "r",
                                "ref_chosen_logps": 0.5, "ref_rejected_logps": -2}) + "\n")
    with pytest.raises(InputError, match=r"line 1: field 'ref_chosen_logps': expected a log-prob <= 0"):
        read_preference_rows(path)


@pytest.mark.parametrize("row, field, message", [
    ({"prompt": "p", "chosen": "c"}, "rejected", "missing"),
    ({"prompt": "p", "chosen": " ", "rejected": "r"}, "chosen", "empty response text"),
    ({"prompt": "p", "chosen": 3, "rejected": "r"}, "chosen", "expected a string or a list"),
])
def test_malformed_preference_row_is_a_one_line_error_naming_row_and_field(tmp_path, row, field, message):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(InputError) as caught:
        read_preference_rows(path)
    text = str(caught.value)
    assert text.startswith(f"{path}:line 2: field '{field}': {message}") and "\n" not in text


def test_text_only_preference_rows_refuse_message_lists(tmp_path):
    path = tmp_path / "pairs.jsonl"
    turns = [{"role": "user", "content": "hi"}]
    path.write_text(json.dumps({"prompt": turns, "chosen": "c", "rejected": "r"}) + "\n")
    assert read_preference_rows(path)[0].data["prompt"] == turns
    with pytest.raises(InputError, match=r"line 1: field 'prompt': expected a string \(a preference row"):
        read_preference_rows(path, conversational=False)


@pytest.mark.parametrize("row, field, message", [
    ({"pair_id": "b", "prompt": "Q?", "response_a": "x"}, "response_b", "expected a non-empty string"),
    ({"pair_id": "a", "prompt": "Q?", "response_a": "x", "response_b": "y"}, "pair_id",
     "duplicate pair id 'a' (first at line 1)"),
    ({"pair_id": "b", "prompt": "Q?", "response_a": "x", "response_b": "y", "similarity": "near"},
     "similarity", "expected a number"),
])
def test_malformed_annotation_row_is_a_one_line_error_naming_row_and_field(tmp_path, row, field, message):
    path = tmp_path / "pairs.jsonl"
    first = annotation_row("a", "Q?", "x", "y")
    path.write_text(json.dumps(first) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(InputError) as caught:
        read_annotation_rows(path)
    text = str(caught.value)
    assert text.startswith(f"{path}:line 2: field '{field}': {message}") and "\n" not in text


def test_annotation_rows_without_pair_id_get_row_numbers(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": "Q?", "response_a": "x", "response_b": "y"}) + "\n"
                            for _ in range(2)))
    assert [p.pair_id for p in read_annotation_rows(path)] == ["row-0", "row-1"]


def test_an_empty_file_is_an_error_for_both_tables(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    for read in (read_preference_rows, read_annotation_rows):
        with pytest.raises(InputError, match=r"empty\.jsonl: the dataset is empty"):
            read(path)
