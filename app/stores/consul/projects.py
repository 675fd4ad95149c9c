"""Projects in Consul's KV store: conditional writes through ``/v1/txn``, and the listing.

Revisions are Consul's ``ModifyIndex`` (per key) and ``X-Consul-Index`` (per prefix):
raft indexes, cluster-wide and only growing.

Every write is one transaction, whose result carries the write's own ModifyIndex, and
which also writes the write's version (:mod:`app.stores.consul.history`) and its entry in
the change log (:mod:`app.stores.consul.changelog`) that watches read
(:mod:`app.stores.consul.watch`); the value limit is therefore what a transaction holding
the project twice takes (:data:`CONSUL_VALUE_LIMIT`). A deletion also writes its mark
(:mod:`app.stores.consul.listing`).

A listing is labelled with the KV store's index read just before it, not the prefix's
own: every write up to that index is in the listing, so a watch from it needs only the
log's entries after it, even those of writes whose keys were deleted since.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncGenerator
from typing import Any

import orjson

from app.stores.base import (
    CONSUL_VALUE_LIMIT,
    DEFAULT_PROJECT_VERSIONS,
    ProjectChange,
    ProjectListing,
    ProjectNotFound,
    PutResult,
    RevisionMismatch,
    StoreUnavailable,
    ValueTooLarge,
    VersionCounts,
    VersionStamp,
    encode_version,
    projects_prefix,
)
from app.stores.consul.changelog import ChangeLog, VersionGone
from app.stores.consul.client import ClientSource, ConsulResponse, kv_path, txn_value
from app.stores.consul.history import ConsulHistory, VersionSlot
from app.stores.consul.listing import deletion_mark, stored_projects
from app.stores.consul.watch import VERIFY_SECONDS, ForeignChanges, ProjectWatch

CAS_ATTEMPTS = 20


class ConsulProjects:
    """One cluster's projects under ``sc/projects/<cluster>/``."""

    def __init__(
        self,
        client: ClientSource,
        cluster_id: str,
        keep_versions: int = DEFAULT_PROJECT_VERSIONS,
        verify_seconds: float = VERIFY_SECONDS,
    ) -> None:
        self._client = client
        self.prefix = projects_prefix(cluster_id)
        self.history = ConsulHistory(client, cluster_id, keep_versions)
        self.log = ChangeLog(client, cluster_id)
        self.version_counts = VersionCounts()
        self.foreign = ForeignChanges()
        self.verify_seconds = verify_seconds
        #: The revision of the last listing: the watch vouches for the changes after it.
        self.listed_at: int | None = None

    async def current_revision(self) -> int:
        """Consul's KV index now: a one-key read answers the KV table's highest index."""
        return (await self._client().request("GET", kv_path(self.prefix), expect=(200, 404))).index

    async def listing(self) -> ProjectListing:
        before = await self.current_revision()
        entries, index = await self._client().list_prefix(self.prefix)
        listing = ProjectListing(stored_projects(entries, self.prefix), max(index, before))
        await self._check_listing(entries, index, listing.revision)
        self.listed_at = listing.revision
        return listing

    async def _check_listing(self, entries: list[dict[str, Any]], index: int, at: int) -> None:
        """A key (or, by the prefix's index, a tombstone) at a revision the log does not
        hold is a change by another client, made while no watch ran: no replay may pass
        over it, so the log's foreign mark records it."""
        log = await self.log.read(0, archive=True)
        logged = log.revisions()
        revisions = {entry["ModifyIndex"] for entry in entries} | {index}
        await self.log.record_foreign(
            r for r in revisions if log.complete_since < r <= at and r not in logged
        )

    async def put(
        self, project_id: str, value: bytes, expected: int | None, stamp: VersionStamp
    ) -> PutResult:
        """One transaction: the (conditional) write, its version and its log entry."""
        if len(value) > CONSUL_VALUE_LIMIT:
            raise ValueTooLarge(len(value), CONSUL_VALUE_LIMIT)
        key = self.prefix + project_id
        fields = {"Value": txn_value(value), "Flags": _nonce()}
        if expected is None:
            op = _kv("set", key, **fields)
        else:
            op = _kv("cas", key, Index=expected, **fields)
        record = encode_version("put", stamp, value)
        for _ in range(CAS_ATTEMPTS):
            slot = await self.history.next_slot(project_id)
            logged = self.log.entry_op("put", project_id, slot.plan.slot)
            last = self.log.last_value_op(value, _nonce())
            try:
                results = await self._versioned_txn([op, logged, *last], slot, record)
            except _TooLarge as too_large:
                limit = too_large.value_limit(len(value), len(record))
                raise ValueTooLarge(len(value), limit) from None
            if results is not None:
                entry = _entry(results, key)
                self.history.written(slot, entry["ModifyIndex"])
                return PutResult(entry["ModifyIndex"], entry["CreateIndex"] == entry["ModifyIndex"])
            if await self.history.lost(slot):
                continue
            assert expected is not None
            raise RevisionMismatch(project_id, expected, await self._current(project_id))
        raise StoreUnavailable(f"project {project_id!r} kept changing while writing it")

    async def delete(self, project_id: str, expected: int | None, stamp: VersionStamp) -> int:
        key = self.prefix + project_id
        record = encode_version("delete", stamp, None)
        cas = expected
        for _ in range(CAS_ATTEMPTS):
            if cas is None:
                cas = await self._existing(project_id)
            mark = deletion_mark(self.prefix, project_id)
            slot = await self.history.next_slot(project_id)
            logged = self.log.entry_op("delete", project_id, slot.plan.slot)
            ops = [
                _kv("check-index", key, Index=cas),
                _kv("delete", key),
                # A put no longer removes the mark: a new Flags value makes Consul write it.
                _kv("set", mark, Flags=_nonce()),
                logged,
            ]
            results = await self._versioned_txn(ops, slot, record)
            if results is not None:
                revision: int = _entry(results, logged["KV"]["Key"])["ModifyIndex"]
                self.history.written(slot, revision)
                return revision
            if await self.history.lost(slot):
                continue
            actual = await self._existing(project_id)
            if expected is not None:
                raise RevisionMismatch(project_id, expected, actual)
            cas = actual
        raise StoreUnavailable(f"project {project_id!r} kept changing while deleting it")

    async def _versioned_txn(
        self, ops: list[dict[str, Any]], slot: VersionSlot, record: bytes
    ) -> list[dict[str, Any]] | None:
        results = await self._txn([*ops, *slot.ops(txn_value(record))])
        if results is not None:
            self.version_counts.written += 1
            self.version_counts.pruned += len(slot.plan.pruned)
        return results

    def watch(self, since: ProjectListing) -> AsyncGenerator[list[ProjectChange], None]:
        watch = ProjectWatch(
            self._client, self.prefix, self.log, since, self.foreign, self.verify_seconds
        )
        return watch.changes()

    async def changes_between(self, after: int, through: int) -> list[ProjectChange] | None:
        """From the change log: None when it no longer holds every entry of the range, a
        version is gone, or a change by another client may lie in it (the log holds only
        the gateway's writes). Up to the last listing, the log's foreign mark and the
        checks of the listings vouch for the range; after it, this store's own watch
        (:class:`ForeignChanges`)."""
        listed = self.listed_at
        if listed is None:
            return None
        if through > listed and not self.foreign.vouch(max(after, listed), through):
            return None
        log = await self.log.read(after, archive=True)
        if after < log.complete_since or not log.foreign.clear(after, through):
            return None
        try:
            return await self.log.changes(log.after(after, through=through), log.last)
        except VersionGone:
            return None

    async def _existing(self, project_id: str) -> int:
        revision = await self._current(project_id)
        if revision is None:
            raise ProjectNotFound(project_id)
        return revision

    async def _current(self, project_id: str) -> int | None:
        """The project's ModifyIndex, None when it does not exist."""
        response = await self._client().request(
            "GET", kv_path(self.prefix + project_id), expect=(200, 404)
        )
        return response.json()[0]["ModifyIndex"] if response.status == 200 else None

    async def _txn(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """Run a transaction: its results, or None when a check or ``cas`` failed."""
        client = self._client()
        body = orjson.dumps(ops)
        response = await client.request("PUT", "/v1/txn", content=body, expect=(200, 409, 413))
        if response.status == 413:
            raise _TooLarge(response, len(body))
        body = response.json()
        if response.status == 200:
            return body.get("Results") or []
        errors = "; ".join(dict.fromkeys(e.get("What", "") for e in body.get("Errors") or []))
        if "Permission denied" in errors or "ACL not found" in errors:
            raise client.acl_error(f"409 {errors}", f"a write under {self.prefix}")
        return None


class _TooLarge(Exception):
    """Consul refused a transaction for its size (its own limits are set lower)."""

    def __init__(self, response: ConsulResponse, body_size: int) -> None:
        self.message = response.content.decode(errors="replace")
        self.body_size = body_size

    def value_limit(self, value_size: int, record_size: int) -> int:
        """The largest project this request could have carried, from Consul's answer:
        ``(N > M bytes)`` names the limit of one value (the version record, the largest),
        ``max size: M`` the body's, in which the project is base64-encoded twice."""
        if found := re.search(r"\(\d+ > (\d+) bytes\)", self.message):
            return max(0, int(found.group(1)) - (record_size - value_size))
        if found := re.search(r"max size: (\d+)", self.message):
            excess = self.body_size - int(found.group(1))
            # base64: 4 characters per 3 bytes, twice; 8 spare for the two paddings.
            return max(0, value_size - (excess * 3 + 7) // 8 - 8)
        return CONSUL_VALUE_LIMIT


def _nonce() -> int:
    """A random ``Flags`` value: Consul skips a write equal to the stored entry (keeping
    its old ModifyIndex), so every put differs, gets a new revision, and tells by
    ``CreateIndex == ModifyIndex`` whether it created the key."""
    return secrets.randbits(63) | 1


def _kv(verb: str, key: str, **fields: Any) -> dict[str, Any]:
    return {"KV": {"Verb": verb, "Key": key, **fields}}


def _entry(results: list[dict[str, Any]], key: str) -> dict[str, Any]:
    return next(result["KV"] for result in results if result.get("KV", {}).get("Key") == key)
