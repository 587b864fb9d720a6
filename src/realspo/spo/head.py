"""SPO's degree head and loss: the classifier on the policy's hidden states, and its files.

``Linear(H, h) -> GELU -> Linear(h, C)`` on the policy's final hidden state at the last response
token (``pooling="last"``) or its mean over response tokens (``"mean"``), trained alongside the
policy with a (weighted) cross-entropy over the degree classes of :mod:`realspo.spo.variants`; saved
beside the checkpoint (``spo_head.safetensors`` + ``spo_head.json``), never inside the
exported model.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realspo.errors import ConfigError, InputError
from realspo.outputs import atomic_path, check_writable
from realspo.spo.variants import POOLINGS, SPOConfig

HEAD_WEIGHTS = "spo_head.safetensors"
HEAD_CONFIG = "spo_head.json"


class DegreeHead(nn.Module):
    """The degree classifier: ``Linear(H, h) -> GELU -> Linear(h, C)``.

    Input ``(B, H)`` pooled hidden states; output ``(B, C)`` logits, ``C = num_classes``.
    ``h = head_hidden``, by default ``min(H, 512)``: a small head keeps the degree
    information in the policy's representation rather than in the classifier.
    """

    def __init__(self, hidden_size: int, num_classes: int, head_hidden: int | None = None) -> None:
        super().__init__()
        self.hidden_size, self.num_classes = hidden_size, num_classes
        self.head_hidden = head_hidden or min(hidden_size, 512)
        self.net = nn.Sequential(
            nn.Linear(hidden_size, self.head_hidden), nn.GELU(), nn.Linear(self.head_hidden, num_classes)
        )

    def forward(self, pooled: Tensor) -> Tensor:
        return self.net(pooled)

    def config(self) -> dict[str, int]:
        return {"hidden_size": self.hidden_size, "num_classes": self.num_classes, "head_hidden": self.head_hidden}


def pool_hidden(hidden: Tensor, response_mask: Tensor, pooling: str) -> Tensor:
    """Pool final hidden states over each row's response tokens.

    ``hidden`` (B, T, H); ``response_mask`` (B, T), true/1 at response tokens (prompt and
    padding 0; left or right padding both work). ``"last"``: the hidden state at the last
    response token; ``"mean"``: the masked mean (computed in fp32). Returns (B, H) in
    ``hidden``'s dtype. Raises ValueError if a row has no response token.
    """
    if pooling not in POOLINGS:
        raise ConfigError(f"spo pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    mask = response_mask.to(device=hidden.device, dtype=torch.bool)
    counts = mask.sum(dim=1)
    if bool((counts == 0).any()):
        raise ValueError(f"rows without response tokens: {torch.nonzero(counts == 0).flatten().tolist()}")
    if pooling == "last":
        positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        last = torch.where(mask, positions, -1).max(dim=1).values  # (B,)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    summed = (hidden.float() * mask.unsqueeze(-1)).sum(dim=1)
    return (summed / counts.unsqueeze(-1)).to(hidden.dtype)


def pool_positions(states: Tensor, index: Tensor, response_mask: Tensor, pooling: str) -> Tensor:
    """:func:`pool_hidden` reading only the positions it pools: ``states`` (N, H) and ``index``
    (B, T), the row of ``states`` holding each position's state (a laid-out ``hidden`` (B, T, H)
    is ``states[index]``). ``"last"`` gathers one row per sequence, ``"mean"`` its response
    positions' rows; nothing else is copied (and nothing else gets a gradient buffer). Returns
    (B, H) in ``states``' dtype; raises ValueError if a row has no response token."""
    if pooling not in POOLINGS:
        raise ConfigError(f"spo pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    mask = response_mask.to(device=states.device, dtype=torch.bool)
    index = index.to(states.device)
    counts = mask.sum(dim=1)
    if bool((counts == 0).any()):
        raise ValueError(f"rows without response tokens: {torch.nonzero(counts == 0).flatten().tolist()}")
    if pooling == "last":
        positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        last = torch.where(mask, positions, -1).max(dim=1).values  # (B,)
        return states.index_select(0, index[torch.arange(index.shape[0], device=index.device), last])
    rows, _ = mask.nonzero(as_tuple=True)
    gathered = states.index_select(0, index[mask]).float()
    summed = gathered.new_zeros(mask.shape[0], states.shape[-1]).index_add(0, rows, gathered)
    return (summed / counts.unsqueeze(-1)).to(states.dtype)


def degree_loss(head: DegreeHead, pooled: Tensor, labels: Tensor, weights: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
    """SPO's self-supervised term: ``CE(head(pooled), labels)`` averaged over the batch.

    ``pooled`` (B, H) (cast to the head's dtype, so a bf16 policy can feed an fp32 head);
    ``labels`` (B,) int64 degree classes; ``weights`` (B,) optional example weights (then
    loss and accuracy are weighted means, ``sum(w * x) / sum(w)``). Returns
    ``(loss, accuracy)``, two scalars; the loss is computed in fp32, the accuracy is
    detached. Multiply by ``lambda`` outside.
    """
    weight = head.net[0].weight
    logits = head(pooled.to(device=weight.device, dtype=weight.dtype)).float()
    labels = labels.to(logits.device)
    if weights is None:
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.argmax(dim=-1) == labels).float().mean().detach()
        return loss, accuracy
    w = weights.to(device=logits.device, dtype=torch.float32)
    loss = (F.cross_entropy(logits, labels, reduction="none") * w).sum() / w.sum()
    accuracy = (((logits.argmax(dim=-1) == labels).float() * w).sum() / w.sum()).detach()
    return loss, accuracy


def save_head(head: DegreeHead, directory: str | Path, *, cfg: SPOConfig | None = None,
              overwrite: bool = False) -> Path:
    """Write ``spo_head.safetensors`` and ``spo_head.json`` (head shape + SPO options) into
    ``directory``, atomically. Returns the weights path."""
    from safetensors.torch import save_file

    directory = Path(directory)
    weights, meta = directory / HEAD_WEIGHTS, directory / HEAD_CONFIG
    check_writable(weights, overwrite)
    check_writable(meta, overwrite)
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    with atomic_path(weights, overwrite) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    info: dict[str, Any] = {"head": head.config(), "spo": dataclasses.asdict(cfg) if cfg else None}
    with atomic_path(meta, overwrite) as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return weights


def load_head(directory: str | Path, device: str | torch.device = "cpu") -> DegreeHead:
    """Rebuild a :class:`DegreeHead` saved by :func:`save_head`."""
    from safetensors.torch import load_file

    directory = Path(directory)
    meta, weights = directory / HEAD_CONFIG, directory / HEAD_WEIGHTS
    for path in (meta, weights):
        if not path.is_file():
            raise InputError(str(path), "no such file (expected an SPO head saved by realspo train --spo)")
    try:
        shape = json.loads(meta.read_text(encoding="utf-8"))["head"]
        head = DegreeHead(int(shape["hidden_size"]), int(shape["num_classes"]), int(shape["head_hidden"]))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InputError(str(meta), f"malformed SPO head config ({exc})") from None
    head.load_state_dict(load_file(str(weights), device=str(device)))
    return head.to(device)

