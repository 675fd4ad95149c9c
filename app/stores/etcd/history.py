"""A project's versions in etcd, written in the same transaction as the write.

Where a version goes, and why its key is a slot rather than its revision, is in
:mod:`app.stores.slots`. On etcd the transaction compares the slot's ``create_revision``
with 0 (free), and every key a transaction writes gets the transaction's revision, so the
version key's own ``mod_revision`` *is* the write's revision, on every member and after
any compaction (the key is ordinary data). etcd sorts and filters versions by it itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from aetcd import rpc
from aetcd.utils import prefix_range_end

from app.stores.base import Version, decode_version, history_prefix
from app.stores.etcd.client import EtcdClient
from app.stores.slots import SlotPlan, SlotPlanner

_EQUAL = rpc.Compare.CompareResult.EQUAL
_CREATE = rpc.Compare.CompareTarget.CREATE
_MOD = rpc.Compare.CompareTarget.MOD
_DESCEND = rpc.RangeRequest.SortOrder.DESCEND
_BY_MOD = rpc.RangeRequest.SortTarget.MOD


@dataclass(frozen=True, slots=True)
class VersionSlot:
    """A slot plan as etcd keys, compares and transaction ops."""

    plan: SlotPlan
    prefix: bytes

    @property
    def key(self) -> bytes:
        return self.prefix + self.plan.slot.encode()

    def ops(self, record: bytes) -> list[rpc.RequestOp]:
        put = rpc.RequestOp(request_put=rpc.PutRequest(key=self.key, value=record))
        deletes = [
            rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=self._key(slot)))
            for slot in self.plan.pruned
        ]
        return [put, *deletes]

    def compares(self) -> list[rpc.Compare]:
        """The slot is free and, planned from a last write, that version is unchanged."""
        free = rpc.Compare(result=_EQUAL, target=_CREATE, key=self.key, create_revision=0)
        if self.plan.newest is None:
            return [free]
        slot, revision = self.plan.newest
        unchanged = rpc.Compare(
            result=_EQUAL, target=_MOD, key=self._key(slot), mod_revision=revision
        )
        return [free, unchanged]

    def taken(self) -> rpc.RequestOp:
        """For a transaction's failure branch: read the slot, to tell a lost race."""
        return rpc.RequestOp(request_range=rpc.RangeRequest(key=self.key, keys_only=True))

    def _key(self, slot: str) -> bytes:
        return self.prefix + slot.encode()


class EtcdHistory:
    """Versions of one cluster's projects."""

    def __init__(self, client: EtcdClient, cluster_id: str, keep: int) -> None:
        self._client = client
        self._cluster_id = cluster_id
        self.planner = SlotPlanner(keep)

    def _prefix(self, project_id: str) -> bytes:
        return history_prefix(self._cluster_id, project_id).encode()

    async def next_slot(self, project_id: str) -> VersionSlot:
        """Where the project's next version goes (see :mod:`app.stores.slots`)."""
        prefix = self._prefix(project_id)
        plan = self.planner.remembered(project_id)
        if plan is None:
            listing = await self._client.range(prefix, prefix_range_end(prefix), keys_only=True)
            names = [kv.key[len(prefix) :].decode(errors="replace") for kv in listing.kvs]
            plan = self.planner.from_listing(project_id, names)
        return VersionSlot(plan, prefix)

    def lost(self, slot: VersionSlot, response: rpc.TxnResponse) -> bool:
        """Whether a failed transaction (its failure branch: the project's range, then the
        slot's) failed for its slot (plan again) rather than the project's condition."""
        if slot.plan.newest is not None:
            self.planner.forget(slot.plan.project_id)  # planned from a stale last write, perhaps
            return True
        return bool(response.responses[1].response_range.kvs)

    def written(self, slot: VersionSlot, revision: int) -> None:
        self.planner.written(slot.plan, revision)

    async def newest_first(self, project_id: str, limit: int, before: int | None) -> list[Version]:
        if before is not None and before <= 1:
            return []  # etcd reads max_mod_revision 0 as "no bound"
        prefix = self._prefix(project_id)
        request = rpc.RangeRequest(
            key=prefix,
            range_end=prefix_range_end(prefix),
            limit=limit,
            sort_order=_DESCEND,
            sort_target=_BY_MOD,
            max_mod_revision=0 if before is None else before - 1,
        )
        response = await self._client.range_request(request)
        return _versions(project_id, response)

    async def at_revision(self, project_id: str, revision: int) -> Version | None:
        prefix = self._prefix(project_id)
        request = rpc.RangeRequest(
            key=prefix,
            range_end=prefix_range_end(prefix),
            min_mod_revision=revision,
            max_mod_revision=revision,
        )
        versions = _versions(project_id, await self._client.range_request(request))
        return versions[0] if versions else None


def _versions(project_id: str, response: rpc.RangeResponse) -> list[Version]:
    versions = (decode_version(project_id, kv.mod_revision, kv.value) for kv in response.kvs)
    return [version for version in versions if version is not None]
