"""The etcd store against real etcd servers (fixtures in tests/servers/etcd.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager

import pytest

from app.stores.base import (
    ABSENT,
    ProjectChange,
    ProjectListing,
    ProjectNotFound,
    RevisionMismatch,
    StoreConfigError,
    StoreUnavailable,
    ValueTooLarge,
    WatchReset,
    instances_prefix,
)
from app.stores.etcd import EtcdStore
from tests.servers.etcd import AUTH_TOKEN_TTL, USER, EtcdFactory, EtcdServer
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
    server: EtcdServer, cluster: str, timeout: float = TIMEOUT, **settings: object
) -> AsyncIterator[EtcdStore]:
    """An open store on ``server`` (``settings`` override its ETCD_* values), closed after."""
    store = EtcdStore(
        server.settings(**settings), cluster, instance_ttl=INSTANCE_TTL, timeout=timeout
    )
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def eventually(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


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


async def until_reachable(store: EtcdStore, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await store.check()
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def instance_key(server: EtcdServer, cluster: str, node: str) -> dict | None:
    """The instance key as etcdctl (another client) sees it."""
    out = server.etcdctl("get", instances_prefix(cluster) + node, "-w", "json")
    kvs = json.loads(out).get("kvs", [])
    return kvs[0] if kvs else None


# --- projects -------------------------------------------------------------------------


async def test_put_and_list(store: EtcdStore) -> None:
    first = await store.put_project("alpha", b'{"id":"alpha"}')
    again = await store.put_project("alpha", b'{"id":"alpha","v":2}')
    beta = await store.put_project("beta", b'{"id":"beta"}', ABSENT)

    listing = await store.list_projects()

    assert first.created and not again.created and beta.created
    assert first.revision < again.revision < beta.revision <= listing.revision
    assert set(listing.projects) == {"alpha", "beta"}
    assert listing.projects["alpha"].value == b'{"id":"alpha","v":2}'
    assert listing.projects["alpha"].revision == again.revision


async def test_conditional_put(store: EtcdStore) -> None:
    created = await store.put_project("p", b"1", ABSENT)
    with pytest.raises(RevisionMismatch) as exists:
        await store.put_project("p", b"2", ABSENT)
    replaced = await store.put_project("p", b"3", created.revision)
    with pytest.raises(RevisionMismatch) as stale:
        await store.put_project("p", b"4", created.revision)
    with pytest.raises(RevisionMismatch) as missing:
        await store.put_project("nope", b"5", created.revision)

    assert exists.value.actual == created.revision
    assert not replaced.created and replaced.revision > created.revision
    assert (stale.value.expected, stale.value.actual) == (created.revision, replaced.revision)
    assert missing.value.actual is None
    assert (await store.list_projects()).projects["p"].value == b"3"


async def test_delete(store: EtcdStore) -> None:
    put = await store.put_project("p", b"1")
    with pytest.raises(ProjectNotFound):
        await store.delete_project("missing")
    with pytest.raises(RevisionMismatch) as stale:
        await store.delete_project("p", put.revision - 1)
    revision = await store.delete_project("p", put.revision)
    with pytest.raises(ProjectNotFound):
        await store.delete_project("p")

    assert stale.value.actual == put.revision
    assert revision > put.revision
    listing = await store.list_projects()
    assert listing.projects == {} and listing.revision >= revision


async def test_value_limit(etcd_server: EtcdServer, cluster: str) -> None:
    async with opened(etcd_server, cluster) as store:
        fits = await store.put_project("big", b"x" * store.value_limit)
        assert fits.created

        store.value_limit = 3 * 1024 * 1024  # past our own check: etcd refuses it
        with pytest.raises(ValueTooLarge):
            await store.put_project("bigger", b"x" * (2 * 1024 * 1024))

    async with opened(etcd_server, cluster, endpoints=f"127.0.0.1:{free_port()}") as dead:
        with pytest.raises(ValueTooLarge):  # refused before any connection is tried
            await dead.put_project("big", b"x" * (dead.value_limit + 1))


# --- watches --------------------------------------------------------------------------


async def test_watch_yields_exactly_the_later_changes_in_order(store: EtcdStore) -> None:
    await store.put_project("before", b"0")
    listing = await store.list_projects()
    a = await store.put_project("a", b"1")
    b = await store.put_project("b", b"2")

    async def write_more() -> list[int]:
        await asyncio.sleep(0.2)  # the watch is replaying by now; these arrive live
        a2 = await store.put_project("a", b"3", a.revision)
        deleted = await store.delete_project("b")
        end = await store.put_project("end", b"")
        return [a2.revision, deleted, end.revision]

    writer = asyncio.create_task(write_more())
    seen = await changes_until(store, listing, "end")
    a2, deleted, end = await writer

    assert seen == [
        ProjectChange("put", "a", a.revision, b"1"),
        ProjectChange("put", "b", b.revision, b"2"),
        ProjectChange("put", "a", a2, b"3"),
        ProjectChange("delete", "b", deleted),
        ProjectChange("put", "end", end, b""),
    ]


async def test_watch_from_compacted_revision_resets(
    store: EtcdStore, etcd_server: EtcdServer
) -> None:
    listing = await store.list_projects()
    await store.put_project("a", b"1")
    await store.put_project("a", b"2")
    etcd_server.compact()

    with pytest.raises(WatchReset):
        await changes_until(store, listing, "never")


async def test_watch_of_cluster_a_does_not_see_cluster_ab(
    etcd_server: EtcdServer, cluster: str
) -> None:
    async with opened(etcd_server, cluster) as a, opened(etcd_server, cluster + "b") as ab:
        listing = await a.list_projects()
        await ab.put_project("p", b"ab")
        mine = await a.put_project("p", b"a")

        seen = await changes_until(a, listing, "p")

    assert seen == [ProjectChange("put", "p", mine.revision, b"a")]


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

    await eventually(
        lambda: instance_key(etcd_server, cluster, "node-1") is not None,
        "the keepalive to register again",
        timeout=INSTANCE_TTL + 2,
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

        await until_reachable(store)
        await asyncio.sleep(INSTANCE_TTL + 0.5)  # renewed, or re-registered, by now
        assert instance_key(server, "c", "node-1") is not None


async def test_watch_instances_sees_joins_and_leaves(etcd_server: EtcdServer, cluster: str) -> None:
    async with opened(etcd_server, cluster) as watcher, opened(etcd_server, cluster) as other:
        await watcher.register("a", b"A")
        async with asyncio.timeout(5), aclosing(watcher.watch_instances()) as maps:
            assert await anext(maps) == {"a": b"A"}
            await other.register("b", b"B")
            assert await anext(maps) == {"a": b"A", "b": b"B"}
            await other.update_registration(b"B2")
            assert await anext(maps) == {"a": b"A", "b": b"B2"}
            await other.deregister()
            assert await anext(maps) == {"a": b"A"}


# --- TLS and authentication -----------------------------------------------------------


async def test_tls_with_client_certificates(etcd_factory: EtcdFactory) -> None:
    server = etcd_factory(tls=True)
    assert server.certs is not None

    async with opened(server, "c") as store:
        await store.check()
        put = await store.put_project("p", b"secure")
        assert (await store.list_projects()).projects["p"].revision == put.revision

    wrong = {
        "wrong CA": {"cacert": server.certs.other_ca},
        "no CA (system roots)": {"cacert": None, "http_ssl": True},
        "no client certificate": {"client_cert": None, "client_key": None},
    }
    for overrides in wrong.values():
        async with opened(server, "c", **overrides) as store:
            with pytest.raises(StoreConfigError, match="TLS handshake"):
                await store.check()


async def test_user_and_password(
    etcd_factory: EtcdFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="app.stores.etcd_client")
    server = etcd_factory(auth=True)
    async with opened(server, "c") as store:
        first = await store.put_project("p", b"1")
        await asyncio.sleep(AUTH_TOKEN_TTL + 1.5)  # the token expires while idle
        second = await store.put_project("p", b"2", first.revision)
        listing = await store.list_projects()
        await asyncio.sleep(AUTH_TOKEN_TTL + 1.5)  # now a watch is the first call

        async def write_later() -> int:
            await asyncio.sleep(0.3)
            return (await store.put_project("p", b"3")).revision

        writer = asyncio.create_task(write_later())
        seen = await changes_until(store, listing, "p")
        assert second.revision == listing.revision
        assert seen == [ProjectChange("put", "p", await writer, b"3")]
    logins = [r for r in caplog.records if r.getMessage().startswith("authenticated")]
    assert len(logins) == 3, "the token should have expired twice"

    store = EtcdStore(server.settings(password="wrong"), "c", timeout=TIMEOUT)
    with pytest.raises(StoreConfigError, match=f"authentication failed for user '{USER}'"):
        await store.open()
    await store.close()

    async with opened(server, "c", user=None, password=None) as anonymous:
        with pytest.raises(StoreConfigError, match="ETCD_USER"):
            await anonymous.check()


# --- failures -------------------------------------------------------------------------


async def test_cluster_failover_when_the_member_in_use_dies(etcd_factory: EtcdFactory) -> None:
    server = etcd_factory(members=3)
    leader = server.leader()
    # The leader first: the client starts on it, and its death also costs an election.
    order = [leader] + [i for i in range(3) if i != leader]
    endpoints = ",".join(server.members[i].endpoint for i in order)
    async with opened(server, "c", timeout=5.0, endpoints=endpoints) as store:
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
    watch_error: list[tuple[BaseException, float]] = []

    async def watch() -> None:
        try:
            async for _ in store.watch_projects(listing):
                pass
        except Exception as error:
            watch_error.append((error, time.monotonic()))

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.3)
    etcd_server.pause()
    try:
        paused = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.put_project("p", b"frozen")
        assert time.monotonic() - paused < TIMEOUT + 1.0

        await eventually(lambda: bool(watch_error), "the watch to fail", timeout=16)
        error, failed_at = watch_error[0]
        assert isinstance(error, StoreUnavailable)
        assert failed_at - paused < 15
    finally:
        etcd_server.resume()
        watcher.cancel()

    await until_reachable(store)
    await store.put_project("p", b"thawed")
    assert (await store.list_projects()).projects["p"].value == b"thawed"


async def test_unreachable_etcd_is_unavailable(etcd_server: EtcdServer) -> None:
    async with opened(etcd_server, "c", endpoints=f"127.0.0.1:{free_port()}") as store:
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
