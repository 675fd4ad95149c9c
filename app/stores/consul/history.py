"""A project's versions in Consul's KV store, written in the write's own ``/v1/txn``.

Where a version goes, and why its key is a slot rather than its revision, is in
:mod:`app.stores.slots`. On Consul the slot is written with ``cas`` index 0 (only if
absent), and every entry a transaction writes gets the transaction's raft index, so the
version key's own ModifyIndex *is* the write's revision; reads take it from there.

Consul lists keys without their indexes, so reading versions fetches the project's
records (at most ``keep`` of them) and orders them by ModifyIndex here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.stores.base import Version, decode_version, history_prefix
from app.stores.consul.client import ClientSource, entry_value, kv_path
from app.stores.slots import SlotPlan, SlotPlanner


@dataclass(frozen=True, slots=True)
class VersionSlot:
    """A slot plan as Consul keys and transaction ops."""

    plan: SlotPlan
    prefix: str

    @property
    def key(self) -> str:
        return self.prefix + self.plan.slot

    def ops(self, record: str) -> list[dict[str, Any]]:
        """The transaction's version ops; ``record`` is the base64-encoded version."""
        guard = []
        if self.plan.newest is not None:
            slot, revision = self.plan.newest
            guard = [{"KV": {"Verb": "check-index", "Key": self.prefix + slot, "Index": revision}}]
        put = {"KV": {"Verb": "cas", "Key": self.key, "Index": 0, "Value": record}}
        deletes = [{"KV": {"Verb": "delete", "Key": self.prefix + s}} for s in self.plan.pruned]
        return [*guard, put, *deletes]


class ConsulHistory:
    """Versions of one cluster's projects."""

    def __init__(self, client: ClientSource, cluster_id: str, keep: int) -> None:
        self._client = client
        self._cluster_id = cluster_id
        self.planner = SlotPlanner(keep)

    def _prefix(self, project_id: str) -> str:
        return history_prefix(self._cluster_id, project_id)

    async def next_slot(self, project_id: str) -> VersionSlot:
        """Where the project's next version goes (see :mod:`app.stores.slots`)."""
        prefix = self._prefix(project_id)
        plan = self.planner.remembered(project_id)
        if plan is None:
            response = await self._client().request(
                "GET", kv_path(prefix), params={"keys": ""}, expect=(200, 404)
            )
            keys = response.json() if response.status == 200 else []
            names = [key[len(prefix) :] for key in keys or [] if isinstance(key, str)]
            plan = self.planner.from_listing(project_id, names)
        return VersionSlot(plan, prefix)

    async def lost(self, slot: VersionSlot) -> bool:
        """Whether a failed transaction failed for its slot (plan again) rather than for
        the project's condition."""
        if slot.plan.newest is not None:
            self.planner.forget(slot.plan.project_id)  # planned from a stale last write, perhaps
            return True
        response = await self._client().request("GET", kv_path(slot.key), expect=(200, 404))
        return response.status == 200

    def written(self, slot: VersionSlot, revision: int) -> None:
        self.planner.written(slot.plan, revision)

    async def newest_first(self, project_id: str, limit: int, before: int | None) -> list[Version]:
        versions = await self._all(project_id)
        return [v for v in versions if before is None or v.revision < before][:limit]

    async def at_revision(self, project_id: str, revision: int) -> Version | None:
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
