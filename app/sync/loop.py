"""The sync loop: keeps the applied state in step with its change source.

List, then watch from the listing; on any watch error back off with jitter, list again
and emit exactly what changed meanwhile. Beside it, one task keeps the peer list and,
when the source is a store, one keeps this instance registered with its applied
revision and one keeps the applied token records (see docs/design.md §4, §9).
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
from app.stores.base import (
    ETCD_VALUE_LIMIT,
    StoredProject,
    StoreError,
    StoreUnavailable,
    WatchReset,
)
from app.sync.cache import CacheFile, CacheFileError, CacheWriter
from app.sync.intake import Intake
from app.sync.replay import StoreReplay
from app.sync.source import ChangeSource, Registrar, TokenSource
from app.sync.state import ClusterState
from app.sync.tokens import AppliedTokens

log = logging.getLogger("space_cloud.sync")

#: How often, at most, this instance publishes its applied revision in its instance key.
APPLIED_REVISION_PUBLISH_SECONDS = 1.0
#: How long a resume waits for the store to replay what it missed before it gets a
#: snapshot instead.
REPLAY_TIMEOUT_SECONDS = 5.0


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
    ``registrar`` (the store; None for a follower, which is no member of the cluster);
    keeps ``tokens`` in step with ``token_source`` (the store; None for a follower).

    Everything the source hands up passes :attr:`intake` (values over ``value_limit``
    are not served). With a ``cache`` file, the applied state is kept in it, and it is
    served when the first listing finds the store unreachable."""

    def __init__(
        self,
        source: ChangeSource,
        state: ClusterState,
        instance: InstanceInfo,
        metrics: Metrics,
        *,
        registrar: Registrar | None = None,
        token_source: TokenSource | None = None,
        tokens: AppliedTokens | None = None,
        publish_seconds: float = APPLIED_REVISION_PUBLISH_SECONDS,
        value_limit: int = ETCD_VALUE_LIMIT,
        cache: CacheFile | None = None,
        replay_timeout: float = REPLAY_TIMEOUT_SECONDS,
    ) -> None:
        self.source = source
        self.state = state
        self.instance = instance
        self.metrics = metrics
        self.registrar = registrar
        self.token_source = token_source
        self.tokens = AppliedTokens(held=token_source is not None) if tokens is None else tokens
        self._publish_seconds = publish_seconds
        self._tasks: list[asyncio.Task[None]] = []
        self._registered = False
        self._errors: dict[str, str] = {}
        self.intake = Intake(value_limit, metrics)
        state.replay = StoreReplay(source, value_limit, metrics, timeout=replay_timeout)
        self.cache = cache
        self._cache_writer = None if cache is None else CacheWriter(cache, self._applied)
        #: Set while the cache file is served: the store has not answered since the start.
        self._serving_cache: str | None = None

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._forever("projects", self._sync_projects)),
            asyncio.create_task(self._forever("instances", self._sync_instances)),
        ]
        if self.registrar is not None:
            keep = functools.partial(self._keep_registered, self.registrar)
            self._tasks.append(asyncio.create_task(self._forever("registration", keep)))
        if self.token_source is not None:
            watch = functools.partial(self._sync_tokens, self.token_source)
            self._tasks.append(asyncio.create_task(self._forever("tokens", watch)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._cache_writer is not None:
            await self._cache_writer.flush()
        if self._registered and self.registrar is not None:
            self._registered = False
            with contextlib.suppress(StoreError, TimeoutError):
                await asyncio.wait_for(self.registrar.deregister(), 5)

    async def _forever(self, name: str, run: Callable[[Backoff], Awaitable[None]]) -> None:
        backoff = Backoff()
        while True:
            try:
                await run(backoff)
            except WatchReset as exc:
                # The store answers; only the watch must start again from a listing, so
                # readiness does not flap (a Consul watch's verification finds changes
                # another client hid behind the gateway's writes this way).
                log.info("%s watch starts again from a listing: %s", name, exc)
            except StoreError as exc:
                if name != "registration":
                    self._report(name, str(exc) or "the store failed")
                log.debug("%s sync interrupted: %s", name, exc)
            except Exception:
                log.exception("%s sync failed", name)
            await backoff.sleep()

    async def _sync_projects(self, backoff: Backoff) -> None:
        try:
            async with self.metrics.store_op("list"):
                listing = await self.source.list_projects()
        except StoreUnavailable:
            self._serve_cache_file()
            raise
        resync = self.state.synced.is_set()
        if self._serving_cache is not None and listing.revision < self.state.revision:
            log.error(
                "the store is at revision %d, behind the cache file's %d (restored, or another "
                "store): projects cached at newer revisions stay as cached until written again",
                listing.revision,
                self.state.revision,
            )
        emitted = self.state.apply_listing(self.intake.listing(listing))
        if self._serving_cache is not None:
            log.info(
                "the store answers at revision %d: %d changes since the cache file",
                listing.revision,
                emitted,
            )
        elif resync:
            self.metrics.resyncs.inc()
            log.info("resynced at revision %d: %d changes", listing.revision, emitted)
        self._serving_cache = None
        self._report("projects", None)
        self._cache_changed()
        backoff.reset()
        # The source gets its own listing back: a Consul watch diffs against what it read.
        async for changes in self.source.watch_projects(listing):
            through = changes[-1].revision if changes else 0
            self.state.apply_changes(self.intake.changes(changes), through)
            self._report("projects", None)
            self._cache_changed()

    def _serve_cache_file(self) -> None:
        """The store is unreachable before the first sync: serve the cache file, once."""
        if self.cache is None or self._cache_writer is None or self.state.synced.is_set():
            return
        try:
            listing = self.cache.read()
        except CacheFileError as exc:
            log.warning("the store is unreachable and the cache file is not served: %s", exc)
            self.cache = None
            return
        self.state.apply_listing(self.intake.listing(listing))
        self._cache_writer.loaded(listing.revision)
        self._serving_cache = (
            f"serving the cache file {self.cache.path} (revision {listing.revision}) "
            "until the store answers"
        )
        log.warning("the store is unreachable: %s", self._serving_cache)

    def _cache_changed(self) -> None:
        if self._cache_writer is not None:
            self._cache_writer.changed()

    def _applied(self) -> tuple[list[StoredProject], int]:
        return list(self.state.projects.values()), self.state.revision

    async def _sync_instances(self, backoff: Backoff) -> None:
        async for records in self.source.watch_instances():
            self.state.set_peers(records)
            self._report("instances", None)
            backoff.reset()

    async def _sync_tokens(self, source: TokenSource, backoff: Backoff) -> None:
        """Its own watch, not beside the instances': a token change then never rebuilds
        the peer list, and Consul's instance queries wake every TTL/4 for heartbeats,
        which the token records do not need. Each yield is the full map: a new watch
        after any error is a complete resync."""
        async for records in source.watch_tokens():
            self.tokens.apply(records)
            self._report("tokens", None)
            backoff.reset()

    def _report(self, loop: str, error: str | None) -> None:
        """Record how a loop fares; the store is unavailable while any loop fails."""
        if error is None:
            self._errors.pop(loop, None)
        else:
            self._errors[loop] = error
        error = next(iter(self._errors.values()), None)
        if error is not None and self._serving_cache is not None:
            error = f"{error}; {self._serving_cache}"
        self.state.set_store_error(error)

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
