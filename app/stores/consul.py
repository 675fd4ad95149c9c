"""The Consul store: projects in the KV store, instances held by sessions (DESIGN §3).

Revisions are Consul's ``ModifyIndex`` (per key) and ``X-Consul-Index`` (per prefix):
raft indexes, cluster-wide and only growing. Watches are blocking queries on a prefix;
Consul answers with the whole prefix, so each answer is diffed against the previous one.

Instances: each registers ``sc/instances/<cluster>/<node>`` by acquiring it with a
session (``Behavior=delete``, ``LockDelay=0s``), renewed every TTL/3, and rewrites the
key at each renewal (a heartbeat that moves its ModifyIndex). Consul's sessions have a
**minimum TTL of 10 s** and Consul may take up to **twice the TTL** to invalidate an
expired session, so a dead instance's key can linger 10-20 s; the peer list does not
wait for that: a key whose heartbeat has not moved for 3/4 of the TTL (two missed
renewals) is left out, so a killed instance leaves the peer lists within the TTL. A clean
stop destroys the session and the key goes at once.

Deletions: Consul's answers carry no deletion index, so the deleting transaction also
writes a mark, ``sc/projects/<cluster>/.deleted/<id>`` (ids never start with ``.``, and
nested keys are never taken for projects); its ModifyIndex is the deletion's revision.
A put through /v1/txn removes it; a mark left behind is ignored, as only a mark newer
than the watch's last answer counts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import secrets
from collections.abc import AsyncIterator, Mapping
from typing import Any

from app.settings import ConsulSettings
from app.stores.base import (
    ABSENT,
    CONSUL_VALUE_LIMIT,
    ProjectChange,
    ProjectListing,
    ProjectNotFound,
    PutResult,
    RevisionMismatch,
    StoredProject,
    StoreError,
    StoreUnavailable,
    ValueTooLarge,
    WatchReset,
    instances_prefix,
    projects_prefix,
)
from app.stores.consul_client import ConsulClient, ConsulResponse, kv_path

log = logging.getLogger(__name__)

MIN_SESSION_TTL = 10
#: /v1/txn refuses bodies over ``txn_max_req_len`` (512 KiB by default); values travel
#: base64-encoded, so larger ones are written with a plain KV PUT instead.
TXN_VALUE_LIMIT = 360 * 1024
#: A blocking query that came back without a change waits at least this long before
#: the next one, so a misbehaving server cannot make the loop spin.
MIN_QUERY_INTERVAL = 0.1
CAS_ATTEMPTS = 20
#: Where a deletion leaves its mark, under the projects prefix: ids never start with ".".
DELETION_MARKS = ".deleted/"
RETRY_DELAYS = (0.5, 1.0, 2.0)


class ConsulStore:
    """:class:`app.stores.base.Store` over Consul's HTTP API."""

    kind = "consul"
    value_limit = CONSUL_VALUE_LIMIT

    def __init__(
        self,
        settings: ConsulSettings,
        cluster_id: str,
        *,
        instance_ttl: int = 10,
        timeout: float = 5.0,
        watch_wait: float = 10.0,
    ) -> None:
        self.settings = settings
        self.cluster_id = cluster_id
        self.instance_ttl = max(instance_ttl, MIN_SESSION_TTL)
        self.timeout = timeout
        self.watch_wait = watch_wait
        self._projects = projects_prefix(cluster_id)
        self._instances = instances_prefix(cluster_id)
        self._client: ConsulClient | None = None
        self._registration: _Registration | None = None

    # --- lifecycle ----------------------------------------------------------------

    async def open(self) -> None:
        if self._client is None:
            self._client = ConsulClient(self.settings, self.timeout)

    async def close(self) -> None:
        if self._registration is not None:
            with contextlib.suppress(StoreError):
                await self.deregister()
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def check(self) -> None:
        """Read the projects prefix's own key: Consul checks ``key_prefix`` read on it
        (a recursive list would only filter out what the token may not see)."""
        await self._http("GET", kv_path(self._projects), expect=(200, 404))

    async def current_revision(self) -> int:
        """Consul's KV index now: a one-key read answers the KV table's highest index,
        which no ModifyIndex under the prefix can pass."""
        return (await self._http("GET", kv_path(self._projects), expect=(200, 404))).index

    @property
    def client(self) -> ConsulClient:
        if self._client is None:
            raise StoreError("the Consul store is not open")
        return self._client

    async def _http(self, method: str, path: str, **kwargs: Any) -> ConsulResponse:
        return await self.client.request(method, path, **kwargs)

    # --- projects -----------------------------------------------------------------

    async def list_projects(self) -> ProjectListing:
        entries, index = await self._list(self._projects)
        return ProjectListing(_projects(entries, self._projects), index)

    async def put_project(
        self, project_id: str, value: bytes, expected_revision: int | None = None
    ) -> PutResult:
        if len(value) > self.value_limit:
            raise ValueTooLarge(len(value), self.value_limit)
        if len(value) <= TXN_VALUE_LIMIT:
            result = await self._put_txn(project_id, value, expected_revision)
            if result is not None:
                return result
        return await self._put_plain(project_id, value, expected_revision)

    async def delete_project(self, project_id: str, expected_revision: int | None = None) -> int:
        key = self._projects + project_id
        cas = expected_revision
        for _ in range(CAS_ATTEMPTS):
            if cas is None:
                cas = await self._existing(project_id)
            mark = self._deletion_mark(project_id)
            ops = [_kv("check-index", key, Index=cas), _kv("delete", key), _kv("set", mark)]
            results = await self._txn(ops)
            if results is not None:
                return _entry(results, mark)["ModifyIndex"]
            actual = await self._existing(project_id)
            if expected_revision is not None:
                raise RevisionMismatch(project_id, expected_revision, actual)
            cas = actual
        raise StoreUnavailable(f"project {project_id!r} kept changing while deleting it")

    async def watch_projects(self, since: ProjectListing) -> AsyncIterator[list[ProjectChange]]:
        known = dict(since.projects)
        index = max(1, since.revision)
        while True:
            started = asyncio.get_running_loop().time()
            entries, new_index = await self._list(self._projects, index=index)
            if new_index < index:
                raise WatchReset(f"Consul's index went back from {index} to {new_index}")
            current = _projects(entries, self._projects)
            marks = _deletion_marks(entries, self._projects)
            changes = _puts(known, current)
            taken = {change.revision for change in changes}
            # Longest ids first: a shorter id's tombstone probe also covers the longer ones.
            for project_id in sorted(known.keys() - current.keys(), key=len, reverse=True):
                revision = marks.get(project_id, 0)
                if not index < revision <= new_index or revision in taken:
                    revision = await self._deletion_revision(
                        project_id, current, index, new_index, taken
                    )
                taken.add(revision)
                changes.append(ProjectChange("delete", project_id, revision))
            changes.sort(key=lambda change: (change.revision, change.id))
            known, index = current, new_index
            if changes:
                yield changes
            else:
                await _pace(started)

    def _deletion_mark(self, project_id: str) -> str:
        """``<prefix>.deleted/<id>``: written in the deleting transaction, so its
        ModifyIndex is the deletion's index (a nested key is never taken for a project)."""
        return f"{self._projects}{DELETION_MARKS}{project_id}"

    async def _tombstone_index(self, project_id: str) -> int:
        """The newest index among the keys that start with this project's key and their
        tombstones: the project's deletion index unless another id extends this one."""
        response = await self._http(
            "GET", kv_path(self._projects + project_id), params={"keys": ""}, expect=(200, 404)
        )
        return max(1, response.index)

    async def _deletion_revision(
        self,
        project_id: str,
        current: Mapping[str, StoredProject],
        after: int,
        upto: int,
        taken: set[int],
    ) -> int:
        """The raft index of a deletion without a mark (made by another Consul client),
        seen between indexes ``after`` and ``upto``.

        Consul's answer carries the prefix's index, not the deletion's, and labelling a
        deletion with it would put it after (or on) puts that followed it in the same
        answer. The tombstone probe gives the exact index unless a longer id starting with
        this one changed since; then the highest free index in the window keeps the batch's
        revisions unique and inside it.
        """
        probe = await self._tombstone_index(project_id)
        longer = {p.revision for other, p in current.items() if other.startswith(project_id)}
        if after < probe <= upto and probe not in taken and probe not in longer:
            return probe
        return next((r for r in range(upto, after, -1) if r not in taken), upto)

    async def _put_txn(
        self, project_id: str, value: bytes, expected: int | None
    ) -> PutResult | None:
        """One transaction: its result carries the new ModifyIndex. None: body too large."""
        key = self._projects + project_id
        fields = {"Value": base64.b64encode(value).decode(), "Flags": _nonce()}
        if expected is None:
            op = _kv("set", key, **fields)
        else:
            op = _kv("cas", key, Index=expected, **fields)
        try:
            results = await self._txn([op, _kv("delete", self._deletion_mark(project_id))])
        except _TooLarge:
            return None
        if results is None:
            assert expected is not None
            raise RevisionMismatch(project_id, expected, await self._current(project_id))
        entry = _entry(results, key)
        return PutResult(entry["ModifyIndex"], entry["CreateIndex"] == entry["ModifyIndex"])

    async def _put_plain(self, project_id: str, value: bytes, expected: int | None) -> PutResult:
        """A KV PUT with ``cas``, then a read: the PUT answers only ``true``. A random
        ``flags`` value tells whether the entry read back is still this write."""
        key = self._projects + project_id
        nonce = _nonce()
        for _ in range(CAS_ATTEMPTS):
            cas = expected if expected is not None else await self._current(project_id)
            response = await self._http(
                "PUT",
                kv_path(key),
                params={"cas": cas or ABSENT, "flags": nonce},
                content=value,
                expect=(200, 413),
            )
            if response.status == 413:
                raise ValueTooLarge(len(value), _limit_in(response) or self.value_limit)
            if response.json() is True:
                return PutResult(await self._written_revision(key, nonce), not cas)
            if expected is not None:
                raise RevisionMismatch(project_id, expected, await self._current(project_id))
        raise StoreUnavailable(f"project {project_id!r} kept changing while writing it")

    async def _written_revision(self, key: str, nonce: int) -> int:
        response = await self._http("GET", kv_path(key), expect=(200, 404))
        if response.status == 200:
            entry = response.json()[0]
            if entry["Flags"] == nonce:
                return entry["ModifyIndex"]
            # Overwritten already: this write's index lies just below the newer one.
            return entry["ModifyIndex"] - 1
        return response.index - 1

    async def _existing(self, project_id: str) -> int:
        revision = await self._current(project_id)
        if revision is None:
            raise ProjectNotFound(project_id)
        return revision

    async def _current(self, project_id: str) -> int | None:
        """The project's ModifyIndex, None when it does not exist."""
        response = await self._http("GET", kv_path(self._projects + project_id), expect=(200, 404))
        return response.json()[0]["ModifyIndex"] if response.status == 200 else None

    async def _txn(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """Run a transaction: its results, or None when a check or ``cas`` failed."""
        response = await self._http("PUT", "/v1/txn", json=ops, expect=(200, 409, 413))
        if response.status == 413:
            raise _TooLarge
        body = response.json()
        if response.status == 200:
            return body.get("Results") or []
        errors = "; ".join(dict.fromkeys(e.get("What", "") for e in body.get("Errors") or []))
        if "Permission denied" in errors or "ACL not found" in errors:
            raise self.client.acl_error(f"409 {errors}", f"a write under {self._projects}")
        return None

    async def _list(
        self, prefix: str, index: int | None = None, wait: float | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """Every entry under ``prefix`` and the prefix's index (at least 1); blocking
        until the index passes ``index`` (at most ``wait`` s) when one is given."""
        params: dict[str, str | int] = {"recurse": ""}
        if index is not None:
            params["index"] = index
            wait = wait or self.watch_wait
        response = await self._http(
            "GET", kv_path(prefix), params=params, wait=wait, expect=(200, 404)
        )
        entries = response.json() if response.status == 200 else []
        return entries or [], max(1, response.index)

    # --- instances ----------------------------------------------------------------

    async def register(self, node_id: str, record: bytes) -> None:
        """Acquire the instance key with a new session, and keep both alive.

        Calling it again (for the same node) reuses the session and restarts the keeper.
        """
        registration = self._registration
        if registration is not None and registration.node_id != node_id:
            await self.deregister()
            registration = None
        if registration is None:
            registration = _Registration(self, node_id, self._instances + node_id)
            self._registration = registration
        await registration.start(record)

    async def update_registration(self, record: bytes) -> None:
        if self._registration is None:
            raise StoreError("update_registration() before register()")
        await self._registration.update(record)

    async def deregister(self) -> None:
        registration, self._registration = self._registration, None
        if registration is not None:
            await registration.stop()

    async def watch_instances(self) -> AsyncIterator[dict[str, bytes]]:
        """The live instances now and after every change. An index that goes backwards
        only restarts the blocking queries from 0: each answer is a full map anyway.

        Live means held by a session and heartbeating: a key whose ModifyIndex has not
        moved for 3/4 of the TTL (two missed heartbeats) belongs to a dead instance whose
        session Consul has not invalidated yet. The queries wait at most TTL/4, so that is
        noticed within the TTL even when nothing else changes.
        """
        heartbeats = _Heartbeats(silence=0.75 * self.instance_ttl)
        entries, index = await self._list(self._instances)
        current = heartbeats.live(_instance_entries(entries, self._instances), self._own_node)
        yield dict(current)
        while True:
            started = asyncio.get_running_loop().time()
            entries, new_index = await self._list(
                self._instances, index=index, wait=min(self.watch_wait, self.instance_ttl / 4)
            )
            index = new_index if new_index >= index else 0
            instances = heartbeats.live(_instance_entries(entries, self._instances), self._own_node)
            if instances != current:
                current = instances
                yield dict(current)
            else:
                await _pace(started)

    @property
    def _own_node(self) -> str | None:
        return self._registration.node_id if self._registration is not None else None


class _Heartbeats:
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

    def __init__(self, store: ConsulStore, node_id: str, key: str) -> None:
        self.store = store
        self.node_id = node_id
        self.key = key
        self.record = b""
        self.session: str | None = None
        self.stored = False  # the key holds self.record under self.session
        self.lock = asyncio.Lock()
        self.wake = asyncio.Event()
        self.keeper: asyncio.Task[None] | None = None

    @property
    def ttl(self) -> int:
        return self.store.instance_ttl

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
            await self.store._http("PUT", f"/v1/session/destroy/{session}")

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
        response = await self.store._http(
            "PUT",
            "/v1/session/create",
            json={
                "Name": f"space-cloud {self.store.cluster_id}/{self.node_id}",
                "Behavior": "delete",
                "TTL": f"{self.ttl}s",
                "LockDelay": "0s",
            },
        )
        return response.json()["ID"]

    async def renew(self) -> bool:
        response = await self.store._http(
            "PUT", f"/v1/session/renew/{self.session}", expect=(200, 404)
        )
        return response.status == 200

    async def acquire(self) -> bool:
        # A new Flags value makes every write move the ModifyIndex, even with the same record.
        response = await self.store._http(
            "PUT",
            kv_path(self.key),
            params={"acquire": self.session or "", "flags": _nonce()},
            content=self.record,
        )
        return response.json() is True


class _TooLarge(Exception):
    """The transaction body is over the server's ``txn_max_req_len``."""


def _nonce() -> int:
    """A random ``Flags`` value: Consul skips a write equal to the stored entry (keeping
    its old ModifyIndex), so every put differs, gets a new revision, and tells by
    ``CreateIndex == ModifyIndex`` whether it created the key."""
    return secrets.randbits(63) | 1


def _kv(verb: str, key: str, **fields: Any) -> dict[str, Any]:
    return {"KV": {"Verb": verb, "Key": key, **fields}}


def _entry(results: list[dict[str, Any]], key: str) -> dict[str, Any]:
    return next(result["KV"] for result in results if result.get("KV", {}).get("Key") == key)


def _limit_in(response: ConsulResponse) -> int | None:
    found = re.search(rb"max size: (\d+)", response.content)
    return int(found.group(1)) if found else None


def _value(entry: Mapping[str, Any]) -> bytes:
    return base64.b64decode(entry["Value"]) if entry.get("Value") else b""


def _child(key: str, prefix: str) -> str | None:
    """The id of a key directly under ``prefix``; None for the prefix or deeper keys."""
    name = key.removeprefix(prefix)
    return name if name and "/" not in name and key.startswith(prefix) else None


def _projects(entries: list[dict[str, Any]], prefix: str) -> dict[str, StoredProject]:
    """Every key under ``prefix`` but the deletion marks: the sync layer judges them."""
    projects = {}
    for entry in entries:
        project_id = entry["Key"].removeprefix(prefix)
        if project_id and not project_id.startswith(DELETION_MARKS):
            projects[project_id] = StoredProject(project_id, _value(entry), entry["ModifyIndex"])
    return projects


def _deletion_marks(entries: list[dict[str, Any]], prefix: str) -> dict[str, int]:
    """Project id -> index of its last deletion by a gateway, from the marks under prefix."""
    marks_prefix = prefix + DELETION_MARKS
    return {
        entry["Key"].removeprefix(marks_prefix): entry["ModifyIndex"]
        for entry in entries
        if entry["Key"].startswith(marks_prefix)
    }


def _instance_entries(entries: list[dict[str, Any]], prefix: str) -> dict[str, tuple[bytes, int]]:
    """Keys held by a session (a live instance's key never exists without one), with
    their ModifyIndex."""
    instances = {}
    for entry in entries:
        node_id = _child(entry["Key"], prefix)
        if node_id is not None and entry.get("Session"):
            instances[node_id] = (_value(entry), int(entry["ModifyIndex"]))
    return instances


def _puts(
    before: Mapping[str, StoredProject], after: Mapping[str, StoredProject]
) -> list[ProjectChange]:
    """A put for every project that is new or has a newer revision in ``after``."""
    changes = []
    for project_id, project in after.items():
        old = before.get(project_id)
        if old is not None and project.revision < old.revision:
            raise WatchReset(f"project {project_id!r} went back to revision {project.revision}")
        if old is None or project.revision > old.revision:
            changes.append(ProjectChange("put", project_id, project.revision, project.value))
    return changes


async def _pace(started: float) -> None:
    elapsed = asyncio.get_running_loop().time() - started
    if elapsed < MIN_QUERY_INTERVAL:
        await asyncio.sleep(MIN_QUERY_INTERVAL - elapsed)
