"""Response log-probs: equal to the plain full-logits computation, chunked, prompt masked."""

from __future__ import annotations

import pytest
import torch

from realspo.errors import InputError
from realspo.toy_models import build_causal_lm
from realspo.training.logprobs import response_logps
from realspo.training.tokenization import collate, tokenize_pair, tokenize_pairs, tokenize_response

VOCAB = 53
# (ids, response_start): prompts of different lengths, responses of different lengths
SEQUENCES = [([1, 5, 6, 7, 8, 9, 2], 3), ([1, 10, 11, 2], 2), ([1, 12, 13, 14, 15, 16, 17, 2], 5)]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_causal_lm(VOCAB, hidden_size=32, num_layers=2, num_heads=4, seed=1)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from realspo.models import load_tokenizer

    return load_tokenizer(tiny_model_dir)


def full_logits_logps(model, batch) -> torch.Tensor:
    """The straightforward computation: all logits in fp32, log-softmax, gather, mask, sum."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logps = logits.float().log_softmax(-1)[:, :-1]
    token = logps.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    return (token * batch["response_mask"][:, 1:]).sum(1)


def test_logps_equal_full_logits_computation(model):
    batch = collate(SEQUENCES, pad_id=0)
    sums, _, _ = response_logps(model, **batch, chunk_size=4)
    torch.testing.assert_close(sums, full_logits_logps(model, batch), rtol=1e-4, atol=1e-5)


def test_n_tokens_counts_response_tokens_only(model):
    sums, n_tokens, _ = response_logps(model, **collate(SEQUENCES, pad_id=0))
    assert n_tokens.tolist() == [4.0, 2.0, 3.0]


def test_gradients_equal_full_logits_computation(model):
    batch = collate(SEQUENCES, pad_id=0)
    params = [model.model.layers[0].self_attn.q_proj.weight, model.get_output_embeddings().weight]
    sums, _, _ = response_logps(model, **batch, chunk_size=3)
    ours = torch.autograd.grad((sums * torch.tensor([1.0, -2.0, 0.5])).sum(), params)
    plain = torch.autograd.grad(
        (full_logits_logps(model, batch) * torch.tensor([1.0, -2.0, 0.5])).sum(), params
    )
    for a, b in zip(ours, plain, strict=True):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_chunk_size_does_not_change_values_or_gradients(model):
    batch = collate(SEQUENCES, pad_id=0)
    weight = model.model.layers[1].mlp.up_proj.weight
    results = []
    for chunk in (1, 2, 1024):
        sums, _, _ = response_logps(model, **batch, chunk_size=chunk)
        results.append((sums.detach(), torch.autograd.grad(sums.sum(), weight)[0]))
    for sums, grad in results[1:]:
        torch.testing.assert_close(sums, results[0][0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grad, results[0][1], rtol=1e-4, atol=1e-6)


def test_padding_does_not_change_a_sequence(model):
    alone, _, _ = response_logps(model, **collate(SEQUENCES[1:2], pad_id=0))
    batched, _, _ = response_logps(model, **collate(SEQUENCES, pad_id=0))
    torch.testing.assert_close(batched[1], alone[0], rtol=1e-5, atol=1e-5)


def test_return_hidden_gives_final_hidden_states(model):
    batch = collate(SEQUENCES, pad_id=0)
    _, _, hidden = response_logps(model, **batch, return_hidden=True)
    expected = model.model(input_ids=batch["input_ids"],
                           attention_mask=batch["attention_mask"]).last_hidden_state
    assert hidden.shape == (3, 8, 32)
    torch.testing.assert_close(hidden, expected)


def test_inference_mode_gives_same_values(model):
    batch = collate(SEQUENCES, pad_id=0)
    with torch.inference_mode():
        frozen, _, _ = response_logps(model, **batch, chunk_size=2)
    torch.testing.assert_close(frozen, full_logits_logps(model, batch).detach(), rtol=1e-4, atol=1e-5)


def test_gemma_style_final_logit_softcapping_is_applied(model):
    batch = collate(SEQUENCES, pad_id=0)
    model.config.final_logit_softcapping = 0.5
    try:
        sums, _, _ = response_logps(model, **batch)
    finally:
        model.config.final_logit_softcapping = None
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    capped = (0.5 * torch.tanh(logits.float() / 0.5)).log_softmax(-1)[:, :-1]
    token = capped.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    torch.testing.assert_close(sums, (token * batch["response_mask"][:, 1:]).sum(1), rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # inside peft
def test_peft_lora_model_is_scored_and_trains_its_adapters(model):
    from peft import LoraConfig, get_peft_model

    base = build_causal_lm(VOCAB, hidden_size=32, num_layers=2, num_heads=4, seed=1)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    batch = collate(SEQUENCES, pad_id=0)
    sums, _, _ = response_logps(peft_model, **batch)
    # LoRA starts as the identity (B = 0): same log-probs as the plain model
    torch.testing.assert_close(sums, response_logps(model, **batch)[0], rtol=1e-5, atol=1e-5)
    sums.sum().backward()
    lora_b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b)


def test_collate_right_pads_and_marks_response_tokens():
    batch = collate([([1, 5, 6, 2], 2), ([1, 7], 1)], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 5, 6, 2], [1, 7, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["response_mask"].tolist() == [[False, False, True, True],
                                               [False, True, False, False]]


# --- tokenization -------------------------------------------------------------------------

def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_prompt_and_response_are_tokenized_separately_with_eos(tokenizer):
    seq, start, truncated = tokenize_response(tokenizer, "Human: hi Assistant:", " Paris", 64)
    assert seq == ids(tokenizer, "Human: hi Assistant:") + ids(tokenizer, " Paris") + [tokenizer.eos_token_id]
    assert start == len(ids(tokenizer, "Human: hi Assistant:"))
    assert not truncated


def test_empty_prompt_starts_with_bos_so_every_response_token_is_scored(tokenizer):
    seq, start, _ = tokenize_response(tokenizer, "", "Paris", 64)
    assert seq[0] == tokenizer.bos_token_id and start == 1


def test_keep_end_drops_prompt_from_the_left(tokenizer):
    prompt, response = "The capital of France is Paris, a city on the river Seine.", " yes"
    p, r = ids(tokenizer, prompt), ids(tokenizer, response) + [tokenizer.eos_token_id]
    seq, start, truncated = tokenize_response(tokenizer, prompt, response, len(r) + 3, "keep_end")
    assert truncated and seq == p[-3:] + r and start == 3


def test_keep_end_cuts_a_too_long_response_but_keeps_one_prompt_token(tokenizer):
    response = "Photosynthesis converts sunlight, water and carbon dioxide into glucose."
    seq, start, truncated = tokenize_response(tokenizer, "Q:", response, 5, "keep_end")
    assert truncated and len(seq) == 5 and start == 1
    assert seq[1:] == ids(tokenizer, response)[:4]


def test_keep_start_keeps_prompt_and_cuts_response_end(tokenizer):
    prompt, response = "Q: bread?", "mix flour, water, yeast and salt, then knead"
    p = ids(tokenizer, prompt)
    seq, start, truncated = tokenize_response(tokenizer, prompt, response, len(p) + 2, "keep_start")
    assert truncated and start == len(p) and seq == p + ids(tokenizer, response)[:2]


def test_keep_start_with_no_room_for_the_response_is_an_error(tokenizer):
    prompt = "The mitochondria is the powerhouse of the cell."
    with pytest.raises(ValueError, match="no room for the response"):
        tokenize_response(tokenizer, prompt, "yes", len(ids(tokenizer, prompt)), "keep_start")


def test_pair_shares_prompt_truncated_for_the_longer_response(tokenizer):
    prompt = "The capital of France is Paris, a city on the river Seine."
    longer = len(ids(tokenizer, " Python lists are mutable sequences")) + 1  # + EOS
    pair = tokenize_pair(tokenizer, prompt, " yes", " Python lists are mutable sequences", longer + 3)
    assert pair.truncated and pair.prompt_ids == ids(tokenizer, prompt)[-3:]
    (chosen, c_start), (rejected, r_start) = pair.sequences()
    assert c_start == r_start == 3 and len(rejected) == longer + 3
    assert chosen[c_start:] == ids(tokenizer, " yes") + [tokenizer.eos_token_id]


def test_tokenize_pairs_names_row_and_field_of_bad_input(tokenizer):
    good = {"prompt": "Q:", "chosen": "a", "rejected": "b"}
    with pytest.raises(InputError, match=r"pairs.jsonl:row 2: field 'rejected': empty response"):
        tokenize_pairs(tokenizer, [good, {**good, "rejected": "  "}], 32, source="pairs.jsonl")
    with pytest.raises(InputError, match=r"row 1: field 'chosen': expected a string"):
        tokenize_pairs(tokenizer, [{"prompt": "Q:", "rejected": "b"}], 32)
    long_prompt = {**good, "prompt": "The capital of France is Paris, a city on the river Seine."}
    with pytest.raises(InputError, match=r"row 1: field 'prompt': .*no room"):
        tokenize_pairs(tokenizer, [long_prompt], 4, truncation="keep_start")


def test_truncated_pairs_are_flagged_and_never_lose_the_response(tokenizer):
    rows = [{"prompt": "The capital of France is Paris, a city on the river Seine.",
             "chosen": "Paris", "rejected": "The river Seine"}, {"prompt": "Q:", "chosen": "a", "rejected": "b"}]
    pairs = tokenize_pairs(tokenizer, rows, 6)
    assert [p.truncated for p in pairs] == [True, False]
    assert all(len(p.chosen_ids) >= 1 and len(p.rejected_ids) >= 1 for p in pairs)


def test_gradient_checkpointed_model_gives_same_gradients():
    batch = collate(SEQUENCES, pad_id=0)
    grads = []
    for checkpointing in (False, True):
        m = build_causal_lm(VOCAB, hidden_size=32, num_layers=2, num_heads=4, seed=1)
        if checkpointing:
            m.activation_checkpointing_enable({"use_reentrant": False})
            assert m.is_activation_checkpointing
        m.train()
        sums, _, _ = response_logps(m, **batch, chunk_size=4)
        grads.append(torch.autograd.grad(sums.sum(), m.model.layers[0].mlp.down_proj.weight)[0])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)
