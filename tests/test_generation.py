"""The generate stage: output format, determinism, resuming, sampling law, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from realspo.cli import main
from realspo.errors import ConfigError, RealspoError
from realspo.generation.candidates import generate_candidates, partial_path
from realspo.generation.prompts import read_prompts
from realspo.generation.sampling import (
    GumbelSampler,
    SamplingSettings,
    iter_samples,
    load_generator_model,
)

PROMPTS = [
    {"prompt": "The capital of France is"},
    {"prompt": [{"role": "user", "content": "How do I boil an egg?"}], "id": 7},
    {"prompt": "Photosynthesis converts"},
    {"prompt": "Python lists are", "prompt_id": "lists"},
]
SETTINGS = SamplingSettings(num_responses=3, max_new_tokens=5, seed=3)


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    return path


@pytest.fixture(scope="module")
def full_run(tiny_model_dir, tmp_path_factory):
    """An uninterrupted library run with SETTINGS and batches of two prompts: (path, rows)."""
    path = tmp_path_factory.mktemp("full") / "prompts.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    out = path.with_name("full.jsonl")
    rows = generate_candidates(tiny_model_dir, read_prompts(path), out, SETTINGS, batch_size=2,
                               progress=False)
    return out, rows


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _generate(model_dir, prompts_file, out, *extra):
    return main(["generate", "--model", model_dir, "--prompts", str(prompts_file), "--out", str(out),
                 "--num-responses", "3", "--max-new-tokens", "5", *extra])


def test_generate_writes_k_responses_per_prompt_in_multi_completion_format(tiny_model_dir, prompts_file, tmp_path):
    from realspo.formats.registry import load_groups

    out = tmp_path / "candidates.jsonl"
    assert _generate(tiny_model_dir, prompts_file, out) == 0
    rows = _read_jsonl(out)
    ids = [r["prompt_id"] for r in rows]
    assert len(rows) == len(PROMPTS) and ids[1] == "7" and ids[3] == "lists"
    assert ids[0].startswith("p-") and ids[2].startswith("p-") and ids[0] != ids[2]
    assert all(len(r["responses"]) == 3 and all(isinstance(s, str) and s for s in r["responses"])
               for r in rows)
    assert rows[1]["prompt"] == PROMPTS[1]["prompt"]  # message lists are kept as given
    groups, fmt = load_groups(str(out))
    assert fmt == "multi" and [len(g.responses) for g in groups] == [3] * len(PROMPTS)
    assert not partial_path(out).exists()


def test_same_seed_gives_same_output_and_another_seed_differs(tiny_model_dir, prompts_file, tmp_path, full_run):
    for name, seed in (("same", "3"), ("other", "4")):
        assert _generate(tiny_model_dir, prompts_file, tmp_path / f"{name}.jsonl", "--seed", seed) == 0
    assert _read_jsonl(tmp_path / "same.jsonl") == _read_jsonl(full_run[0])
    other = _read_jsonl(tmp_path / "other.jsonl")
    assert [r["responses"] for r in other] != [r["responses"] for r in full_run[1]]


def test_samples_do_not_depend_on_batch_size(tiny_model_dir, prompts_file, full_run):
    model, tokenizer = load_generator_model(tiny_model_dir)
    prompts = read_prompts(prompts_file)
    for size in (1, 4):  # the reference run used batches of 2
        samples = [s for _, batch, _ in iter_samples(model, tokenizer, prompts, SETTINGS, size, False)
                   for s in batch]
        assert samples == [r["responses"] for r in full_run[1]]
    assert len({s for r in full_run[1] for s in r["responses"]}) > len(prompts)  # samples differ


class _Interrupt(Exception):
    pass


def _stop_after(n_batches):
    def hook(done, total):
        if hook.calls == n_batches - 1:
            raise _Interrupt
        hook.calls += 1
    hook.calls = 0
    return hook


def test_resume_after_interruption_equals_uninterrupted_run(tiny_model_dir, prompts_file, tmp_path, full_run):
    prompts = read_prompts(prompts_file)
    out = tmp_path / "resumed.jsonl"
    with pytest.raises(_Interrupt):
        generate_candidates(tiny_model_dir, prompts, out, SETTINGS, batch_size=2, progress=False,
                            on_batch=_stop_after(1))
    saved = _read_jsonl(partial_path(out))
    assert not out.exists() and len(saved) == 1 + 2  # header + one batch of two prompts
    resumed = generate_candidates(tiny_model_dir, prompts, out, SETTINGS, batch_size=1,
                                  resume=True, progress=False)
    assert resumed == full_run[1] and _read_jsonl(out) == _read_jsonl(full_run[0])
    assert not partial_path(out).exists()


def test_resume_drops_a_torn_last_line(tiny_model_dir, prompts_file, tmp_path, full_run):
    prompts = read_prompts(prompts_file)
    out = tmp_path / "torn.jsonl"
    with pytest.raises(_Interrupt):
        generate_candidates(tiny_model_dir, prompts, out, SETTINGS, batch_size=1, progress=False,
                            on_batch=_stop_after(1))
    with partial_path(out).open("a") as fh:
        fh.write('{"prompt_id": "7", "prompt": [{"ro')  # killed mid-write
    assert generate_candidates(tiny_model_dir, prompts, out, SETTINGS, resume=True,
                               progress=False) == full_run[1]


def test_resume_refuses_changed_settings(tiny_model_dir, prompts_file, tmp_path):
    prompts = read_prompts(prompts_file)
    out = tmp_path / "c.jsonl"
    with pytest.raises(_Interrupt):
        generate_candidates(tiny_model_dir, prompts, out, SETTINGS, batch_size=1, progress=False,
                            on_batch=_stop_after(1))
    other = SamplingSettings(num_responses=3, max_new_tokens=5, seed=4)
    with pytest.raises(ConfigError, match="seed=3 then, 4 now"):
        generate_candidates(tiny_model_dir, prompts, out, other, resume=True, progress=False)


def test_partial_run_without_resume_is_refused(tiny_model_dir, prompts_file, tmp_path):
    out = tmp_path / "c.jsonl"
    partial_path(out).write_text('{"realspo_generate": {}}\n')
    with pytest.raises(RealspoError, match="--resume"):
        generate_candidates(tiny_model_dir, read_prompts(prompts_file), out, SETTINGS, progress=False)


def test_num_responses_below_two_exits_2_and_writes_nothing(tiny_model_dir, prompts_file, tmp_path, capsys):
    out = tmp_path / "c.jsonl"
    code = main(["generate", "--model", tiny_model_dir, "--prompts", str(prompts_file),
                 "--out", str(out), "--num-responses", "1"])
    assert code == 2 and "--num-responses must be at least 2" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [prompts_file]


@pytest.mark.parametrize("row, message", [
    ({"text": "no prompt column"}, "line 2: field 'prompt': missing"),
    ({"prompt": ""}, "line 2: field 'prompt': is empty"),
    ({"prompt": [{"role": "robot", "content": "x"}]}, "line 2: field 'prompt': message 0 has role 'robot'"),
    ({"prompt": "dup", "id": 7}, "line 2: field 'id': duplicate id '7'"),
])
def test_bad_prompt_row_exits_2_naming_row_and_field(tiny_model_dir, tmp_path, capsys, row, message):
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "fine", "id": 7}) + "\n" + json.dumps(row) + "\n")
    code = main(["generate", "--model", tiny_model_dir, "--prompts", str(path),
                 "--out", str(tmp_path / "c.jsonl")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c.jsonl").exists()


def test_chat_template_on_without_a_template_exits_2(tiny_model_dir, prompts_file, tmp_path, capsys):
    code = _generate(tiny_model_dir, prompts_file, tmp_path / "c.jsonl", "--chat-template", "on")
    assert code == 2 and "no chat template" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [prompts_file]  # no output, no progress sidecar


def test_gumbel_sampler_samples_from_the_tempered_softmax():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    n = 20000
    sampler = GumbelSampler(range(n), temperature=2.0, top_p=1.0, device=torch.device("cpu"))
    picks = sampler(None, logits.expand(n, 4)).argmax(-1).numpy()
    freq = np.bincount(picks, minlength=4) / n
    expected = torch.softmax(logits / 2.0, -1).numpy()
    assert np.all(np.abs(freq - expected) < 4 * np.sqrt(expected * (1 - expected) / n))


def test_gumbel_sampler_never_picks_tokens_outside_the_nucleus():
    logits = torch.log(torch.tensor([0.6, 0.3, 0.1]))
    sampler = GumbelSampler(range(500), temperature=1.0, top_p=0.8, device=torch.device("cpu"))
    picks = sampler(None, logits.expand(500, 3)).argmax(-1)
    assert set(picks.tolist()) == {0, 1}


def test_generation_renders_conversations_exactly_like_the_format_readers():
    from realspo.conversations import prompt_text
    from realspo.generation.prompts import hh_text
    from realspo.sources import Row

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."}, {"role": "system", "content": "Now French."},
                {"role": "user", "content": "Bye"}]
    expected = ("System: Be brief.\n\nHuman: Hi\n\nAssistant: Hello.\n\nSystem: Now French."
                "\n\nHuman: Bye\n\nAssistant:")
    assert hh_text(messages) == expected
    assert prompt_text(messages, Row({}, "x.jsonl", "line 1"), "prompt") == expected


def test_decode_loop_gives_the_tokens_model_generate_gives(tiny_model_dir):
    """The KV-cache loop (prompt encoded once per K samples, ended samples dropped from the
    batch) reproduces `model.generate` with the same sampler, token for token."""
    from realspo.generation.sampling import decode, row_seed

    model, tokenizer = load_generator_model(tiny_model_dir)
    prompts = [tokenizer("The capital of France is")["input_ids"],
               tokenizer("Human: How do I boil an egg? Assistant:")["input_ids"]]
    width, pad, k, steps = max(map(len, prompts)), tokenizer.pad_token_id, 3, 12
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    # frequent tokens as stop tokens, so that samples end at different steps
    stops = sorted(torch.bincount(input_ids.flatten(), minlength=len(tokenizer)).topk(6).indices.tolist())
    seeds = [row_seed(5, b, j) for b in range(len(prompts)) for j in range(k)]

    with torch.inference_mode():
        tokens, ended = decode(model, input_ids, mask, k, GumbelSampler(seeds, 0.9, 0.95, torch.device("cpu")),
                               steps, stops)
        out = model.generate(input_ids=input_ids.repeat_interleave(k, 0),
                             attention_mask=mask.repeat_interleave(k, 0), do_sample=False,
                             temperature=None, top_p=None, top_k=None, max_new_tokens=steps,
                             min_new_tokens=1, eos_token_id=stops, pad_token_id=pad,
                             logits_processor=[GumbelSampler(seeds, 0.9, 0.95, torch.device("cpu"))])
    expected, expected_ended = [], []
    for row in out[:, width:].tolist():
        cut = next((n for n, t in enumerate(row, start=1) if t in stops), len(row))
        expected.append(row[:cut])
        expected_ended.append(cut < len(row) or row[-1] in stops)
    assert tokens == expected
    assert ended == expected_ended
    lengths = {len(t) for t in tokens}
    assert min(lengths) < steps and any(not e for e in ended)  # some ended early, some ran on


def _decode_like_model_generate(model, tokenizer, prompts, k, steps, sampler_args, generate_args):
    """(decode's tokens, model.generate's tokens cut at the first stop) for the same sampler."""
    from realspo.generation.sampling import decode, row_seed

    width, pad = max(map(len, prompts)), tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    stops = sorted(torch.bincount(input_ids.flatten(), minlength=len(tokenizer)).topk(6).indices.tolist())
    seeds = [row_seed(5, b, j) for b in range(len(prompts)) for j in range(k)]
    with torch.inference_mode():
        tokens, _ = decode(model, input_ids, mask, k, GumbelSampler(seeds, **sampler_args), steps, stops)
        plain = {key: v for key, v in sampler_args.items() if key != "repetition_penalty"}
        out = model.generate(input_ids=input_ids.repeat_interleave(k, 0),
                             attention_mask=mask.repeat_interleave(k, 0), do_sample=False,
                             temperature=None, top_p=None, top_k=None, max_new_tokens=steps,
                             min_new_tokens=1, eos_token_id=stops, pad_token_id=pad,
                             logits_processor=[GumbelSampler(seeds, **plain)], **generate_args)
    expected = []
    for row in out[:, width:].tolist():
        cut = next((n for n, t in enumerate(row, start=1) if t in stops), len(row))
        expected.append(row[:cut])
    return tokens, expected


def test_top_k_and_repetition_penalty_sample_as_model_generate_does(tiny_model_dir):
    """top-k joins temperature and top-p in the sampler; the repetition penalty (applied by
    the decoding loop, which knows the text so far) matches model.generate's, token for token.
    One prompt, so no padding (generate would penalise the pad token too)."""
    model, tokenizer = load_generator_model(tiny_model_dir)
    prompts = [tokenizer("The capital of France is Paris, the capital")["input_ids"]]
    cpu = torch.device("cpu")
    penalised, expected = _decode_like_model_generate(
        model, tokenizer, prompts, 3, 16,
        {"temperature": 0.9, "top_p": 0.95, "device": cpu, "top_k": 20, "repetition_penalty": 1.5},
        {"repetition_penalty": 1.5})
    assert penalised == expected
    plain, _ = _decode_like_model_generate(model, tokenizer, prompts, 3, 16,
                                           {"temperature": 0.9, "top_p": 0.95, "device": cpu,
                                            "top_k": 20}, {})
    assert plain != penalised  # the penalty changed the samples


def test_gumbel_sampler_never_picks_tokens_outside_the_top_k():
    scores = torch.arange(50, dtype=torch.float32).repeat(200, 1)
    sampler = GumbelSampler(range(200), temperature=1.0, top_p=1.0, device=torch.device("cpu"), top_k=3)
    picked = set(sampler.perturb(scores).argmax(-1).tolist())
    assert picked == {47, 48, 49}


def _model_with_generation_config(tiny_model_dir, tmp_path, **values):
    import shutil

    model = tmp_path / "model-with-generation-config"
    shutil.copytree(tiny_model_dir, model)
    (model / "generation_config.json").write_text(json.dumps(values))
    return str(model)


def test_generate_takes_sampling_defaults_from_the_models_generation_config(tiny_model_dir, prompts_file,
                                                                            tmp_path, capsys):
    model = _model_with_generation_config(tiny_model_dir, tmp_path, temperature=0.7, top_p=0.9, top_k=12,
                                          repetition_penalty=1.3, max_new_tokens=4, do_sample=True)
    out = tmp_path / "candidates.jsonl"
    assert main(["generate", "--model", model, "--prompts", str(prompts_file), "--out", str(out),
                 "--num-responses", "3", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert ("sampling: temperature 0.7 (generation_config.json), top_p 0.9 (generation_config.json), "
            "top_k 12 (generation_config.json), max_new_tokens 4 (generation_config.json), "
            "repetition_penalty 1.3 (generation_config.json)") in printed
    # the same samples as a library run given those settings
    settings = SamplingSettings(num_responses=3, temperature=0.7, top_p=0.9, top_k=12,
                                repetition_penalty=1.3, max_new_tokens=4, seed=0)
    expected = generate_candidates(tiny_model_dir, read_prompts(prompts_file), tmp_path / "lib.jsonl",
                                   settings, progress=False)
    assert [r["responses"] for r in _read_jsonl(out)] == [r["responses"] for r in expected]


def test_flags_override_the_models_sampling_defaults(tiny_model_dir, prompts_file, tmp_path, capsys):
    model = _model_with_generation_config(tiny_model_dir, tmp_path, temperature=0.7, top_k=12)
    out = tmp_path / "candidates.jsonl"
    assert main(["generate", "--model", model, "--prompts", str(prompts_file), "--out", str(out),
                 "--num-responses", "2", "--temperature", "1.5", "--max-new-tokens", "3",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert ("temperature 1.5 (given), top_p 1 (realspo default), top_k 12 (generation_config.json), "
            "max_new_tokens 3 (given), repetition_penalty 1 (realspo default)") in printed


def test_a_model_without_generation_config_samples_at_realspos_defaults(tiny_model_dir, tmp_path):
    import shutil

    from realspo.generation.settings import REALSPO_DEFAULTS, resolve_sampling

    bare = tmp_path / "bare"
    shutil.copytree(tiny_model_dir, bare, ignore=shutil.ignore_patterns("generation_config.json"))
    resolved = resolve_sampling(str(bare), {"top_p": 0.5})
    assert resolved.values == {**REALSPO_DEFAULTS, "top_p": 0.5}
    assert resolved.sources["top_p"] == "given"
    assert {resolved.sources[n] for n in REALSPO_DEFAULTS if n != "top_p"} == {"realspo default"}
    assert "top_k off (realspo default)" in resolved.describe()


def test_unusable_model_values_are_passed_over(tiny_model_dir, tmp_path, caplog):
    from realspo.generation.settings import resolve_sampling

    model = _model_with_generation_config(tiny_model_dir, tmp_path, temperature=0.0, top_p=0.8)
    resolved = resolve_sampling(model, {})
    assert resolved.values["temperature"] == 1.0 and resolved.sources["temperature"] == "realspo default"
    assert resolved.values["top_p"] == 0.8
    assert "ignoring temperature 0.0" in caplog.text


def test_gguf_sampling_metadata_is_read(tmp_path):
    gguf = pytest.importorskip("gguf")
    from realspo.generation.settings import _gguf_sampling

    path = tmp_path / "m.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_float32("general.sampling.temp", 0.25)
    writer.add_int32("general.sampling.top_k", 40)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    found = _gguf_sampling(path)
    assert found["temperature"] == pytest.approx(0.25) and found["top_k"] == 40
    assert "top_p" not in found


def test_smollm2_gguf_sampling_defaults_are_read_and_said(smollm2_gguf, smollm2_dir, gguf_cache, monkeypatch):
    """SmolLM2-135M-Instruct's .gguf has no general.sampling.* keys and its generation config
    (in the dequantized cache) sets only token ids: every value is realspo's, and says so."""
    from realspo.generation.settings import (
        REALSPO_DEFAULTS,
        model_sampling_values,
        resolve_sampling,
    )

    monkeypatch.setenv("REALSPO_CACHE", gguf_cache)
    assert model_sampling_values(smollm2_gguf) == {}
    resolved = resolve_sampling(smollm2_gguf, {"temperature": 0.2})
    assert resolved.values == {**REALSPO_DEFAULTS, "temperature": 0.2}
    assert resolved.describe().startswith("temperature 0.2 (given), top_p 1 (realspo default)")
