"""A campaign directory: set up once, resumed by every later run on the same ``--out``.

Layout (``labels/answers.py`` reads the key and journals back for ``label --annotations``):

- ``campaign.json``: the export id, the pairs file's SHA-256, the annotators, overlap,
  gold file's SHA-256 and seed; a rerun with another pairs file or other options is refused.
- ``key.jsonl``: the shown order of every pair, who was given it, and a gold pair's answer.
- ``assignment.json``: each annotator's queue, in the order shown.
- ``tokens.json`` (mode 0600): the owner's and each annotator's secret token.
- ``journals/<annotator>.jsonl``: the answers (``journal.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from realspo.annotate.assignment import annotator_queues
from realspo.annotate.journal import JOURNALS_DIR
from realspo.annotate.tokens import Tokens, new_tokens, read_tokens, write_tokens
from realspo.errors import ConfigError, InputError, OutputExistsError
from realspo.labels.annotation import Key, fingerprint, key_row, read_key
from realspo.labels.assignment import read_gold
from realspo.outputs import atomic_dir, output_kind
from realspo.schema import AnnotationPair, read_annotation_rows

CAMPAIGN_KIND = "annotate-campaign"
CAMPAIGN_FILE = "campaign.json"
KEY_FILE = "key.jsonl"
ASSIGNMENT_FILE = "assignment.json"
# An annotator's name is also their journal's file name: letters, digits, '_' and '-' only.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")


@dataclass
class CampaignSpec:
    """What a campaign is made of; a rerun must give the same (``campaign.json``)."""

    pairs: str
    annotators: list[str]
    overlap: int = 1
    gold: str | None = None
    seed: int = 0


@dataclass
class Campaign:
    """An open campaign: its pairs (gold included), key, queues and tokens."""

    directory: Path
    export_id: str
    pairs: dict[str, AnnotationPair]
    key: Key
    queues: dict[str, list[str]]
    tokens: Tokens

    def journal_path(self, annotator: str) -> Path:
        return self.directory / JOURNALS_DIR / f"{annotator}.jsonl"


def parse_annotators(text: str) -> list[str]:
    """``"alice,bob"`` -> ``["alice", "bob"]``; a name that is not a plain word (it becomes a
    file name) or a duplicate (ignoring case: some file systems do) is a ConfigError."""
    names = [n.strip() for n in text.split(",")]
    seen: set[str] = set()
    for name in names:
        if not NAME_PATTERN.fullmatch(name):
            raise ConfigError(f"--annotators: {name!r} is not a name of letters, digits, '_' "
                              "and '-' (at most 40, starting with a letter or digit)")
        if name.lower() in seen:
            raise ConfigError(f"--annotators: {name!r} is given twice")
        seen.add(name.lower())
    return names


def _read_gold(path: str, pair_ids: set[str]) -> list[tuple[AnnotationPair, str]]:
    """Gold pairs with their answers (``labels/assignment.py``'s reading: ids re-made from the
    texts, so a gold pair's id says nothing), none of them in the pairs file."""
    pairs, answers = read_gold(path)
    for pair in pairs:
        if pair.pair_id in pair_ids:
            raise pair.row.error("this gold pair is also in --pairs", "pair_id")
    return list(zip(pairs, answers, strict=True))


def _sha256(path: str | None) -> str | None:
    if path is None:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def open_campaign(spec: CampaignSpec, out: str | os.PathLike) -> tuple[Campaign, bool]:
    """Set up the campaign in ``out``, or resume the one there.

    Args:
        spec: the pairs file, annotators, overlap, gold file and seed.
        out: the campaign directory: absent (created), or a campaign of the same spec.

    Returns:
        The campaign and whether it was created now.

    Raises:
        OutputExistsError: ``out`` is another campaign or not a campaign at all.
        InputError: a bad pairs or gold file, or a campaign whose files were tampered with.
    """
    out = Path(out)
    pairs = read_annotation_rows(spec.pairs)
    gold = _read_gold(spec.gold, {p.pair_id for p in pairs}) if spec.gold else []
    record = {"pairs_sha256": _sha256(spec.pairs), "gold_sha256": _sha256(spec.gold),
              "annotators": spec.annotators, "overlap": spec.overlap, "seed": spec.seed}
    queues = annotator_queues([p.pair_id for p in pairs], spec.annotators, spec.overlap,
                              spec.seed, [g.pair_id for g, _ in gold])
    created = not out.exists()
    if created:
        _create(out, spec, record, pairs, gold, queues)
    stored = _check_resumable(out, record)
    by_id = {p.pair_id: p for p in pairs} | {g.pair_id: g for g, _ in gold}
    key = read_key(out / KEY_FILE)
    for pair_id, printed in key.fingerprints.items():
        if pair_id not in by_id or printed != fingerprint(by_id[pair_id]):
            raise InputError(str(out / KEY_FILE), f"pair {pair_id!r} differs from the pairs "
                                                  "files", field="fingerprint")
    stored_queues = json.loads((out / ASSIGNMENT_FILE).read_text(encoding="utf-8"))
    if stored_queues != queues:
        raise InputError(str(out / ASSIGNMENT_FILE), "does not match the campaign's options")
    return Campaign(out, stored["export_id"], by_id, key, queues, read_tokens(out)), created


def _create(out: Path, spec: CampaignSpec, record: dict, pairs: Sequence[AnnotationPair],
            gold: list[tuple[AnnotationPair, str]], queues: dict[str, list[str]]) -> None:
    export_id = secrets.token_hex(8)
    shown = [(p, None) for p in pairs] + [(g, answer) for g, answer in gold]
    swapped = np.random.default_rng(spec.seed).random(len(shown)) < 0.5
    with atomic_dir(out, kind=CAMPAIGN_KIND) as tmp:
        tmp.chmod(0o700)  # the journals hold the annotators' comments
        (tmp / JOURNALS_DIR).mkdir(mode=0o700)
        holders: dict[str, list[str]] = {}
        for name, queue in queues.items():
            for pair_id in queue:
                holders.setdefault(pair_id, []).append(name)
        rows = []
        for (pair, answer), swap in zip(shown, swapped, strict=True):
            gold = {} if answer is None else {"gold": answer}  # the answer in the pair's order
            row = key_row(pair, bool(swap), annotators=holders[pair.pair_id], **gold)
            rows.append(json.dumps({**row, "export_id": export_id}, ensure_ascii=False))
        (tmp / KEY_FILE).write_text("\n".join(rows) + "\n", encoding="utf-8")
        (tmp / ASSIGNMENT_FILE).write_text(json.dumps(queues, indent=1) + "\n", encoding="utf-8")
        (tmp / CAMPAIGN_FILE).write_text(json.dumps({"export_id": export_id, **record}, indent=2)
                                         + "\n", encoding="utf-8")
        write_tokens(tmp, new_tokens(spec.annotators))


def _check_resumable(out: Path, record: dict) -> dict:
    """The stored ``campaign.json`` of ``out``, if ``out`` is a campaign made from ``record``."""
    if not out.is_dir() or output_kind(out) != CAMPAIGN_KIND:
        found = output_kind(out) if out.is_dir() else None
        what = f"a realspo {found} output" if found else "not a realspo annotate campaign"
        raise OutputExistsError(str(out), f"is {what}; give --out a new path (or a campaign "
                                          "directory to resume)")
    try:
        stored = json.loads((out / CAMPAIGN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise InputError(str(out / CAMPAIGN_FILE), "missing or not JSON") from None
    if stored.get("pairs_sha256") != record["pairs_sha256"]:
        raise OutputExistsError(str(out), "holds a campaign over another pairs file")
    differs = [k for k in record if stored.get(k) != record[k]]
    if differs:
        shown = ", ".join(f"{k} {stored.get(k)!r}" for k in differs)
        raise OutputExistsError(str(out), f"holds a campaign with other options ({shown})")
    return stored

