"""The projects watch on Consul: the change log for the gateway's own writes, a sentinel
for everybody else's, and a listing diff only when the two disagree.

Two blocking queries run side by side, each in a task of its own that wakes one
processor (two polls rather than one alternating: a write is seen by whichever answers
first, so neither query's round trip is added to the other's):

* the log, ``sc/changes/<cluster>/`` (:mod:`app.stores.consul.changelog`): one small entry
  per gateway write, at the write's revision, the newest 16 to 32 of them (older ones
  are read from the archive by a watch that fell behind);
* the sentinel, ``GET /v1/kv/sc/projects/<cluster>?keys&separator=/``: the prefix
  *without* its trailing ``/``, so the answer is the one key ``sc/projects/<cluster>/``
  whatever the number of projects, while its ``X-Consul-Index`` is the highest
  ModifyIndex under the prefix, tombstones included (checked on Consul 1.8.7). Another
  cluster whose id extends this one (``<cluster>b``) shows in the answer's keys and moves
  that index too; then the exact index of this prefix is read as well (a keys-only
  listing of it, ~30 bytes a project).

Two facts make the log and the sentinel exact together:

1. a log answer holds every gateway write up to its index (Consul applies writes in
   raft order), and
2. every gateway write leaves a key under the projects prefix at its revision (the
   project, or its deletion mark), so the sentinel's answer to it is at least that
   revision, and reflects every change committed before.

So new log entries wait for the sentinel's answer that their own writes cause, and a
sentinel ahead of the log waits for the log's answer, which a gateway write causes too;
only when none comes within :data:`LOG_GRACE` (another client's write) is the log read
again. No request is made beyond the two polls for a gateway write, as the newest small
put's value is kept beside the log (:mod:`app.stores.consul.changelog`). When the sentinel
sits exactly on the newest entry up to it, nothing but the log's writes changed the
projects: those entries are emitted, in revision order. Otherwise another client changed
something (``consul kv put``, a gateway of the previous version): the projects are
listed, the log is read again (so it holds every gateway write up to the listing), and
the difference that the log's entries do not explain is emitted with them, in revision
order, none twice (the watch keeps each project's revision).

What no sentinel can see: a change by another client followed, before the sentinel is
read, by a gateway write (the sentinel shows only the highest revision). So after steps
that the sentinel passed over, a listing diff runs once ``verify_seconds`` later (at most
one listing per ``verify_seconds`` under steady writes; none while idle). A change it
finds below the revisions already emitted cannot be emitted in order: the watch raises
:class:`WatchReset` and the sync loop emits the difference. A change by another client
overwritten by the next write before anyone read it is lost, as with any diff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from typing import Generic, TypeVar

from app.stores.base import (
    ProjectChange,
    ProjectListing,
    StoredProject,
    StoreError,
    WatchReset,
)
from app.stores.consul.changelog import ChangeLog, LogSnapshot
from app.stores.consul.client import ClientSource, kv_path, pace
from app.stores.consul.listing import deletion_marks, stored_projects

_log = logging.getLogger("space_cloud.stores.consul")

#: After steps the sentinel passed over, a listing diff this many seconds later.
VERIFY_SECONDS = 60.0
#: How long the sentinel may be ahead of the log before the log is read: a gateway
#: write's own log answer comes within a round trip, another client's write has none.
LOG_GRACE = 0.025

T = TypeVar("T")


class _LongPoll(Generic[T]):
    """A blocking query in a loop of its own. An answer whose index moved is kept in
    :attr:`latest` and wakes the processor; an error is kept for the processor to raise."""

    def __init__(
        self, fetch: Callable[[int], Awaitable[tuple[T, int]]], index: int, woken: asyncio.Event
    ) -> None:
        self.latest: T | None = None
        self.index = index
        self.error: Exception | None = None
        self._fetch = fetch
        self._woken = woken
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            while True:
                started = asyncio.get_running_loop().time()
                value, index = await self._fetch(self.index)
                if index > self.index:
                    self.index, self.latest = index, value
                    self._woken.set()
                    await asyncio.sleep(0)  # the processor first, then the next query
                else:
                    await pace(started)
        except Exception as exc:
            self.error = exc
            self._woken.set()

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class ForeignChanges:
    """What :meth:`ConsulStore.changes_between` may vouch for: since which revision this
    store's watch has seen every change, and the revisions of the changes by other clients
    among them (the log does not hold those)."""

    LIMIT = 1024

    def __init__(self) -> None:
        self.since: int | None = None
        self.through = 0
        self.revisions: list[int] = []

    def watching(self, since: int) -> None:
        self.since, self.through, self.revisions = since, since, []

    def seen(self, foreign: Iterable[int], through: int) -> None:
        self.revisions += foreign
        if len(self.revisions) > self.LIMIT:
            dropped, self.revisions = self.revisions[: -self.LIMIT], self.revisions[-self.LIMIT :]
            self.since = max(self.since or 0, *dropped)
        self.through = max(self.through, through)

    def vouch(self, after: int, through: int) -> bool:
        """Whether every change in ``(after, through]`` was the gateway's own."""
        if self.since is None or after < self.since or through > self.through:
            return False
        return not any(after < revision <= through for revision in self.revisions)


class ProjectWatch:
    """One watch from a listing; :meth:`changes` yields its batches."""

    def __init__(
        self,
        client: ClientSource,
        prefix: str,
        log: ChangeLog,
        since: ProjectListing,
        foreign: ForeignChanges,
        verify_seconds: float = VERIFY_SECONDS,
    ) -> None:
        self._client = client
        self.prefix = prefix
        self.log = log
        self.foreign = foreign
        self.verify_seconds = verify_seconds
        #: Each project's revision as last emitted (what a listing diff compares with).
        self.known = {project_id: p.revision for project_id, p in since.projects.items()}
        #: Every change up to here was emitted.
        self.position = since.revision
        #: The highest sentinel reading taken into account.
        self.sentinel_seen = since.revision
        self._ahead_since: float | None = None
        self._log = LogSnapshot([], 0, 0)
        self._unverified_since: float | None = None
        self._pruner: asyncio.Task[None] | None = None
        foreign.watching(since.revision)

    async def changes(self) -> AsyncGenerator[list[ProjectChange], None]:
        woken = asyncio.Event()
        self._log_poll = _LongPoll(self._log_answer, self.position, woken)
        self._sentinel_poll = _LongPoll(self._sentinel_answer, self.position, woken)
        try:
            while True:
                woken.clear()
                changes = await self._step()
                if changes is None:
                    await self._idle(woken)
                    continue
                if changes:
                    yield changes
                self._prune_in_background()
        finally:
            await self._log_poll.stop()
            await self._sentinel_poll.stop()
            if self._pruner is not None:
                self._pruner.cancel()

    def _prune_in_background(self) -> None:
        """One pruning at a time, beside the watch: a move to the archive (a transaction
        of up to 63 ops) took 5-13 ms, and the next write waited for it when it ran in
        the watch's own loop (bench.propagation's slowest writes)."""
        if self._pruner is None or self._pruner.done():
            log, position = self._freshest_log(), self.position
            self._pruner = asyncio.create_task(self._prune(log, position))

    async def _prune(self, log: LogSnapshot, position: int) -> None:
        try:
            await self.log.prune(log, position)
        except StoreError as exc:  # the next pruning tries again
            _log.info("pruning the change log failed: %s", exc)

    # --- the step -------------------------------------------------------------------

    async def _step(self) -> list[ProjectChange] | None:
        """The next batch (perhaps empty); None when there is nothing to do yet."""
        self._log_poll.check()
        self._sentinel_poll.check()
        log = self._freshest_log()
        sentinel = self._sentinel_poll.latest or 0
        if self._verification_due():
            return await self._diff(sentinel)
        if sentinel > self.sentinel_seen and sentinel > log.index:
            # A gateway write's log answer is on its way; another client's write has none.
            if not self._log_overdue():
                return None
            log = await self._read_log()  # read after the sentinel: holds every write up to it
        self._ahead_since = None
        pending = log.after(self.position)
        if sentinel <= self.sentinel_seen:
            return None  # new entries wait for the sentinel's answer, which their writes move
        covered = [entry for entry in pending if entry.revision <= sentinel]
        if not covered or covered[-1].revision != sentinel:
            return await self._diff(sentinel)
        ours = await self.log.changes(covered, log.last)
        if self._unverified_since is None:
            self._unverified_since = asyncio.get_running_loop().time()
        self.sentinel_seen = sentinel
        self._emitted(ours, [], sentinel)
        return ours

    async def _diff(self, sentinel: int) -> list[ProjectChange]:
        """List the projects and emit what changed: the log's entries up to the listing,
        and what they do not explain (another client's changes)."""
        entries, listed = await self._client().list_prefix(self.prefix)
        # The listing is newer than the sentinel's answer, even if Consul reaped
        # tombstones in between and its index is lower.
        upto = max(listed, sentinel)
        log = await self._read_log()  # read after the listing: every gateway write up to it
        ours = await self.log.changes(log.after(self.position, through=upto), log.last)
        expected = dict(self.known)
        _apply(expected, ours)
        current = stored_projects(entries, self.prefix)
        taken = {change.revision for change in ours}
        foreign = await self._foreign(
            expected, current, deletion_marks(entries, self.prefix), upto, taken
        )
        await self.log.record_foreign(change.revision for change in foreign)
        if any(change.revision <= self.position for change in foreign):
            raise WatchReset("a change by another client was hidden behind the gateway's writes")
        self.sentinel_seen = max(self.sentinel_seen, upto)
        self._unverified_since = None
        changes = sorted([*ours, *foreign], key=lambda change: (change.revision, change.id))
        self._emitted(changes, foreign, max(self.position, upto))
        return changes

    def _emitted(
        self, changes: list[ProjectChange], foreign: list[ProjectChange], position: int
    ) -> None:
        _apply(self.known, changes)
        self.position = position
        self.foreign.seen((change.revision for change in foreign), position)

    async def _foreign(
        self,
        expected: Mapping[str, int],
        current: Mapping[str, StoredProject],
        marks: Mapping[str, int],
        upto: int,
        taken: set[int],
    ) -> list[ProjectChange]:
        """What turns ``expected`` (the projects after the log's entries) into ``current``."""
        changes = []
        for project_id, project in current.items():
            revision = expected.get(project_id)
            if revision is not None and project.revision < revision:
                raise WatchReset(f"project {project_id!r} went back to revision {project.revision}")
            if revision is None or project.revision > revision:
                changes.append(ProjectChange("put", project_id, project.revision, project.value))
        taken |= {change.revision for change in changes}
        # Longest ids first: a shorter id's tombstone probe also covers the longer ones.
        for project_id in sorted(expected.keys() - current.keys(), key=len, reverse=True):
            revision = marks.get(project_id, 0)
            if not self.position < revision <= upto or revision in taken:
                revision = await self._deletion_revision(project_id, current, upto, taken)
            taken.add(revision)
            changes.append(ProjectChange("delete", project_id, revision))
        return changes

    async def _deletion_revision(
        self, project_id: str, current: Mapping[str, StoredProject], upto: int, taken: set[int]
    ) -> int:
        """The raft index of a deletion without a mark (made by another Consul client),
        between the last emitted revision and ``upto``.

        Consul's answer carries the prefix's index, not the deletion's. The tombstone probe
        (the index of the keys that start with this project's key, tombstones included)
        gives the exact index unless a longer id starting with this one changed since;
        then the highest free index in the window keeps the batch's revisions unique.
        """
        response = await self._client().request(
            "GET", kv_path(self.prefix + project_id), params={"keys": ""}, expect=(200, 404)
        )
        probe = max(1, response.index)
        longer = {p.revision for other, p in current.items() if other.startswith(project_id)}
        after = self.position
        if after < probe <= upto and probe not in taken and probe not in longer:
            return probe
        return next((r for r in range(upto, after, -1) if r not in taken), upto)

    # --- reading ------------------------------------------------------------------------

    def _freshest_log(self) -> LogSnapshot:
        latest = self._log_poll.latest
        if latest is not None and latest.index > self._log.index:
            self._log = latest
        return self._log

    async def _read_log(self) -> LogSnapshot:
        log = await self.log.read(self.position)
        if log.pruned > self.position:
            raise WatchReset(f"the change log was pruned past revision {self.position}")
        if log.index >= self._log.index:
            self._log = log
        return log

    async def _log_answer(self, index: int) -> tuple[LogSnapshot, int]:
        log = await self.log.read(self.position, index)
        if log.pruned > self.position:
            raise WatchReset(f"the change log was pruned past revision {self.position}")
        if log.index < index and await self._current_revision() < index:
            raise WatchReset(f"Consul's index went back from {index} to {log.index}")
        return log, log.index

    async def _sentinel_answer(self, index: int | None) -> tuple[int, int]:
        """(the projects prefix's exact index, the index to block on next)."""
        client = self._client()
        params: dict[str, str | int] = {"keys": "", "separator": "/"}
        if index is not None:
            params["index"] = index
        wait = client.watch_wait if index is not None else None
        response = await client.request(
            "GET", kv_path(self.prefix[:-1]), params=params, wait=wait, expect=(200, 404)
        )
        keys = response.json() if response.status == 200 else []
        if all(key == self.prefix for key in keys or []):
            return response.index, response.index
        # Another cluster's id extends this one's, and its writes move that index too.
        exact = await client.request(
            "GET", kv_path(self.prefix), params={"keys": "", "separator": "/"}, expect=(200, 404)
        )
        return exact.index, response.index

    async def _current_revision(self) -> int:
        return (await self._client().request("GET", kv_path(self.prefix), expect=(200, 404))).index

    # --- verification ---------------------------------------------------------------------

    def _verification_due(self) -> bool:
        since = self._unverified_since
        return (
            since is not None and asyncio.get_running_loop().time() - since >= self.verify_seconds
        )

    def _log_overdue(self) -> bool:
        """Whether the sentinel has been ahead of the log for :data:`LOG_GRACE`."""
        now = asyncio.get_running_loop().time()
        if self._ahead_since is None:
            self._ahead_since = now
        return now - self._ahead_since >= LOG_GRACE

    async def _idle(self, woken: asyncio.Event) -> None:
        now = asyncio.get_running_loop().time()
        deadlines = []
        if self._unverified_since is not None:
            deadlines.append(self._unverified_since + self.verify_seconds)
        if self._ahead_since is not None:
            deadlines.append(self._ahead_since + LOG_GRACE)
        timeout = max(0.0, min(deadlines) - now) if deadlines else None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken.wait(), timeout)


def _apply(revisions: dict[str, int], changes: Iterable[ProjectChange]) -> None:
    for change in changes:
        if change.kind == "put":
            revisions[change.id] = change.revision
        else:
            revisions.pop(change.id, None)
