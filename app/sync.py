"""The sync loop: what this instance has applied, its history, and how it stays current.

:class:`ClusterState` is the applied state, changed only by the sync loop: the projects
(kept as the store's JSON bytes, so reads never re-encode), the applied revision, the
live peers, and a bounded history of encoded events for ``Last-Event-ID`` resumes.

:class:`Syncer` runs the loop (DESIGN §4): list, then watch from the listing; on any
watch error back off with jitter, list again and emit exactly what changed meanwhile.
Beside it, one task keeps the peer list and one keeps this instance registered with its
applied revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from app.backoff import Backoff
from app.broadcast import PING_FRAME, Broadcaster, Subscription, encode_frame
from app.metrics import Metrics
from app.stores.base import (
    ProjectChange,
    ProjectListing,
    Store,
    StoredProject,
    StoreError,
)
from app.sync_log import OutageLog, log_membership

log = logging.getLogger("space_cloud.sync")

NOT_SYNCED = "the first sync with the store has not finished"

#: At most one ``peers`` event per this many seconds for applied-revision updates: every
#: instance publishes its own after each write, and each such event goes to every
#: subscriber (at 10k streams that doubled a write's fan-out time; bench/fanout.py).
PEERS_COALESCE_SECONDS = 5.0

#: How often, at most, this instance publishes its applied revision in its instance key.
APPLIED_REVISION_PUBLISH_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """What this instance says of itself in the store."""

    node_id: str
    addr: str
    version: str
    started_at: str

    def record(self, applied_revision: int) -> bytes:
        return orjson.dumps(
            {
                "id": self.node_id,
                "addr": self.addr,
                "version": self.version,
                "startedAt": self.started_at,
                "appliedRevision": applied_revision,
            }
        )


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class ClusterState:
    """The configs and peers this instance has applied, and who listens to them."""

    def __init__(
        self,
        node_id: str,
        metrics: Metrics,
        *,
        history_size: int = 1000,
        queue_limit: int = 1024,
        retry_ms: int = 3000,
    ) -> None:
        self.node_id = node_id
        self.metrics = metrics
        self.retry_ms = retry_ms
        self.projects: dict[str, StoredProject] = {}
        self.revision = 0
        self.synced = asyncio.Event()
        self.store_error: str | None = NOT_SYNCED
        self.outage_log = OutageLog(log)
        self.broadcaster = Broadcaster(queue_limit)
        self._peers: list[dict] = []
        self._history: deque[tuple[int, bytes]] = deque(maxlen=history_size)
        # The history holds every change after this revision.
        self._history_floor = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiter_ids = itertools.count()
        self._projects_array: bytes | None = None
        self._list_body: bytes | None = None
        self._snapshot_frame: bytes | None = None
        self._peers_frame: bytes | None = None
        self._peers_published_at = 0.0
        self._peers_timer: asyncio.TimerHandle | None = None

    # --- applying what the store says -------------------------------------------------

    def apply_listing(self, listing: ProjectListing) -> int:
        """Take a full listing; after the first, emit the difference as events.

        Returns how many events the difference produced.
        """
        if not self.synced.is_set():
            self.projects = dict(listing.projects)
            self._history_floor = listing.revision
            self._advance(listing.revision)
            self._invalidate(projects_changed=True)
            self.synced.set()
            return 0
        changes = _difference(self.projects, listing, self.revision)
        self.apply_changes(changes)
        self._advance(listing.revision)
        return len(changes)

    def apply_changes(self, changes: Iterable[ProjectChange]) -> None:
        applied = 0
        for change in changes:
            if self._apply(change):
                applied += 1
        if applied:
            self._invalidate(projects_changed=True)
            self.metrics.projects.set(len(self.projects))

    def _apply(self, change: ProjectChange) -> bool:
        current = self.projects.get(change.id)
        if change.kind == "put":
            if current is not None and current.revision >= change.revision:
                return False  # already applied
            assert change.value is not None
            self.projects[change.id] = StoredProject(change.id, change.value, change.revision)
            data = b'{"revision":%d,"project":%s}' % (change.revision, change.value)
            frame = encode_frame("project.put", data, change.revision)
        else:
            if current is None:
                return False
            del self.projects[change.id]
            data = b'{"revision":%d,"id":%s}' % (change.revision, orjson.dumps(change.id))
            frame = encode_frame("project.delete", data, change.revision)
        if len(self._history) == self._history.maxlen:
            evicted_revision = self._history[0][0]
            self._history_floor = max(self._history_floor, evicted_revision)
        self._history.append((change.revision, frame))
        self._advance(change.revision)
        self._publish(frame, change.revision)
        return True

    def _advance(self, revision: int) -> None:
        if revision <= self.revision:
            return
        self.revision = revision
        self._invalidate()  # the list and the snapshot carry the revision
        self.metrics.applied_revision.set(revision)
        while self._waiters and self._waiters[0][0] <= revision:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)

    def set_peers(self, records: dict[str, bytes]) -> None:
        peers = []
        for node_id, raw in records.items():
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                log.warning("ignoring the unreadable instance record of %s", node_id)
                continue
            peers.append(_peer(node_id, record, is_self=node_id == self.node_id))
        peers.sort(key=lambda peer: peer["id"])
        self.metrics.peers.set(len(peers))
        if peers == self._peers:
            return
        joined_or_left = _membership(peers) != _membership(self._peers)
        if joined_or_left:
            log_membership(log, self._peers, peers)
        self._peers = peers
        self._snapshot_frame = None
        self._peers_frame = None
        # Joins and leaves go out at once; applied-revision updates (every instance
        # publishes its own after a write) are coalesced to one event per window.
        since_last = time.monotonic() - self._peers_published_at
        if joined_or_left or since_last >= PEERS_COALESCE_SECONDS:
            self._publish_peers()
        elif self._peers_timer is None:
            loop = asyncio.get_running_loop()
            self._peers_timer = loop.call_later(
                PEERS_COALESCE_SECONDS - since_last, self._publish_peers
            )

    def _publish_peers(self) -> None:
        if self._peers_timer is not None:
            self._peers_timer.cancel()
            self._peers_timer = None
        self._peers_published_at = time.monotonic()
        self._publish(self.peers_frame(), 0)

    def set_store_error(self, error: str | None) -> None:
        self.outage_log.update(error)
        self.store_error = error

    # --- reading --------------------------------------------------------------------

    @property
    def peers(self) -> list[dict]:
        return self._peers

    def list_body(self) -> bytes:
        """``{"projects": [...], "revision": R}``, encoded once per change."""
        if self._list_body is None:
            self._list_body = b'{"projects":%s,"revision":%d}' % (
                self._projects_json(),
                self.revision,
            )
        return self._list_body

    def snapshot_frame(self) -> bytes:
        if self._snapshot_frame is None:
            # ``revisions`` (id -> revision, the ETags) lets followers and dashboards
            # know each project's own revision, which the documents do not carry.
            revisions = {project.id: project.revision for project in self.projects.values()}
            data = b'{"revision":%d,"projects":%s,"revisions":%s,"peers":%s}' % (
                self.revision,
                self._projects_json(),
                orjson.dumps(revisions),
                orjson.dumps(self._peers),
            )
            self._snapshot_frame = encode_frame("snapshot", data, self.revision, self.retry_ms)
        return self._snapshot_frame

    async def wait_for(self, revision: int, within: float) -> bool:
        """Wait until ``revision`` is applied; False if ``within`` seconds passed first."""
        if revision <= self.revision:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (revision, next(self._waiter_ids), future))
        try:
            await asyncio.wait_for(future, within)
        except TimeoutError:
            return False
        return True

    # --- subscribing ------------------------------------------------------------------

    def subscribe(self, last_event_id: int | None) -> tuple[Subscription, list[bytes]]:
        """A new subscription and the frames that must come first.

        No resume id, or one older than the history: a ``snapshot``. Otherwise every
        change after it from the history, then the current peers. Runs without awaiting,
        so nothing can slip between the first frames and the live queue.
        """
        if last_event_id is None or last_event_id < self._history_floor:
            subscription = self.broadcaster.subscribe()
            first = [self.snapshot_frame()]
        else:
            subscription = self.broadcaster.subscribe(skip_through=last_event_id)
            first = [b"retry: %d\n\n" % self.retry_ms]
            first += [frame for revision, frame in self._history if revision > last_event_id]
            first.append(self.peers_frame())
        self.metrics.sse_subscribers.set(len(self.broadcaster))
        return subscription, first

    def unsubscribe(self, subscription: Subscription) -> None:
        self.broadcaster.unsubscribe(subscription)
        self.metrics.sse_subscribers.set(len(self.broadcaster))

    def drop_stalled(self, subscription: Subscription) -> None:
        """A send to this subscriber timed out: it is gone (counted once, however found)."""
        if not subscription.dropped:
            self.metrics.sse_dropped.inc()
        subscription.close()
        self.unsubscribe(subscription)

    def peers_frame(self) -> bytes:
        if self._peers_frame is None:
            self._peers_frame = encode_frame("peers", orjson.dumps({"peers": self._peers}))
        return self._peers_frame

    def ping(self) -> None:
        """A comment frame to every subscriber, so proxies keep idle streams open."""
        self._publish(PING_FRAME, 0)

    def _publish(self, frame: bytes, revision: int) -> None:
        dropped_before = self.broadcaster.dropped_total
        receivers = self.broadcaster.publish(frame, revision)
        self.metrics.sse_events_sent.inc(receivers)
        if self.broadcaster.dropped_total != dropped_before:
            self.metrics.sse_dropped.inc(self.broadcaster.dropped_total - dropped_before)
            self.metrics.sse_subscribers.set(len(self.broadcaster))

    def _projects_json(self) -> bytes:
        """The JSON array of every project, joined once per project change (the list and
        the snapshot share it; a peers change rebuilds only the snapshot around it)."""
        if self._projects_array is None:
            joined = b",".join(project.value for project in self.projects.values())
            self._projects_array = b"[%s]" % joined
        return self._projects_array

    def _invalidate(self, projects_changed: bool = False) -> None:
        if projects_changed:
            self._projects_array = None
        self._list_body = None
        self._snapshot_frame = None


def _difference(
    current: dict[str, StoredProject], listing: ProjectListing, applied: int
) -> list[ProjectChange]:
    """The changes that turn ``current`` (complete at ``applied``) into ``listing``.

    A deletion's own revision is gone with its key. Each one happened at a distinct
    revision after ``applied`` that no surviving put holds, so each vanished project is
    given one of those, the latest first: every event keeps an id of its own, and a
    client resuming from any of them misses nothing.
    """
    puts = [
        ProjectChange("put", project.id, project.revision, project.value)
        for project in listing.projects.values()
        if (known := current.get(project.id)) is None or known.revision != project.revision
    ]
    taken = {put.revision for put in puts}
    free = (r for r in range(listing.revision, applied, -1) if r not in taken)
    vanished = sorted(project_id for project_id in current if project_id not in listing.projects)
    deletes = [
        ProjectChange("delete", project_id, next(free, listing.revision)) for project_id in vanished
    ]
    return sorted(puts + deletes, key=lambda change: change.revision)


def _membership(peers: list[dict]) -> list[tuple[str, str]]:
    return [(peer["id"], peer["addr"]) for peer in peers]


def _peer(node_id: str, record: dict, *, is_self: bool) -> dict:
    return {
        "id": str(record.get("id", node_id)),
        "addr": str(record.get("addr", "")),
        "version": str(record.get("version", "")),
        "startedAt": str(record.get("startedAt", "")),
        "appliedRevision": int(record.get("appliedRevision") or 0),
        "self": is_self,
    }


class Syncer:
    """Keeps a :class:`ClusterState` in step with the store, and this instance registered."""

    def __init__(
        self, store: Store, state: ClusterState, instance: InstanceInfo, metrics: Metrics
    ) -> None:
        self.store = store
        self.state = state
        self.instance = instance
        self.metrics = metrics
        self._tasks: list[asyncio.Task[None]] = []
        self._registered = False
        self._errors: dict[str, str] = {}

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._forever("projects", self._sync_projects)),
            asyncio.create_task(self._forever("instances", self._sync_instances)),
            asyncio.create_task(self._forever("registration", self._keep_registered)),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._registered:
            self._registered = False
            with contextlib.suppress(StoreError, TimeoutError):
                await asyncio.wait_for(self.store.deregister(), 5)

    async def _forever(self, name: str, run: Callable[[Backoff], Awaitable[None]]) -> None:
        backoff = Backoff()
        while True:
            try:
                await run(backoff)
            except StoreError as exc:
                if name != "registration":
                    self._report(name, str(exc) or "the store failed")
                log.debug("%s sync interrupted: %s", name, exc)
            except Exception:
                log.exception("%s sync failed", name)
            await backoff.sleep()

    async def _sync_projects(self, backoff: Backoff) -> None:
        async with self.metrics.store_op("list"):
            listing = await self.store.list_projects()
        resync = self.state.synced.is_set()
        emitted = self.state.apply_listing(listing)
        if resync:
            self.metrics.resyncs.inc()
            log.info("resynced at revision %d: %d changes", listing.revision, emitted)
        self._report("projects", None)
        backoff.reset()
        async for changes in self.store.watch_projects(listing):
            self.state.apply_changes(changes)
            self._report("projects", None)

    async def _sync_instances(self, backoff: Backoff) -> None:
        async for records in self.store.watch_instances():
            self.state.set_peers(records)
            self._report("instances", None)
            backoff.reset()

    def _report(self, loop: str, error: str | None) -> None:
        """Record how a loop fares; the store is unavailable while any loop fails."""
        if error is None:
            self._errors.pop(loop, None)
        else:
            self._errors[loop] = error
        self.state.set_store_error(next(iter(self._errors.values()), None))

    async def _keep_registered(self, backoff: Backoff) -> None:
        published = self.state.revision
        async with self.metrics.store_op("register"):
            await self.store.register(self.instance.node_id, self.instance.record(published))
        self._registered = True
        backoff.reset()
        while True:
            await asyncio.sleep(APPLIED_REVISION_PUBLISH_SECONDS)
            if self.state.revision != published:
                published = self.state.revision
                async with self.metrics.store_op("update_registration"):
                    await self.store.update_registration(self.instance.record(published))
