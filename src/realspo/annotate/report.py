"""The owner's view of a campaign so far: agreement between annotators and REAL's premise.

The same report ``realspo label --annotations DIR`` writes (``labels/people.py``), computed
from the journals on disk (every acknowledged answer is there) and kept until another answer
or undo arrives, since its bootstrap intervals take a moment.
"""

from __future__ import annotations

import threading

from realspo.annotate.campaign import Campaign
from realspo.errors import RealspoError


class OwnerReport:
    """The agreement and premise lines of a campaign, recomputed when the answers change."""

    def __init__(self, campaign: Campaign) -> None:
        self.campaign = campaign
        self._lock = threading.Lock()
        self._version: object = None
        self._lines: list[str] = []

    def lines(self, version: object) -> list[str]:
        """The report's printed lines for the answers at ``version`` (any value that changes
        with every answer or undo, e.g. each journal's last seq).

        Args:
            version: identifies the answers now on disk.

        Returns:
            Krippendorff's alpha, Cohen's kappa per pair of annotators, gold accuracy, agreement
            with the aggregate and the premise's verdict; or one line saying why not yet.
        """
        with self._lock:
            if version != self._version:
                self._lines, self._version = self._compute(), version
            return list(self._lines)

    def _compute(self) -> list[str]:
        from realspo.labels.answers import read_answers
        from realspo.labels.people import label_by_answers

        key = self.campaign.key
        pairs = [p for pid, p in self.campaign.pairs.items() if pid not in key.gold]
        try:
            answers = read_answers([self.campaign.directory], self.campaign.directory / "key.jsonl")
            return label_by_answers(pairs, answers).printed()
        except RealspoError as exc:  # no answers yet, an annotator with gold answers only, ...
            return [f"not yet: {exc}"]
