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

Every write also sets ``.head``: the entry's name again, and a put's value when it has at
most :data:`HEAD_VALUE_LIMIT` bytes. A watch blocks on that one key rather than on the
log, whose answer (every entry, up to ~70 KB, gzipped by Consul) cost each instance and
Consul ~3 ms of CPU per write on the 2-core build machine, where the head's answer costs
what the sentinel's does (docs/design.md §3). Reading the log is left to a watch that
is behind, to the pruning and to the replay; other puts' values come from their
versions, up to 64 in one read-only transaction.

The log is bounded: a watch that sees more than ``2 * LOG_KEEP`` entries deletes the
oldest beyond the newest ``LOG_KEEP``, first raising the marker ``.pruned`` (its value:
the highest pruned revision, only ever raised, with a ``cas`` loop) so that a watch which
had not read them yet knows it may have missed some and lists again. Several instances
pruning at once only delete the same keys twice.

The log holds only the gateway's writes. So that a replay (``changes_between``) never
passes over another client's change, ``.foreign`` holds the revisions at which one was
seen (:class:`ForeignMark`, updated with the same ``cas`` loop): by a watch's listing
diff, or by a listing in which a project or tombstone is at a revision the log does not
hold (a change made while no watch ran). A log answer is thus at most
``2 * LOG_KEEP`` small entries, whatever the number of projects (~140 bytes each).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from app.stores.base import (
    ProjectChange,
    StoreError,
    WatchReset,
    history_prefix,
)
from app.stores.consul.client import ClientSource, entry_value, kv_path, txn_value
from app.stores.slots import SLOT_DIGITS

#: How many entries a pruning keeps; a watch more than this many writes behind may have
#: to list again. Pruning starts at twice as many, so it runs once per LOG_KEEP writes.
LOG_KEEP = 256
#: The marker under the log prefix (entry names never start with ".").
PRUNED_MARKER = ".pruned"
#: The revisions of changes by other clients that a watch or a listing saw.
FOREIGN_MARKER = ".foreign"
#: The newest write's entry name, with a small put's value: what a watch blocks on.
#: Larger values are left to their versions, so that the largest transaction (and the
#: value limit) grows by the name only.
HEAD = ".head"
HEAD_VALUE_LIMIT = 4096
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
class Head:
    """``.head`` as read: the newest gateway write's entry, and its value if it is a put
    of at most :data:`HEAD_VALUE_LIMIT` bytes."""

    entry: LogEntry
    value: bytes | None

    @property
    def revision(self) -> int:
        return self.entry.revision

    @staticmethod
    def encode(op: Op, project_id: str, slot: str, value: bytes | None) -> bytes:
        name = f"{op}.{int(slot)}.{project_id}".encode()
        return name if value is None else name + b"\n" + value

    @classmethod
    def parse(cls, prefix: str, kv: dict[str, Any]) -> Head | None:
        """None when ``.head`` is not what a gateway writes (another tool put it)."""
        name, newline, value = entry_value(kv).partition(b"\n")
        try:
            key = f"{prefix}head.{name.decode()}"  # as an entry's name: <random>.<name>
        except UnicodeDecodeError:
            return None
        entry = LogEntry.parse(prefix, {"Key": key, "ModifyIndex": kv["ModifyIndex"]})
        if entry is None or (entry.op == "delete" and newline):
            return None
        return cls(entry, value if newline else None)

    def values(self) -> dict[int, bytes]:
        return {self.revision: self.value} if self.value is not None else {}


@dataclass(frozen=True, slots=True)
class ForeignMark:
    """``.foreign``: the newest :attr:`KEEP` revisions of changes by other clients, and
    ``floor``, the highest one dropped from them (or every revision, when another tool
    wrote the marker: no replay then)."""

    floor: int = 0
    revisions: tuple[int, ...] = ()
    KEEP: ClassVar[int] = 64

    def clear(self, after: int, through: int) -> bool:
        """Whether no change by another client is known in ``(after, through]``."""
        return after >= self.floor and not any(after < r <= through for r in self.revisions)

    def with_revisions(self, new: Iterable[int]) -> ForeignMark | None:
        """The mark with ``new`` added; None when it holds them already."""
        revisions = sorted(set(self.revisions).union(r for r in new if r > self.floor))
        if tuple(revisions) == self.revisions:
            return None
        dropped, kept = revisions[: -self.KEEP], revisions[-self.KEEP :]
        return ForeignMark(max([self.floor, *dropped]), tuple(kept))

    def encode(self) -> bytes:
        return " ".join(map(str, (self.floor, *self.revisions))).encode()

    @classmethod
    def parse(cls, raw: bytes | None) -> ForeignMark:
        if raw is None:
            return cls()
        numbers = raw.split()
        if not numbers or not all(n.isdigit() and len(n) <= 20 for n in numbers):
            return cls(floor=2**64)
        floor, *revisions = map(int, numbers)
        return cls(floor, tuple(sorted(revisions)))


@dataclass(frozen=True, slots=True)
class LogSnapshot:
    """One answer of the log: its entries after a revision, in revision order, the
    prefix's index (every entry up to it is there, unless pruned), the highest pruned
    revision, and every entry as Consul listed it (for pruning)."""

    entries: list[LogEntry]
    index: int
    pruned: int
    listed: list[dict[str, Any]] = field(default_factory=list)
    head: Head | None = None
    foreign: ForeignMark = ForeignMark()
    #: Every gateway write after this revision is in the log: the highest pruned, or
    #: just before the oldest entry (writes before the log began are not).
    complete_since: int = 0

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

    def entry_op(self, op: Op, project_id: str, slot: str) -> dict[str, Any]:
        return entry_op(self.prefix, op, project_id, slot)

    def head_op(
        self, op: Op, project_id: str, slot: str, value: bytes | None, flags: int
    ) -> dict[str, Any]:
        """The op that sets ``.head`` to this write; ``flags``: a new value every time, so
        Consul rewrites even identical bytes."""
        if value is not None and len(value) > HEAD_VALUE_LIMIT:
            value = None
        raw = Head.encode(op, project_id, slot, value)
        key = self.prefix + HEAD
        return {"KV": {"Verb": "set", "Key": key, "Value": txn_value(raw), "Flags": flags}}

    async def read_head(self, index: int) -> tuple[Head | None, int]:
        """``.head`` once its index passes ``index`` (a blocking query), and the index to
        block on next; None when there is none, or not a gateway's."""
        client = self._client()
        response = await client.request(
            "GET",
            kv_path(self.prefix + HEAD),
            params={"index": index},
            wait=client.watch_wait,
            expect=(200, 404),
        )
        found = response.json() if response.status == 200 else None
        head = Head.parse(self.prefix, found[0]) if found else None
        return head, response.index

    async def read(self, after: int, index: int | None = None) -> LogSnapshot:
        """The log's entries after revision ``after``, now or once its index passes
        ``index`` (a blocking query); only those are parsed, the answer holds them all."""
        listed, log_index = await self._client().list_prefix(self.prefix, index=index)
        parsed = (LogEntry.parse(self.prefix, e) for e in listed if e["ModifyIndex"] > after)
        logged = sorted((e for e in parsed if e is not None), key=lambda e: e.revision)
        pruned = _int(_value(listed, self.prefix + PRUNED_MARKER) or b"0")
        head_key = self.prefix + HEAD
        head = next((Head.parse(self.prefix, e) for e in listed if e["Key"] == head_key), None)
        named = (e["ModifyIndex"] for e in listed if not _is_marker(self.prefix, e["Key"]))
        oldest = min(named, default=log_index + 1)
        foreign = ForeignMark.parse(_value(listed, self.prefix + FOREIGN_MARKER))
        complete = max(pruned, oldest - 1)
        return LogSnapshot(logged, log_index, pruned, listed, head, foreign, complete)

    async def record_foreign(self, revisions: Iterable[int]) -> None:
        """Record changes by other clients at ``revisions``: no replay passes over them."""
        revisions = list(revisions)
        if revisions:
            await self._update_marker(
                FOREIGN_MARKER,
                lambda raw: _encoded(ForeignMark.parse(raw).with_revisions(revisions)),
            )

    async def changes(
        self, entries: list[LogEntry], head: Head | None = None
    ) -> list[ProjectChange]:
        """The entries as changes, a put with its value from ``head`` (``.head`` as read
        with them) or else its version; raises :class:`VersionGone` when one is no
        longer kept."""
        found = head.values() if head is not None else {}
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
        """Keep the newest :attr:`keep` entries once there are more than twice as many,
        deleting only entries up to ``consumed`` (what the caller has read); returns how
        many were deleted."""
        listed = sorted(
            (e for e in snapshot.listed if not _is_marker(self.prefix, e["Key"])),
            key=lambda e: e["ModifyIndex"],
        )
        if len(listed) <= 2 * self.keep:
            return 0
        oldest = listed[: len(listed) - self.keep]
        doomed = [entry for entry in oldest if entry["ModifyIndex"] <= consumed]
        if not doomed:
            return 0
        highest = doomed[-1]["ModifyIndex"]
        await self._update_marker(
            PRUNED_MARKER, lambda raw: None if _int(raw or b"0") >= highest else b"%d" % highest
        )
        deletes = [{"KV": {"Verb": "delete", "Key": entry["Key"]}} for entry in doomed]
        batches = [deletes[at : at + MAX_TXN_OPS] for at in range(0, len(deletes), MAX_TXN_OPS)]
        for batch in batches:
            await self._client().request("PUT", "/v1/txn", json=batch)
        return len(doomed)

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


def _is_marker(prefix: str, key: str) -> bool:
    """The markers and the head: entry names never start with "."."""
    return key.startswith(prefix + ".")


def _value(entries: list[dict[str, Any]], key: str) -> bytes | None:
    return next((entry_value(e) for e in entries if e["Key"] == key), None)


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
