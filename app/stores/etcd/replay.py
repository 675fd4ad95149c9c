"""Changes read back from etcd's history, for a stream resumed from before an instance's
memory (docs/design.md §6).

etcd keeps every revision until compaction, and a watch from a past revision replays it
exactly, intermediate values included. What such a watch never says is that it has
nothing to send: over a range without changes it stays silent. (A progress request does
not help: etcd 3.4 before 3.4.25 answers it before the watch's past events.) So the
replay first looks for evidence that the range holds a change, and reads the watch only
when it does:

* the prefix's keys and their ``mod_revision`` at ``after`` differ from those at
  ``through`` (a read at a compacted ``after`` fails: the range is gone);
* or a version lies in the range: every write through a gateway keeps one at its own
  revision (docs/design.md §13), so a project created and deleted inside the range by a
  gateway is found too. One created and deleted inside it by another tool is not.

With evidence, the watch from ``after + 1`` is read until it is past ``through``. etcd
sends a past range in batches, each with the store's revision at the time in its header
and all of the range up to it, unless the batch was cut at ``WATCH_BATCH_MAX_REVS``
revisions (then more follow).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from aetcd import rpc
from aetcd.utils import prefix_range_end

from app.stores.base import ProjectChange, WatchReset
from app.stores.etcd.client import EtcdClient
from app.stores.etcd.errors import Compacted

#: etcd cuts a batch of a watch's past events at this many revisions (``watchBatchMaxRevs``
#: in its mvcc package); a batch with fewer holds everything up to its header's revision.
WATCH_BATCH_MAX_REVS = 1000

Decode = Callable[[rpc.Event], ProjectChange]


class EtcdReplay:
    """The changes under ``projects`` between two revisions, exactly, or None."""

    def __init__(self, client: EtcdClient, projects: bytes, versions: bytes, decode: Decode):
        self._client = client
        self._projects = projects
        self._versions = versions
        self._decode = decode

    async def changes_between(self, after: int, through: int) -> list[ProjectChange] | None:
        if after >= through:
            return []
        if after < 1:
            return None  # a read at revision 0 is a read of the present, not of the past
        try:
            if not await self._changed(after, through):
                return []
            return await self._watch(after, through)
        except (Compacted, WatchReset):
            return None

    async def _changed(self, after: int, through: int) -> bool:
        if await self._keys_at(after) != await self._keys_at(through):
            return True
        request = rpc.RangeRequest(
            key=self._versions,
            range_end=prefix_range_end(self._versions),
            keys_only=True,
            limit=1,
            min_mod_revision=after + 1,
            max_mod_revision=through,
        )
        return bool((await self._client.range_request(request)).kvs)

    async def _keys_at(self, revision: int) -> dict[bytes, int]:
        request = rpc.RangeRequest(
            key=self._projects,
            range_end=prefix_range_end(self._projects),
            revision=revision,
            keys_only=True,
        )
        response = await self._client.range_request(request)
        return {kv.key: kv.mod_revision for kv in response.kvs}

    async def _watch(self, after: int, through: int) -> list[ProjectChange]:
        changes: list[ProjectChange] = []
        watch = self._client.watch_prefix(self._projects, after + 1)
        async with contextlib.aclosing(watch):
            async for response in watch:
                revisions = set()
                for event in response.events:
                    if event.kv.mod_revision > through:
                        return changes
                    revisions.add(event.kv.mod_revision)
                    changes.append(self._decode(event))
                if response.header.revision >= through and len(revisions) < WATCH_BATCH_MAX_REVS:
                    return changes
        raise AssertionError("a watch ends only by raising")  # pragma: no cover
