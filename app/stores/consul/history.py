"""A project's versions in Consul's KV store, written in the write's own ``/v1/txn``.

A version lives at ``sc/history/<cluster>/<project>/<slot>`` (docs/design.md,
"Versions"). Its revision is the write's ModifyIndex, which Consul reports only after
the transaction, so the key cannot be named by it: it is named by a *slot* known
before, the project's next sequence number (20 digits, so that key order is slot order),
written with ``cas`` index 0 (only if absent). Every entry a transaction writes gets the
transaction's raft index, so the version key's own ModifyIndex *is* the write's revision;
reads take it from there.

A slot is taken only after the one before it exists, so slot order is revision order; of
two writers that picked the same slot one transaction fails and that writer lists again
for the next slot. The same listing names the versions to prune (the oldest beyond the
newest ``keep``, at most :data:`~app.stores.base.MAX_PRUNED_PER_WRITE`), deleted in the
same transaction: as it commits only while its slot is free, the listing still held the
newest versions then, so a prune never deletes one of the newest ``keep``.

Consul lists keys without their indexes, so reading versions fetches the project's
records (at most ``keep`` of them) and orders them by ModifyIndex here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.stores.base import Version, decode_version, history_prefix, is_slot, plan_slot
from app.stores.consul.client import ClientSource, entry_value, kv_path


@dataclass(frozen=True, slots=True)
class VersionSlot:
    """Where a write's version goes, the old versions its transaction prunes, and, for a
    slot planned from this instance's own last write, the version that must still be the
    newest (its key and ModifyIndex)."""

    project_id: str
    key: str
    pruned: list[str]
    names: list[str]  # the project's slot names once the write is done
    newest: tuple[str, int] | None = None

    def ops(self, record: str) -> list[dict[str, Any]]:
        """The transaction's version ops; ``record`` is the base64-encoded version."""
        guard = []
        if self.newest is not None:
            key, index = self.newest
            guard = [{"KV": {"Verb": "check-index", "Key": key, "Index": index}}]
        put = {"KV": {"Verb": "cas", "Key": self.key, "Index": 0, "Value": record}}
        deletes = [{"KV": {"Verb": "delete", "Key": key}} for key in self.pruned]
        return [*guard, put, *deletes]


@dataclass(frozen=True, slots=True)
class _LastWrite:
    names: list[str]
    index: int


class ConsulHistory:
    """Versions of one cluster's projects."""

    def __init__(self, client: ClientSource, cluster_id: str, keep: int) -> None:
        self._client = client
        self._cluster_id = cluster_id
        self.keep = keep
        self._last_writes: dict[str, _LastWrite] = {}

    def _prefix(self, project_id: str) -> str:
        return history_prefix(self._cluster_id, project_id)

    async def next_slot(self, project_id: str) -> VersionSlot:
        """The slot after the newest version, and the versions a write there prunes.

        After this instance's own write to the project, planned from what that write
        left, without asking Consul (a listing costs about as much as the write itself):
        the transaction then also checks that the version it wrote is still there,
        unchanged. With the next slot free, that proves it is still the newest (a newer
        one needs the next slot to have existed, and a prune takes older ones first), so
        the plan is as good as a listing. If the check fails the caller calls
        :meth:`forget` and plans again from a listing.
        """
        last = self._last_writes.get(project_id)
        if last is not None:
            return self._plan(project_id, last.names, (last.names[-1], last.index))
        prefix = self._prefix(project_id)
        response = await self._client().request(
            "GET", kv_path(prefix), params={"keys": ""}, expect=(200, 404)
        )
        keys = response.json() if response.status == 200 else []
        names = [key[len(prefix) :] for key in keys or [] if isinstance(key, str)]
        return self._plan(project_id, names, None)

    def _plan(
        self, project_id: str, names: list[str], newest: tuple[str, int] | None
    ) -> VersionSlot:
        prefix = self._prefix(project_id)
        plan = plan_slot(names, self.keep)
        kept = [name for name in sorted(names) if name not in plan.pruned and is_slot(name)]
        return VersionSlot(
            project_id,
            prefix + plan.slot,
            [prefix + name for name in plan.pruned],
            [*kept, plan.slot],
            None if newest is None else (prefix + newest[0], newest[1]),
        )

    def written(self, slot: VersionSlot, index: int) -> None:
        """Remember what a successful write left, to plan the next one from."""
        self._last_writes[slot.project_id] = _LastWrite(slot.names, index)

    def forget(self, project_id: str) -> None:
        self._last_writes.pop(project_id, None)

    async def slot_taken(self, slot: VersionSlot) -> bool:
        response = await self._client().request("GET", kv_path(slot.key), expect=(200, 404))
        return response.status == 200

    async def list(self, project_id: str, limit: int, before: int | None) -> list[Version]:
        versions = await self._all(project_id)
        return [v for v in versions if before is None or v.revision < before][:limit]

    async def get(self, project_id: str, revision: int) -> Version | None:
        versions = await self._all(project_id)
        return next((v for v in versions if v.revision == revision), None)

    async def _all(self, project_id: str) -> list[Version]:
        """Every kept version of the project, newest first."""
        entries, _ = await self._client().list_prefix(self._prefix(project_id))
        versions = (_version(project_id, entry) for entry in entries)
        kept = [version for version in versions if version is not None]
        return sorted(kept, key=lambda version: version.revision, reverse=True)


def _version(project_id: str, entry: dict[str, Any]) -> Version | None:
    return decode_version(project_id, entry["ModifyIndex"], entry_value(entry))
