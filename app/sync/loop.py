"""The sync loop: keeps the applied state in step with its change source.

List, then watch from the listing; on any watch error back off with jitter, list again
and emit exactly what changed meanwhile. Beside it, one task keeps the peer list and,
when the source is a store, one keeps this instance registered with its applied
revision (see docs/design.md §4).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from app.backoff import Backoff
from app.metrics import Metrics
from app.stores.base import StoreError
from app.sync.source import ChangeSource, Registrar
from app.sync.state import ClusterState

log = logging.getLogger("space_cloud.sync")

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


class Syncer:
    """Keeps a :class:`ClusterState` in step with ``source``; registers this instance in
    ``registrar`` (the store; None for a follower, which is no member of the cluster)."""

    def __init__(
        self,
        source: ChangeSource,
        state: ClusterState,
        instance: InstanceInfo,
        metrics: Metrics,
        *,
        registrar: Registrar | None = None,
        publish_seconds: float = APPLIED_REVISION_PUBLISH_SECONDS,
    ) -> None:
        self.source = source
        self.state = state
        self.instance = instance
        self.metrics = metrics
        self.registrar = registrar
        self._publish_seconds = publish_seconds
        self._tasks: list[asyncio.Task[None]] = []
        self._registered = False
        self._errors: dict[str, str] = {}

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._forever("projects", self._sync_projects)),
            asyncio.create_task(self._forever("instances", self._sync_instances)),
        ]
        if self.registrar is not None:
            keep = functools.partial(self._keep_registered, self.registrar)
            self._tasks.append(asyncio.create_task(self._forever("registration", keep)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._registered and self.registrar is not None:
            self._registered = False
            with contextlib.suppress(StoreError, TimeoutError):
                await asyncio.wait_for(self.registrar.deregister(), 5)

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
            listing = await self.source.list_projects()
        resync = self.state.synced.is_set()
        emitted = self.state.apply_listing(listing)
        if resync:
            self.metrics.resyncs.inc()
            log.info("resynced at revision %d: %d changes", listing.revision, emitted)
        self._report("projects", None)
        backoff.reset()
        async for changes in self.source.watch_projects(listing):
            self.state.apply_changes(changes)
            self._report("projects", None)

    async def _sync_instances(self, backoff: Backoff) -> None:
        async for records in self.source.watch_instances():
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

    async def _keep_registered(self, registrar: Registrar, backoff: Backoff) -> None:
        published = self.state.revision
        async with self.metrics.store_op("register"):
            await registrar.register(self.instance.node_id, self.instance.record(published))
        self._registered = True
        backoff.reset()
        while True:
            await asyncio.sleep(self._publish_seconds)
            if self.state.revision != published:
                published = self.state.revision
                async with self.metrics.store_op("update_registration"):
                    await registrar.update_registration(self.instance.record(published))
