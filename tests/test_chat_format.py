"""The one prompt renderer (realspo.chat_format) on the real SmolLM2-135M-Instruct tokenizer and model:
chat-template rendering, token boundaries, EOS rules, and agreement with TRL's reference log-probs."""

from __future__ import annotations

import json

import pytest

from realspo.chat_format import PromptFormat, hh_messages
from realspo.cli import main
from realspo.training.tokenization import tokenize_pair, tokenize_pairs

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    from realspo.models import load_tokenizer

    return load_tokenizer(smollm2_dir)


def _template_ids(tokenizer, messages):
    """What TRL and the model's own chat use: the template's full render, tokenized."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("prompt, messages", [
    (QUESTION, [{"role": "user", "content": QUESTION}]),
    ([{"role": "user", "content": QUESTION}], [{"role": "user", "content": QUESTION}]),
    (f"\n\nHuman: {QUESTION}\n\nAssistant:", [{"role": "user", "content": QUESTION}]),
    ("System: Answer in one word.\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Capital of France?"
     "\n\nAssistant:",
     [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Hi"},
      {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Capital of France?"}]),
], ids=["plain", "messages", "hh", "hh-system-multiturn"])
def test_templated_prompt_plus_response_equals_apply_chat_template(tokenizer, prompt, messages):
    fmt = PromptFormat.of(tokenizer, "auto")
    encoded = fmt.encode(prompt, ["Paris."])
    full = _template_ids(tokenizer, messages + [{"role": "assistant", "content": "Paris."}])
    assert fmt.templated and encoded.prompt_ids + encoded.response_ids[0] == full
    # the response is the assistant turn: content, end-of-turn, and the template's newline
    assert tokenizer.convert_ids_to_tokens(encoded.response_ids[0]) == ["Paris", ".", "<|im_end|>", "Ċ"]
    assert encoded.merged == [False]


def test_the_default_system_prompt_stays_as_the_template_renders_it(tokenizer):
    fmt = PromptFormat.of(tokenizer)
    assert fmt.prompt_text(QUESTION).startswith(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert fmt.readable(QUESTION) == ("System: You are a helpful AI assistant named SmolLM, trained by "
                                      f"Hugging Face\n\nHuman: {QUESTION}")
    given = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}]
    assert fmt.readable(given) == f"System: Be brief.\n\nHuman: {QUESTION}"


def test_hh_text_converts_back_to_messages():
    assert hh_messages("\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant:") == [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"}]
    assert hh_messages("System: s\n\nHuman: a\n\nAssistant:")[0] == {"role": "system", "content": "s"}
    assert hh_messages("The capital of France is") is None


def test_whitespace_at_the_end_of_the_prompt_goes_where_the_tokenizer_puts_it(tokenizer):
    fmt = PromptFormat.of(tokenizer, "off")
    encoded = fmt.encode("I love New ", ["York"])
    tokens = tokenizer.convert_ids_to_tokens
    assert tokens(encoded.prompt_ids) == ["I", "Ġlove", "ĠNew"]  # the lone "Ġ" merged into "ĠYork"
    assert tokens(encoded.response_ids[0]) == ["ĠYork", "<|im_end|>"]
    assert encoded.merged == [True]
    pair = tokenize_pair(fmt, "I love New ", "York", "Jersey", max_length=64)
    assert pair.merged and tokens(pair.chosen_ids)[0] == "ĠYork" and tokens(pair.rejected_ids)[0] == "ĠJersey"
    clean = fmt.encode("I love New", [" York"])
    assert clean.merged == [False] and tokens(clean.response_ids[0]) == ["ĠYork", "<|im_end|>"]


def test_hh_prompt_without_template_keeps_the_space_after_assistant(tokenizer):
    fmt = PromptFormat.of(tokenizer, "off")
    hh = f"\n\nHuman: {QUESTION}\n\nAssistant:"
    assert fmt.joint_text(hh, "Paris.") == hh + " Paris."
    assert fmt.joint_text(hh, " Paris.") == hh + " Paris."
    assert tokenizer.convert_ids_to_tokens(fmt.encode(hh, ["Paris."]).response_ids[0]) == [
        "ĠParis", ".", "<|im_end|>"]


def test_no_second_eos_or_end_of_turn(tokenizer):
    templated, plain = PromptFormat.of(tokenizer, "on"), PromptFormat.of(tokenizer, "off")
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    once = templated.encode(QUESTION, ["Paris."]).response_ids[0]
    assert templated.encode(QUESTION, ["Paris.<|im_end|>"]).response_ids[0] == once
    assert plain.encode("The capital is", [" Paris.<|im_end|>"]).response_ids[0].count(end) == 1
    # a prompt already rendered with the template is used as it is: no second generation prompt
    rendered = templated.prompt_text(QUESTION)
    assert templated.is_rendered(rendered) and templated.prompt_text(rendered) == rendered
    assert templated.encode(rendered, ["Paris."]).response_ids[0] == once
    assert templated.prompt_ids(rendered) == templated.prompt_ids(QUESTION)


def test_cut_responses_get_no_eos(tokenizer):
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for mode in ("on", "off"):
        fmt = PromptFormat.of(tokenizer, mode)
        cut = fmt.encode(QUESTION, ["Paris is the capital and"], [False]).response_ids[0]
        assert end not in cut
    row = {"prompt": QUESTION, "chosen": "Paris.", "rejected": "Well, the capital of",
           "rejected_finished": False}
    pair = tokenize_pairs(tokenizer, [row], max_length=128)[0]
    assert pair.chosen_ids[-2:] == [end, tokenizer.convert_tokens_to_ids("Ċ")]
    assert end not in pair.rejected_ids


def test_chat_template_on_without_a_template_is_a_one_line_error(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "Hi", "chosen": " a", "rejected": " b"}) + "\n")
    code = main(["train", "--data", str(data), "--model", tiny_model_dir, "--out",
                 str(tmp_path / "run"), "--chat-template", "on", "--max-steps", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "has no chat template" in err


def test_tiny_model_without_template_renders_hh_text(tiny_model_dir):
    from realspo.models import load_tokenizer

    fmt = PromptFormat.of(load_tokenizer(tiny_model_dir), "auto")
    assert not fmt.templated
    assert fmt.prompt_text([{"role": "user", "content": "Hi"}]) == "\n\nHuman: Hi\n\nAssistant:"


def test_reference_logps_agree_with_trl(smollm2_dir, tmp_path):
    """TRL 1.x's DPOTrainer (precompute_ref_log_probs) and realspo's reference pass give the same
    summed log-probs on plain rows, a prompt ending in a space, and conversational rows."""
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from realspo.models import load_model, load_tokenizer
    from realspo.training.data import read_pairs
    from realspo.training.reference import compute_reference_logps

    tokenizer = load_tokenizer(smollm2_dir)
    model = load_model(smollm2_dir, dtype=torch.float32)
    plain = [{"prompt": "The capital of France is", "chosen": " Paris.", "rejected": " Rome."},
             {"prompt": "The capital of France is ", "chosen": "Paris.", "rejected": "Lyon, I think."}]
    conversational = [{"prompt": [{"role": "user", "content": QUESTION}],
                       "chosen": [{"role": "assistant", "content": "Paris."}],
                       "rejected": [{"role": "assistant", "content": "I do not know."}]}]
    # realspo: plain strings are raw text in TRL, so --chat-template off; conversational rows are
    # read as `train` reads them (rendered to HH text, turned back into messages by the template)
    ours_plain = compute_reference_logps(model, tokenizer, plain, max_length=256, chat_template="off",
                                         show_progress=False)
    conv_file = tmp_path / "conv.jsonl"
    conv_file.write_text("".join(json.dumps(r) + "\n" for r in conversational))
    rows = [p.as_row() for p in read_pairs(conv_file)]
    ours_conv = compute_reference_logps(model, tokenizer, rows, max_length=256, show_progress=False)

    def trl(data):
        args = DPOConfig(output_dir=str(tmp_path / "trl"), precompute_ref_log_probs=True,
                         per_device_train_batch_size=2, precompute_ref_batch_size=2,
                         report_to="none", use_cpu=True, bf16=False, max_length=None)
        trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(data),
                             processing_class=tokenizer)
        ds = trainer.train_dataset
        return ds["ref_chosen_logps"], ds["ref_rejected_logps"]

    for ours, theirs in ((ours_plain, trl(plain)), (ours_conv, trl(conversational))):
        for mine, trls in zip(ours, theirs, strict=True):
            assert list(mine) == pytest.approx(list(trls), abs=1e-3)
    # the prompt ending in a space scores " Paris" (not " " + "Paris"), like the joint text
    assert ours_plain[0][1] == pytest.approx(ours_plain[0][0], abs=1e-3)
