"""What only the etcd store does, against real etcd servers (tests/servers/etcd.py):
leases, compaction, failover between members, TLS and user/password auth.

The Store contract it shares with the other stores is in test_store_contract.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager

import pytest

from app.stores.base import (
    ETCD_VALUE_LIMIT,
    MAX_AUTHOR_LENGTH,
    MAX_PRUNED_PER_WRITE,
    ProjectChange,
    ProjectListing,
    RevisionMismatch,
    StoreConfigError,
    StoreUnavailable,
    ValueTooLarge,
    VersionStamp,
    WatchReset,
    instances_prefix,
    projects_prefix,
)
from app.stores.etcd import EtcdStore
from app.stores.etcd.replay import WATCH_BATCH_MAX_REVS
from tests.eventually import eventually_async
from tests.servers.etcd import AUTH_TOKEN_TTL, ROOT_PASSWORD, USER, EtcdFactory, EtcdServer
from tests.servers.process import free_port

TIMEOUT = 2.0
INSTANCE_TTL = 3


@pytest.fixture
def cluster() -> str:
    """A cluster id of this test's own, for isolation on the shared etcd."""
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def store(etcd_server: EtcdServer, cluster: str) -> AsyncIterator[EtcdStore]:
    async with opened(etcd_server, cluster) as store:
        yield store


@asynccontextmanager
async def opened(
    server: EtcdServer, cluster: str, timeout: float = TIMEOUT, **env: str
) -> AsyncIterator[EtcdStore]:
    """An open store on ``server`` (``env`` overrides its ETCD_* variables), closed after."""
    store = EtcdStore(server.config(**env), cluster, instance_ttl=INSTANCE_TTL, timeout=timeout)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def changes_until(
    store: EtcdStore, since: ProjectListing, last_id: str, timeout: float = 5.0
) -> list[ProjectChange]:
    """Every change the watch yields up to and including one of project ``last_id``."""
    seen: list[ProjectChange] = []
    async with asyncio.timeout(timeout), aclosing(store.watch_projects(since)) as watch:
        async for batch in watch:
            seen.extend(batch)
            if any(change.id == last_id for change in batch):
                return seen
    raise AssertionError("the watch ended")


async def is_reachable(store: EtcdStore) -> bool:
    try:
        await store.check()
    except StoreUnavailable:
        return False
    return True


def instance_key(server: EtcdServer, cluster: str, node: str) -> dict | None:
    """The instance key as etcdctl (another client) sees it."""
    out = server.etcdctl("get", instances_prefix(cluster) + node, "-w", "json")
    kvs = json.loads(out).get("kvs", [])
    return kvs[0] if kvs else None


# --- projects -------------------------------------------------------------------------


async def test_a_request_etcd_refuses_for_its_size_is_value_too_large(
    etcd_server: EtcdServer, cluster: str
) -> None:
    async with opened(etcd_server, cluster) as store:
        store.value_limit = 3 * 1024 * 1024  # past our own check: etcd refuses it
        with pytest.raises(ValueTooLarge):
            await store.put_project("bigger", b"x" * (2 * 1024 * 1024))

    async with opened(etcd_server, cluster, ETCD_ENDPOINTS=f"127.0.0.1:{free_port()}") as dead:
        with pytest.raises(ValueTooLarge):  # refused before any connection is tried
            await dead.put_project("big", b"x" * (dead.value_limit + 1))


async def test_the_value_limit_is_what_the_largest_transaction_takes(
    etcd_server: EtcdServer, cluster: str
) -> None:
    """At the limit, the largest transaction (the longest ids, author and node, an
    If-Match, the version beside the project, 16 pruned versions) reaches etcd, which only
    finds the revision stale; 1 KiB more and etcd itself refuses it for its size."""
    cluster = cluster.ljust(63, "c")
    project = "p" * 63
    widest = VersionStamp("a" * MAX_AUTHOR_LENGTH, "n" * 63)
    store = EtcdStore(etcd_server.config(), cluster, timeout=TIMEOUT, keep_versions=1)
    await store.open()
    try:
        for _ in range(MAX_PRUNED_PER_WRITE + 1):
            await store.put_project(project, b"{}", None, widest)
        with pytest.raises(RevisionMismatch):
            await store.put_project(project, b"x" * ETCD_VALUE_LIMIT, 2**62, widest)
        store.value_limit = 2 * ETCD_VALUE_LIMIT  # past our own check: etcd refuses it
        with pytest.raises(ValueTooLarge):
            await store.put_project(project, b"x" * (ETCD_VALUE_LIMIT + 1024), 2**62, widest)
    finally:
        await store.close()


# --- watches --------------------------------------------------------------------------


async def test_watch_from_compacted_revision_resets(
    store: EtcdStore, etcd_server: EtcdServer
) -> None:
    listing = await store.list_projects()
    await store.put_project("a", b"1")
    await store.put_project("a", b"2")
    etcd_server.compact()

    with pytest.raises(WatchReset):
        await changes_until(store, listing, "never")


# --- replay: changes_between is exactly what a watch handed up, or None once compacted
# (docs/design.md §6); the stream's side of the replay is in test_replay.py ------------

STAMP = VersionStamp("tester", "node-t")


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


# --- instances ------------------------------------------------------------------------


async def test_register_and_deregister(
    store: EtcdStore, etcd_server: EtcdServer, cluster: str
) -> None:
    await store.register("node-1", b'{"id":"node-1"}')
    key = instance_key(etcd_server, cluster, "node-1")
    assert key is not None and int(key["lease"]) != 0

    await store.update_registration(b'{"id":"node-1","appliedRevision":7}')
    updated = instance_key(etcd_server, cluster, "node-1")
    assert updated is not None and updated["lease"] == key["lease"]

    await store.deregister()
    assert instance_key(etcd_server, cluster, "node-1") is None


async def test_lost_lease_is_registered_again(
    store: EtcdStore, etcd_server: EtcdServer, cluster: str
) -> None:
    await store.register("node-1", b"record")
    key = instance_key(etcd_server, cluster, "node-1")
    assert key is not None

    etcd_server.etcdctl("lease", "revoke", format(int(key["lease"]), "x"))  # as if expired
    assert instance_key(etcd_server, cluster, "node-1") is None

    await eventually_async(
        lambda: instance_key(etcd_server, cluster, "node-1") is not None,
        INSTANCE_TTL + 2,
        "the keepalive to register again",
    )
    again = instance_key(etcd_server, cluster, "node-1")
    assert again is not None and again["lease"] != key["lease"]


async def test_registration_survives_etcd_restart(etcd_factory: EtcdFactory) -> None:
    server = etcd_factory()
    async with opened(server, "c") as store:
        await store.register("node-1", b"record")
        server.stop()
        with pytest.raises(StoreUnavailable):
            await store.check()
        server.start()

        await eventually_async(lambda: is_reachable(store), 10, "etcd to be reachable again", 0.2)
        # Time passes (nothing to await): past a TTL after the restart, the key is there only
        # because it was renewed or registered again.
        await asyncio.sleep(INSTANCE_TTL + 0.5)
        assert instance_key(server, "c", "node-1") is not None


# --- TLS and authentication -----------------------------------------------------------


async def test_tls_with_client_certificates(etcd_factory: EtcdFactory) -> None:
    server = etcd_factory(tls=True)
    assert server.certs is not None

    async with opened(server, "c") as store:
        await store.check()
        put = await store.put_project("p", b"secure")
        assert (await store.list_projects()).projects["p"].revision == put.revision

    wrong = {  # a blank variable is an unset one
        "wrong CA": {"ETCD_CACERT": str(server.certs.other_ca)},
        "no CA (system roots)": {"ETCD_CACERT": "", "ETCD_HTTP_SSL": "true"},
        "no client certificate": {"ETCD_CLIENT_CERT": "", "ETCD_CLIENT_KEY": ""},
    }
    for overrides in wrong.values():
        async with opened(server, "c", TIMEOUT, **overrides) as store:
            with pytest.raises(StoreConfigError, match="TLS handshake"):
                await store.check()


async def test_user_and_password(
    etcd_factory: EtcdFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="space_cloud.stores.etcd")
    server = etcd_factory(auth=True)
    async with opened(server, "c") as store:
        first = await store.put_project("p", b"1")
        await asyncio.sleep(AUTH_TOKEN_TTL + 1.5)  # time passes: the token expires while idle
        second = await store.put_project("p", b"2", first.revision)
        listing = await store.list_projects()
        # Another client writes; then, once the token has expired, a watch is the first call.
        root = f"root:{ROOT_PASSWORD}"
        out = server.etcdctl("put", projects_prefix("c") + "p", "3", "-w", "json", user=root)
        third = json.loads(out)["header"]["revision"]
        await asyncio.sleep(AUTH_TOKEN_TTL + 1.5)  # and expires again
        seen = await changes_until(store, listing, "p")
        assert second.revision == listing.revision
        assert seen == [ProjectChange("put", "p", third, b"3")]
    logins = [r for r in caplog.records if r.getMessage().startswith("authenticated")]
    assert len(logins) == 3, "the token should have expired twice"

    store = EtcdStore(server.config(ETCD_PASSWORD="wrong"), "c", timeout=TIMEOUT)
    with pytest.raises(StoreConfigError, match=f"authentication failed for user '{USER}'"):
        await store.open()
    await store.close()

    async with opened(server, "c", ETCD_USER="", ETCD_PASSWORD="") as anonymous:
        with pytest.raises(StoreConfigError, match="ETCD_USER"):
            await anonymous.check()


# --- failures -------------------------------------------------------------------------


async def test_cluster_failover_when_the_member_in_use_dies(etcd_factory: EtcdFactory) -> None:
    server = etcd_factory(members=3)
    leader = server.leader()
    # The leader first: the client starts on it, and its death also costs an election.
    order = [leader] + [i for i in range(3) if i != leader]
    endpoints = ",".join(server.members[i].endpoint for i in order)
    async with opened(server, "c", timeout=5.0, ETCD_ENDPOINTS=endpoints) as store:
        put = await store.put_project("p", b"1")
        listing = await store.list_projects()
        assert store.active_endpoint == server.members[leader].endpoint

        server.kill(leader)
        during_election = await store.put_project("q", b"2")
        replaced = await store.put_project("p", b"3", put.revision)
        after = await store.list_projects()
        seen = await changes_until(store, listing, "p")
        assert store.active_endpoint != server.members[leader].endpoint

    assert after.projects["p"].revision == replaced.revision
    assert seen == [
        ProjectChange("put", "q", during_election.revision, b"2"),
        ProjectChange("put", "p", replaced.revision, b"3"),
    ]


async def test_frozen_etcd_fails_calls_and_watches_then_recovers(
    store: EtcdStore, etcd_server: EtcdServer
) -> None:
    listing = await store.list_projects()
    seen: list[ProjectChange] = []
    watch_error: list[tuple[BaseException, float]] = []

    async def watch() -> None:
        try:
            async for batch in store.watch_projects(listing):
                seen.extend(batch)
        except Exception as error:
            watch_error.append((error, time.monotonic()))

    watcher = asyncio.create_task(watch())
    await store.put_project("before", b"{}")
    await eventually_async(lambda: bool(seen), 5, "the watch to be established")
    etcd_server.pause()
    try:
        paused = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.put_project("p", b"frozen")
        assert time.monotonic() - paused < TIMEOUT + 1.0

        await eventually_async(lambda: bool(watch_error), 16, "the watch to fail")
        error, failed_at = watch_error[0]
        assert isinstance(error, StoreUnavailable)
        assert failed_at - paused < 15
    finally:
        etcd_server.resume()
        watcher.cancel()

    await eventually_async(lambda: is_reachable(store), 10, "etcd to be reachable again", 0.2)
    await store.put_project("p", b"thawed")
    assert (await store.list_projects()).projects["p"].value == b"thawed"


async def test_unreachable_etcd_is_unavailable(etcd_server: EtcdServer) -> None:
    async with opened(etcd_server, "c", ETCD_ENDPOINTS=f"127.0.0.1:{free_port()}") as store:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.check()
        with pytest.raises(StoreUnavailable):
            await store.list_projects()
        assert time.monotonic() - started < TIMEOUT


def test_stores_on_separate_event_loops(etcd_server: EtcdServer, cluster: str) -> None:
    async def use_once(value: bytes) -> bytes:
        async with opened(etcd_server, cluster) as store:
            await store.check()
            await store.put_project("p", value)
            return (await store.list_projects()).projects["p"].value

    assert asyncio.run(use_once(b"first")) == b"first"
    assert asyncio.run(use_once(b"second")) == b"second"
