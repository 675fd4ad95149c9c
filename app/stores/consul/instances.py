"""Live instances in Consul: each holds its key with a session and heartbeats on it.

Each instance registers ``sc/instances/<cluster>/<node>`` by acquiring it with a session
(``Behavior=delete``, ``LockDelay=0s``), renewed every TTL/3, and rewrites the key at
each renewal (a heartbeat that moves its ModifyIndex). Consul's sessions have a
**minimum TTL of 10 s** and Consul may take up to **twice the TTL** to invalidate an
expired session, so a dead instance's key can linger 10-20 s; the peer list does not
wait for that: a key whose heartbeat has not moved for 3/4 of the TTL (two missed
renewals) is left out, so a killed instance leaves the peer lists within the TTL. A clean
stop destroys the session and the key goes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncGenerator
from typing import Any

from app.stores.base import NotRegistered, StoreError, instances_prefix
from app.stores.consul.client import ClientSource, child_name, entry_value, kv_path, pace

log = logging.getLogger("space_cloud.stores.consul")

MIN_SESSION_TTL = 10
RETRY_DELAYS = (0.5, 1.0, 2.0)


class ConsulInstances:
    """This instance's registration, and the watch of every live instance of the cluster."""

    def __init__(self, client: ClientSource, cluster_id: str, ttl: int, watch_wait: float) -> None:
        self._client = client
        self.cluster_id = cluster_id
        self.prefix = instances_prefix(cluster_id)
        self.ttl = max(ttl, MIN_SESSION_TTL)
        self.watch_wait = watch_wait
        self._registration: _Registration | None = None

    @property
    def registered(self) -> bool:
        return self._registration is not None

    async def register(self, node_id: str, record: bytes) -> None:
        """Acquire the instance key with a new session, and keep both alive.

        Calling it again (for the same node) reuses the session and restarts the keeper.
        """
        registration = self._registration
        if registration is not None and registration.node_id != node_id:
            await self.deregister()
            registration = None
        if registration is None:
            registration = _Registration(self._client, self, node_id)
            self._registration = registration
        await registration.start(record)

    async def update(self, record: bytes) -> None:
        if self._registration is None:
            raise NotRegistered
        await self._registration.update(record)

    async def deregister(self) -> None:
        registration, self._registration = self._registration, None
        if registration is not None:
            await registration.stop()

    async def watch(self) -> AsyncGenerator[dict[str, bytes], None]:
        """The live instances now and after every change. An index that goes backwards
        only restarts the blocking queries from 0: each answer is a full map anyway.

        Live means held by a session and heartbeating: a key whose ModifyIndex has not
        moved for 3/4 of the TTL (two missed heartbeats) belongs to a dead instance whose
        session Consul has not invalidated yet. The queries wait at most TTL/4, so that is
        noticed within the TTL even when nothing else changes.
        """
        heartbeats = Heartbeats(silence=0.75 * self.ttl)
        entries, index = await self._client().list_prefix(self.prefix)
        current = heartbeats.live(_instance_entries(entries, self.prefix), self._own_node)
        yield dict(current)
        while True:
            started = asyncio.get_running_loop().time()
            entries, new_index = await self._client().list_prefix(
                self.prefix, index=index, wait=min(self.watch_wait, self.ttl / 4)
            )
            index = new_index if new_index >= index else 0
            instances = heartbeats.live(_instance_entries(entries, self.prefix), self._own_node)
            if instances != current:
                current = instances
                yield dict(current)
            else:
                await pace(started)

    @property
    def _own_node(self) -> str | None:
        return self._registration.node_id if self._registration is not None else None


class Heartbeats:
    """When each instance key's ModifyIndex last moved, by this process's clock."""

    def __init__(self, silence: float) -> None:
        self.silence = silence  # longer without a heartbeat: dead
        self._seen: dict[str, tuple[int, float]] = {}

    def live(self, entries: dict[str, tuple[bytes, int]], own_node: str | None) -> dict[str, bytes]:
        now = asyncio.get_running_loop().time()
        seen = {}
        for node_id, (_, modify_index) in entries.items():
            known = self._seen.get(node_id)
            seen[node_id] = known if known and known[0] == modify_index else (modify_index, now)
        self._seen = seen
        return {
            node_id: value
            for node_id, (value, _) in entries.items()
            if node_id == own_node or now - seen[node_id][1] <= self.silence
        }


class _Registration:
    """One instance key held by one session, kept alive by a background task."""

    def __init__(self, client: ClientSource, instances: ConsulInstances, node_id: str) -> None:
        self._client = client
        self.node_id = node_id
        self.key = instances.prefix + node_id
        self.ttl = instances.ttl
        self.session_name = f"space-cloud {instances.cluster_id}/{node_id}"
        self.record = b""
        self.session: str | None = None
        self.stored = False  # the key holds self.record under self.session
        self.lock = asyncio.Lock()
        self.wake = asyncio.Event()
        self.keeper: asyncio.Task[None] | None = None

    async def start(self, record: bytes) -> None:
        """Register now; should that fail, the keeper goes on trying in the background."""
        self.record, self.stored = record, False
        if self.keeper is None or self.keeper.done():
            self.keeper = asyncio.create_task(self.keep_alive(), name=f"consul-session {self.key}")
        await self.ensure()

    async def update(self, record: bytes) -> None:
        self.record, self.stored = record, False
        try:
            async with self.lock:
                if self.session is not None:
                    self.stored = await self.acquire()
        finally:
            if not self.stored:
                self.wake.set()

    async def stop(self) -> None:
        if self.keeper is not None:
            self.keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.keeper
            self.keeper = None
        session, self.session = self.session, None
        if session is not None:
            # Behavior=delete: destroying the session deletes the key in the same step.
            await self._client().request("PUT", f"/v1/session/destroy/{session}")

    async def keep_alive(self) -> None:
        failures = 0
        while True:
            delay = (
                self.ttl / 3
                if failures == 0
                else RETRY_DELAYS[min(failures, len(RETRY_DELAYS)) - 1]
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), delay)
            self.wake.clear()
            try:
                await self.ensure()
                failures = 0
            except StoreError as exc:
                failures += 1
                log.warning("cannot keep %s registered in Consul: %s", self.node_id, exc)

    async def ensure(self) -> None:
        """Renew the session (a new one if Consul lost it) and make sure it holds the key."""
        async with self.lock:
            if self.session is not None and not await self.renew():
                log.warning("Consul lost the session of %s; registering again", self.node_id)
                self.session, self.stored = None, False
            if self.session is None:
                self.session = await self.create_session()
            # Acquiring again also rewrites the key: the heartbeat peers watch for.
            self.stored = await self.acquire()
            if not self.stored:
                log.warning("%s is held by another session; retrying", self.key)

    async def create_session(self) -> str:
        response = await self._client().request(
            "PUT",
            "/v1/session/create",
            json={
                "Name": self.session_name,
                "Behavior": "delete",
                "TTL": f"{self.ttl}s",
                "LockDelay": "0s",
            },
        )
        return response.json()["ID"]

    async def renew(self) -> bool:
        response = await self._client().request(
            "PUT", f"/v1/session/renew/{self.session}", expect=(200, 404)
        )
        return response.status == 200

    async def acquire(self) -> bool:
        # A new Flags value makes every write move the ModifyIndex, even with the same record.
        response = await self._client().request(
            "PUT",
            kv_path(self.key),
            params={"acquire": self.session or "", "flags": secrets.randbits(63) | 1},
            content=self.record,
        )
        return response.json() is True


def _instance_entries(entries: list[dict[str, Any]], prefix: str) -> dict[str, tuple[bytes, int]]:
    """Keys held by a session (a live instance's key never exists without one), with
    their ModifyIndex."""
    instances = {}
    for entry in entries:
        node_id = child_name(entry["Key"], prefix)
        if node_id is not None and entry.get("Session"):
            instances[node_id] = (entry_value(entry), int(entry["ModifyIndex"]))
    return instances
