"""The Store contract, once, against every store: the local file, a real etcd and a real
Consul (tests/servers/ starts them; each test works in a cluster id of its own).

What only one store does (etcd compaction and failover, Consul sessions and deletion
marks, the local file's atomic writes and lock, TLS and credentials) stays in
``test_store_etcd.py``, ``test_store_consul.py`` and ``test_local_store.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from app.stores.base import (
    ABSENT,
    CONSUL_VALUE_LIMIT,
    DEFAULT_PROJECT_VERSIONS,
    ETCD_VALUE_LIMIT,
    MAX_AUTHOR_LENGTH,
    NotRegistered,
    ProjectChange,
    ProjectNotFound,
    RevisionMismatch,
    Store,
    StoreUnavailable,
    ValueTooLarge,
    Version,
    VersionStamp,
)
from app.stores.consul import ConsulStore
from app.stores.etcd import EtcdStore
from app.stores.local import LocalStore
from tests.eventually import eventually_async

T = TypeVar("T")
OpenStore = Callable[..., Awaitable[Store]]

TIMEOUT = 5.0
VALUE_LIMITS = {"local": ETCD_VALUE_LIMIT, "etcd": ETCD_VALUE_LIMIT, "consul": CONSUL_VALUE_LIMIT}


@pytest.fixture(params=["local", "etcd", "consul"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def server(request: pytest.FixtureRequest, backend: str) -> Any:
    """The etcd or Consul server of the run; None for the local store."""
    return None if backend == "local" else request.getfixturevalue(f"{backend}_server")


@pytest.fixture
async def open_store(backend: str, server: Any, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Open stores of ``backend`` in a given cluster; all closed at teardown."""
    stores: list[Store] = []

    async def open_(cluster: str, keep_versions: int = DEFAULT_PROJECT_VERSIONS) -> Store:
        store: Store
        if backend == "local":
            store = LocalStore(tmp_path / f"{cluster}.yaml", keep_versions=keep_versions)
        elif backend == "etcd":
            store = EtcdStore(
                server.config(),
                cluster,
                instance_ttl=3,
                timeout=TIMEOUT,
                keep_versions=keep_versions,
            )
        else:
            store = ConsulStore(
                server.config(), cluster, timeout=TIMEOUT, keep_versions=keep_versions
            )
        await store.open()
        stores.append(store)
        return store

    yield open_
    for store in reversed(stores):
        await store.close()


@pytest.fixture
def cluster() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def store(open_store: OpenStore, cluster: str) -> Store:
    return await open_store(cluster)


#: Clusters and other instances exist only for etcd and Consul (the local store is one).
distributed = pytest.mark.parametrize("backend", ["etcd", "consul"], indirect=True)


def doc(project_id: str, version: int = 1, size: int | None = None) -> bytes:
    """A project's JSON (every store keeps JSON objects), exactly ``size`` bytes if given."""
    value = orjson.dumps({"id": project_id, "v": version})
    if size is None:
        return value
    padding = size - len(value) - len(',"pad":""')
    return orjson.dumps({"id": project_id, "v": version, "pad": "x" * padding})


@asynccontextmanager
async def watching(watch: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """The watch, closed when the block ends (every store's watch is an async generator)."""
    try:
        yield watch
    finally:
        assert isinstance(watch, AsyncGenerator)
        await watch.aclose()


async def within(awaitable: Awaitable[T], timeout: float = TIMEOUT) -> T:
    return await asyncio.wait_for(awaitable, timeout)


async def changes_until(
    watch: AsyncIterator[list[ProjectChange]], last_id: str
) -> list[ProjectChange]:
    """Every change the watch yields up to and including a change of ``last_id``."""
    seen: list[ProjectChange] = []
    while not any(change.id == last_id for change in seen):
        seen += await within(anext(watch))
    return seen


# --- the protocol ---------------------------------------------------------------------


async def test_a_new_store_is_empty_and_checks(store: Store, backend: str) -> None:
    assert isinstance(store, Store)
    assert (store.kind, store.value_limit) == (backend, VALUE_LIMITS[backend])
    await store.check()
    assert (await store.list_projects()).projects == {}


async def test_the_current_revision_reaches_every_write_and_grows_with_them(
    store: Store,
) -> None:
    """What ``?waitRevision=`` is checked against: no write's revision is beyond it."""
    put = await store.put_project("rev", doc("rev"))
    assert await store.current_revision() >= put.revision
    deleted = await store.delete_project("rev")
    current = await store.current_revision()
    assert current >= deleted > put.revision


@distributed
async def test_keys_that_are_no_project_id_are_listed_for_the_sync_layer_to_judge(
    store: Store, backend: str, server: Any, cluster: str
) -> None:
    """A store never drops a key under the prefix itself (docs/design.md §12); the local
    store's keys come from its file (test_local_store.py)."""
    key = f"sc/projects/{cluster}/a/b"
    if backend == "etcd":
        server.etcdctl("put", key, "{}")
    else:
        server.api("PUT", f"/v1/kv/{key}", content=b"{}")
    assert set((await store.list_projects()).projects) == {"a/b"}


# --- conditional writes ---------------------------------------------------------------


async def test_put_creates_then_replaces_and_lists(store: Store) -> None:
    first = await store.put_project("alpha", b'{"id":"alpha"}')
    again = await store.put_project("alpha", b'{"id":"alpha","v":2}')
    beta = await store.put_project("beta", b'{"id":"beta"}', ABSENT)
    listing = await store.list_projects()

    assert first.created and not again.created and beta.created
    assert first.revision < again.revision < beta.revision <= listing.revision
    assert {p.id: (p.value, p.revision) for p in listing.projects.values()} == {
        "alpha": (b'{"id":"alpha","v":2}', again.revision),
        "beta": (b'{"id":"beta"}', beta.revision),
    }


async def test_every_put_is_a_new_revision_even_with_the_same_value(store: Store) -> None:
    first = await store.put_project("same", doc("same"))
    again = await store.put_project("same", doc("same"))
    matching = await store.put_project("same", doc("same"), again.revision)
    assert first.created and not again.created and not matching.created
    assert first.revision < again.revision < matching.revision


async def test_if_none_match_creates_only(store: Store) -> None:
    created = await store.put_project("p", doc("p", 1), ABSENT)
    with pytest.raises(RevisionMismatch) as exists:
        await store.put_project("p", doc("p", 2), ABSENT)
    assert created.created
    assert (exists.value.expected, exists.value.actual) == (ABSENT, created.revision)
    assert "already exists" in str(exists.value)
    assert (await store.list_projects()).projects["p"].value == doc("p", 1)


async def test_if_match_replaces_only_that_revision(store: Store) -> None:
    created = await store.put_project("p", doc("p", 1))
    replaced = await store.put_project("p", doc("p", 2), created.revision)
    with pytest.raises(RevisionMismatch) as stale:
        await store.put_project("p", doc("p", 3), created.revision)
    with pytest.raises(RevisionMismatch) as missing:
        await store.put_project("nobody", doc("nobody", 4), created.revision)

    assert not replaced.created and replaced.revision > created.revision
    assert (stale.value.expected, stale.value.actual) == (created.revision, replaced.revision)
    assert missing.value.actual is None
    listing = await store.list_projects()
    assert set(listing.projects) == {"p"}  # the failed writes wrote nothing
    stored = listing.projects["p"]
    assert (stored.value, stored.revision) == (doc("p", 2), replaced.revision)


# --- deletes --------------------------------------------------------------------------


async def test_delete_and_conditional_delete(store: Store) -> None:
    with pytest.raises(ProjectNotFound):
        await store.delete_project("ghost")
    with pytest.raises(ProjectNotFound):
        await store.delete_project("ghost", 5)
    put = await store.put_project("doomed", doc("doomed"))
    with pytest.raises(RevisionMismatch) as stale:
        await store.delete_project("doomed", put.revision + 1)
    assert (stale.value.expected, stale.value.actual) == (put.revision + 1, put.revision)

    deleted = await store.delete_project("doomed", put.revision)
    listing = await store.list_projects()
    assert deleted > put.revision
    assert listing.projects == {} and listing.revision >= deleted
    with pytest.raises(ProjectNotFound):
        await store.delete_project("doomed")

    again = await store.put_project("doomed", doc("doomed"))
    assert again.created and again.revision > deleted
    assert await store.delete_project("doomed") > again.revision


# --- size limits ----------------------------------------------------------------------


async def test_values_up_to_the_limit_and_not_one_byte_more(store: Store) -> None:
    """With its version beside it, written by the longest author name and node id."""
    limit = store.value_limit
    widest = VersionStamp("a" * MAX_AUTHOR_LENGTH, "n" * 63)
    fits = await store.put_project("big", doc("big", size=limit), ABSENT, widest)
    with pytest.raises(ValueTooLarge) as too_large:
        await store.put_project("big", doc("big", 2, size=limit + 1), None, widest)

    assert fits.created
    assert (too_large.value.size, too_large.value.limit) == (limit + 1, limit)
    stored = (await store.list_projects()).projects["big"]
    assert (stored.value, stored.revision) == (doc("big", size=limit), fits.revision)
    version = await store.get_version("big", fits.revision)
    assert version is not None and version.value == doc("big", size=limit)
    assert [v.revision for v in await store.list_versions("big", limit=5)] == [fits.revision]


# --- watching projects ----------------------------------------------------------------


async def test_a_watch_from_a_listing_yields_every_later_change_once_in_order(
    store: Store,
) -> None:
    await store.put_project("before", doc("before", 0))
    listing = await store.list_projects()
    a = await store.put_project("a", doc("a", 1))
    b = await store.put_project("b", doc("b", 2))

    async with watching(store.watch_projects(listing)) as watch:
        # Made after the listing, before the watch started: replayed, once.
        assert await changes_until(watch, "b") == [
            ProjectChange("put", "a", a.revision, doc("a", 1)),
            ProjectChange("put", "b", b.revision, doc("b", 2)),
        ]
        # The watch is live now: these arrive as they are made.
        a2 = await store.put_project("a", doc("a", 3), a.revision)
        deleted = await store.delete_project("b")
        end = await store.put_project("end", doc("end"))
        assert await changes_until(watch, "end") == [
            ProjectChange("put", "a", a2.revision, doc("a", 3)),
            ProjectChange("delete", "b", deleted),
            ProjectChange("put", "end", end.revision, doc("end")),
        ]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(watch), 0.5)


#: The stores that replay a past range of changes (docs/design.md §6); the others answer
#: None, and a resume from before an instance's memory gets a snapshot.
REPLAYS = {"local": False, "etcd": True, "consul": True}


async def test_a_past_range_of_changes_is_what_the_watch_yielded_or_none(
    store: Store, backend: str
) -> None:
    listing = await store.list_projects()
    a = await store.put_project("a", doc("a", 1))
    a2 = await store.put_project("a", doc("a", 2))
    await store.delete_project("a")
    b = await store.put_project("b", doc("b"))
    async with watching(store.watch_projects(listing)) as watch:
        watched = await changes_until(watch, "b")
    replayed = await within(store.changes_between(listing.revision, b.revision))
    if not REPLAYS[backend]:
        assert replayed is None
        return
    assert replayed == watched
    assert await within(store.changes_between(a.revision, a2.revision)) == watched[1:2]
    assert await within(store.changes_between(b.revision, b.revision)) == []


async def test_concurrent_writes_reach_the_watch_in_revision_order(store: Store) -> None:
    listing = await store.list_projects()
    results = await asyncio.gather(*(store.put_project(f"p{i}", doc(f"p{i}")) for i in range(8)))
    async with watching(store.watch_projects(listing)) as watch:
        seen: list[ProjectChange] = []
        while len(seen) < 8:
            seen += await within(anext(watch))
    assert [change.revision for change in seen] == sorted(r.revision for r in results)
    assert {change.id for change in seen} == {f"p{i}" for i in range(8)}


@distributed
async def test_cluster_a_never_sees_cluster_ab(open_store: OpenStore, cluster: str) -> None:
    a = await open_store(cluster)
    ab = await open_store(cluster + "b")
    listing = await a.list_projects()
    await ab.put_project("other", doc("other"))
    mine = await a.put_project("mine", doc("mine"))

    async with watching(a.watch_projects(listing)) as watch:
        assert await changes_until(watch, "mine") == [
            ProjectChange("put", "mine", mine.revision, doc("mine"))
        ]
    assert set((await a.list_projects()).projects) == {"mine"}
    assert set((await ab.list_projects()).projects) == {"other"}


@distributed
async def test_changes_by_another_instance_reach_the_watch(
    open_store: OpenStore, cluster: str
) -> None:
    watcher = await open_store(cluster)
    writer = await open_store(cluster)
    listing = await watcher.list_projects()
    async with watching(watcher.watch_projects(listing)) as watch:
        put = await writer.put_project("p", doc("p"))
        assert await within(anext(watch)) == [ProjectChange("put", "p", put.revision, doc("p"))]
        deleted = await writer.delete_project("p", put.revision)
        assert await within(anext(watch)) == [ProjectChange("delete", "p", deleted)]


# --- instances ------------------------------------------------------------------------


async def test_registration_is_seen_by_the_instance_watch(store: Store) -> None:
    with pytest.raises(NotRegistered):
        await store.update_registration(b"too early")
    async with watching(store.watch_instances()) as instances:
        assert await within(anext(instances)) == {}
        await store.register("node-1", b'{"id":"node-1"}')
        assert await within(anext(instances)) == {"node-1": b'{"id":"node-1"}'}
        await store.update_registration(b'{"id":"node-1","appliedRevision":7}')
        assert await within(anext(instances)) == {"node-1": b'{"id":"node-1","appliedRevision":7}'}
        await store.deregister()
        assert await within(anext(instances)) == {}


@distributed
async def test_the_instance_watch_sees_other_instances_join_and_leave(
    open_store: OpenStore, cluster: str
) -> None:
    watcher = await open_store(cluster)
    other = await open_store(cluster)
    outsider = await open_store(cluster + "b")
    await outsider.register("elsewhere", b"x")
    await watcher.register("n1", b"one")
    async with watching(watcher.watch_instances()) as instances:
        assert await within(anext(instances)) == {"n1": b"one"}
        await other.register("n2", b"two")
        assert await within(anext(instances)) == {"n1": b"one", "n2": b"two"}
        await other.update_registration(b"two-b")
        assert await within(anext(instances)) == {"n1": b"one", "n2": b"two-b"}
        await other.deregister()
        assert await within(anext(instances)) == {"n1": b"one"}


# --- minted tokens' records -----------------------------------------------------------

RECORD_A = b'{"id":"0123456789abcdef","name":"a"}'
RECORD_B = b'{"id":"fedcba9876543210","name":"b"}'


async def test_token_records_are_put_listed_and_deleted(store: Store) -> None:
    assert await store.list_tokens() == {}
    await store.put_token("0123456789abcdef", RECORD_A)
    await store.put_token("fedcba9876543210", RECORD_B)
    assert await store.list_tokens() == {
        "0123456789abcdef": RECORD_A,
        "fedcba9876543210": RECORD_B,
    }
    assert await store.delete_token("0123456789abcdef") is True
    assert await store.delete_token("0123456789abcdef") is False
    assert await store.delete_token("0000000000000000") is False
    assert await store.list_tokens() == {"fedcba9876543210": RECORD_B}


async def test_token_records_outlive_the_store_object(
    store: Store, open_store: OpenStore, cluster: str
) -> None:
    await store.put_token("0123456789abcdef", RECORD_A)
    await store.close()  # the local store's file is locked while it is open
    again = await open_store(cluster)
    assert await again.list_tokens() == {"0123456789abcdef": RECORD_A}


async def test_token_records_stay_apart_from_projects(store: Store) -> None:
    await store.put_project("p", doc("p"))
    await store.put_token("0123456789abcdef", RECORD_A)
    assert set((await store.list_projects()).projects) == {"p"}
    await store.put_project("p", doc("p", 2))
    assert await store.list_tokens() == {"0123456789abcdef": RECORD_A}


async def test_the_token_watch_yields_the_full_map_after_every_change(store: Store) -> None:
    await store.put_token("0123456789abcdef", RECORD_A)
    async with watching(store.watch_tokens()) as tokens:
        assert await within(anext(tokens)) == {"0123456789abcdef": RECORD_A}
        await store.put_token("fedcba9876543210", RECORD_B)
        assert await within(anext(tokens)) == {
            "0123456789abcdef": RECORD_A,
            "fedcba9876543210": RECORD_B,
        }
        await store.delete_token("0123456789abcdef")
        assert await within(anext(tokens)) == {"fedcba9876543210": RECORD_B}


@distributed
async def test_another_instances_token_changes_reach_the_watch_and_no_other_cluster(
    open_store: OpenStore, cluster: str
) -> None:
    watcher = await open_store(cluster)
    other = await open_store(cluster)
    outsider = await open_store(cluster + "b")
    async with watching(watcher.watch_tokens()) as tokens:
        assert await within(anext(tokens)) == {}
        await outsider.put_token("fedcba9876543210", RECORD_B)
        await other.put_token("0123456789abcdef", RECORD_A)
        assert await within(anext(tokens)) == {"0123456789abcdef": RECORD_A}
        assert await other.delete_token("0123456789abcdef") is True
        assert await within(anext(tokens)) == {}
    assert await outsider.list_tokens() == {"fedcba9876543210": RECORD_B}


# --- versions -------------------------------------------------------------------------


def stamp(by: str) -> VersionStamp:
    return VersionStamp(by=by, node="node-1")


async def test_every_write_keeps_its_version_also_after_the_deletion(store: Store) -> None:
    created = await store.put_project("p", doc("p", 1), ABSENT, stamp("alice"))
    replaced = await store.put_project("p", doc("p", 2), created.revision, stamp("bob"))
    deleted = await store.delete_project("p", replaced.revision, stamp("carol"))
    await store.put_project("other", doc("other"), None, stamp("dave"))

    versions = await store.list_versions("p", limit=10)
    assert [(v.revision, v.op, v.by, v.node, v.value) for v in versions] == [
        (deleted, "delete", "carol", "node-1", None),
        (replaced.revision, "put", "bob", "node-1", doc("p", 2)),
        (created.revision, "put", "alice", "node-1", doc("p", 1)),
    ]
    assert all(v.at.endswith("Z") and v.project_id == "p" for v in versions)
    for version in versions:
        assert await store.get_version("p", version.revision) == version
    assert await store.get_version("p", versions[0].revision + 1000) is None
    assert await store.get_version("nobody", created.revision) is None
    assert await store.list_versions("nobody", limit=10) == []


async def test_a_failed_write_keeps_no_version(store: Store) -> None:
    created = await store.put_project("p", doc("p", 1), ABSENT)
    with pytest.raises(RevisionMismatch):
        await store.put_project("p", doc("p", 2), created.revision + 1)
    with pytest.raises(RevisionMismatch):
        await store.delete_project("p", created.revision + 1)
    with pytest.raises(ProjectNotFound):
        await store.delete_project("ghost")
    assert [v.revision for v in await store.list_versions("p", limit=10)] == [created.revision]
    assert await store.list_versions("ghost", limit=10) == []
    assert store.version_counts.written == 1


async def test_versions_page_newest_first_with_limit_and_before(store: Store) -> None:
    revisions = [(await store.put_project("p", doc("p", n))).revision for n in range(5)]
    newest_first = revisions[::-1]

    def page(versions: list[Version]) -> list[int]:
        return [version.revision for version in versions]

    assert page(await store.list_versions("p", limit=2)) == newest_first[:2]
    assert (
        page(await store.list_versions("p", limit=2, before=newest_first[1])) == newest_first[2:4]
    )
    assert page(await store.list_versions("p", limit=10, before=revisions[1])) == [revisions[0]]
    assert await store.list_versions("p", limit=10, before=revisions[0]) == []
    assert await store.list_versions("p", limit=10, before=1) == []


async def test_only_the_newest_versions_are_kept(open_store: OpenStore, cluster: str) -> None:
    store = await open_store(cluster, keep_versions=3)
    revisions = [(await store.put_project("p", doc("p", n))).revision for n in range(6)]
    deleted = await store.delete_project("p")
    kept = await store.list_versions("p", limit=10)
    assert [v.revision for v in kept] == [deleted, revisions[-1], revisions[-2]]
    assert await store.get_version("p", revisions[0]) is None
    assert (store.version_counts.written, store.version_counts.pruned) == (7, 4)


async def test_concurrent_writers_each_keep_a_version_and_never_prune_the_newest(
    open_store: OpenStore, cluster: str, backend: str
) -> None:
    """Three instances (the local store is one) racing unconditional writes."""
    keep = 4
    count = 1 if backend == "local" else 3
    writers = [await open_store(cluster, keep_versions=keep) for _ in range(count)]
    results = await asyncio.gather(
        *(writers[n % count].put_project("p", doc("p", n), None, stamp(f"w{n}")) for n in range(12))
    )
    written = sorted(result.revision for result in results)
    kept = [v.revision for v in await writers[0].list_versions("p", limit=100)]
    # At least the newest `keep`, every one a write's, with nothing missing in between.
    assert len(kept) >= keep
    assert kept == written[::-1][: len(kept)]
    for version in await writers[0].list_versions("p", limit=100):
        n = int(version.by.removeprefix("w"))
        assert version.value == doc("p", n)
        assert results[n].revision == version.revision


async def test_versions_survive_reopening_the_store(open_store: OpenStore, cluster: str) -> None:
    store = await open_store(cluster)
    odd = b'{"id":"p","n":1e16,"s":"\\u2028 \xc3\xa9 : #","x":[true,null,-0.5]}'
    put = await store.put_project("p", odd, None, stamp("alice"))
    deleted = await store.delete_project("p", None, stamp("bob"))
    before = await store.list_versions("p", limit=10)
    await store.close()

    reopened = await open_store(cluster)
    assert await reopened.list_versions("p", limit=10) == before
    version = await reopened.get_version("p", put.revision)
    assert version is not None and version.value == odd  # the very bytes
    assert [v.revision for v in before] == [deleted, put.revision]


@distributed
async def test_foreign_keys_under_the_history_are_skipped_not_fatal(
    store: Store, server: Any, backend: str, cluster: str
) -> None:
    """Another tool's keys and values under a project's history neither break a write nor
    show up as versions (a key that is not a slot is also never pruned)."""
    prefix = f"sc/history/{cluster}/p/"
    foreign = {prefix + "zz-not-a-slot": "x", prefix + "9".zfill(20): '{"op":"launch"}'}
    for key, value in foreign.items():
        if backend == "etcd":
            server.etcdctl("put", key, value)
        else:
            assert server.api("PUT", f"/v1/kv/{key}", content=value.encode()).status_code == 200
    put = await store.put_project("p", doc("p"))
    assert [v.revision for v in await store.list_versions("p", limit=10)] == [put.revision]
    assert await store.get_version("p", put.revision) is not None


@distributed
async def test_writes_interleaved_across_instances_keep_revision_order(
    open_store: OpenStore, cluster: str
) -> None:
    """An instance whose own last version was superseded, or pruned, by another's writes
    still puts its next version after theirs, and prunes only the oldest."""
    a = await open_store(cluster, keep_versions=2)
    b = await open_store(cluster, keep_versions=2)
    written: list[int] = []

    async def check() -> None:
        for store in (a, b):
            versions = await store.list_versions("p", limit=10)
            assert [v.revision for v in versions] == written[::-1][:2]

    written.append((await a.put_project("p", doc("p", 0))).revision)
    written.append((await b.put_project("p", doc("p", 1))).revision)
    await check()
    written.append((await a.put_project("p", doc("p", 2))).revision)  # its next slot taken
    await check()
    for n in (3, 4, 5):
        written.append((await b.put_project("p", doc("p", n))).revision)
    await check()
    written.append(await a.delete_project("p"))  # its last version pruned meanwhile
    await check()
    written.append((await b.put_project("p", doc("p", 7))).revision)
    await check()
    versions = await a.list_versions("p", limit=10)
    assert [v.value for v in versions] == [doc("p", 7), None]


# --- every write an event ---------------------------------------------------------------


async def test_every_acknowledged_write_is_one_event_in_order_for_every_watcher(
    open_store: OpenStore, cluster: str, backend: str
) -> None:
    """8 writers race 200 writes (puts and deletes) over 3 hot projects through two store
    objects (the local store is one): two independent watchers, one live and one that
    starts after the last write, each see every acknowledged write exactly once, in
    revision order, the very same sequence (a watch that only compared listings would
    see three projects' last states)."""
    count = 1 if backend == "local" else 2
    # Every version kept: a watch that starts late reads the values of early writes.
    writers = [await open_store(cluster, keep_versions=100) for _ in range(count)]
    watchers = writers if backend == "local" else [await open_store(cluster) for _ in range(2)]
    listing = await watchers[0].list_projects()
    written: list[ProjectChange] = []

    async def write(task: int) -> None:
        store = writers[task % count]
        for n in range(25):
            project_id = f"hot{(task + n) % 3}"
            # Not acknowledged: gone already, or lost to the others too often (Consul).
            with contextlib.suppress(ProjectNotFound, StoreUnavailable):
                if n % 7 == 6:
                    revision = await store.delete_project(project_id)
                    written.append(ProjectChange("delete", project_id, revision))
                else:
                    value = doc(project_id, task * 100 + n)
                    put = await store.put_project(project_id, value)
                    written.append(ProjectChange("put", project_id, put.revision, value))

    async def watch(store: Store, seen: list[ProjectChange]) -> None:
        async with watching(store.watch_projects(listing)) as changes:
            async for batch in changes:
                seen += batch

    seen: tuple[list[ProjectChange], list[ProjectChange]] = ([], [])
    watches = [asyncio.create_task(watch(watchers[0], seen[0]))]
    await asyncio.gather(*(write(task) for task in range(8)))
    watches.append(asyncio.create_task(watch(watchers[-1], seen[1])))
    last = max(change.revision for change in written)

    def caught_up() -> bool:
        if any(task.done() for task in watches):
            return True  # it raised: the result below says why
        return all(into and into[-1].revision >= last for into in seen)

    await eventually_async(caught_up, 6 * TIMEOUT, "both watchers to see the last write")
    for task in watches:
        if task.done():
            task.result()
        task.cancel()
    expected = sorted(written, key=lambda change: change.revision)
    assert len(expected) > 150
    assert seen[0] == expected
    assert seen[1] == expected
