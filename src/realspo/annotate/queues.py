"""Each annotator's queue in memory: what is next, what is answered, what undo takes back.

The journal is the truth; a queue is rebuilt from it at start (:meth:`AnnotatorQueue.open`)
and every change goes to the journal first (fsynced), then to memory, under the queue's lock,
so two requests of one annotator cannot interleave.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Any

from realspo.annotate.campaign import Campaign
from realspo.annotate.journal import Journal
from realspo.chat_format import hh_messages
from realspo.labels.annotation import ANSWERS

MAX_COMMENT_CHARS = 2000


class TaskRefused(Exception):
    """A request the queue refuses (answered already, not this annotator's task, ...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Progress:
    done: int
    total: int

    def as_dict(self) -> dict[str, int]:
        return {"done": self.done, "total": self.total}


def task_id(export_id: str, annotator: str, pair_id: str) -> str:
    """The opaque id a page sees for a pair: says nothing of the pair (gold or not)."""
    text = "\x00".join((export_id, annotator, pair_id))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def prompt_turns(prompt: str) -> list[dict[str, str]]:
    """The prompt as ``[{role, content}]`` turns (one user turn if it is not HH text)."""
    return hh_messages(prompt) or [{"role": "user", "content": prompt}]


class AnnotatorQueue:
    """One annotator's tasks, answers and journal."""

    def __init__(self, campaign: Campaign, annotator: str) -> None:
        self.campaign, self.annotator = campaign, annotator
        self.pair_ids = campaign.queues[annotator]
        self.by_task = {task_id(campaign.export_id, annotator, p): p for p in self.pair_ids}
        self.journal = Journal.open(campaign.journal_path(annotator), annotator, campaign.key)
        self._lock = threading.Lock()

    @property
    def progress(self) -> Progress:
        return Progress(len(self.journal.state.answers), len(self.pair_ids))

    def next_task(self) -> dict[str, Any]:
        """The first unanswered task, as the page shows it, or ``{"done": True}``."""
        with self._lock:
            answered = self.journal.state.answers
            pair_id = next((p for p in self.pair_ids if p not in answered), None)
            progress = self.progress.as_dict()
        if pair_id is None:
            return {"done": True, "progress": progress}
        pair = self.campaign.pairs[pair_id]
        a, b = ("b", "a") if self.campaign.key.swapped[pair_id] else ("a", "b")
        return {"done": False, "task_id": task_id(self.campaign.export_id, self.annotator, pair_id),
                "prompt": prompt_turns(pair.prompt),
                "a": getattr(pair, f"response_{a}"), "b": getattr(pair, f"response_{b}"),
                "cut_a": pair.meta.get(f"finished_{a}") is False,
                "cut_b": pair.meta.get(f"finished_{b}") is False,
                "progress": progress}

    def label(self, task: Any, answer: Any, comment: Any) -> Progress:
        """Record an answer (in the shown order); returns once it is on disk."""
        if not isinstance(task, str) or task not in self.by_task:
            raise TaskRefused(404, "task_id: not a task of this annotator")
        if answer not in ANSWERS:
            raise TaskRefused(400, "answer: expected A, B, tie or skip")
        if comment is None:
            comment = ""
        if not isinstance(comment, str) or len(comment) > MAX_COMMENT_CHARS:
            raise TaskRefused(400, f"comment: expected text of at most {MAX_COMMENT_CHARS} "
                                   "characters")
        pair_id = self.by_task[task]
        with self._lock:
            state = self.journal.state
            if pair_id in state.answers:
                raise TaskRefused(409, "task_id: already answered; undo it first")
            event = {"event": "label", "seq": state.last_seq + 1, "pair_id": pair_id,
                     "annotator": self.annotator, "answer": answer, "comment": comment,
                     "export_id": self.campaign.export_id, "time": round(time.time(), 3)}
            self.journal.append(event)
            state.last_seq = event["seq"]
            state.answers[pair_id] = event
            state.order.append(event["seq"])
            return self.progress

    def undo(self) -> tuple[str, Progress]:
        """Take back the newest answer in force; returns its task id and the progress."""
        with self._lock:
            state = self.journal.state
            if not state.order:
                raise TaskRefused(409, "nothing to undo")
            undone = state.order[-1]
            pair_id = next(p for p, e in state.answers.items() if e["seq"] == undone)
            event = {"event": "undo", "seq": state.last_seq + 1, "undoes": undone}
            self.journal.append(event)
            state.last_seq = event["seq"]
            state.order.pop()
            del state.answers[pair_id]
            return task_id(self.campaign.export_id, self.annotator, pair_id), self.progress

    def close(self) -> None:
        self.journal.close()
