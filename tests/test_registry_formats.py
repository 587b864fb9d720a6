"""The formats registry: every entry reads its own example end to end, detection follows the
order of FORMATS, unknown names fail listing the known ones, and the CLI offers exactly them."""

from __future__ import annotations

import argparse
import hashlib
import importlib

import pytest

from realspo.errors import ConfigError, InputError
from realspo.formats.registry import FORMATS, detect_format, format_names, get_format, parse_rows
from realspo.sources import Row

HH_PROMPT = "\n\nHuman: Is a tomato a fruit?\n\nAssistant:"
HH_PROMPT_ID = "p-" + hashlib.sha256(HH_PROMPT.encode("utf-8")).hexdigest()[:12]  # no id column

# name -> (rows, expected groups as (prompt_id, prompt, responses, scores, preferences))
EXAMPLES = {
    "hh": (
        [{"chosen": HH_PROMPT + " Yes, botanically.", "rejected": HH_PROMPT + " No."}],
        [(HH_PROMPT_ID, HH_PROMPT, [" Yes, botanically.", " No."], None, [(0, 1)])],
    ),
    "shp": (
        [{"post_id": "t1", "history": "Is a tomato a fruit?", "human_ref_A": "Yes.", "human_ref_B": "No.",
          "labels": 1, "score_A": 5, "score_B": 1},
         {"post_id": "t1", "history": "Is a tomato a fruit?", "human_ref_A": "Maybe.", "human_ref_B": "Yes.",
          "labels": 0, "score_A": 0, "score_B": 7}],
        [("t1", HH_PROMPT, ["Yes.", "No.", "Maybe."], [7.0, 1.0, 0.0], [(0, 1), (0, 2)])],
    ),
    "trl": (
        [{"prompt": [{"role": "user", "content": "Is a tomato a fruit?"}],
          "chosen": [{"role": "assistant", "content": "Yes, botanically."}],
          "rejected": [{"role": "assistant", "content": "No."}], "score_chosen": 2, "score_rejected": 1}],
        [(HH_PROMPT_ID, HH_PROMPT, ["Yes, botanically.", "No."], [2.0, 1.0], [(0, 1)])],
    ),
    "multi": (
        [{"prompt_id": "q", "prompt": "Is a tomato a fruit?", "responses": ["Yes.", "No.", "Maybe."],
          "scores": [3, 1, 2]}],
        [("q", "Is a tomato a fruit?", ["Yes.", "No.", "Maybe."], [3.0, 1.0, 2.0], [])],
    ),
}


def rows_of(records) -> list[Row]:
    return [Row(r, "mem.jsonl", f"line {i + 1}") for i, r in enumerate(records)]


def summary(groups):
    return [(g.prompt_id, g.prompt, g.responses, g.scores, g.preferences) for g in groups]


def test_every_format_has_an_example():
    assert set(EXAMPLES) == set(format_names())


@pytest.mark.parametrize("entry", FORMATS, ids=lambda e: e.name)
def test_each_format_is_detected_and_read_end_to_end(entry):
    records, expected = EXAMPLES[entry.name]
    rows = rows_of(records)
    assert detect_format(rows) == entry.name
    groups, used = parse_rows(rows)
    assert used == entry.name and summary(groups) == expected
    named, used = parse_rows(rows, entry.name)
    assert used == entry.name and summary(named) == expected
    assert get_format(entry.name) is entry


@pytest.mark.parametrize("entry", FORMATS, ids=lambda e: e.name)
def test_no_earlier_entry_claims_a_formats_example(entry):
    rows = rows_of(EXAMPLES[entry.name][0])
    columns = {k for r in rows for k, v in r.data.items() if v is not None}
    earlier = FORMATS[:FORMATS.index(entry)]
    assert not [e.name for e in earlier if e.detect(columns, rows)]


@pytest.mark.parametrize("extra", [{"prompt": "p", "responses": ["a", "b"]}, {"chosen": "a", "rejected": "b"}],
                         ids=["multi columns", "trl columns"])
def test_shp_columns_decide_even_with_other_formats_columns(extra):
    assert detect_format(rows_of([dict(EXAMPLES["shp"][0][0], **extra)])) == "shp"


def test_a_candidate_set_with_a_pair_alongside_is_multi():
    record = dict(EXAMPLES["multi"][0][0], chosen="Yes.", rejected="No.")
    assert detect_format(rows_of([record])) == "multi"


def test_without_prompt_an_hh_transcript_is_hh_and_other_text_is_trl():
    assert detect_format(rows_of([{"chosen": HH_PROMPT + " Yes.", "rejected": HH_PROMPT + " No."}])) == "hh"
    assert detect_format(rows_of([{"chosen": "Tomato: yes.", "rejected": "Tomato: no."}])) == "trl"


def test_undetectable_columns_list_every_format():
    with pytest.raises(InputError, match="cannot detect the format") as info:
        detect_format(rows_of([{"question": "q", "answer": "a"}]))
    assert all(f"{e.name} ({e.description})" in str(info.value) for e in FORMATS)


def test_unknown_format_name_is_an_error_listing_the_known_names():
    with pytest.raises(ConfigError, match="unknown format 'ultrafeedback': expected auto or one of "
                       + ", ".join(format_names())):
        get_format("ultrafeedback")
    with pytest.raises(ConfigError, match="unknown format 'ultrafeedback'"):
        parse_rows(rows_of(EXAMPLES["multi"][0]), "ultrafeedback")


def test_format_names_ignore_case_and_blanks():
    assert get_format(" HH ").name == "hh"


@pytest.mark.parametrize("command", ["select", "spo_preview"])
def test_cli_format_choices_are_auto_and_the_registry(command):
    module = importlib.import_module(f"realspo.commands.{command}")
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    action = next(a for a in parser._actions if "--format" in a.option_strings)
    assert tuple(action.choices) == ("auto", *format_names())
