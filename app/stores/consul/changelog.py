"""The change log: one small key per gateway write, so a watch reads what changed, not
every project.

A blocking query on the projects prefix answers every project of the cluster, and only
the latest version of each: a watch that diffed those answers downloaded the cluster for
each change and lost versions written between two of its queries. So every write's
transaction (:mod:`app.stores.consul.projects`) also creates one entry under
``sc/changes/<cluster>/``, whose ModifyIndex is the write's revision (one transaction,
one raft index). The entry has no value: its name says everything,
``<8 random hex>.<op>.<slot>.<project>``, the random part so that a name is never taken
twice (``cas`` index 0: only if absent), even if the project's history was wiped by hand
and its slots start again. The project's value is in the version the same transaction
wrote at ``sc/history/<cluster>/<project>/<slot>`` (:mod:`app.stores.consul.history`).
A put of at most :data:`LAST_VALUE_LIMIT` bytes also sets ``.last`` to its value, so a
watch one write behind (the usual case) finds the value in the log's own answer; for
others it reads the versions, up to 64 in one read-only transaction.

Against the value limit: the entry's op costs about as much of the transaction body as
the removal of the deletion mark that puts no longer make (a mark left behind is
ignored), and ``.last`` is only written beside small values, so the largest transaction
is what it was and :data:`~app.stores.base.CONSUL_VALUE_LIMIT` stays where it was.

The log is short, as every watch reads it at every write: an answer of 512 entries (~70
KB, gzipped by Consul) cost Consul and each instance ~3 ms of CPU per write on the 2-core
build machine (docs/design.md §3). A watch that sees more than ``2 * LOG_KEEP`` entries
moves the oldest beyond the newest ``LOG_KEEP`` to the archive
(:mod:`app.stores.consul.archive`), in one transaction that also raises ``.moved``
(check-and-set on its index: of several instances pruning at once, one moves), so that a
watch behind it reads the archive too. The archive is pruned in turn, after raising
``.pruned`` (the highest revision gone for good, only ever raised, with a ``cas`` loop):
a watch behind that lists again.

The log holds only the gateway's writes. So that a replay (``changes_between``) never
passes over another client's change, ``.foreign`` holds the revisions at which one was
seen (:class:`~app.stores.consul.foreign.ForeignMark`, with the same ``cas`` loop): by a
watch's listing diff, or by a listing in which a project or tombstone is at a revision
the log does not hold (a change made while no watch ran).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from app.stores.base import (
    ProjectChange,
    StoreError,
    WatchReset,
    history_prefix,
)
from app.stores.consul.archive import Archive, ArchiveSnapshot
from app.stores.consul.client import ClientSource, entry_value, kv_path, txn_value
from app.stores.consul.foreign import ForeignMark
from app.stores.slots import SLOT_DIGITS

#: How many entries a pruning leaves in the log (the older go to the archive). Pruning
#: starts at twice as many, so it runs once per LOG_KEEP writes. A log answer of 32
#: entries is ~5 KB, where 512 were ~70 KB (Consul's and each instance's CPU per read).
LOG_KEEP = 16
#: The markers under the log prefix (entry names never start with "."): the highest
#: revision moved to the archive, and the highest gone from it.
MOVED_MARKER = ".moved"
PRUNED_MARKER = ".pruned"
#: The revisions of changes by other clients that a watch or a listing saw.
FOREIGN_MARKER = ".foreign"
#: The newest small put's value, beside the entries: a watch one write behind needs no
#: version read. Larger values are left to their versions, so that the largest
#: transaction (and the value limit) stays what it was.
LAST_VALUE = ".last"
LAST_VALUE_LIMIT = 4096
#: Consul takes at most 64 operations per transaction.
MAX_TXN_OPS = 64
_MARKER_ATTEMPTS = 20

Op = Literal["put", "delete"]


def changes_prefix(cluster_id: str) -> str:
    return f"sc/changes/{cluster_id}/"


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One gateway write as the log names it; ``revision`` is the entry's ModifyIndex."""

    revision: int
    op: Op
    project_id: str
    slot: str

    @classmethod
    def parse(cls, prefix: str, entry: dict[str, Any]) -> LogEntry | None:
        """None for the marker and for keys another tool put under the log."""
        parts = entry["Key"].removeprefix(prefix).split(".", 3)
        if len(parts) != 4 or parts[1] not in ("put", "delete") or not parts[2].isdigit():
            return None
        op: Op = "put" if parts[1] == "put" else "delete"
        slot = parts[2].zfill(SLOT_DIGITS)
        return cls(entry["ModifyIndex"], op, parts[3], slot)


def entry_op(prefix: str, op: Op, project_id: str, slot: str) -> dict[str, Any]:
    """The transaction op that logs a write (a fresh name at every attempt)."""
    name = f"{secrets.token_hex(4)}.{op}.{int(slot)}.{project_id}"
    return {"KV": {"Verb": "cas", "Key": prefix + name, "Index": 0}}


@dataclass(frozen=True, slots=True)
class LogSnapshot:
    """One answer of the log: its entries after a revision, in revision order, the
    prefix's index (every entry up to it is there, unless pruned), the highest pruned
    revision, and every entry as Consul listed it (for pruning)."""

    entries: list[LogEntry]
    index: int
    pruned: int
    listed: list[dict[str, Any]] = field(default_factory=list)
    #: ``.last``: (its revision, the value that put wrote).
    last: tuple[int, bytes] | None = None
    foreign: ForeignMark = field(default_factory=ForeignMark)
    #: Every gateway write after this revision is in the answer: the highest pruned, or
    #: just before the oldest entry (writes before the log began are not).
    complete_since: int = 0
    #: ``.moved``: (its index, its value).
    moved: tuple[int, int] = (0, 0)

    def after(self, revision: int, through: int | None = None) -> list[LogEntry]:
        return [
            e
            for e in self.entries
            if e.revision > revision and (through is None or e.revision <= through)
        ]

    def revisions(self) -> set[int]:
        return {entry.revision for entry in self.entries}


class VersionGone(WatchReset):
    """A logged put's version is no longer kept (pruned by newer writes of its project):
    the watch is too far behind to read it and lists again."""


class ChangeLog:
    """One cluster's change log under ``sc/changes/<cluster>/``."""

    def __init__(self, client: ClientSource, cluster_id: str, keep: int = LOG_KEEP) -> None:
        self._client = client
        self._cluster_id = cluster_id
        self.prefix = changes_prefix(cluster_id)
        self.keep = keep
        self.archive = Archive(client, cluster_id)
        self._moved_since_check = 0
        #: Every instance reads every entry, but one move is enough: each waits for a
        #: different number of extra entries, so the first usually moves alone.
        self._slack = secrets.randbelow(max(1, keep))

    def entry_op(self, op: Op, project_id: str, slot: str) -> dict[str, Any]:
        return entry_op(self.prefix, op, project_id, slot)

    def last_value_op(self, value: bytes, flags: int) -> list[dict[str, Any]]:
        """The op that keeps a small put's value as ``.last`` (none for a larger one);
        ``flags``: a new value every time, so Consul rewrites even identical bytes."""
        if len(value) > LAST_VALUE_LIMIT:
            return []
        key = self.prefix + LAST_VALUE
        return [{"KV": {"Verb": "set", "Key": key, "Value": txn_value(value), "Flags": flags}}]

    async def read(
        self, after: int, index: int | None = None, *, archive: bool = False
    ) -> LogSnapshot:
        """The entries after revision ``after``, now or once the log's index passes
        ``index`` (a blocking query): the log's, and the archive's when some were moved
        there since (or when ``archive``, for a full view). The log is read first, so
        an entry moved in between is seen in one place or both, never none."""
        listed, log_index = await self._client().list_prefix(self.prefix, index=index)
        parsed = (LogEntry.parse(self.prefix, e) for e in listed if e["ModifyIndex"] > after)
        logged = {e.revision: e for e in parsed if e is not None}
        markers = {e["Key"].removeprefix(self.prefix): e for e in listed if self._is_marker(e)}
        pruned = _int(_marker_value(markers, PRUNED_MARKER) or b"0")
        moved_entry = markers.get(MOVED_MARKER)
        moved = (
            (moved_entry["ModifyIndex"], _int(entry_value(moved_entry))) if moved_entry else (0, 0)
        )
        named = [e["ModifyIndex"] for e in listed if not self._is_marker(e)]
        oldest = min(named, default=log_index + 1)
        complete = max(pruned, moved[1])
        if archive or moved[1] > after:
            archived = await self.archive.read()
            for entry in self._archived(archived, after):
                logged.setdefault(entry.revision, entry)
            oldest = min(oldest, archived.oldest or oldest)
            complete = pruned
        last_entry = markers.get(LAST_VALUE)
        last = (last_entry["ModifyIndex"], entry_value(last_entry)) if last_entry else None
        foreign = ForeignMark.parse(_marker_value(markers, FOREIGN_MARKER))
        return LogSnapshot(
            sorted(logged.values(), key=lambda e: e.revision),
            log_index,
            pruned,
            listed,
            last,
            foreign,
            max(complete, oldest - 1),
            moved,
        )

    def _is_marker(self, entry: dict[str, Any]) -> bool:
        """The markers and ``.last``: entry names never start with "."."""
        key: str = entry["Key"]
        return key.startswith(self.prefix + ".")

    def _archived(self, archived: ArchiveSnapshot, after: int) -> list[LogEntry]:
        entries = (
            LogEntry.parse(self.archive.prefix, {"Key": e.key, "ModifyIndex": e.revision})
            for e in archived.entries
            if e.revision > after
        )
        return [entry for entry in entries if entry is not None]

    async def record_foreign(self, revisions: Iterable[int]) -> None:
        """Record changes by other clients at ``revisions``: no replay passes over them."""
        revisions = list(revisions)
        if revisions:
            await self._update_marker(
                FOREIGN_MARKER,
                lambda raw: _encoded(ForeignMark.parse(raw).with_revisions(revisions)),
            )

    async def changes(
        self, entries: list[LogEntry], last: tuple[int, bytes] | None = None
    ) -> list[ProjectChange]:
        """The entries as changes, a put with its value from ``last`` (``.last`` as read
        with them) or else its version; raises :class:`VersionGone` when one is no
        longer kept."""
        found: dict[int, bytes] = dict([last]) if last is not None else {}
        puts = [entry for entry in entries if entry.op == "put" and entry.revision not in found]
        chunks = [puts[at : at + MAX_TXN_OPS] for at in range(0, len(puts), MAX_TXN_OPS)]
        for values in await asyncio.gather(*(self._values(chunk) for chunk in chunks)):
            found.update(values)
        changes = []
        for entry in entries:
            if entry.op == "delete":
                changes.append(ProjectChange("delete", entry.project_id, entry.revision))
                continue
            value = found.get(entry.revision)
            if value is None:
                raise VersionGone(
                    f"the version of {entry.project_id!r} at {entry.revision} is gone"
                )
            changes.append(ProjectChange("put", entry.project_id, entry.revision, value))
        return changes

    async def _values(self, entries: list[LogEntry]) -> dict[int, bytes]:
        """The values of the puts the entries name, from their versions read in one
        transaction; those missing or written again since are left out."""
        if len(entries) == 1:  # the usual case: a plain read is the cheapest
            return await self._values_one_by_one(entries)
        ops = [{"KV": {"Verb": "get", "Key": self._version_key(e)}} for e in entries]
        response = await self._client().request("PUT", "/v1/txn", json=ops, expect=(200, 409))
        if response.status == 409:  # one of them is gone: find which, one by one
            return await self._values_one_by_one(entries)
        values = {}
        for entry, result in zip(entries, response.json().get("Results") or [], strict=False):
            value = _put_value(entry, result["KV"])
            if value is not None:
                values[entry.revision] = value
        return values

    async def _values_one_by_one(self, entries: list[LogEntry]) -> dict[int, bytes]:
        values = {}
        for entry in entries:
            response = await self._client().request(
                "GET", kv_path(self._version_key(entry)), expect=(200, 404)
            )
            if response.status == 200 and (value := _put_value(entry, response.json()[0])):
                values[entry.revision] = value
        return values

    def _version_key(self, entry: LogEntry) -> str:
        return history_prefix(self._cluster_id, entry.project_id) + entry.slot

    async def prune(self, snapshot: LogSnapshot, consumed: int) -> int:
        """Move the log's oldest entries beyond :attr:`keep` to the archive once there are
        more than twice as many, only those up to ``consumed`` (what the caller has read);
        then prune the archive every :attr:`Archive.keep` entries moved. Returns how many
        entries were moved."""
        listed = sorted(
            (e for e in snapshot.listed if not self._is_marker(e)), key=lambda e: e["ModifyIndex"]
        )
        if len(listed) <= 2 * self.keep + min(self._slack, self.keep - 1):
            return 0
        oldest = listed[: len(listed) - self.keep]
        doomed = [entry for entry in oldest if entry["ModifyIndex"] <= consumed]
        marker_index: int | None = snapshot.moved[0]
        moved = 0
        per_txn = (MAX_TXN_OPS - 1) // 2  # the marker, then a delete and a store per entry
        for at in range(0, len(doomed), per_txn):
            if marker_index is None:
                break  # another instance is moving them
            marker_index = await self._move(doomed[at : at + per_txn], marker_index)
            moved += len(doomed[at : at + per_txn]) if marker_index is not None else 0
        self._moved_since_check += moved
        if self._moved_since_check >= self.archive.keep:
            self._moved_since_check = 0
            await self._prune_archive(consumed)
        return moved

    async def _move(self, entries: list[dict[str, Any]], marker_index: int) -> int | None:
        """One transaction: ``.moved`` raised (if still at ``marker_index``), the entries
        deleted from the log and stored in the archive. The marker's new index, or None
        when another instance moved first."""
        highest = entries[-1]["ModifyIndex"]
        marker = {"Verb": "cas", "Key": self.prefix + MOVED_MARKER, "Index": marker_index}
        ops: list[dict[str, Any]] = [{"KV": {**marker, "Value": txn_value(b"%d" % highest)}}]
        for entry in entries:
            name = entry["Key"].removeprefix(self.prefix).partition(".")[2]
            ops.append({"KV": {"Verb": "delete", "Key": entry["Key"]}})
            ops.append(self.archive.store_op(entry["ModifyIndex"], name))
        response = await self._client().request("PUT", "/v1/txn", json=ops, expect=(200, 409))
        if response.status == 409:
            return None
        results = response.json().get("Results") or []
        index: int = results[0]["KV"]["ModifyIndex"]
        return index

    async def _prune_archive(self, consumed: int) -> None:
        doomed = self.archive.doomed(await self.archive.read(), consumed)
        if not doomed:
            return
        highest = doomed[-1].revision
        await self._update_marker(
            PRUNED_MARKER, lambda raw: None if _int(raw or b"0") >= highest else b"%d" % highest
        )
        deletes = [{"KV": {"Verb": "delete", "Key": entry.key}} for entry in doomed]
        for at in range(0, len(deletes), MAX_TXN_OPS):
            await self._client().request("PUT", "/v1/txn", json=deletes[at : at + MAX_TXN_OPS])

    async def _update_marker(
        self, name: str, update: Callable[[bytes | None], bytes | None]
    ) -> None:
        """Set a marker to ``update(its value)`` (None: leave it), check-and-set on its
        index so that concurrent updates are never lost."""
        path = kv_path(self.prefix + name)
        for _ in range(_MARKER_ATTEMPTS):
            response = await self._client().request("GET", path, expect=(200, 404))
            index, current = 0, None
            if response.status == 200:
                entry = response.json()[0]
                index, current = entry["ModifyIndex"], entry_value(entry)
            content = update(current)
            if content is None:
                return
            done = await self._client().request("PUT", path, params={"cas": index}, content=content)
            if done.json() is True:
                return
        raise StoreError(f"the change log's marker {name} kept changing")


def _marker_value(markers: dict[str, dict[str, Any]], name: str) -> bytes | None:
    entry = markers.get(name)
    return entry_value(entry) if entry is not None else None


def _encoded(mark: ForeignMark | None) -> bytes | None:
    return mark.encode() if mark is not None else None


def _int(raw: bytes) -> int:
    return int(raw) if raw.strip().isdigit() else 0


_PUT_RECORD = b'{"op":"put",'
_PROJECT_FIELD = b',"project":'


def _put_value(entry: LogEntry, kv: dict[str, Any]) -> bytes | None:
    """The project's bytes exactly as written, from the put version the log entry names
    (:func:`~app.stores.base.encode_version` writes ``op`` first and ``project`` last,
    after fields whose quotes are escaped); None if it is gone or not that version."""
    raw = entry_value(kv)
    if kv.get("ModifyIndex") != entry.revision or not raw.startswith(_PUT_RECORD):
        return None
    start = raw.find(_PROJECT_FIELD)
    if start < 0 or not raw.endswith(b"}"):
        return None
    return raw[start + len(_PROJECT_FIELD) : -1]
