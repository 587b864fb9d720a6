"""RAKE key-phrase extraction (realspo.spo.rake): the key content SPO removes."""

from __future__ import annotations

import pytest

from realspo.spo.rake import KeyPhrase, candidate_phrases, extract_key_phrases, stopwords

# The worked example of Rose et al. (2010), Figure 1.1.
ABSTRACT = (
    "Compatibility of systems of linear constraints over the set of natural numbers. "
    "Criteria of compatibility of a system of linear Diophantine equations, strict "
    "inequations, and nonstrict inequations are considered. Upper bounds for components of "
    "a minimal set of solutions and algorithms of construction of minimal generating sets of "
    "solutions for all types of systems are given. These criteria and the corresponding "
    "algorithms for constructing a minimal supporting set of solutions can be used in solving "
    "all the considered types of systems and systems of mixed types."
)


def scores(text: str, **kwargs) -> dict[str, float]:
    return {p.text: round(p.score, 3) for p in extract_key_phrases(text, **kwargs)}


def test_paper_example_top_phrases_match_the_paper():
    # Rose et al. report: minimal generating sets 8.7, linear diophantine equations 8.5,
    # minimal supporting set 7.7, minimal set 4.7, linear constraints 4.5. By hand:
    # minimal: freq 3, deg 3+3+2 = 8 -> 8/3; generating 3/1; sets 3/1 -> 8/3+6 = 8.667.
    # linear: freq 2, deg 2+3 = 5 -> 2.5; diophantine 3; equations 3 -> 8.5.
    # set: freq 3 ("set", "minimal set", "minimal supporting set"), deg 1+2+3 = 6 -> 2;
    # minimal supporting set = 8/3 + 3 + 2 = 7.667; minimal set = 8/3 + 2 = 4.667.
    top = extract_key_phrases(ABSTRACT)[:5]
    assert [p.text for p in top] == [
        "minimal generating sets", "linear diophantine equations", "minimal supporting set",
        "minimal set", "linear constraints",
    ]
    assert [round(p.score, 3) for p in top] == [8.667, 8.5, 7.667, 4.667, 4.5]


def test_hand_computed_scores_of_a_small_sentence():
    # Candidates: "fresh bread tastes great" | "butter" | "fresh fruit" | "sweet"
    # (with, and, is are stopwords; the comma splits). fresh: freq 2, deg 4+2 -> 3;
    # bread/tastes/great: 4/1 -> 4; fruit: 2/1 -> 2; butter, sweet: 1.
    # fresh bread tastes great = 3+4+4+4 = 15; fresh fruit = 3+2 = 5.
    assert scores("Fresh bread tastes great with butter, and fresh fruit is sweet.") == {
        "fresh bread tastes great": 15.0, "fresh fruit": 5.0, "butter": 1.0, "sweet": 1.0,
    }


def test_ties_are_ranked_by_first_occurrence():
    ranked = [p.text for p in extract_key_phrases("Fresh bread tastes great with butter, and fresh fruit is sweet.")]
    assert ranked[-2:] == ["butter", "sweet"]
    ranked = [p.text for p in extract_key_phrases("Sweet apples. Butter.")]
    assert ranked == ["sweet apples", "butter"]


def test_spans_cover_every_occurrence_in_the_source():
    text = "Green tea is healthy. I like green tea, and GREEN TEA again."
    phrase = next(p for p in extract_key_phrases(text) if p.text == "green tea")
    assert [text[s:e] for s, e in phrase.spans] == ["Green tea", "green tea", "GREEN TEA"]
    assert phrase.spans == tuple(sorted(phrase.spans))


def test_punctuation_and_line_breaks_split_phrases():
    assert set(scores("red apples, green pears; ripe plums\nblue berries")) == {
        "red apples", "green pears", "ripe plums", "blue berries",
    }


def test_unicode_words_and_curly_apostrophes():
    text = "Naïve Bayes works; crème brûlée tastes sweet. Don’t skip dessert."
    phrases = extract_key_phrases(text)
    assert {p.text for p in phrases} == {"naïve bayes works", "crème brûlée tastes sweet", "skip dessert"}
    brulee = next(p for p in phrases if p.text.startswith("crème"))
    assert text[slice(*brulee.spans[0])] == "crème brûlée tastes sweet"


@pytest.mark.parametrize("text", ["", "   \n", "and the of it is", "... !!! ,,,"])
def test_text_without_candidates_gives_no_phrases(text):
    assert extract_key_phrases(text) == []


def test_runs_longer_than_max_words_are_dropped():
    text = "quantum chromodynamics lattice simulation results, and dark matter."
    assert set(scores(text, max_words=4)) == {"dark matter"}
    assert "quantum chromodynamics lattice simulation results" in scores(text, max_words=5)


def test_result_items_are_frozen_key_phrases():
    phrase = extract_key_phrases("solar power")[0]
    assert phrase == KeyPhrase("solar power", 4.0, ((0, 11),))
    with pytest.raises(AttributeError):
        phrase.score = 0.0  # type: ignore[misc]


def test_stopword_list_is_shipped_with_the_package():
    words = stopwords()
    assert 250 <= len(words) <= 450
    assert {"the", "of", "and", "don't", "is"} <= words
    assert "bread" not in words


# --- numbers stay whole ---------------------------------------------------------------------


@pytest.mark.parametrize(("text", "number"), [
    ("About 8.05 km.", "8.05"),                   # a decimal point between digits
    ("Population 1,234,567 people.", "1,234,567"),  # thousands separators
    ("Python 3.11.7 works.", "3.11.7"),            # a version
    ("Rates rose 45% today.", "45%"),              # a percentage
    ("It fell to -3 degrees.", "-3"),               # a negative number
    ("It fell to -2.5 degrees.", "-2.5"),
    ("It fell to \u22124 degrees.", "\u22124"),    # the Unicode minus sign
    ("Growth was 0.5% yearly.", "0.5%"),
])
def test_numbers_are_one_word_however_they_are_written(text, number):
    words = [w for phrase, _, _ in candidate_phrases(text) for w in phrase]
    assert number in words
    phrase = next(p for p in extract_key_phrases(text) if number in p.text.split())
    assert number in text[slice(*phrase.spans[0])]


def test_a_sentence_end_after_a_number_is_not_part_of_it():
    assert [p.text for p in extract_key_phrases("About 8.05 km.")] == ["8.05 km"]
    assert [w for phrase, _, _ in candidate_phrases("It costs 8.") for w in phrase] == ["costs", "8"]


def test_a_comma_and_space_between_numbers_still_separates_them():
    assert [phrase for phrase, _, _ in candidate_phrases("Lists 1, 2, 3.")] == [("lists", "1"), ("2",), ("3",)]


def test_hyphens_after_a_word_join_it_rather_than_negate():
    words = [w for phrase, _, _ in candidate_phrases("Wait 5-10 minutes after covid-19 tests.")
             for w in phrase]
    assert "5-10" in words and "covid-19" in words and "-10" not in words


def test_removing_a_number_phrase_removes_the_whole_number():
    from realspo.spo.variants import degree_variants

    top = degree_variants(" About 8.05 km.", 2)[1].text
    assert "8" not in top and ".05" not in top
