"""Format readers: HH-RLHF, SHP, TRL and multi-completion rows become PromptGroups."""

from __future__ import annotations

import csv
import hashlib
import json
import logging

import pytest

from realspo.conversations import render_messages, split_hh_transcript
from realspo.errors import ConfigError, InputError
from realspo.formats.hh import SKIP_HH_DIVERGENT
from realspo.formats.registry import (
    detect_format,
    format_names,
    load_groups,
    parse_rows,
)
from realspo.sources import Row, read_rows

BASIL = (
    "\n\nHuman: What's a good way to keep fresh basil from wilting?"
    "\n\nAssistant: Trim the stems and stand it in a glass of water on the counter, like cut flowers."
    "\n\nHuman: Should I put it in the fridge?"
    "\n\nAssistant:"
)
HH_ROWS = [
    {
        "chosen": BASIL + " No, the cold turns the leaves black within a day. Keep it at room "
        "temperature, out of direct sun, and change the water every couple of days.",
        "rejected": BASIL + " Yes, the fridge is the best place for all fresh herbs.",
    },
    {
        "chosen": "\n\nHuman: How many legs does a spider have?\n\nAssistant: Eight. Spiders are "
        "arachnids, not insects, which have six.",
        "rejected": "\n\nHuman: How many legs does a spider have?\n\nAssistant: Six, like all insects.",
    },
]

CAST_IRON = "How do I stop my cast iron pan from rusting after I wash it?"
C1 = "Dry it on the burner right away, then wipe a thin film of oil on while it's warm."
C2 = "Don't soak it. A quick rinse and a towel dry is enough."
C3 = "Just throw it in the dishwasher, it's fine."
C4 = "Rust happens; scrub it off with steel wool and re-season."
SHP_ROWS = [
    {"post_id": "himc90", "domain": "askculinary_train", "upvote_ratio": 0.97, "history": CAST_IRON,
     "human_ref_A": C1, "human_ref_B": C2, "score_A": 52, "score_B": 14, "labels": 1},
    {"post_id": "himc90", "domain": "askculinary_train", "upvote_ratio": 0.97, "history": CAST_IRON,
     "human_ref_A": C3, "human_ref_B": C1, "score_A": 3, "score_B": 52, "labels": 0},
    {"post_id": "himc90", "domain": "askculinary_train", "upvote_ratio": 0.97, "history": CAST_IRON,
     "human_ref_A": C2, "human_ref_B": C4, "score_A": 14, "score_B": 2, "labels": 1},
    {"post_id": "k2xq7b", "domain": "askscience_train", "upvote_ratio": 0.88,
     "history": "Why is the sky blue but sunsets are red?",
     "human_ref_A": "Rayleigh scattering: short wavelengths scatter more. At sunset the light "
     "crosses more air, so the blue is scattered away before it reaches you.",
     "human_ref_B": "Because the ocean reflects onto the sky.", "score_A": 230, "score_B": 4,
     "labels": 1},
]

UNITS_PROMPT = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "Convert 5 miles to kilometers."},
]
TRL_CONVERSATIONAL = {
    "prompt": UNITS_PROMPT,
    "chosen": [{"role": "assistant", "content": "5 miles is about 8.05 km."}],
    "rejected": [{"role": "assistant", "content": "5 miles is 5000 meters."}],
}
MULTI_ROW = {
    "prompt": "Write a haiku about autumn rain.",
    "responses": [
        "Cold rain on maples\nred leaves loosen, one by one\nthe gutter runs gold",
        "Autumn rain is wet.\nIt falls down from the grey sky.\nI do not like it.",
        "Rain taps the window\nthe kettle begins to hum\nsweaters smell of wool",
    ],
    "scores": [8.5, 3.0, 9.0],
}


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def write_csv(path, rows) -> str:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for r in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()})
    return str(path)


def rows_of(*records) -> list[Row]:
    return [Row(r, "mem.jsonl", f"line {i + 1}") for i, r in enumerate(records)]


# --- HH-RLHF ------------------------------------------------------------------------------


def test_hh_multi_turn_prompt_ends_at_last_assistant(tmp_path):
    groups, fmt = load_groups(write_jsonl(tmp_path / "hh.jsonl", HH_ROWS))
    assert fmt == "hh"
    g = groups[0]
    assert g.prompt == BASIL  # both earlier turns stay in the prompt
    assert g.responses[0].startswith(" No, the cold turns the leaves black")
    assert g.responses[1] == " Yes, the fridge is the best place for all fresh herbs."
    assert g.prompt + g.responses[0] == HH_ROWS[0]["chosen"]
    assert (g.preferences, g.scores, g.meta["row"]) == ([(0, 1)], None, "line 1")


def test_split_hh_transcript_keeps_everything_after_last_marker():
    assert split_hh_transcript("\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye\n\nAssistant: ciao") == (
        "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye\n\nAssistant:",
        " ciao",
    )


def test_hh_rows_with_different_prompts_are_skipped_counted_and_warned(tmp_path, caplog):
    bad = {"chosen": HH_ROWS[1]["chosen"], "rejected": "\n\nHuman: How many legs does an ant have?\n\nAssistant: Six."}
    path = write_jsonl(tmp_path / "hh.jsonl", [HH_ROWS[0], bad, HH_ROWS[1]])
    skipped: dict[str, int] = {}
    with caplog.at_level(logging.WARNING, logger="realspo.formats.hh"):
        groups, _ = load_groups(path, skipped=skipped)
    assert [g.meta["row"] for g in groups] == ["line 1", "line 3"]
    assert skipped == {SKIP_HH_DIVERGENT: 1}
    assert "skipped 1 of 3 rows" in caplog.text and "first: line 2, at character 29" in caplog.text


def test_hh_file_whose_every_row_diverges_is_an_error(tmp_path):
    bad = {"chosen": HH_ROWS[1]["chosen"], "rejected": "\n\nHuman: How many legs does an ant have?\n\nAssistant: Six."}
    with pytest.raises(InputError, match=r"hh\.jsonl: no usable rows: all 1 were skipped \(1 chosen and rejected"):
        load_groups(write_jsonl(tmp_path / "hh.jsonl", [bad]))


# --- SHP ----------------------------------------------------------------------------------


def test_shp_rows_sharing_a_post_become_one_scored_group(tmp_path):
    groups, fmt = load_groups(write_jsonl(tmp_path / "shp.jsonl", SHP_ROWS))
    assert fmt == "shp"
    assert [g.prompt_id for g in groups] == ["himc90", "k2xq7b"]
    g = groups[0]
    assert g.prompt == f"\n\nHuman: {CAST_IRON}\n\nAssistant:"
    assert g.responses == [C1, C2, C3, C4]  # first-appearance order, no duplicates
    assert g.scores == [52.0, 14.0, 3.0, 2.0]
    assert g.preferences == [(0, 1), (0, 2), (1, 3)]  # label 0 in row 2 means B (C1) won
    assert g.meta == {"row": "line 1", "domain": "askculinary_train"}
    assert len(groups[1].responses) == 2


def test_shp_comment_seen_with_two_scores_keeps_the_larger():
    later = dict(SHP_ROWS[1], score_B=55)  # C1 rescraped with more upvotes
    groups, _ = parse_rows(rows_of(SHP_ROWS[0], later), "shp")
    assert groups[0].responses == [C1, C2, C3]
    assert groups[0].scores == [55.0, 14.0, 3.0]


def test_shp_duplicate_comparisons_give_one_preference():
    groups, _ = parse_rows(rows_of(SHP_ROWS[0], SHP_ROWS[0]), "shp")
    assert groups[0].preferences == [(0, 1)]


# --- TRL ----------------------------------------------------------------------------------


def test_trl_strings_with_explicit_prompt(tmp_path):
    row = {
        "id": 17,
        "prompt": "Summarize: The city council voted 7-2 on Tuesday to extend the bike lane on Main St.",
        "chosen": "The council approved extending the Main St. bike lane, 7 votes to 2.",
        "rejected": "The council discussed bikes.",
    }
    groups, fmt = load_groups(write_jsonl(tmp_path / "trl.jsonl", [row]))
    assert fmt == "trl"
    assert (groups[0].prompt_id, groups[0].prompt) == ("17", row["prompt"])
    assert groups[0].responses == [row["chosen"], row["rejected"]]
    assert groups[0].preferences == [(0, 1)]


def test_trl_conversational_prompt_renders_as_hh_text():
    groups, _ = parse_rows(rows_of(TRL_CONVERSATIONAL))
    assert groups[0].prompt == (
        "System: You are a concise assistant.\n\nHuman: Convert 5 miles to kilometers.\n\nAssistant:"
    )
    assert groups[0].responses == ["5 miles is about 8.05 km.", "5 miles is 5000 meters."]


def test_trl_responses_repeating_the_prompt_turn_are_stripped_and_scores_kept():
    # UltraFeedback-binarized style: string prompt, full conversations, scores per side.
    q = "Name three primary colors."
    row = {
        "prompt_id": "9f3a1c",
        "prompt": q,
        "chosen": [{"role": "user", "content": q}, {"role": "assistant", "content": "Red, yellow and blue."}],
        "rejected": [{"role": "user", "content": q}, {"role": "assistant", "content": "Green."}],
        "score_chosen": 8.5,
        "score_rejected": 3.0,
    }
    groups, _ = parse_rows(rows_of(row))
    g = groups[0]
    assert (g.prompt_id, g.prompt, g.responses) == ("9f3a1c", q, ["Red, yellow and blue.", "Green."])
    assert g.scores == [8.5, 3.0]


def test_trl_implicit_prompt_from_common_leading_messages():
    turns = [
        {"role": "user", "content": "I need a name for my bakery."},
        {"role": "assistant", "content": "What kind of baking do you do?"},
        {"role": "user", "content": "Mostly sourdough."},
    ]
    row = {
        "chosen": turns + [{"role": "assistant", "content": "How about 'Rise & Crumb'?"}],
        "rejected": turns + [{"role": "assistant", "content": "Bakery."}],
    }
    groups, fmt = parse_rows(rows_of(row))
    assert fmt == "trl"
    assert groups[0].prompt == (
        "\n\nHuman: I need a name for my bakery.\n\nAssistant: What kind of baking do you do?"
        "\n\nHuman: Mostly sourdough.\n\nAssistant:"
    )
    assert groups[0].responses == ["How about 'Rise & Crumb'?", "Bakery."]


def test_trl_implicit_strings_cut_back_to_a_whitespace_boundary():
    q = "Question: What is the boiling point of water at sea level in Celsius?\nAnswer:"
    row = {"chosen": q + " 100 degrees.", "rejected": q + " 10 degrees."}  # common prefix ends mid-number
    groups, _ = parse_rows(rows_of(row), "trl")
    assert groups[0].prompt == q
    assert groups[0].responses == [" 100 degrees.", " 10 degrees."]


def test_trl_implicit_hh_transcripts_use_the_hh_split():
    groups, _ = parse_rows(rows_of(HH_ROWS[0]), "trl")
    assert groups[0].prompt == BASIL
    assert groups[0].responses[1] == " Yes, the fridge is the best place for all fresh herbs."


def test_render_messages_multi_turn_with_system():
    text = render_messages(UNITS_PROMPT + [{"role": "assistant", "content": "8.05 km."}], rows_of({})[0], "prompt")
    assert text == (
        "System: You are a concise assistant.\n\nHuman: Convert 5 miles to kilometers.\n\nAssistant: 8.05 km."
    )


# --- multi-completion ---------------------------------------------------------------------


def test_multi_responses_with_scores(tmp_path):
    groups, fmt = load_groups(write_jsonl(tmp_path / "multi.jsonl", [MULTI_ROW]))
    assert fmt == "multi"
    assert groups[0].responses == MULTI_ROW["responses"]
    assert groups[0].scores == [8.5, 3.0, 9.0]
    assert groups[0].preferences == []


def test_multi_completions_with_message_prompt_and_optional_scores():
    row = {
        "prompt": [{"role": "user", "content": "Is a tomato a fruit?"}],
        "completions": [
            {"model": "a", "response": "Botanically yes; it develops from the flower's ovary.", "score": 4.5},
            {"model": "b", "response": "No, it is a vegetable.", "overall_score": 2},
        ],
    }
    unscored = {"prompt": "Say hi.", "completions": [{"response": "Hi!"}]}
    groups, fmt = parse_rows(rows_of(row, unscored))
    assert fmt == "multi"
    assert groups[0].prompt == "\n\nHuman: Is a tomato a fruit?\n\nAssistant:"
    assert groups[0].scores == [4.5, 2.0]
    assert (groups[1].responses, groups[1].scores) == (["Hi!"], None)  # one response is allowed


# --- containers ---------------------------------------------------------------------------


def test_csv_with_quoted_newlines_and_json_array_cells(tmp_path):
    path = write_csv(tmp_path / "multi.csv", [MULTI_ROW, dict(MULTI_ROW, prompt="Write a haiku about snow.")])
    assert "\n" in MULTI_ROW["responses"][0] and '"' in (tmp_path / "multi.csv").read_text()
    groups, fmt = load_groups(path)
    assert fmt == "multi"
    assert groups[1].responses == MULTI_ROW["responses"]  # newlines survive the quoting
    assert groups[1].scores == [8.5, 3.0, 9.0]


def test_csv_hh_transcripts(tmp_path):
    groups, fmt = load_groups(write_csv(tmp_path / "hh.csv", HH_ROWS))
    assert (fmt, groups[0].prompt) == ("hh", BASIL)


def test_parquet_conversational_trl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([TRL_CONVERSATIONAL]), tmp_path / "prefs.parquet")
    groups, fmt = load_groups(str(tmp_path / "prefs.parquet"))
    assert fmt == "trl"
    assert groups[0].responses == ["5 miles is about 8.05 km.", "5 miles is 5000 meters."]


def test_dataset_saved_to_disk(tmp_path):
    import datasets

    datasets.Dataset.from_list(SHP_ROWS).save_to_disk(str(tmp_path / "shp_ds"))
    groups, fmt = load_groups(str(tmp_path / "shp_ds"))
    assert fmt == "shp"
    assert [len(g.responses) for g in groups] == [4, 2]
    assert groups[0].scores == [52.0, 14.0, 3.0, 2.0]


# --- detection and ids --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("records", "expected"),
    [(HH_ROWS, "hh"), (SHP_ROWS, "shp"), ([TRL_CONVERSATIONAL], "trl"), ([MULTI_ROW], "multi")],
)
def test_auto_detection_says_which_format(tmp_path, caplog, records, expected):
    with caplog.at_level(logging.INFO, logger="realspo.formats.registry"):
        _, fmt = load_groups(write_jsonl(tmp_path / "data.jsonl", records))
    assert fmt == expected
    assert f"format: {expected} (auto-detected)" in caplog.text


def test_given_format_is_logged_as_given(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="realspo.formats.registry"):
        load_groups(write_jsonl(tmp_path / "hh.jsonl", HH_ROWS), format="hh")
    assert "format: hh (given)" in caplog.text


def test_undetectable_columns_are_named():
    with pytest.raises(InputError, match=r"mem\.jsonl: cannot detect the format from the columns \['answer', 'question'\]"):
        detect_format(rows_of({"question": "q", "answer": "a"}))


def test_ids_are_stable_and_repeats_suffixed(tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl", [HH_ROWS[1], HH_ROWS[0], HH_ROWS[1]])
    first, _ = load_groups(path)
    again, _ = load_groups(path)
    base = "p-" + hashlib.sha256(first[0].prompt.encode()).hexdigest()[:12]
    assert [g.prompt_id for g in first] == [base, first[1].prompt_id, base + "#2"]
    assert [g.prompt_id for g in again] == [g.prompt_id for g in first]
    assert first[2].response_ids() == [base + "#2/0", base + "#2/1"]


def test_explicit_ids_repeated_in_trl_rows_are_suffixed():
    pair = {"prompt_id": "q1", "prompt": "Q", "chosen": "a", "rejected": "b"}
    groups, _ = parse_rows(rows_of(pair, dict(pair, chosen="c")))
    assert [g.prompt_id for g in groups] == ["q1", "q1#2"]


def test_explicit_ids_repeated_in_multi_rows_name_both_rows():
    row = dict(MULTI_ROW, prompt_id="haiku")
    with pytest.raises(InputError, match=r"mem\.jsonl:line 2: field 'prompt_id': duplicate id 'haiku' \(first at line 1\)"):
        parse_rows(rows_of(row, row))


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("records", "fmt", "where", "field", "message"),
    [
        ([TRL_CONVERSATIONAL, {"prompt": "p", "chosen": "a"}], "auto", "line 2", "rejected", "missing"),
        ([{"prompt": "p", "chosen": 5, "rejected": "x"}], "auto", "line 1", "chosen", "got int"),
        ([{"prompt": "p", "responses": ["fine", "  \n "]}], "auto", "line 1", "responses[1]", "empty response"),
        ([dict(MULTI_ROW, scores=[1, 2])], "auto", "line 1", "scores", "expected 3 scores"),
        ([dict(SHP_ROWS[0], labels=2)], "auto", "line 1", "labels", "expected 0 or 1"),
        ([{"prompt": [{"role": "tool", "content": "{}"}], "chosen": "a", "rejected": "b"}], "auto",
         "line 1", "prompt[0].role", "unknown role 'tool'"),
        ([{"chosen": "Human: hi Assistant: yo", "rejected": "x"}], "hh", "line 1", "chosen", "HH transcript"),
        ([{"chosen": "Paris.", "rejected": "London."}], "auto", "line 1", "chosen", "share no leading text"),
        ([{"chosen": "Paris.", "rejected": [{"role": "assistant", "content": "London."}]}], "trl", "line 1",
         "rejected", "must both be strings or both message lists"),
        ([MULTI_ROW, {"prompt": "q", "completions": [{"response": "a", "score": 1}, {"response": "b"}]}],
         "multi", "line 2", "completions[1].score", "missing score"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, records, fmt, where, field, message):
    path = write_jsonl(tmp_path / "bad.jsonl", records)
    with pytest.raises(InputError) as info:
        load_groups(path, format=fmt)
    assert str(info.value).startswith(f"{path}:{where}: field '{field}': ")
    assert message in str(info.value)


def test_non_finite_json_score_is_rejected(tmp_path):
    path = tmp_path / "nan.jsonl"
    path.write_text('{"prompt": "p", "responses": ["a", "b"], "scores": [1.5, NaN]}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"nan\.jsonl:line 1: field 'scores\[1\]': expected a finite number"):
        load_groups(str(path))


def test_non_numeric_csv_score_is_rejected(tmp_path):
    path = write_csv(tmp_path / "shp.csv", [SHP_ROWS[0], dict(SHP_ROWS[1], score_A="lots")])
    with pytest.raises(InputError, match=r"shp\.csv:row 3: field 'score_A': expected a number, got str 'lots'"):
        load_groups(path)


def test_unknown_format_name_lists_the_formats():
    with pytest.raises(ConfigError, match="expected auto or one of shp, multi, trl, hh"):
        parse_rows(rows_of(MULTI_ROW), "ultrafeedback")
    assert format_names() == ("shp", "multi", "trl", "hh")


def test_empty_dataset_is_an_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"empty\.jsonl: the dataset is empty"):
        load_groups(str(tmp_path / "empty.jsonl"))


# --- sources behaviours the readers rely on -----------------------------------------------


def test_byte_order_mark_is_ignored(tmp_path):
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps(HH_ROWS[1]).encode())
    write_csv(tmp_path / "plain.csv", HH_ROWS)
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "plain.csv").read_bytes())
    assert detect_format(read_rows(tmp_path / "bom.jsonl")) == "hh"
    assert list(read_rows(tmp_path / "bom.csv")[0].data) == ["chosen", "rejected"]


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"latin1\.jsonl:line 3: invalid UTF-8"):
        read_rows(path)


def test_malformed_json_line_is_named(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(MULTI_ROW) + '\n{"prompt": "x", "responses": [\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"broken\.jsonl:line 2: malformed JSON"):
        read_rows(path)


def test_jsonl_line_separator_inside_a_string_is_not_a_line_break(tmp_path):
    # U+2028 and U+0085 are legal unescaped in JSON strings; splitlines() used to cut there.
    row = {"prompt": "p", "responses": ["first\u2028second", "third\x85fourth"]}
    (tmp_path / "u2028.jsonl").write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    groups, _ = load_groups(str(tmp_path / "u2028.jsonl"))
    assert groups[0].responses == ["first\u2028second", "third\x85fourth"]


def test_option_help_may_contain_percent_signs():
    import argparse
    import dataclasses

    from realspo.config import add_options, option

    @dataclasses.dataclass
    class Options:
        budget: str = option("50%", help="a fraction such as 50% of the prompts")

    parser = argparse.ArgumentParser()
    add_options(parser, Options)
    assert "50% of the prompts (default: 50%)" in parser.format_help()
