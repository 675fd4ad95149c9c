"""The change log's archive: the entries the log's pruning moved out, named by revision.

The log (:mod:`app.stores.consul.changelog`) is read whenever a watch cannot tell from
the head alone what happened, which on a cluster with sparse writes is every write (each
instance's registration update is a raft entry between two writes). So the log is kept
short (:data:`~app.stores.consul.changelog.RECENT_KEEP` entries), and its pruning moves
older entries here, in the same transaction that raises the log's ``.moved`` marker:
``sc/archive/<cluster>/<revision, 20 digits>.<op>.<slot>.<project>``. A name says
everything, so a keys-only listing (~60 bytes an entry) reads the archive, in revision
order; only a watch behind ``.moved``, a replay and a listing's check read it. It keeps
the newest :data:`ARCHIVE_KEEP` entries, pruned like the log was: ``.pruned`` (in the
log) raised first, then the oldest deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.stores.consul.client import ClientSource, kv_path

#: Entries the archive keeps: a watch this many writes behind, or a resume this far back,
#: is still served from the log. Pruning starts at twice as many.
ARCHIVE_KEEP = 256
_REVISION_DIGITS = 20


def archive_prefix(cluster_id: str) -> str:
    return f"sc/archive/{cluster_id}/"


def archived_name(revision: int, rest: str) -> str:
    """An archived entry's name: its revision, then ``<op>.<slot>.<project>``."""
    return f"{revision:0{_REVISION_DIGITS}d}.{rest}"


@dataclass(frozen=True, slots=True)
class ArchivedEntry:
    revision: int
    key: str


@dataclass(frozen=True, slots=True)
class ArchiveSnapshot:
    entries: list[ArchivedEntry]  # in revision order

    @property
    def oldest(self) -> int | None:
        return self.entries[0].revision if self.entries else None


class Archive:
    """One cluster's archived log entries under ``sc/archive/<cluster>/``."""

    def __init__(self, client: ClientSource, cluster_id: str, keep: int = ARCHIVE_KEEP) -> None:
        self._client = client
        self.prefix = archive_prefix(cluster_id)
        self.keep = keep

    def store_op(self, revision: int, rest: str) -> dict[str, Any]:
        return {"KV": {"Verb": "set", "Key": self.prefix + archived_name(revision, rest)}}

    async def read(self) -> ArchiveSnapshot:
        response = await self._client().request(
            "GET", kv_path(self.prefix), params={"keys": ""}, expect=(200, 404)
        )
        keys = response.json() if response.status == 200 else []
        entries = (self._parse(key) for key in keys or [] if isinstance(key, str))
        return ArchiveSnapshot(sorted((e for e in entries if e), key=lambda e: e.revision))

    def _parse(self, key: str) -> ArchivedEntry | None:
        """None for keys another tool put here."""
        number, _, rest = key.removeprefix(self.prefix).partition(".")
        if len(number) != _REVISION_DIGITS or not number.isdigit() or not rest:
            return None
        return ArchivedEntry(int(number), key)

    def doomed(self, snapshot: ArchiveSnapshot, consumed: int) -> list[ArchivedEntry]:
        """What a pruning deletes: the oldest beyond :attr:`keep` once there are twice as
        many, only those up to ``consumed``."""
        if len(snapshot.entries) <= 2 * self.keep:
            return []
        oldest = snapshot.entries[: len(snapshot.entries) - self.keep]
        return [entry for entry in oldest if entry.revision <= consumed]
