"""Reference log-probs: one batched pass, cached by model and data, or taken from columns."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch

import realspo.training.reference as reference
from realspo.errors import InputError
from realspo.training.logprobs import response_logps
from realspo.training.reference import (
    compute_reference_logps,
    load_or_compute_reference,
    model_fingerprint,
    reference_cache_key,
    rows_fingerprint,
)
from realspo.training.tokenization import collate, tokenize_pairs

ROWS = [
    {"prompt": "Human: How do I boil an egg? Assistant:", "chosen": " Put the egg in boiling water.",
     "rejected": " I cannot help with that."},
    {"prompt": "What is the capital of France?", "chosen": " Paris.", "rejected": " The river Seine flows through many cities in France."},
    {"prompt": "Tell me about cells.", "chosen": " The mitochondria is the powerhouse of the cell.",
     "rejected": " Python."},
]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    from realspo.models import load_model, load_tokenizer

    return load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)


def test_batched_pass_equals_per_pair_logps_in_row_order(model_and_tokenizer):
    model, tok = model_and_tokenizer
    chosen, rejected = compute_reference_logps(model, tok, ROWS, max_length=64, batch_size=4,
                                               show_progress=False)
    for i, pair in enumerate(tokenize_pairs(tok, ROWS, 64)):
        with torch.no_grad():
            sums, _, _ = response_logps(model, **collate(pair.sequences(), tok.pad_token_id))
        assert chosen[i] == pytest.approx(sums[0].item(), rel=1e-5)
        assert rejected[i] == pytest.approx(sums[1].item(), rel=1e-5)
    assert chosen.dtype == np.float64 and (chosen < 0).all() and (rejected < 0).all()


def test_reference_pass_restores_training_mode(model_and_tokenizer):
    model, tok = model_and_tokenizer
    model.train()
    compute_reference_logps(model, tok, ROWS[:1], max_length=64, show_progress=False)
    assert model.training
    model.eval()


def test_second_call_is_cached_with_equal_values(model_and_tokenizer, tiny_model_dir, tmp_path, monkeypatch):
    model, tok = model_and_tokenizer
    c1, r1, status1 = load_or_compute_reference(tiny_model_dir, ROWS, tmp_path, max_length=64,
                                                model=model, tokenizer=tok, show_progress=False)

    def must_not_run(*args, **kwargs):
        raise AssertionError("the reference pass ran although the cache holds the values")

    monkeypatch.setattr(reference, "compute_reference_logps", must_not_run)
    c2, r2, status2 = load_or_compute_reference(tiny_model_dir, ROWS, tmp_path, max_length=64,
                                                model=model, tokenizer=tok)
    assert (status1, status2) == ("computed", "cached")
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(r1, r2)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1


def test_cache_miss_loads_the_model_by_name(tiny_model_dir, model_and_tokenizer, tmp_path):
    model, tok = model_and_tokenizer
    c1, r1, _ = load_or_compute_reference(tiny_model_dir, ROWS[:2], tmp_path / "a", max_length=64,
                                          model=model, tokenizer=tok, show_progress=False)
    c2, r2, status = load_or_compute_reference(tiny_model_dir, ROWS[:2], tmp_path / "b",
                                               max_length=64, dtype=torch.float32,
                                               show_progress=False)
    assert status == "computed"
    np.testing.assert_allclose(c2, c1, rtol=1e-6)
    np.testing.assert_allclose(r2, r1, rtol=1e-6)


def test_recompute_ignores_the_cache(model_and_tokenizer, tiny_model_dir, tmp_path):
    model, tok = model_and_tokenizer
    kwargs = dict(max_length=64, model=model, tokenizer=tok, show_progress=False)
    load_or_compute_reference(tiny_model_dir, ROWS, tmp_path, **kwargs)
    *_, status = load_or_compute_reference(tiny_model_dir, ROWS, tmp_path, recompute=True, **kwargs)
    assert status == "computed"


def test_key_changes_with_data_and_settings_only(tiny_model_dir):
    data = rows_fingerprint(ROWS)
    key = reference_cache_key(tiny_model_dir, data, 64, "keep_end")
    assert key == reference_cache_key(tiny_model_dir, rows_fingerprint([dict(r) for r in ROWS]), 64, "keep_end")
    edited = [dict(ROWS[0], chosen=" Boil it."), *ROWS[1:]]
    assert key != reference_cache_key(tiny_model_dir, rows_fingerprint(edited), 64, "keep_end")
    assert key != reference_cache_key(tiny_model_dir, rows_fingerprint(ROWS[::-1]), 64, "keep_end")
    assert key != reference_cache_key(tiny_model_dir, data, 32, "keep_end")
    assert key != reference_cache_key(tiny_model_dir, data, 64, "keep_start")


def test_model_fingerprint_follows_weights_not_location(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    assert model_fingerprint(str(copy)) == model_fingerprint(tiny_model_dir)
    weights = next(copy.glob("*.safetensors"))
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, weights, metadata={"format": "pt"})
    assert model_fingerprint(str(copy)) != model_fingerprint(tiny_model_dir)


def test_rows_with_reference_columns_are_used_as_they_are(tmp_path):
    rows = [dict(r, ref_chosen_logps=-1.5 - i, ref_rejected_logps=-2.5) for i, r in enumerate(ROWS)]
    chosen, rejected, status = load_or_compute_reference("no/such-model", rows, tmp_path, max_length=64)
    assert status == "from-columns"
    assert chosen.tolist() == [-1.5, -2.5, -3.5] and rejected.tolist() == [-2.5] * 3
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("bad", [math.nan, math.inf, "x", None, 3.0])
def test_bad_reference_column_names_row_and_field(bad, tmp_path):
    rows = [dict(r, ref_chosen_logps=-1.0, ref_rejected_logps=-2.0) for r in ROWS]
    rows[1]["ref_rejected_logps"] = bad
    with pytest.raises(InputError, match=r"pairs.jsonl:row 2: field 'ref_rejected_logps'"):
        load_or_compute_reference("m", rows, tmp_path, max_length=64, source="pairs.jsonl")


def test_partial_reference_columns_are_an_error(tmp_path):
    rows = [dict(ROWS[0], ref_chosen_logps=-1.0, ref_rejected_logps=-2.0), ROWS[1]]
    with pytest.raises(InputError, match=r"row 2: field 'ref_chosen_logps'"):
        load_or_compute_reference("m", rows, tmp_path, max_length=64)


def test_damaged_cache_file_is_recomputed(model_and_tokenizer, tiny_model_dir, tmp_path):
    model, tok = model_and_tokenizer
    kwargs = dict(max_length=64, model=model, tokenizer=tok, show_progress=False)
    expected, _, _ = load_or_compute_reference(tiny_model_dir, ROWS, tmp_path, **kwargs)
    (cache_file,) = tmp_path.glob("*.safetensors")
    cache_file.write_bytes(b"not a safetensors file")
    chosen, _, status = load_or_compute_reference(tiny_model_dir, ROWS, tmp_path, **kwargs)
    assert status == "computed"
    np.testing.assert_array_equal(chosen, expected)


def test_autocast_precision_is_part_of_the_key(model_and_tokenizer, tiny_model_dir, tmp_path):
    model, tok = model_and_tokenizer
    kwargs = dict(max_length=64, model=model, tokenizer=tok, show_progress=False)
    load_or_compute_reference(tiny_model_dir, ROWS[:1], tmp_path, **kwargs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        *_, status = load_or_compute_reference(tiny_model_dir, ROWS[:1], tmp_path, **kwargs)
    assert status == "computed" and len(list(tmp_path.glob("*.safetensors"))) == 2
