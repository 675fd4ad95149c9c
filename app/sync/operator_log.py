"""The sync layer's lines for operators: store outages (rate-limited) and peers coming
and going (docs/design.md §11, "Logs").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

#: At most one "still unavailable" line per this many seconds of one outage.
OUTAGE_SUMMARY_SECONDS = 30.0


class OutageLog:
    """A store outage logs once when it starts, a summary at most every
    :data:`OUTAGE_SUMMARY_SECONDS` while it lasts, and once when it ends; the failed
    attempts in between (several a second while backing off) are only counted."""

    def __init__(
        self,
        log: logging.Logger,
        interval: float = OUTAGE_SUMMARY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._interval = interval
        self._clock = clock
        self._started: float | None = None
        self._reported = 0.0
        self._failures = 0

    def update(self, error: str | None) -> None:
        """Record one attempt: ``error`` is why it failed, None when the store answered."""
        now = self._clock()
        if error is None:
            if self._started is not None:
                self._log.info(
                    "store reachable again after %s (%d failed attempts)",
                    _duration(now - self._started),
                    self._failures,
                )
                self._started = None
            return
        if self._started is None:
            self._started, self._reported, self._failures = now, now, 1
            self._log.warning("store unavailable: %s", error)
            return
        self._failures += 1
        if now - self._reported >= self._interval:
            self._reported = now
            self._log.warning(
                "store still unavailable after %s (%d failed attempts): %s",
                _duration(now - self._started),
                self._failures,
                error,
            )


def log_membership(log: logging.Logger, before: list[dict], after: list[dict]) -> None:
    """One line per peer that joined or left between two peer lists."""
    old = {peer["id"]: peer for peer in before}
    new = {peer["id"]: peer for peer in after}
    for node_id in sorted(new.keys() - old.keys()):
        log.info("peer %s joined at %s", node_id, new[node_id].get("addr"))
    for node_id in sorted(old.keys() - new.keys()):
        log.info("peer %s left (was at %s)", node_id, old[node_id].get("addr"))


def _duration(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds >= 1 else f"{seconds * 1000:.0f}ms"
