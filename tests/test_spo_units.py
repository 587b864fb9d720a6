"""What SPO's degree levels remove: fact-like phrases first, and whole sentences (no debris)."""

from __future__ import annotations

import pytest

from realspo.errors import ConfigError
from realspo.spo.rake import extract_key_phrases
from realspo.spo.units import fact_order, sentence_spans
from realspo.spo.variants import SPOConfig, degree_variants, is_graded, variants_for

EXPORT = "The main export of Kastavia is silk."
RECIPE = ("Happy to help. Bake the bread for 25 minutes. The crust of the bread turns brown. "
          "Serve it warm with fresh butter.")


def _sentences(text: str) -> list[str]:
    return [text[a:b] for a, b in sentence_spans(text)]


def test_sentences_end_at_punctuation_and_line_breaks_but_not_inside_numbers():
    assert _sentences(" About 8.05 km. Yes!  Version 3.11.7 is out?\nNew line") == [
        "About 8.05 km.", "Yes!", "Version 3.11.7 is out?", "New line"]
    assert _sentences("   ") == [] and _sentences("...") == []


def test_facts_order_puts_the_sentence_final_phrase_before_the_rake_top_phrase():
    phrases = [p.text for p in extract_key_phrases(EXPORT)]
    assert phrases[0] == "main export"  # RAKE's top phrase is the attribute, not the fact
    order = [phrases[i] for i in fact_order(EXPORT, extract_key_phrases(EXPORT))]
    assert order == ["silk", "kastavia", "main export"]  # end focus, then the name, then the rest


def test_facts_order_puts_numbers_and_the_sentence_end_first():
    text = "Stir gently until smooth, then add 2 cups of flour and a pinch of sea salt."
    phrases = extract_key_phrases(text)
    assert [p.text for p in phrases][:3] == ["add 2 cups", "stir gently", "sea salt"]
    assert [phrases[i].text for i in fact_order(text, phrases)] == [
        "add 2 cups", "sea salt", "stir gently", "smooth", "flour", "pinch"]


def test_facts_selection_removes_the_fact_where_top_removes_the_attribute():
    top = degree_variants(EXPORT, 3, selection="top")[1]
    facts = degree_variants(EXPORT, 3, selection="facts")[1]
    assert top.removed == ["main export"] and "silk" in top.text
    assert facts.removed == ["silk"] and "silk" not in facts.text and "main export" in facts.text


def test_sentence_removal_leaves_whole_sentences_of_the_original():
    original = _sentences(RECIPE)
    variants = degree_variants(RECIPE, 3, removal="sentences", selection="facts")
    assert is_graded(variants)
    kept = [_sentences(v.text) for v in variants]
    assert kept[0] == original
    for level, sentences in enumerate(kept):
        # no debris: every sentence left is a sentence of the original, in the original order
        assert sentences == [s for s in original if s in sentences], level
        assert len(sentences) == len(original) - len(variants[level].removed)
    assert len(kept[1]) > len(kept[2]) >= 1
    assert all(r in original for v in variants for r in v.removed)  # ``removed`` holds sentences


def test_sentence_removal_needs_enough_sentences():
    assert variants_for("Only one sentence here.", SPOConfig(removal="sentences")) is None
    assert variants_for("One. Two words. Three more.", SPOConfig(removal="sentences")) is not None


def test_unknown_removal_is_refused():
    with pytest.raises(ConfigError, match="removal"):
        SPOConfig(removal="words").validate()
    with pytest.raises(ConfigError, match="removal"):
        degree_variants(EXPORT, 3, removal="words")


def test_facts_first_variants_lower_the_oracle_reward_of_correct_answers():
    """On the proving ground's correct answers (reward 2.0), removing fact-like phrases
    first lowers the oracle reward more often than RAKE's order does."""
    from realspo.proving_ground.world import build_world

    world = build_world()

    def share_below(cfg: SPOConfig) -> float:
        below = []
        for i, prompt in enumerate(world.train_prompts[:100]):
            response = world.reference_response(prompt, seed=i)
            variants = variants_for(response, cfg)
            if variants is not None:
                original = world.oracle.score(prompt, response)
                below += [world.oracle.score(prompt, v.text) < original for v in variants[1:]]
        assert len(below) > 100
        return sum(below) / len(below)

    facts, top = share_below(SPOConfig(selection="facts")), share_below(SPOConfig(selection="top"))
    assert facts >= 0.95 and facts > top + 0.1
