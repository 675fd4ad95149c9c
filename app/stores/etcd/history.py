"""A project's versions in etcd, written in the same transaction as the write.

A version lives at ``sc/history/<cluster>/<project>/<slot>`` (docs/design.md,
"Versions"). Its revision is the write's revision, which etcd assigns only when it
applies the transaction, so no key can be named by it beforehand. The key is named by a
*slot* known before: the project's next sequence number (20 digits, so that key order is
slot order), and the transaction also asks that the slot be free. The version's revision
is its key's own ``mod_revision``: the same transaction wrote it, so it is exactly the
write's revision, on every member and after any compaction (the key is ordinary data).

A slot is taken only after the one before it exists, so slot order is revision order;
two writers that picked the same slot cannot both commit: the loser lists again and
takes the next one. The slot's listing also names what to prune: the oldest beyond the
newest ``keep`` (at most :data:`~app.stores.base.MAX_PRUNED_PER_WRITE`), deleted in the
same transaction. As the transaction commits only while its slot is free, the listing it
was computed from still held the newest versions then: a prune never deletes one of the
newest ``keep``, whatever other writers do.
"""

from __future__ import annotations

from dataclasses import dataclass

from aetcd import rpc
from aetcd.utils import prefix_range_end

from app.stores.base import Version, decode_version, history_prefix, plan_slot
from app.stores.etcd.client import EtcdClient

_EQUAL = rpc.Compare.CompareResult.EQUAL
_CREATE = rpc.Compare.CompareTarget.CREATE
_DESCEND = rpc.RangeRequest.SortOrder.DESCEND
_BY_MOD = rpc.RangeRequest.SortTarget.MOD


@dataclass(frozen=True, slots=True)
class VersionSlot:
    """Where a write's version goes, and the old versions its transaction prunes."""

    key: bytes
    pruned: list[bytes]

    def ops(self, record: bytes) -> list[rpc.RequestOp]:
        put = rpc.RequestOp(request_put=rpc.PutRequest(key=self.key, value=record))
        deletes = [
            rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))
            for key in self.pruned
        ]
        return [put, *deletes]

    def is_free(self) -> rpc.Compare:
        return rpc.Compare(result=_EQUAL, target=_CREATE, key=self.key, create_revision=0)

    def taken(self) -> rpc.RequestOp:
        """For a transaction's failure branch: read the slot, to tell a lost race."""
        return rpc.RequestOp(request_range=rpc.RangeRequest(key=self.key, keys_only=True))


class EtcdHistory:
    """Versions of one cluster's projects."""

    def __init__(self, client: EtcdClient, cluster_id: str, keep: int) -> None:
        self._client = client
        self._cluster_id = cluster_id
        self.keep = keep

    def _prefix(self, project_id: str) -> bytes:
        return history_prefix(self._cluster_id, project_id).encode()

    async def next_slot(self, project_id: str) -> VersionSlot:
        """The slot after the newest version, and the versions a write there prunes."""
        prefix = self._prefix(project_id)
        listing = await self._client.range(prefix, prefix_range_end(prefix), keys_only=True)
        names = [kv.key[len(prefix) :].decode(errors="replace") for kv in listing.kvs]
        plan = plan_slot(names, self.keep)
        return VersionSlot(
            prefix + plan.slot.encode(), [prefix + name.encode() for name in plan.pruned]
        )

    async def list(self, project_id: str, limit: int, before: int | None) -> list[Version]:
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

    async def get(self, project_id: str, revision: int) -> Version | None:
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
