"""What the sync loop consumes: a source of changes, and (for a store) a registry.

A :class:`ChangeSource` gives a listing, then ordered batches of the changes after it,
until it cannot go on: then its watch raises :class:`~app.stores.base.WatchReset` (list
again, the loop emits the difference) or :class:`~app.stores.base.StoreUnavailable` (back
off, list again). Beside it, the live instances of the cluster. The etcd, Consul and
local stores are change sources as they are; so is a follower (:mod:`app.follow`), which
reads another instance's event stream and holds no store at all.

A :class:`Registrar` keeps this instance's key in the cluster, and a :class:`TokenSource`
holds the cluster's minted tokens. Only stores are either: a follower is not a member
of the cluster it follows (see docs/design.md §4, §8, §9).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from app.stores.base import ProjectChange, ProjectListing


class ChangeSource(Protocol):
    #: What ``GET /v1/config/env`` reports as ``storeType``.
    kind: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def check(self) -> None:
        """One cheap round trip; raises ``StoreUnavailable`` or ``StoreConfigError``."""

    async def current_revision(self) -> int | None:
        """The store's revision now (one cheap round trip); None when unknown."""

    async def list_projects(self) -> ProjectListing:
        """Every project, complete as of the listing's revision."""

    def watch_projects(self, since: ProjectListing) -> AsyncIterator[list[ProjectChange]]:
        """Batches of the changes after ``since`` (the listing the caller applied last), in
        revision order, each exactly once; ends only by raising or by cancellation."""

    async def changes_between(self, after: int, through: int) -> list[ProjectChange] | None:
        """Every change with ``after < revision <= through`` in revision order, as the
        watch would have handed them up; None when the source cannot replay them all
        (a follower, the local store, a compacted etcd)."""

    def watch_instances(self) -> AsyncIterator[dict[str, bytes]]:
        """The full map ``node id -> instance record`` now and on every change."""


class Registrar(Protocol):
    async def register(self, node_id: str, record: bytes) -> None:
        """Register under a TTL, kept alive (and re-registered) in the background."""

    async def update_registration(self, record: bytes) -> None: ...

    async def deregister(self) -> None: ...


class TokenSource(Protocol):
    def watch_tokens(self) -> AsyncIterator[dict[str, bytes]]:
        """The full map ``token id -> token record`` now and on every change."""
