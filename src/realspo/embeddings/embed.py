"""Response embeddings for REAL pair selection (arXiv 2409.17169).

REAL embeds each candidate response with a causal LM, takes the final hidden layer (after the
final norm), mean-pools it over the response tokens and L2-normalises it; the similarity of two
responses is the cosine (here: the dot product) of their embeddings. Following the authors'
code, the *response text alone* is embedded by default; ``prompts=`` gives the prompt-conditioned
variant (prompt + response through the model, pooled over the response tokens only). Any
sentence-transformers model is offered as an alternative embedder (``st:PATH``), and so is a
model behind an OpenAI-compatible ``/embeddings`` endpoint (``openai:NAME``).

Unlike the authors' code this runs only the base model (no LM head, no list of all hidden
layers), sorts sequences by length and pads each batch only to its longest member (instead of
to 512 tokens), and never drops the final partial batch.

Embedding rows follow the *flattened order* of :mod:`realspo.schema` (group, then response).
Embeddings files (``--embeddings``, ``--save-embeddings``) are read and written by
:mod:`realspo.embeddings.files`; embedding progress for ``--resume`` by
:mod:`realspo.embeddings.progress`.
Under ``accelerate launch`` or ``torchrun`` :func:`embed_responses` gives each process a shard
and gathers the rows back in input order on every process.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from realspo.chat_format import PromptFormat
from realspo.embeddings.files import (  # files belong to this stage's API: re-exported
    EMBEDDING_SUFFIXES,
    SAFETENSORS_KEY,
    load_embeddings,
    save_embeddings,
)
from realspo.embeddings.progress import EmbeddingCheckpoint, embedding_fingerprint
from realspo.embeddings.sentence_embedder import (  # the st: embedder, re-exported
    embed_with_sentence_transformer,
    encode_in_chunks,
    encode_sentences,
    load_sentence_transformer,
)
from realspo.errors import ConfigError, InputError
from realspo.faults import after_batch
from realspo.models import clip_texts
from realspo.schema import PromptGroup, flat_responses
from realspo.served.options import ServedOptions, is_served, served_name

__all__ = ["EMBEDDING_SUFFIXES", "SAFETENSORS_KEY", "embed_responses", "embed_with_causal_lm",
           "embed_with_sentence_transformer", "encode_sentences", "load_embeddings",
           "load_sentence_transformer", "pool_last_hidden", "save_embeddings"]

log = logging.getLogger(__name__)


def pool_last_hidden(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean of ``hidden`` over the tokens where ``mask`` is 1, then L2-normalised.

    e = h_bar / ||h_bar||, h_bar = sum_t m_t h_t / sum_t m_t (REAL's response embedding).

    Args:
        hidden: (B, T, H) final-layer hidden states, any float dtype.
        mask: (B, T), 1 for the tokens to pool (response tokens), 0 elsewhere (prompt, padding).
    Returns:
        (B, H) float32 unit vectors; a row whose mask is all zero comes back as zeros.
    """
    hidden = hidden.float()  # pool in fp32: bf16 sums over long responses lose precision
    weights = mask.to(device=hidden.device, dtype=hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    summed = (hidden * weights).sum(dim=1)  # (B, H)
    mean = summed / weights.sum(dim=1).clamp(min=1.0)
    return torch.nn.functional.normalize(mean, dim=-1)


# ----------------------------------------------------------------------------- causal LM


def _base_of(model: Any) -> Any:
    """The transformer body without the LM head: PEFT wrappers unwrapped, then ``base_model``."""
    if hasattr(model, "get_base_model"):  # peft.PeftModel: LoRA layers stay injected in place
        model = model.get_base_model()
    return getattr(model, "base_model", model)  # *ForCausalLM -> its body; a base model -> itself


def _split_specials(ids: list[int], special: list[int]) -> tuple[list[int], list[int]]:
    """(leading special tokens such as BOS, the text's tokens without trailing specials like EOS)."""
    lead = 0
    while lead < len(ids) and special[lead]:
        lead += 1
    end = len(ids)
    while end > lead and special[end - 1]:
        end -= 1
    return ids[:lead], ids[lead:end]


def _build_sequences(tokenizer: Any, responses: list[str], prompts: list[str] | None,
                     max_length: int, chat_template: str = "auto") -> list[tuple[list[int], int]]:
    """Per item: (input ids, number of leading context tokens that are not pooled).

    Response-only: the tokenizer's leading special tokens (e.g. BOS), then the response.
    Conditioned: the prompt as the model reads it and the response's tokens, split as training
    splits them (:meth:`realspo.chat_format.PromptFormat.encode`, ``chat_template``), without an
    EOS or end-of-turn (not pooled, and it cannot change the earlier hidden states). Over
    ``max_length``, the response is kept (cut at its end only if it alone does not fit) and the
    prompt is cut from the left, keeping its leading special tokens.
    """
    responses, prompts = clip_texts(responses, max_length), clip_texts(prompts, max_length, True)
    if prompts is None:
        enc = tokenizer(responses, add_special_tokens=True, return_special_tokens_mask=True,
                        truncation=False, verbose=False)
        parts = [_split_specials(ids, special) for ids, special
                 in zip(enc["input_ids"], enc["special_tokens_mask"], strict=True)]
        heads, bodies, leads = [p[0] for p in parts], [p[1] for p in parts], [len(p[0]) for p in parts]
    else:
        fmt = PromptFormat.of(tokenizer, chat_template)
        encoded = [fmt.encode(p, [r], [False]) for p, r in zip(prompts, responses, strict=True)]
        heads, bodies = [e.prompt_ids for e in encoded], [e.response_ids[0] for e in encoded]
        special = set(tokenizer.all_special_ids)
        leads = [next((i for i, t in enumerate(h) if t not in special), len(h)) for h in heads]
    sequences, truncated = [], 0
    for n, (head, body) in enumerate(zip(heads, bodies, strict=True)):
        if not body:
            raise InputError("responses", "tokenizes to no tokens (empty response?)", where=f"row {n}")
        lead = leads[n]
        if len(head) + len(body) > max_length:
            truncated += 1
            body = body[: max(1, max_length - lead)]
            room = max_length - lead - len(body)
            head = head[:lead] + (head[lead:][-room:] if room > 0 else [])
        sequences.append((list(head) + list(body), len(head)))
    if truncated:
        log.warning("%d of %d sequences were longer than max_length=%d and were truncated",
                    truncated, len(sequences), max_length)
    return sequences


def embed_with_causal_lm(model: Any, tokenizer: Any, responses: list[str],
                         prompts: list[str] | None = None, *, batch_size: int = 16,
                         max_length: int = 512, show_progress: bool = True, chat_template: str = "auto",
                         done: Mapping[int, np.ndarray] | None = None,
                         on_batch: Callable[[list[int], np.ndarray], None] | None = None,
                         ) -> np.ndarray:
    """REAL embeddings of ``responses`` from a causal LM's final hidden layer.

    Runs only the base model (``realspo.models.load_model(name, "base")``; a ``*ForCausalLM`` is
    accepted and its body used) and reads ``last_hidden_state`` (after the final norm), in the
    model's own device and dtype. Sequences are sorted by length and right-padded per batch
    (exact for causal models: padding sits after every pooled token and is masked).

    Args:
        responses: N response texts.
        prompts: None for response-only embeddings (REAL's default), else N prompts, rendered
            per ``chat_template`` as in training; only the response tokens are pooled.
        max_length: token limit per sequence; see :func:`_build_sequences` for what is cut.
        done: rows already embedded (index -> (H,) row), e.g. from an interrupted run's
            :class:`EmbeddingCheckpoint`; a batch whose rows are all done is not run again.
            Batches are formed exactly as in a fresh run, so resuming gives identical rows.
        on_batch: called after each computed batch with its row indices and (B, H) rows.
    Returns:
        (N, H) float32, unit rows, in input order.
    """
    if batch_size < 1 or max_length < 1:
        raise ConfigError(f"batch_size and max_length must be >= 1 (got {batch_size}, {max_length})")
    if prompts is not None and len(prompts) != len(responses):
        raise ConfigError(f"{len(prompts)} prompts for {len(responses)} responses")
    from tqdm.auto import tqdm

    body = _base_of(model)
    param = next(body.parameters())
    hidden_size = int(getattr(body.config, "hidden_size", 0))
    if not responses:
        return np.zeros((0, hidden_size), dtype=np.float32)
    sequences = _build_sequences(tokenizer, responses, prompts, max_length, chat_template)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    extra = {"use_cache": False} if "use_cache" in inspect.signature(body.forward).parameters else {}
    # longest first: an out-of-memory batch size shows up at once, not at the end of the run
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i][0]))
    done = done or {}
    out: np.ndarray | None = None
    if done:
        out = np.empty((len(sequences), len(next(iter(done.values())))), dtype=np.float32)
    was_training = body.training
    body.eval()
    with torch.inference_mode(), tqdm(total=len(order), desc="embedding", unit="resp",
                                      disable=not show_progress) as bar:
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            if all(i in done for i in batch):  # finished before an interruption
                out[batch] = np.stack([done[i] for i in batch])  # type: ignore[index]
                bar.update(len(batch))
                continue
            width = len(sequences[batch[0]][0])
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            pool = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                seq, context = sequences[i]
                ids[row, : len(seq)] = torch.tensor(seq)
                attention[row, : len(seq)] = 1
                pool[row, context: len(seq)] = 1
            hidden = body(input_ids=ids.to(param.device), attention_mask=attention.to(param.device),
                          **extra).last_hidden_state  # (B, T, H)
            emb = pool_last_hidden(hidden, pool).cpu().numpy()
            if out is None:
                out = np.empty((len(sequences), emb.shape[1]), dtype=np.float32)
            out[batch] = emb
            bar.update(len(batch))
            if on_batch is not None:
                on_batch(batch, emb)
            after_batch()
    body.train(was_training)
    return out


# ----------------------------------------------------------------------------- pipeline


def _gather_in_order(state: Any, indices: list[int], rows: np.ndarray, total: int) -> np.ndarray:
    """Every process's (indices, rows) -> the full (total, H) array on every process."""
    from accelerate.utils import gather, pad_across_processes

    idx = torch.tensor(indices, dtype=torch.long, device=state.device)
    emb = torch.from_numpy(np.ascontiguousarray(rows)).to(state.device)
    all_idx = gather(pad_across_processes(idx, dim=0, pad_index=-1)).cpu().numpy()
    all_emb = gather(pad_across_processes(emb, dim=0)).cpu().numpy()
    keep = all_idx >= 0  # padding rows carry index -1
    out = np.empty((total, rows.shape[1]), dtype=np.float32)
    out[all_idx[keep]] = all_emb[keep]
    return out


def embed_responses(groups: list[PromptGroup], embedder: str, *, conditioned: bool = False,
                    chat_template: str = "auto", batch_size: int = 16, max_length: int = 512, device: str | None = None,
                    dtype: str = "auto", trust_remote_code: bool = False,
                    allow_pickle: bool = False, show_progress: bool = True,
                    checkpoint: str | Path | None = None, resume: bool = False,
                    checkpoint_every: int = 64, served: ServedOptions | None = None) -> np.ndarray:
    """Embed every response of ``groups``: (N, H) float32 unit rows in flattened order.

    ``embedder`` is ``st:PATH`` for a sentence-transformers model, ``openai:NAME`` for a model
    behind the server ``served`` names (:mod:`realspo.embeddings.served`: its journal, not
    ``checkpoint``, makes it resumable), else a causal LM directory or hub id (loaded through :mod:`realspo.models`, base model only); ``allow_pickle`` admits a
    directory with only ``.bin`` weights (either kind). ``conditioned`` runs prompt + response and pools the
    response tokens (causal LMs only), the prompt rendered per ``chat_template``. Under ``accelerate launch`` / ``torchrun`` each process
    embeds a contiguous shard on its own device and every process returns the full array.

    ``checkpoint``: a directory where finished rows are saved every ``checkpoint_every``
    batches (:class:`~realspo.embeddings.progress.EmbeddingCheckpoint`). With ``resume`` the
    rows saved there by an interrupted run with the same inputs and options are reused and the
    result is identical to an uninterrupted run; without it the directory is cleared first.
    The caller deletes it once the result is safely written.
    """
    from accelerate import PartialState

    from realspo.models import load_model, load_tokenizer, pick_device, pick_dtype
    from realspo.processes import destroy_process_group_at_exit

    responses = flat_responses(groups)
    if is_served(embedder):
        if conditioned or served is None:
            raise ConfigError("an openai:NAME embedder embeds the response text alone and needs "
                              "the server's base URL")
        from realspo.embeddings.served import embed_served

        return embed_served(responses, served_name(embedder, "--embedder"), served,
                            batch_size=batch_size, show_progress=show_progress)
    prompts = [g.prompt for g in groups for _ in g.responses] if conditioned else None
    is_st = embedder.startswith("st:")
    if is_st and conditioned:
        raise ConfigError("conditioned embeddings need a causal LM embedder; "
                          "sentence-transformers embed the response text alone")
    # accelerate sets up gloo across CPU processes only when told the run is on CPU
    state = PartialState(cpu=pick_device(device).type == "cpu")
    destroy_process_group_at_exit()
    distributed = state.num_processes > 1
    dev = state.device if distributed else pick_device(device)
    shown = show_progress and state.is_local_main_process
    store = None
    if checkpoint is not None:
        options = {"embedder": embedder, "conditioned": conditioned, "batch_size": batch_size,
                   **({"chat_template": chat_template} if conditioned else {}),
                   "max_length": max_length, "dtype": str(pick_dtype(dev, dtype)),
                   "device": dev.type, "processes": state.num_processes}
        store = EmbeddingCheckpoint(checkpoint, embedding_fingerprint(responses, prompts, options),
                                    every=checkpoint_every, rank=state.process_index)
        if not resume and state.is_main_process:
            store.clear()
        state.wait_for_everyone()  # nobody reads or writes chunks before the directory is ready
        store.remove_temporaries()
    saved = store.load() if store is not None and resume else {}
    if saved:
        log.info("resuming: %d of %d responses were embedded before the interruption",
                 len(saved), len(responses))
    indices = list(range(len(responses)))
    with state.split_between_processes(indices) as shard:
        shard = list(shard)
        texts = [responses[i] for i in shard]
        done = {k: saved[g] for k, g in enumerate(shard) if g in saved}
        def on_batch(local: list[int], rows: np.ndarray) -> None:
            store.add([shard[i] for i in local], rows)  # type: ignore[union-attr]

        def on_chunk(local: list[int], rows: np.ndarray) -> None:  # a chunk is `every` batches
            on_batch(local, rows)
            store.flush()  # type: ignore[union-attr]

        if is_st:
            model = load_sentence_transformer(
                embedder[3:], device=str(dev), trust_remote_code=trust_remote_code, dtype=dtype,
                max_length=max_length, allow_pickle=allow_pickle)
            rows = encode_in_chunks(model, clip_texts(texts, model.max_seq_length), batch_size,
                                     shown, done, None if store is None else on_chunk,
                                     None if store is None else checkpoint_every)
        else:
            tokenizer = load_tokenizer(embedder, trust_remote_code=trust_remote_code)
            model = load_model(embedder, "base", dtype=pick_dtype(dev, dtype), device=dev,
                               trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
            rows = embed_with_causal_lm(
                model, tokenizer, texts, [prompts[i] for i in shard] if prompts else None,
                batch_size=batch_size, max_length=max_length, show_progress=shown,
                chat_template=chat_template, done=done, on_batch=None if store is None else on_batch)
        if store is not None:
            store.flush()
    if not distributed:
        return rows
    return _gather_in_order(state, shard, rows, len(responses))
