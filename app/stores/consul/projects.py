"""Projects in Consul's KV store: conditional writes through ``/v1/txn``, and a watch that
diffs each answer of a blocking query against the one before.

Revisions are Consul's ``ModifyIndex`` (per key) and ``X-Consul-Index`` (per prefix):
raft indexes, cluster-wide and only growing.

Every write is one transaction, whose result carries the write's own ModifyIndex, and
which also writes the write's version (:mod:`app.stores.consul.history`); the value limit
is therefore what a transaction holding the project twice takes (:data:`CONSUL_VALUE_LIMIT`).

Deletions: Consul's answers carry no deletion index, so the deleting transaction also
writes a mark, ``sc/projects/<cluster>/.deleted/<id>`` (ids never start with ``.``, and
nested keys are never taken for projects); its ModifyIndex is the deletion's revision.
A put removes it; a mark left behind is ignored, as only a mark newer than the watch's
last answer counts.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
from collections.abc import AsyncGenerator, Mapping
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
    StoredProject,
    StoreUnavailable,
    ValueTooLarge,
    VersionCounts,
    VersionStamp,
    WatchReset,
    encode_version,
    projects_prefix,
)
from app.stores.consul.client import (
    ClientSource,
    ConsulResponse,
    entry_value,
    kv_path,
    pace,
)
from app.stores.consul.history import ConsulHistory, VersionSlot

CAS_ATTEMPTS = 20
#: Where a deletion leaves its mark, under the projects prefix: ids never start with ".".
DELETION_MARKS = ".deleted/"


class ConsulProjects:
    """One cluster's projects under ``sc/projects/<cluster>/``."""

    def __init__(
        self, client: ClientSource, cluster_id: str, keep_versions: int = DEFAULT_PROJECT_VERSIONS
    ) -> None:
        self._client = client
        self.prefix = projects_prefix(cluster_id)
        self.history = ConsulHistory(client, cluster_id, keep_versions)
        self.version_counts = VersionCounts()

    async def listing(self) -> ProjectListing:
        entries, index = await self._client().list_prefix(self.prefix)
        return ProjectListing(_projects(entries, self.prefix), index)

    async def put(
        self, project_id: str, value: bytes, expected: int | None, stamp: VersionStamp
    ) -> PutResult:
        """One transaction: the (conditional) write, the removal of a deletion mark, and
        the write's version."""
        if len(value) > CONSUL_VALUE_LIMIT:
            raise ValueTooLarge(len(value), CONSUL_VALUE_LIMIT)
        key = self.prefix + project_id
        fields = {"Value": _base64(value), "Flags": _nonce()}
        if expected is None:
            op = _kv("set", key, **fields)
        else:
            op = _kv("cas", key, Index=expected, **fields)
        record = encode_version("put", stamp, value)
        ops = [op, _kv("delete", self._deletion_mark(project_id))]
        for _ in range(CAS_ATTEMPTS):
            slot = await self.history.next_slot(project_id)
            try:
                results = await self._versioned_txn(ops, slot, record)
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
            mark = self._deletion_mark(project_id)
            slot = await self.history.next_slot(project_id)
            ops = [_kv("check-index", key, Index=cas), _kv("delete", key), _kv("set", mark)]
            results = await self._versioned_txn(ops, slot, record)
            if results is not None:
                revision: int = _entry(results, mark)["ModifyIndex"]
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
        results = await self._txn([*ops, *slot.ops(_base64(record))])
        if results is not None:
            self.version_counts.written += 1
            self.version_counts.pruned += len(slot.plan.pruned)
        return results

    async def watch(self, since: ProjectListing) -> AsyncGenerator[list[ProjectChange], None]:
        known = dict(since.projects)
        index = max(1, since.revision)
        while True:
            started = asyncio.get_running_loop().time()
            entries, new_index = await self._client().list_prefix(self.prefix, index=index)
            if new_index < index:
                raise WatchReset(f"Consul's index went back from {index} to {new_index}")
            current = _projects(entries, self.prefix)
            marks = _deletion_marks(entries, self.prefix)
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
                await pace(started)

    def _deletion_mark(self, project_id: str) -> str:
        """``<prefix>.deleted/<id>``: written in the deleting transaction, so its
        ModifyIndex is the deletion's index (a nested key is never taken for a project)."""
        return f"{self.prefix}{DELETION_MARKS}{project_id}"

    async def _tombstone_index(self, project_id: str) -> int:
        """The newest index among the keys that start with this project's key and their
        tombstones: the project's deletion index unless another id extends this one."""
        response = await self._client().request(
            "GET", kv_path(self.prefix + project_id), params={"keys": ""}, expect=(200, 404)
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


def _base64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def _kv(verb: str, key: str, **fields: Any) -> dict[str, Any]:
    return {"KV": {"Verb": verb, "Key": key, **fields}}


def _entry(results: list[dict[str, Any]], key: str) -> dict[str, Any]:
    return next(result["KV"] for result in results if result.get("KV", {}).get("Key") == key)


def _projects(entries: list[dict[str, Any]], prefix: str) -> dict[str, StoredProject]:
    """Every key under ``prefix`` but the deletion marks: the sync layer judges them."""
    projects = {}
    for entry in entries:
        project_id = entry["Key"].removeprefix(prefix)
        if project_id and not project_id.startswith(DELETION_MARKS):
            projects[project_id] = StoredProject(
                project_id, entry_value(entry), entry["ModifyIndex"]
            )
    return projects


def _deletion_marks(entries: list[dict[str, Any]], prefix: str) -> dict[str, int]:
    """Project id -> index of its last deletion by a gateway, from the marks under prefix."""
    marks_prefix = prefix + DELETION_MARKS
    return {
        entry["Key"].removeprefix(marks_prefix): entry["ModifyIndex"]
        for entry in entries
        if entry["Key"].startswith(marks_prefix)
    }


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
