"""The follower's state machine: what the upstream said, and what the sync loop took.

Pure: it is fed the upstream's events and the fate of each connection, and asked for a
listing, the next batch of changes, and the peers. No I/O, no clock, no locks; the
connection loop (:mod:`app.follow.follower`) drives it (see docs/design.md §8).

Two views of the projects are kept. The *mirror* is the upstream's state as of
:attr:`FollowState.revision`, the ``Last-Event-ID`` of the next connection. The *view*
is what the sync loop has applied: the last listing it took plus every batch it took
since. Changes between the two wait in order, so that after an outage a new listing is
the view, and the changes replayed on reconnection still reach the loop as events with
their own revisions. When the upstream's state jumps (a changed snapshot: the resume id
was older than its history), or more changes wait than :data:`PENDING_LIMIT`, the watch
must reset: the next listing is the mirror, and the loop emits the difference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from app.follow.sse import SSEEvent
from app.stores.base import (
    ProjectChange,
    ProjectListing,
    StoredProject,
    StoreUnavailable,
    WatchReset,
)

#: Changes kept for a sync loop that has not taken them yet (it takes them at once).
PENDING_LIMIT = 10_000


class FollowState:
    def __init__(self, pending_limit: int = PENDING_LIMIT) -> None:
        self.mirror: dict[str, StoredProject] = {}
        #: The revision of the upstream's last event: the next ``Last-Event-ID``.
        self.revision = 0
        self.has_snapshot = False
        #: The upstream's live instances (``node id -> record``), from its snapshot and
        #: ``peers`` events; :attr:`peers_version` counts their changes.
        self.peers: dict[str, bytes] | None = None
        self.peers_version = 0
        #: The current connection delivered an event.
        self.live = False
        #: Why the last connection attempt failed, when it never delivered an event.
        self.error: str | None = None
        self._pending: list[ProjectChange] = []
        self._pending_limit = pending_limit
        self._reset = False
        self._view: dict[str, StoredProject] | None = None
        self._view_revision = 0
        self._resumed_after: int | None = None

    # --- connections ------------------------------------------------------------------

    def connecting(self) -> int | None:
        """A new connection starts: the ``Last-Event-ID`` to send (None: a snapshot)."""
        self._resumed_after = self.revision if self.has_snapshot else None
        return self._resumed_after

    def receive(self, event: SSEEvent) -> str | None:
        """Apply one event; the first of a connection makes it live, and then this says
        how it started. Unreadable data raises ``ValueError``/``KeyError``/``TypeError``."""
        if event.event == "snapshot":
            self._on_snapshot(orjson.loads(event.data))
        elif event.event == "project.put":
            data = orjson.loads(event.data)
            document = data["project"]
            value = orjson.dumps(document)
            self._on_change(ProjectChange("put", str(document["id"]), int(data["revision"]), value))
        elif event.event == "project.delete":
            data = orjson.loads(event.data)
            self._on_change(ProjectChange("delete", str(data["id"]), int(data["revision"])))
        elif event.event == "peers":
            self._set_peers(orjson.loads(event.data)["peers"])
        if self.live:
            return None
        self.live = True
        self.error = None
        if event.event == "snapshot" or self._resumed_after is None:
            return f"from a snapshot at revision {self.revision}"
        return f"resuming after revision {self._resumed_after}"

    def lost(self, error: str) -> bool:
        """The connection ended; True if it had been live. An attempt that never
        delivered an event means no upstream answers: the watch raises ``StoreUnavailable``."""
        was_live = self.live
        if not was_live:
            self.error = error
        self.live = False
        return was_live

    # --- what the sync loop takes -------------------------------------------------------

    @property
    def ready(self) -> bool:
        """A listing can be taken: connected, and a snapshot came once."""
        return self.live and self.has_snapshot

    def take_listing(self) -> ProjectListing:
        """The listing for the sync loop: its own view, or after a reset the mirror."""
        if self._view is None or self._reset:
            self._view = dict(self.mirror)
            self._view_revision = self.revision
            self._pending.clear()
            self._reset = False
        return ProjectListing(dict(self._view), self._view_revision)

    def take_changes(self) -> list[ProjectChange]:
        """The changes waiting, in order ([] when none); raises ``WatchReset`` when the
        loop must list again and ``StoreUnavailable`` when no upstream answers."""
        if self._reset:
            raise WatchReset("the upstream's state jumped (a fresh snapshot) or ran ahead")
        if not self._pending:
            if not self.live and self.error is not None:
                raise StoreUnavailable(self.error)
            return []
        batch, self._pending = self._pending, []
        assert self._view is not None
        _apply(self._view, batch)
        self._view_revision = batch[-1].revision
        return batch

    # --- events -----------------------------------------------------------------------

    def _on_snapshot(self, data: Mapping[str, Any]) -> None:
        revision = int(data["revision"])
        revisions = data["revisions"]
        projects = {}
        for document in data["projects"]:
            project_id = str(document["id"])
            value = orjson.dumps(document)
            projects[project_id] = StoredProject(project_id, value, int(revisions[project_id]))
        self._set_peers(data["peers"])
        if self.has_snapshot and projects == self.mirror:
            self.revision = max(self.revision, revision)
            return  # a resume answered with a snapshot of what is known: the watch goes on
        self.has_snapshot = True
        self.mirror = projects
        self.revision = revision
        self._pending.clear()
        self._reset = self._view is not None

    def _on_change(self, change: ProjectChange) -> None:
        # Events come in revision order; an upstream resync may give a put and a delete
        # the same revision, so only an older revision, or what is already there, is a
        # replay of something applied before.
        if change.revision < self.revision:
            return
        known = self.mirror.get(change.id)
        if change.kind == "put" and known is not None and known.revision >= change.revision:
            return
        self.revision = change.revision
        if change.kind == "delete" and known is None:
            return
        _apply(self.mirror, [change])
        if self._view is None or self._reset:
            return  # the next listing is the mirror
        if len(self._pending) >= self._pending_limit:
            self._pending.clear()
            self._reset = True
        else:
            self._pending.append(change)

    def _set_peers(self, peers: Iterable[Mapping[str, Any]]) -> None:
        # ``self`` is the upstream's view of itself; the sync loop decides who this is.
        records = {
            str(peer["id"]): orjson.dumps({k: v for k, v in peer.items() if k != "self"})
            for peer in peers
        }
        if records != self.peers:
            self.peers = records
            self.peers_version += 1


def _apply(projects: dict[str, StoredProject], changes: Iterable[ProjectChange]) -> None:
    for change in changes:
        if change.kind == "put":
            assert change.value is not None
            projects[change.id] = StoredProject(change.id, change.value, change.revision)
        else:
            projects.pop(change.id, None)
