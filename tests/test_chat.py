"""``realspo chat``: replies under the chat template, the conversation kept, stdin a pipe."""

from __future__ import annotations

import io
import shutil
import sys

import pytest

from realspo.cli import main
from realspo.commands.chat import converse

TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>\n{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")


@pytest.fixture(scope="module")
def tiny_chat_model_dir(tiny_model_dir, tmp_path_factory) -> str:
    """The tiny causal LM with a small chat template of its own."""
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("tiny-chat-model")
    shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(out)
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(out)
    return str(out)


def _chat(monkeypatch, capsys, lines: str, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines))
    code = main(["chat", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _replies(model_dir: str, conversation: list[str], max_new_tokens: int) -> list[str]:
    """What the model answers, turn by turn, each turn seeing the earlier ones (library calls)."""
    from realspo.generation.sampling import load_generator_model, sample_reply
    from realspo.generation.settings import SamplingSettings

    model, tokenizer = load_generator_model(model_dir)
    settings = SamplingSettings(num_responses=1, max_new_tokens=max_new_tokens)
    messages, replies = [], []
    for turn, text in enumerate(conversation):
        messages.append({"role": "user", "content": text})
        answer, _ = sample_reply(model, tokenizer, messages, settings, turn)
        messages.append({"role": "assistant", "content": answer})
        replies.append(answer)
    return replies


def test_two_piped_questions_get_two_replies_that_see_the_conversation(tiny_chat_model_dir, monkeypatch,
                                                                       capsys):
    questions = ["What is the capital of France?", "And how do I boil an egg?"]
    code, out, err = _chat(monkeypatch, capsys, "\n".join(questions) + "\n",
                           "--model", tiny_chat_model_dir, "--max-new-tokens", "6")
    assert code == 0
    expected = _replies(tiny_chat_model_dir, questions, 6)
    assert out == "".join(f"{reply}\n" for reply in expected)
    assert all(expected)
    assert "sampling: temperature 1 (realspo default)" in err and "max_new_tokens 6 (given)" in err


def test_the_loop_keeps_history_resets_it_and_quits():
    seen = []

    def reply(messages, turn):
        seen.append(([m["content"] for m in messages], turn))
        return f"answer {turn}"

    lines = io.StringIO("first\n\nsecond\n/reset\nthird\n/quit\nnever read\n")
    out = io.StringIO()
    assert converse(reply, lines, out, system="Be brief.") == 3
    assert seen == [(["Be brief.", "first"], 0),
                    (["Be brief.", "first", "answer 0", "second"], 1),
                    (["Be brief.", "third"], 2)]
    assert out.getvalue() == "answer 0\nanswer 1\nanswer 2\n"


def test_a_lora_adapter_directory_is_chatted_with_merged_into_its_base(tiny_chat_model_dir, tmp_path,
                                                                       monkeypatch, capsys):
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_chat_model_dir)
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False))  # random B: it changes the model
    adapter = tmp_path / "adapter"
    lora.save_pretrained(adapter, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_chat_model_dir).save_pretrained(adapter)
    assert not (adapter / "config.json").exists()  # what `train --no-merge` writes

    code, out, _ = _chat(monkeypatch, capsys, "Hello there\n", "--model", str(adapter),
                         "--max-new-tokens", "6", "--temperature", "0")
    assert code == 0
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_chat_model_dir),
                                       adapter).merge_and_unload().eval()
    merged_dir = tmp_path / "merged"
    merged.save_pretrained(merged_dir)
    AutoTokenizer.from_pretrained(tiny_chat_model_dir).save_pretrained(merged_dir)
    from realspo.generation.sampling import load_generator_model, sample_reply
    from realspo.generation.settings import SamplingSettings

    greedy = SamplingSettings(num_responses=1, max_new_tokens=6, temperature=0.0)
    messages = [{"role": "user", "content": "Hello there"}]
    model, tokenizer = load_generator_model(str(merged_dir))
    assert out == sample_reply(model, tokenizer, messages, greedy)[0] + "\n"


def test_an_adapter_without_safetensors_weights_is_refused(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from transformers import AutoTokenizer

    adapter = tmp_path / "adapter"
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(adapter)
    (adapter / "adapter_config.json").write_text(f'{{"base_model_name_or_path": "{tiny_model_dir}"}}')
    (adapter / "adapter_model.bin").write_bytes(b"pickle")
    code, _, err = _chat(monkeypatch, capsys, "Hi\n", "--model", str(adapter))
    assert code == 2 and err.count("\n") == 1
    assert "not in adapter_model.safetensors" in err


@pytest.mark.slow
def test_smollm2_gguf_answers_under_its_chat_template(smollm2_gguf, smollm2_dir, gguf_cache, monkeypatch,
                                                      capsys):
    monkeypatch.setenv("REALSPO_CACHE", gguf_cache)  # the dequantized copy smollm2_dir made
    code, out, err = _chat(monkeypatch, capsys, "What is the capital of France?\n", "--model", smollm2_gguf,
                           "--max-new-tokens", "12", "--temperature", "0")
    assert code == 0
    assert "Paris" in out  # greedy SmolLM2-135M-Instruct knows this one
    assert "temperature 0 (given)" in err
