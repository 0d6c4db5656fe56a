"""The worker's periodic one-line summary: what it scored since the last line, so an operator sees it work."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger(__name__)


@dataclass
class Progress:
    """Counts since the last summary; `maybe_log` writes `worker.summary` every `interval_s` (0: never)."""

    interval_s: float
    clock: Callable[[], float] = time.monotonic
    documents: int = 0
    signals: int = 0
    deadletters: int = 0
    skipped: int = 0
    lag: int | None = None  # records behind the high watermarks of the assigned partitions
    _since: float = field(default=-1.0, repr=False)

    def maybe_log(self, model_version: str) -> bool:
        """Log and reset the counts when the interval has passed; True when a line was written."""
        now = self.clock()
        if self._since < 0:
            self._since = now
        if self.interval_s <= 0 or now - self._since < self.interval_s:
            return False
        log.info("worker.summary", interval_s=round(now - self._since, 1), documents=self.documents,
                 signals=self.signals, deadletters=self.deadletters, skipped=self.skipped, lag=self.lag,
                 model=model_version)
        self.documents = self.signals = self.deadletters = self.skipped = 0
        self._since = now
        return True
