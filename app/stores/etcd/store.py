"""The etcd v3 store: projects and token records as keys, instances under a kept-alive
lease, and every write's version beside it in the same transaction
(:mod:`app.stores.etcd.history`).

The key layout and revisions are described in docs/design.md §3.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from aetcd import rpc
from aetcd.utils import prefix_range_end

from app.stores.base import (
    ABSENT,
    DEFAULT_PROJECT_VERSIONS,
    ETCD_VALUE_LIMIT,
    NotRegistered,
    ProjectChange,
    ProjectListing,
    ProjectNotFound,
    PutResult,
    RevisionMismatch,
    StoredProject,
    StoreError,
    StoreUnavailable,
    ValueTooLarge,
    Version,
    VersionCounts,
    VersionStamp,
    encode_version,
    histories_prefix,
    instances_prefix,
    projects_prefix,
    tokens_prefix,
)
from app.stores.etcd.client import EtcdClient
from app.stores.etcd.config import EtcdConfig
from app.stores.etcd.errors import LeaseNotFound, RequestTooLarge
from app.stores.etcd.history import EtcdHistory
from app.stores.etcd.replay import EtcdReplay

log = logging.getLogger("space_cloud.stores.etcd")

_EQUAL = rpc.Compare.CompareResult.EQUAL
_GREATER = rpc.Compare.CompareResult.GREATER
_CREATE = rpc.Compare.CompareTarget.CREATE
_MOD = rpc.Compare.CompareTarget.MOD
_DELETE = rpc.Event.EventType.DELETE
#: Tries at a free version slot before giving up (each loss means another write landed).
SLOT_ATTEMPTS = 20


@dataclass
class _Registration:
    key: bytes
    record: bytes
    lease: int | None = None
    task: asyncio.Task[None] | None = None


class EtcdStore:
    """Implements :class:`app.stores.base.Store` on an etcd v3 cluster."""

    kind = "etcd"
    value_limit = ETCD_VALUE_LIMIT

    def __init__(
        self,
        config: EtcdConfig,
        cluster_id: str,
        *,
        instance_ttl: int = 10,
        timeout: float = 5.0,
        keep_versions: int = DEFAULT_PROJECT_VERSIONS,
    ) -> None:
        self.config = config
        self._client = EtcdClient(config, timeout)
        self._history = EtcdHistory(self._client, cluster_id, keep_versions)
        self.version_counts = VersionCounts()
        self._projects = projects_prefix(cluster_id).encode()
        self._instances = instances_prefix(cluster_id).encode()
        self._tokens = tokens_prefix(cluster_id).encode()
        versions = histories_prefix(cluster_id).encode()
        self._replay = EtcdReplay(self._client, self._projects, versions, self._change)
        self._instance_ttl = instance_ttl
        self._registration: _Registration | None = None
        self._lock = asyncio.Lock()  # one change of lease/record at a time

    # --- lifecycle ----------------------------------------------------------------

    async def open(self) -> None:
        await self._client.connect()

    async def close(self) -> None:
        await self.deregister()
        await self._client.close()

    @property
    def active_endpoint(self) -> str | None:
        """The etcd member in use (``host:port``), None before :meth:`open`."""
        return self._client.active_endpoint

    async def check(self) -> None:
        await self._client.range(
            self._projects, prefix_range_end(self._projects), limit=1, keys_only=True
        )

    async def current_revision(self) -> int:
        """The store's revision now: a linearizable one-key read's header."""
        end = prefix_range_end(self._projects)
        response = await self._client.range(self._projects, end, limit=1, keys_only=True)
        return response.header.revision

    # --- projects -----------------------------------------------------------------

    def _project_key(self, project_id: str) -> bytes:
        return self._projects + project_id.encode()

    async def list_projects(self) -> ProjectListing:
        response = await self._client.range(self._projects, prefix_range_end(self._projects))
        projects = {}
        for kv in response.kvs:
            project_id = kv.key[len(self._projects) :].decode(errors="backslashreplace")
            projects[project_id] = StoredProject(project_id, kv.value, kv.mod_revision)
        return ProjectListing(projects=projects, revision=response.header.revision)

    async def put_project(
        self,
        project_id: str,
        value: bytes,
        expected_revision: int | None = None,
        stamp: VersionStamp | None = None,
    ) -> PutResult:
        if len(value) > self.value_limit:
            raise ValueTooLarge(len(value), self.value_limit)
        key = self._project_key(project_id)
        put = rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, prev_kv=True))
        record = encode_version("put", stamp or VersionStamp.unattributed(), value)
        compare = [] if expected_revision is None else [_revision_is(key, expected_revision)]
        try:
            response = await self._versioned_txn(
                project_id, compare, [put], record, idempotent=expected_revision is None
            )
        except RequestTooLarge:
            raise ValueTooLarge(len(value), self.value_limit) from None
        if not response.succeeded:
            assert expected_revision is not None
            raise RevisionMismatch(project_id, expected_revision, _found_revision(response))
        created = not response.responses[0].response_put.HasField("prev_kv")
        return PutResult(revision=response.header.revision, created=created)

    async def delete_project(
        self,
        project_id: str,
        expected_revision: int | None = None,
        stamp: VersionStamp | None = None,
    ) -> int:
        key = self._project_key(project_id)
        compare = [rpc.Compare(result=_GREATER, target=_CREATE, key=key, create_revision=0)]
        if expected_revision is not None:
            compare.append(_revision_is(key, expected_revision))
        delete = rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))
        record = encode_version("delete", stamp or VersionStamp.unattributed(), None)
        response = await self._versioned_txn(
            project_id, compare, [delete], record, idempotent=False
        )
        if not response.succeeded:
            actual = _found_revision(response)
            if actual is None:
                raise ProjectNotFound(project_id)
            assert expected_revision is not None
            raise RevisionMismatch(project_id, expected_revision, actual)
        return response.header.revision

    async def _versioned_txn(
        self,
        project_id: str,
        compare: list[rpc.Compare],
        ops: list[rpc.RequestOp],
        record: bytes,
        *,
        idempotent: bool,
    ) -> rpc.TxnResponse:
        """``ops`` under ``compare``, with the version ``record`` in a free slot and the
        prune, in one transaction; retried on a slot another writer took first. A failed
        response's first result is the project key's range (for ``_found_revision``)."""
        get = _get(self._project_key(project_id))
        for _ in range(SLOT_ATTEMPTS):
            slot = await self._history.next_slot(project_id)
            request = rpc.TxnRequest(
                compare=[*compare, *slot.compares()],
                success=[*ops, *slot.ops(record)],
                failure=[get, slot.taken()],
            )
            response = await self._client.txn(request, idempotent=idempotent)
            if response.succeeded:
                self._history.written(slot, response.header.revision)
                self.version_counts.written += 1
                self.version_counts.pruned += len(slot.plan.pruned)
                return response
            if not self._history.lost(slot, response):
                return response
        raise StoreUnavailable(f"project {project_id!r} kept changing while writing it")

    # --- versions -----------------------------------------------------------------

    async def list_versions(
        self, project_id: str, *, limit: int, before: int | None = None
    ) -> list[Version]:
        return await self._history.newest_first(project_id, limit, before)

    async def get_version(self, project_id: str, revision: int) -> Version | None:
        return await self._history.at_revision(project_id, revision)

    async def watch_projects(
        self, since: ProjectListing
    ) -> AsyncGenerator[list[ProjectChange], None]:
        async for response in self._client.watch_prefix(self._projects, since.revision + 1):
            yield [self._change(event) for event in response.events]

    async def changes_between(self, after: int, through: int) -> list[ProjectChange] | None:
        return await self._replay.changes_between(after, through)

    def _change(self, event: rpc.Event) -> ProjectChange:
        # Any key goes up (not UTF-8 too): the sync layer judges it (docs/design.md §12).
        project_id = event.kv.key[len(self._projects) :].decode(errors="backslashreplace")
        if event.type == _DELETE:
            # etcd sets a tombstone's mod_revision to the revision of the deletion.
            return ProjectChange("delete", project_id, event.kv.mod_revision)
        return ProjectChange("put", project_id, event.kv.mod_revision, event.kv.value)

    # --- instances ----------------------------------------------------------------

    async def register(self, node_id: str, record: bytes) -> None:
        key = self._instances + node_id.encode()
        if self._registration is not None and self._registration.key == key:
            # Registering again (a caller retrying) keeps the lease: no leave-and-join.
            await self.update_registration(record)
            return
        await self.deregister()
        registration = _Registration(key, record)
        async with self._lock:
            await self._grant_and_put(registration)
        self._registration = registration
        registration.task = asyncio.create_task(
            self._keep_alive(registration), name=f"etcd lease keepalive for {node_id}"
        )

    async def update_registration(self, record: bytes) -> None:
        registration = self._registration
        if registration is None:
            raise NotRegistered
        registration.record = record
        async with self._lock:
            if registration.lease is None:
                await self._grant_and_put(registration)
                return
            try:
                await self._client.put(registration.key, record, lease=registration.lease)
            except LeaseNotFound:
                await self._grant_and_put(registration)

    async def deregister(self) -> None:
        """Stop the keepalive and revoke the lease; if etcd cannot be reached the key
        still goes when the lease runs out."""
        registration, self._registration = self._registration, None
        if registration is None:
            return
        if registration.task is not None:
            registration.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await registration.task
        if registration.lease is not None:
            try:
                await self._client.lease_revoke(registration.lease)
            except StoreError as error:
                log.warning("could not revoke the instance lease (it will expire): %s", error)

    def watch_instances(self) -> AsyncGenerator[dict[str, bytes], None]:
        return self._watch_map(self._instances)

    async def _watch_map(self, prefix: bytes) -> AsyncGenerator[dict[str, bytes], None]:
        """The full map ``name under prefix -> value`` now and after every change."""
        listing = await self._client.range(prefix, prefix_range_end(prefix))
        values = {_name(kv.key, prefix): kv.value for kv in listing.kvs}
        yield dict(values)
        async for response in self._client.watch_prefix(prefix, listing.header.revision + 1):
            for event in response.events:
                name = _name(event.kv.key, prefix)
                if event.type == _DELETE:
                    values.pop(name, None)
                else:
                    values[name] = event.kv.value
            yield dict(values)

    # --- minted tokens ----------------------------------------------------------------

    async def put_token(self, token_id: str, record: bytes) -> None:
        await self._client.put(self._tokens + token_id.encode(), record)

    async def delete_token(self, token_id: str) -> bool:
        delete = rpc.DeleteRangeRequest(key=self._tokens + token_id.encode())
        request = rpc.TxnRequest(success=[rpc.RequestOp(request_delete_range=delete)])
        # Not resent: a resend after a delete that went through would answer "none".
        response = await self._client.txn(request, idempotent=False)
        return response.responses[0].response_delete_range.deleted > 0

    async def list_tokens(self) -> dict[str, bytes]:
        response = await self._client.range(self._tokens, prefix_range_end(self._tokens))
        return {_name(kv.key, self._tokens): kv.value for kv in response.kvs}

    def watch_tokens(self) -> AsyncGenerator[dict[str, bytes], None]:
        return self._watch_map(self._tokens)

    async def _grant_and_put(self, registration: _Registration) -> None:
        lease = await self._client.lease_grant(self._instance_ttl)
        await self._client.put(registration.key, registration.record, lease=lease)
        registration.lease = lease

    async def _keep_alive(self, registration: _Registration) -> None:
        interval = max(self._instance_ttl / 3, 0.5)
        retry = min(interval, 1.0)
        delay = interval
        while True:
            await asyncio.sleep(delay)
            try:
                await self._renew(registration)
            except StoreError as error:
                log.warning("could not renew the instance lease, retrying: %s", error)
                delay = retry
            else:
                delay = interval

    async def _renew(self, registration: _Registration) -> None:
        async with self._lock:
            if registration.lease is not None:
                ttl = await self._client.lease_keepalive(registration.lease)
                if ttl > 0:
                    return
                log.warning("the instance lease was lost; registering again")
            await self._grant_and_put(registration)


def _revision_is(key: bytes, expected_revision: int) -> rpc.Compare:
    if expected_revision == ABSENT:
        return rpc.Compare(result=_EQUAL, target=_CREATE, key=key, create_revision=0)
    return rpc.Compare(result=_EQUAL, target=_MOD, key=key, mod_revision=expected_revision)


def _name(key: bytes, prefix: bytes) -> str:
    return key[len(prefix) :].decode()


def _get(key: bytes) -> rpc.RequestOp:
    return rpc.RequestOp(request_range=rpc.RangeRequest(key=key))


def _found_revision(response: rpc.TxnResponse) -> int | None:
    """The mod_revision the failure branch's range found, None if the key is missing."""
    kvs = response.responses[0].response_range.kvs
    return kvs[0].mod_revision if kvs else None
