"""``changes_between`` on a real etcd: exactly what a watch handed up, or None once
compacted (docs/design.md §6). The stream's side of the replay is in test_replay.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from app.stores.base import ProjectChange, ProjectListing, VersionStamp, projects_prefix
from app.stores.etcd import EtcdStore
from app.stores.etcd.replay import WATCH_BATCH_MAX_REVS
from tests.servers.etcd import EtcdServer
from tests.test_store_etcd import changes_until, opened

STAMP = VersionStamp("tester", "node-t")


@pytest.fixture
def cluster() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def store(etcd_server: EtcdServer, cluster: str) -> AsyncIterator[EtcdStore]:
    async with opened(etcd_server, cluster) as store:
        yield store


def doc(project_id: str, n: int) -> bytes:
    return b'{"id":"%s","n":%d}' % (project_id.encode(), n)


async def replay(store: EtcdStore, after: int, through: int) -> list[ProjectChange] | None:
    async with asyncio.timeout(30):  # a replay that never ends fails rather than hangs
        return await store.changes_between(after, through)


async def test_a_replay_is_what_the_watch_handed_up(
    store: EtcdStore, etcd_server: EtcdServer, cluster: str
) -> None:
    start = await store.current_revision()
    await store.put_project("a", doc("a", 1), stamp=STAMP)
    await store.put_project("a", doc("a", 2), stamp=STAMP)  # an intermediate value
    await store.put_project("b", doc("b", 1), stamp=STAMP)
    await store.delete_project("a", stamp=STAMP)
    prefix = projects_prefix(cluster)
    etcd_server.etcdctl("put", prefix + "c", "not json")  # another tool, no version
    etcd_server.etcdctl("put", prefix + "Bad/Key", "{}")
    await store.put_project("last", doc("last", 1), stamp=STAMP)
    through = await store.current_revision()

    watched = await changes_until(store, ProjectListing({}, start), "last")
    assert [c.kind for c in watched] == ["put", "put", "put", "delete", "put", "put", "put"]
    assert await replay(store, start, through) == watched
    # Each bound is exclusive below and inclusive above.
    assert await replay(store, watched[0].revision, watched[2].revision) == watched[1:3]
    assert await replay(store, watched[-2].revision, through) == watched[-1:]


async def test_a_range_without_changes_of_this_cluster_is_empty(
    store: EtcdStore, etcd_server: EtcdServer
) -> None:
    await store.put_project("a", doc("a", 1), stamp=STAMP)
    after = await store.current_revision()
    async with opened(etcd_server, f"t-{uuid.uuid4().hex[:10]}") as other:
        # The revisions move on, this cluster's projects do not.
        for n in range(3):
            await other.put_project("x", doc("x", n), stamp=STAMP)
    through = await store.current_revision()
    assert through > after
    assert await replay(store, after, through) == []
    assert await replay(store, through, through) == []


async def test_a_project_created_and_deleted_inside_the_range_is_replayed(
    store: EtcdStore,
) -> None:
    await store.put_project("kept", doc("kept", 1), stamp=STAMP)
    after = await store.current_revision()
    put = await store.put_project("brief", doc("brief", 1), stamp=STAMP)
    deleted = await store.delete_project("brief", stamp=STAMP)
    through = await store.current_revision()
    # The keys and their revisions at both ends are the same: only the versions tell.
    assert await replay(store, after, through) == [
        ProjectChange("put", "brief", put.revision, doc("brief", 1)),
        ProjectChange("delete", "brief", deleted),
    ]


async def test_a_range_from_before_the_first_revision_is_none(store: EtcdStore) -> None:
    await store.put_project("a", doc("a", 1), stamp=STAMP)
    assert await replay(store, 0, await store.current_revision()) is None


async def test_a_compacted_range_is_none(store: EtcdStore, etcd_server: EtcdServer) -> None:
    after = await store.current_revision()
    await store.put_project("a", doc("a", 1), stamp=STAMP)
    await store.put_project("a", doc("a", 2), stamp=STAMP)
    through = await store.current_revision()
    assert await replay(store, after, through) is not None
    etcd_server.compact()
    assert await replay(store, after, through) is None


async def test_a_range_longer_than_one_watch_batch_is_complete(store: EtcdStore) -> None:
    after = await store.current_revision()
    key = store._projects + b"p"
    for n in range(WATCH_BATCH_MAX_REVS + 50):
        await store._client.put(key, doc("p", n))
    through = await store.current_revision()
    await store._client.put(key, doc("p", -1))  # after the range: not in it
    changes = await replay(store, after, through)
    assert changes is not None
    assert [change.value for change in changes] == [
        doc("p", n) for n in range(WATCH_BATCH_MAX_REVS + 50)
    ]
    assert [change.revision for change in changes] == list(range(after + 1, through + 1))
