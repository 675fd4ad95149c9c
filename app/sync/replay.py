"""Resumes from before the in-memory history, replayed from the change source.

The history holds the changes after its floor: the first listing after a start, or the
oldest change it dropped. A client resuming from an older ``Last-Event-ID`` (the instance
restarted, or it fell further behind than the history) would get a snapshot; when the
source still holds the changes in between (etcd until compaction), they are replayed
instead, encoded exactly as the live stream encoded them (docs/design.md §6).

Thousands of clients reconnect at once after a restart, with the same few ids: one read
of the source serves every resume it covers. A read in flight is shared by every resume
from at or after its start, and the widest read is kept until the floor moves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from app.broadcast import Sees
from app.metrics import Metrics
from app.stores.base import ProjectChange, StoreError
from app.sync import frames
from app.sync.intake import servable

log = logging.getLogger("space_cloud.sync")

#: (revision, project id, frame), as the history keeps them.
Entry = tuple[int, str, bytes]


class ReplaySource(Protocol):
    async def changes_between(self, after: int, through: int) -> list[ProjectChange] | None: ...


@dataclass(frozen=True, slots=True)
class Replayed:
    """The frames of every change in ``(after, through]``, as live streams got them."""

    after: int
    through: int
    entries: tuple[Entry, ...]

    def covers(self, after: int, through: int) -> bool:
        return self.after <= after and self.through == through

    def count_after(self, after: int) -> int:
        return sum(1 for revision, _, _ in self.entries if revision > after)

    def frames_after(self, after: int, sees: Sees | None) -> list[bytes]:
        return frames_after(self.entries, after, sees)


def frames_after(entries: Iterable[Entry], after: int, sees: Sees | None) -> list[bytes]:
    """The frames of the changes after revision ``after`` that ``sees`` lets through
    (None: every project's)."""
    return [
        frame
        for revision, project_id, frame in entries
        if revision > after and (sees is None or sees(project_id))
    ]


def replay_entries(changes: Iterable[ProjectChange], value_limit: int) -> tuple[Entry, ...]:
    """The frames the live path made of ``changes``: each value passes the same check
    (:func:`~app.sync.intake.servable`), and a delete goes out only for a project served
    just before. A project's first change in the range cannot tell that; its delete goes
    out (a client ignores the delete of a project it does not hold, where a missed one
    would leave it serving a deleted project)."""
    served: dict[str, bool] = {}
    entries: list[Entry] = []
    for change in changes:
        checked, _ = servable(change, value_limit)
        if checked is None:
            continue
        if checked.kind == "put":
            assert checked.value is not None
            frame = frames.project_put_frame(checked.revision, checked.value)
            served[checked.id] = True
        elif served.get(checked.id, True):
            frame = frames.project_delete_frame(checked.revision, checked.id)
            served[checked.id] = False
        else:
            continue
        entries.append((checked.revision, checked.id, frame))
    return tuple(entries)


@dataclass(slots=True)
class _Flight:
    after: int
    through: int
    task: asyncio.Task[Replayed | None]


class StoreReplay:
    """Reads ``(after, through]`` from ``source`` for resuming streams, once for many."""

    def __init__(
        self, source: ReplaySource, value_limit: int, metrics: Metrics, *, timeout: float
    ) -> None:
        self._source = source
        self._metrics = metrics
        self._value_limit = value_limit
        self._timeout = timeout
        self._flights: list[_Flight] = []
        self._kept: Replayed | None = None
        #: The source answered None for ``(after, through]``: so it will for older ids.
        self._unavailable: tuple[int, int] | None = None

    async def replayed(self, after: int, through: int) -> Replayed | None:
        """The changes in ``(after, through]``, or None when the source cannot replay
        them (or did not answer within the timeout)."""
        kept = self._kept
        if kept is not None and kept.covers(after, through):
            return kept
        refused = self._unavailable
        if refused is not None and refused[1] == through and after <= refused[0]:
            return None
        flight = next((f for f in self._flights if f.after <= after and f.through == through), None)
        if flight is None:
            flight = _Flight(after, through, asyncio.create_task(self._read(after, through)))
            self._flights.append(flight)
            flight.task.add_done_callback(lambda _: self._flights.remove(flight))
        # Shielded: a client that leaves must not cancel the read the others wait for.
        return await asyncio.shield(flight.task)

    async def _read(self, after: int, through: int) -> Replayed | None:
        self._metrics.sse_replay_reads.inc()
        try:
            async with asyncio.timeout(self._timeout):
                changes = await self._source.changes_between(after, through)
        except (StoreError, TimeoutError) as exc:
            log.info("could not replay revisions %d-%d from the store: %s", after, through, exc)
            return None
        if changes is None:
            refused = self._unavailable
            if refused is None or refused[1] != through or refused[0] < after:
                self._unavailable = (after, through)
            return None
        replayed = Replayed(after, through, replay_entries(changes, self._value_limit))
        kept = self._kept
        if kept is None or kept.through != through or after < kept.after:
            self._kept = replayed
        return replayed
