"""What this instance has applied: the projects, the revision, the peers.

:class:`ClusterState` is changed only by the sync loop (:mod:`app.sync.loop`) and read by
the API. Projects are kept as the store's JSON bytes, so reads never re-encode; the list
body and the snapshot frame are encoded once per change. Every change it applies goes
to its :class:`~app.sync.stream.EventStream` (see docs/design.md §4).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Iterable, Mapping

import orjson

from app.broadcast import Sees, Subscription
from app.metrics import Metrics
from app.stores.base import ProjectChange, ProjectListing, StoredProject
from app.sync import frames
from app.sync.operator_log import OutageLog, log_membership
from app.sync.replay import StoreReplay
from app.sync.stream import Clock, EventStream

log = logging.getLogger("space_cloud.sync")

NOT_SYNCED = "the first sync with the store has not finished"

#: Scoped snapshots kept between changes (one per distinct scope); beyond this many
#: scopes the oldest are rebuilt on demand.
SCOPED_SNAPSHOTS_KEPT = 256


class ClusterState:
    """The configs and peers this instance has applied, and its event stream."""

    def __init__(
        self,
        node_id: str,
        metrics: Metrics,
        *,
        history_size: int = 1000,
        queue_limit: int = 1024,
        retry_ms: int = 3000,
        clock: Clock | None = None,
    ) -> None:
        self.node_id = node_id
        self.metrics = metrics
        self.retry_ms = retry_ms
        self.projects: dict[str, StoredProject] = {}
        self.revision = 0
        self.synced = asyncio.Event()
        self.store_error: str | None = NOT_SYNCED
        self.outage_log = OutageLog(log)
        self.events = EventStream(
            self,
            metrics,
            clock,
            history_size=history_size,
            queue_limit=queue_limit,
            retry_ms=retry_ms,
        )
        #: Reads resumes from before the history back from the change source (set by
        #: the sync loop, which holds the source); None: they get a snapshot.
        self.replay: StoreReplay | None = None
        self._peers: list[dict] = []
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiter_ids = itertools.count()
        self._projects_array: bytes | None = None
        self._list_body: bytes | None = None
        self._snapshot_frame: bytes | None = None
        self._scoped_snapshots: dict[Sees, bytes] = {}
        self._peers_frame: bytes | None = None

    # --- applying what the store says -------------------------------------------------

    def apply_listing(self, listing: ProjectListing) -> int:
        """Take a full listing; after the first, emit the difference as events.

        Returns how many events the difference produced.
        """
        if not self.synced.is_set():
            self.projects = dict(listing.projects)
            self.events.start_at(listing.revision)
            self._advance(listing.revision)
            self._invalidate(projects_changed=True)
            self.synced.set()
            return 0
        changes = difference(self.projects, listing, self.revision)
        self.apply_changes(changes)
        self._advance(listing.revision)
        return len(changes)

    def apply_changes(self, changes: Iterable[ProjectChange], through: int = 0) -> None:
        """Apply a batch; ``through``: the source's last revision in it, applied even
        when nothing of it is served (a skipped value still moves the store on)."""
        applied = 0
        for change in changes:
            if self._apply(change):
                applied += 1
        if applied:
            self._invalidate(projects_changed=True)
            self.metrics.projects.set(len(self.projects))
        self._advance(through)

    def _apply(self, change: ProjectChange) -> bool:
        current = self.projects.get(change.id)
        if change.kind == "put":
            if current is not None and current.revision >= change.revision:
                return False  # already applied
            assert change.value is not None
            self.projects[change.id] = StoredProject(change.id, change.value, change.revision)
            frame = frames.project_put_frame(change.revision, change.value)
        else:
            if current is None:
                return False
            del self.projects[change.id]
            frame = frames.project_delete_frame(change.revision, change.id)
        self._advance(change.revision)
        self.events.change(change.revision, frame, change.id)
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

    def set_peers(self, records: Mapping[str, bytes]) -> None:
        peers = []
        for node_id, raw in records.items():
            try:
                peers.append(_peer(node_id, orjson.loads(raw), is_self=node_id == self.node_id))
            except (ValueError, TypeError, AttributeError):  # not JSON, or not a record
                log.warning("ignoring the unreadable instance record of %s", node_id)
        peers.sort(key=lambda peer: peer["id"])
        self.metrics.peers.set(len(peers))
        if peers == self._peers:
            return
        joined_or_left = _membership(peers) != _membership(self._peers)
        if joined_or_left:
            log_membership(log, self._peers, peers)
        self._peers = peers
        self._snapshot_frame = None
        self._scoped_snapshots.clear()
        self._peers_frame = None
        self.events.peers_changed(joined_or_left)

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
            revisions = {project.id: project.revision for project in self.projects.values()}
            self._snapshot_frame = frames.snapshot_frame(
                self.revision,
                self._projects_json(),
                orjson.dumps(revisions),
                orjson.dumps(self._peers),
                self.retry_ms,
            )
        return self._snapshot_frame

    def scoped_snapshot_frame(self, sees: Sees) -> bytes:
        """The snapshot of the projects ``sees`` allows; the revision stays the cluster's
        (a resume from it misses nothing), and the peers are everyone's."""
        frame = self._scoped_snapshots.get(sees)
        if frame is None:
            shown = [project for project in self.projects.values() if sees(project.id)]
            frame = frames.snapshot_frame(
                self.revision,
                b"[%s]" % b",".join(project.value for project in shown),
                orjson.dumps({project.id: project.revision for project in shown}),
                orjson.dumps(self._peers),
                self.retry_ms,
            )
            if len(self._scoped_snapshots) >= SCOPED_SNAPSHOTS_KEPT:
                del self._scoped_snapshots[next(iter(self._scoped_snapshots))]
            self._scoped_snapshots[sees] = frame
        return frame

    def peers_frame(self) -> bytes:
        if self._peers_frame is None:
            self._peers_frame = frames.peers_frame(orjson.dumps(self._peers))
        return self._peers_frame

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

    # --- the stream, as the API uses it ------------------------------------------------

    def subscribe(
        self, last_event_id: int | None, sees: Sees | None = None
    ) -> tuple[Subscription, list[bytes]]:
        return self.events.subscribe(last_event_id, sees)

    async def open_stream(
        self, last_event_id: int | None, sees: Sees | None = None
    ) -> tuple[Subscription, list[bytes]]:
        """:meth:`subscribe`, with a resume from before the history replayed from the
        store when it can be (docs/design.md §6). Should the history drop changes while
        the store is read, its floor moves and the store is read once more."""
        replayed = None
        for _ in range(2):
            floor = self.events.floor
            if self.replay is None or last_event_id is None or last_event_id >= floor:
                break
            replayed = await self.replay.replayed(last_event_id, floor)
            if replayed is None or floor == self.events.floor:
                break
        return self.events.subscribe(last_event_id, sees, replayed)

    def end(self, subscription: Subscription) -> None:
        self.events.end(subscription)

    def unsubscribe(self, subscription: Subscription) -> None:
        self.events.unsubscribe(subscription)

    def drop_stalled(self, subscription: Subscription) -> None:
        self.events.drop_stalled(subscription)

    def ping(self) -> None:
        self.events.ping()

    # --- cached encodings ---------------------------------------------------------------

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
        self._scoped_snapshots.clear()


def difference(
    current: Mapping[str, StoredProject], listing: ProjectListing, applied: int
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
