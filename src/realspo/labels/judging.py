"""Labels: turning annotation-ready pairs into preference pairs (the ``label`` stage).

Input: annotation rows from ``realspo select`` (``pair_id``, ``prompt``, ``response_a``,
``response_b`` plus ``similarity``, ``prompt_id``, ``index_a``, ``index_b``, ``strategy``).
Every label source produces one *outcome* per pair, ``"A"``, ``"B"``, ``"tie"`` or ``"skip"``
(``"unanswered"`` for a human task left blank); :func:`preference_rows` turns outcomes into
TRL rows (``prompt``, ``chosen``, ``rejected`` + metadata), dropping ties, skips and blanks.

Sources: scores already present (:func:`pair_scores`), a judge's rewards (a reward model or
the proving ground's oracle, as callables from :func:`make_judge`; :mod:`realspo.evaluation.evaluate`
judges with the same callables), a human round trip (:func:`export_tasks`,
:func:`read_annotations`) and a simulated annotator (:func:`simulate_labels`).

When an oracle reward exists, a label is an *error* when it disagrees with the oracle's
ordering of the pair; pairs the oracle ties, and labels that are not A or B, are left out.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from realspo.errors import InputError, RealspoError
from realspo.outputs import check_writable, write_rows
from realspo.sources import Row, finite_float, read_rows

ANSWERS = ("A", "B", "tie", "skip")
Judge = Callable[[Sequence[str], Sequence[str]], np.ndarray]  # (prompts, responses) -> (N,) rewards

# ---------------------------------------------------------------------------------------
# The simulated annotator (Bradley-Terry with temperature and flips) and its error rate


def bt_preference_prob(r_a: Any, r_b: Any, tau: float, flip: float = 0.0) -> np.ndarray:
    """P(annotator prefers A) under Bradley-Terry with temperature ``tau`` and flip rate ``f``.

    ``p = sigmoid((r_a - r_b) / tau)``, then a fraction ``f`` of answers is flipped:
    ``P = (1 - f) p + f (1 - p)``. ``tau = 0`` is the noiseless limit (p = 1, 0 or 1/2 on an
    oracle tie). ``r_a``, ``r_b``: oracle rewards, scalars or arrays of one shape (N,).
    """
    if tau < 0 or not 0 <= flip <= 1:
        raise ValueError(f"need tau >= 0 and 0 <= flip <= 1, got tau={tau}, flip={flip}")
    diff = np.asarray(r_a, dtype=np.float64) - np.asarray(r_b, dtype=np.float64)
    if tau == 0:
        p = np.where(diff > 0, 1.0, np.where(diff < 0, 0.0, 0.5))
    else:
        p = 0.5 * (1.0 + np.tanh(diff / (2.0 * tau)))  # = sigmoid(diff / tau), overflow-free
    return (1.0 - flip) * p + flip * (1.0 - p)


def simulate_labels(r_a: Any, r_b: Any, tau: float, flip: float = 0.0, seed: int = 0) -> np.ndarray:
    """Seeded draws of the simulated annotator: (N,) bool, True where A is preferred."""
    p = np.atleast_1d(bt_preference_prob(r_a, r_b, tau, flip))
    return np.random.default_rng(seed).random(p.shape) < p


def label_errors(a_preferred: Any, r_a: Any, r_b: Any) -> np.ndarray:
    """Per pair: 1.0 if the label disagrees with the oracle's ordering, 0.0 if it agrees,
    NaN where the oracle ties (no right answer). All arguments (N,)."""
    a_preferred = np.asarray(a_preferred, dtype=bool)
    diff = np.asarray(r_a, dtype=np.float64) - np.asarray(r_b, dtype=np.float64)
    wrong = np.where(diff > 0, ~a_preferred, a_preferred).astype(np.float64)
    return np.where(diff == 0, np.nan, wrong)


def expected_error_rate(r_a: Any, r_b: Any, tau: float, flip: float = 0.0) -> float:
    """The simulated annotator's expected label-error rate over the pairs the oracle orders.

    For one pair with ``d = |r_a - r_b| > 0`` the wrong answer has probability
    ``e = (1 - f) sigmoid(-d / tau) + f (1 - sigmoid(-d / tau))``; the rate is the mean of
    ``e`` over pairs with ``d > 0`` (NaN if there are none).
    """
    d = np.abs(np.asarray(r_a, dtype=np.float64) - np.asarray(r_b, dtype=np.float64))
    d = d[d > 0]
    if d.size == 0:
        return float("nan")
    return float(np.mean(bt_preference_prob(0.0, d, tau, flip)))  # P(prefer the worse one)


# ---------------------------------------------------------------------------------------
# Pairs


@dataclass
class Pair:
    """One annotation row: the two responses and what ``select`` recorded about them."""

    pair_id: str
    prompt: str
    response_a: str
    response_b: str
    row: Row
    meta: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """12 hex digits of the pair's texts, to tell whether a key belongs to this pair."""
        text = "\x00".join((self.prompt, self.response_a, self.response_b))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


META_FIELDS = ("prompt_id", "index_a", "index_b", "similarity", "strategy", "score_a", "score_b")


def read_pairs(source: str | os.PathLike) -> list[Pair]:
    """Read annotation rows; ``pair_id`` defaults to ``row-{i}`` and must be unique."""
    rows = read_rows(str(source))
    if not rows:
        raise RealspoError(f"{source}: no pairs (the file has no rows)")
    pairs, seen = [], {}
    for i, row in enumerate(rows):
        texts = []
        for name in ("prompt", "response_a", "response_b"):
            value = row.data.get(name)
            if not isinstance(value, str) or (name != "prompt" and not value.strip()):
                got = "missing" if value is None else f"{type(value).__name__} {value!r:.40}"
                raise row.error(f"expected a non-empty string (an annotation row from `realspo "
                                f"select`), got {got}", name)
            texts.append(value)
        given = row.data.get("pair_id")
        pair_id = f"row-{i}" if given is None or given == "" else str(given)
        if pair_id in seen:
            raise row.error(f"duplicate pair id {pair_id!r} (first at {seen[pair_id]})", "pair_id")
        seen[pair_id] = row.where
        meta = {k: row.data[k] for k in META_FIELDS if row.data.get(k) not in (None, "")}
        for k in ("index_a", "index_b"):  # CSV cells arrive as text
            if isinstance(meta.get(k), str) and meta[k].strip().isdigit():
                meta[k] = int(meta[k])
        if isinstance(meta.get("similarity"), str):
            try:
                meta["similarity"] = float(meta["similarity"])
            except ValueError:
                raise row.error("expected a number", "similarity") from None
        pairs.append(Pair(pair_id, *texts, row=row, meta=meta))
    return pairs


# ---------------------------------------------------------------------------------------
# Outcomes from scores and judges


def outcome_of(score_a: float, score_b: float) -> str:
    """``"A"``, ``"B"`` or ``"tie"`` from two scores (higher is better)."""
    return "A" if score_a > score_b else "B" if score_b > score_a else "tie"


def pair_scores(pairs: Sequence[Pair], candidates: str | None = None) -> np.ndarray:
    """(N, 2) scores of each pair's A and B: the rows' ``score_a``/``score_b``, or else the
    ``scores`` of a multi-completion ``candidates`` file looked up by prompt_id and index."""
    groups = None
    if candidates is not None:
        from realspo.formats.registry import load_groups

        loaded, _ = load_groups(candidates)
        groups = {g.prompt_id: g for g in loaded}
    out = np.empty((len(pairs), 2))
    for n, pair in enumerate(pairs):
        for k, side in enumerate("ab"):
            if f"score_{side}" in pair.meta:
                out[n, k] = finite_float(pair.row, pair.meta[f"score_{side}"], f"score_{side}")
                continue
            if groups is None:
                raise pair.row.error("missing; pass --candidates FILE holding the responses' "
                                     "scores, or label another way", f"score_{side}")
            group = groups.get(str(pair.meta.get("prompt_id")))
            index = pair.meta.get(f"index_{side}")
            if group is None or group.scores is None or not isinstance(index, int) \
                    or not 0 <= index < len(group.scores):
                raise pair.row.error(f"no score for prompt_id {pair.meta.get('prompt_id')!r} "
                                     f"index {index!r} in {candidates}", f"index_{side}")
            out[n, k] = group.scores[index]
    return out


def _proving_ground_judge() -> Judge:
    from realspo.proving_ground.world import build_world

    oracle = build_world().oracle

    def judge(prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return np.asarray(oracle.score_batch(prompts, responses), dtype=np.float64)

    return judge


def make_judge(name: str, *, device: str = "auto", dtype: str = "auto", batch_size: int = 16,
               max_length: int = 1024, trust_remote_code: bool = False,
               allow_pickle: bool = False) -> Judge:
    """A reward function ``(prompts, responses) -> (N,) rewards``.

    ``name`` is ``proving-ground`` (the oracle of the default proving-ground world) or the
    path / hub id of an ``AutoModelForSequenceClassification`` with one output (a reward
    model). The text scored is ``prompt + response`` (a space between them unless one side
    already has whitespace there), truncated from the left to ``max_length`` tokens so the
    response is kept. Anything that is not a one-label sequence classifier is refused.
    """
    if name == "proving-ground":
        return _proving_ground_judge()
    import torch

    from realspo.models import load_model, load_tokenizer, pick_device, pick_dtype

    check_reward_model(name, trust_remote_code=trust_remote_code)
    dev = pick_device(device)
    tokenizer = load_tokenizer(name, trust_remote_code=trust_remote_code)
    tokenizer.truncation_side = "left"
    model = load_model(name, "sequence-classifier", dtype=pick_dtype(dev, dtype), device=dev,
                       trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    model.eval()
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id  # it finds each row's last token

    @torch.inference_mode()
    def judge(prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        texts = [p + r if p[-1:].isspace() or r[:1].isspace() or not p else f"{p} {r}"
                 for p, r in zip(prompts, responses, strict=True)]
        out = []
        for lo in range(0, len(texts), batch_size):
            enc = tokenizer(texts[lo:lo + batch_size], return_tensors="pt", padding=True,
                            truncation=True, max_length=max_length).to(dev)
            out.append(model(**enc).logits[:, 0].float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    return judge


def check_reward_model(name: str, *, trust_remote_code: bool = False) -> None:
    """Refuse (InputError) a path whose config is not a one-output sequence classifier."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise InputError(name, f"could not load model config ({str(exc).splitlines()[0]})") from None
    archs = list(getattr(config, "architectures", None) or [])
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise InputError(name, f"not a sequence classifier (architectures: {', '.join(archs) or 'none'});"
                         " expected an AutoModelForSequenceClassification reward model")
    if config.num_labels != 1:
        raise InputError(name, f"a reward model needs one output (num_labels=1), this one has "
                         f"{config.num_labels}")


def judge_pairs(judge: Judge, pairs: Sequence[Pair]) -> np.ndarray:
    """(N, 2) rewards of each pair's (A, B) under ``judge``, in one call."""
    rewards = judge([p.prompt for p in pairs] * 2,
                    [p.response_a for p in pairs] + [p.response_b for p in pairs])
    return np.asarray(rewards, dtype=np.float64).reshape(2, len(pairs)).T


# ---------------------------------------------------------------------------------------
# Outcomes -> preference rows


@dataclass
class LabelReport:
    """Counts of one labeling run, and the label-error rate when an oracle was given."""

    pairs: int
    labeled: int
    tied: int
    skipped: int
    unanswered: int = 0
    oracle_compared: int = 0  # labeled pairs the oracle orders (not an oracle tie)
    label_errors: int = 0
    label_error_rate: float | None = None

    def summary(self) -> str:
        text = (f"labeled {self.labeled} of {self.pairs} pairs (tied {self.tied}, skipped "
                f"{self.skipped}" + (f", unanswered {self.unanswered}" if self.unanswered else "") + ")")
        if self.label_error_rate is not None:
            text += (f"; label-error rate vs the oracle {self.label_error_rate:.3f} "
                     f"({self.label_errors} of {self.oracle_compared})")
        return text


def preference_rows(pairs: Sequence[Pair], outcomes: Sequence[str], label_source: str,
                    scores: np.ndarray | None = None,
                    oracle: np.ndarray | None = None) -> tuple[list[dict[str, Any]], LabelReport]:
    """TRL preference rows for the pairs labeled A or B, and the counts.

    ``scores``/``oracle``: optional (N, 2) rewards of (A, B) from the label source / an oracle;
    they become ``chosen_score``/``rejected_score`` and ``oracle_chosen``/``oracle_rejected``
    (+ ``label_error``: True, False, or None on an oracle tie).
    """
    rows, counts = [], {"tie": 0, "skip": 0, "unanswered": 0}
    errors = compared = 0
    for n, (pair, outcome) in enumerate(zip(pairs, outcomes, strict=True)):
        if outcome not in ("A", "B"):
            counts[outcome] += 1
            continue
        c, r = (0, 1) if outcome == "A" else (1, 0)
        texts = (pair.response_a, pair.response_b)
        index = (pair.meta.get("index_a"), pair.meta.get("index_b"))
        row = {"prompt": pair.prompt, "chosen": texts[c], "rejected": texts[r],
               "pair_id": pair.pair_id, "prompt_id": pair.meta.get("prompt_id"),
               "chosen_index": index[c], "rejected_index": index[r],
               "chosen_score": None if scores is None else float(scores[n, c]),
               "rejected_score": None if scores is None else float(scores[n, r]),
               "similarity": pair.meta.get("similarity"), "strategy": pair.meta.get("strategy"),
               "label_source": label_source}
        if oracle is not None:
            error = label_errors(outcome == "A", oracle[n, 0], oracle[n, 1])
            wrong = None if np.isnan(error) else bool(error)
            row.update(oracle_chosen=float(oracle[n, c]), oracle_rejected=float(oracle[n, r]),
                       label_error=wrong)
            compared += wrong is not None
            errors += bool(wrong)
        rows.append(row)
    report = LabelReport(len(pairs), len(rows), counts["tie"], counts["skip"], counts["unanswered"],
                         compared, errors, errors / compared if compared else None)
    return rows, report


# ---------------------------------------------------------------------------------------
# The human round trip


def default_key_path(tasks: str | os.PathLike) -> Path:
    """Where the order key of a tasks file lives: ``tasks.csv`` -> ``tasks.key.jsonl``."""
    tasks = Path(tasks)
    return tasks.with_name(tasks.stem + ".key.jsonl")


def export_tasks(pairs: Sequence[Pair], tasks: str | os.PathLike, key: str | os.PathLike | None = None,
                 seed: int = 0, overwrite: bool = False) -> Path:
    """Write what an annotator sees and the key that undoes the shown order.

    Tasks (CSV or JSONL): ``pair_id``, ``prompt``, ``A``, ``B``, ``answer`` (blank, for the
    annotator: A, B, tie or skip). Each pair is shown swapped with probability 1/2 (seeded), so
    the position of a response says nothing about where it came from. The key (JSONL, default
    :func:`default_key_path`) holds ``pair_id``, ``swapped`` and the pair's fingerprint.
    """
    key_path = Path(key) if key is not None else default_key_path(tasks)
    check_writable(tasks, overwrite)
    check_writable(key_path, overwrite)
    swapped = np.random.default_rng(seed).random(len(pairs)) < 0.5
    shown, keys = [], []
    for pair, swap in zip(pairs, swapped, strict=True):
        a, b = (pair.response_b, pair.response_a) if swap else (pair.response_a, pair.response_b)
        shown.append({"pair_id": pair.pair_id, "prompt": pair.prompt, "A": a, "B": b, "answer": ""})
        keys.append({"pair_id": pair.pair_id, "swapped": bool(swap), "fingerprint": pair.fingerprint()})
    write_rows(key_path, keys, overwrite=overwrite)
    write_rows(tasks, shown, overwrite=overwrite)
    return key_path


def _read_key(key_path: Path, pairs: Sequence[Pair]) -> dict[str, bool]:
    if not key_path.exists():
        raise InputError(str(key_path), "no such key file; pass --key with the file written by "
                         "--export-tasks")
    by_id = {p.pair_id: p for p in pairs}
    swapped: dict[str, bool] = {}
    for row in read_rows(str(key_path)):
        pair = by_id.get(str(row.data.get("pair_id")))
        if pair is None:
            raise row.error(f"pair id {row.data.get('pair_id')!r} is not in the pairs file", "pair_id")
        if row.data.get("fingerprint") != pair.fingerprint():
            raise row.error("the pair's texts differ from the pairs file; was the key exported "
                            "from another pairs file?", "fingerprint")
        if not isinstance(row.data.get("swapped"), bool):
            raise row.error("expected true or false", "swapped")
        swapped[pair.pair_id] = row.data["swapped"]
    missing = [p.pair_id for p in pairs if p.pair_id not in swapped]
    if missing:
        raise InputError(str(key_path), f"{len(missing)} pair(s) of the pairs file are not in the "
                         f"key, e.g. {missing[0]!r}")
    return swapped


def read_annotations(annotations: str | os.PathLike, pairs: Sequence[Pair],
                     key: str | os.PathLike | None = None) -> list[str]:
    """Outcomes (in pair order) from an annotator's answers, with the shown order undone.

    ``annotations``: CSV/JSONL with ``pair_id`` and ``answer`` (A, B, tie or skip, any case;
    blank = unanswered). An unknown or repeated pair id, or any other answer, is an
    InputError naming the row. ``key`` defaults to :func:`default_key_path` of the file.
    """
    key_path = Path(key) if key is not None else default_key_path(annotations)
    swapped = _read_key(key_path, pairs)
    canonical = {a.lower(): a for a in ANSWERS}
    answers: dict[str, str] = {}
    seen: dict[str, str] = {}
    for row in read_rows(str(annotations)):
        pair_id = row.data.get("pair_id")
        pair_id = None if pair_id is None else str(pair_id)
        if pair_id not in swapped:
            raise row.error(f"unknown pair id {pair_id!r} (not in {key_path})", "pair_id")
        if pair_id in seen:
            raise row.error(f"pair id {pair_id!r} answered twice (first at {seen[pair_id]})", "pair_id")
        seen[pair_id] = row.where
        value = row.data.get("answer")
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        answer = canonical.get(str(value).strip().lower()) if isinstance(value, str) else None
        if answer is None:
            raise row.error(f"expected A, B, tie or skip (or blank), got {value!r}", "answer")
        if swapped[pair_id] and answer in ("A", "B"):
            answer = "B" if answer == "A" else "A"  # undo the order the annotator saw
        answers[pair_id] = answer
    return [answers.get(p.pair_id, "unanswered") for p in pairs]
