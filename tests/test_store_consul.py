"""What only the Consul store does, against real Consul agents (tests/servers/consul.py):
the change log and its watch, deletion marks, index resets, sessions and heartbeats, the
transaction size limit, TLS, ACLs and the CONSUL_* variables, outages.

The Store contract it shares with the other stores is in test_store_contract.py.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.stores.base import (
    ABSENT,
    CONSUL_VALUE_LIMIT,
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
)
from app.stores.consul import ConsulConfig, ConsulStore
from app.stores.consul import projects as consul_projects
from app.stores.consul.client import SentRequest
from app.stores.consul.instances import Heartbeats
from tests.eventually import eventually, eventually_async
from tests.servers.consul import ConsulAgent, ConsulCertificates, ConsulFactory, start_consul
from tests.servers.process import free_port

OpenStore = Callable[..., Awaitable[ConsulStore]]


def new_cluster() -> str:
    return f"c{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def open_store() -> AsyncIterator[OpenStore]:
    """Open ConsulStores for one test; all closed at teardown."""
    stores: list[ConsulStore] = []

    async def make(config: ConsulConfig, cluster: str | None = None, **kwargs: Any) -> ConsulStore:
        store = ConsulStore(config, cluster or new_cluster(), **kwargs)
        await store.open()
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


@pytest.fixture
async def store(consul_server: ConsulAgent, open_store: OpenStore) -> ConsulStore:
    return await open_store(consul_server.config())


@pytest.fixture(scope="module")
def secure_consul(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsulAgent]:
    """One agent with TLS (verify_incoming) and ACLs (default deny) for this module."""
    agent = start_consul(tmp_path_factory.mktemp("consul-secure"), tls=True, acl=True)
    yield agent
    agent.stop()


async def next_batch(watch: AsyncIterator[Any], timeout: float = 5.0) -> Any:
    return await asyncio.wait_for(anext(watch), timeout)


async def collect(watch: AsyncIterator[list[ProjectChange]], count: int) -> list[ProjectChange]:
    changes: list[ProjectChange] = []
    while len(changes) < count:
        changes += await next_batch(watch)
    return changes


def blocking_query_sent(store: ConsulStore) -> asyncio.Event:
    """Set once the store sends a blocking query (a watch waiting on Consul)."""
    sent = asyncio.Event()

    def on_request(request: SentRequest) -> None:
        if "index" in request.params:
            sent.set()

    store._open_client().observers.append(on_request)
    return sent


def held_by(agent: ConsulAgent, key: str) -> str | None:
    """The session holding ``key``, None when the key does not exist."""
    response = agent.api("GET", f"/v1/kv/{key}")
    return response.json()[0].get("Session") if response.status_code == 200 else None


# --- projects -----------------------------------------------------------------------


async def test_value_too_large_is_refused_before_consul_is_asked(open_store: OpenStore) -> None:
    nowhere = ConsulConfig.from_env({"CONSUL_HTTP_ADDR": f"127.0.0.1:{free_port()}"})
    store = await open_store(nowhere, timeout=1)
    with pytest.raises(ValueTooLarge) as too_large:
        await store.put_project("huge", b"x" * (CONSUL_VALUE_LIMIT + 1))
    assert too_large.value.limit == CONSUL_VALUE_LIMIT
    with pytest.raises(StoreUnavailable):
        await store.put_project("small", b"{}")


async def test_the_value_limit_is_what_the_largest_transaction_takes(
    consul_server: ConsulAgent, open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the limit, the largest transaction (the longest ids, author and node, a cas,
    the version beside the project, the check of the store's own last version, 16 pruned
    versions) reaches Consul, which only finds
    the cas stale; 64 bytes more and Consul itself refuses it for its size."""
    cluster = new_cluster().ljust(63, "c")
    project = "p" * 63
    store = await open_store(consul_server.config(), cluster, keep_versions=1)
    widest = VersionStamp("a" * MAX_AUTHOR_LENGTH, "n" * 63)
    for _ in range(MAX_PRUNED_PER_WRITE + 1):
        await store.put_project(project, b"{}", None, widest)
    with pytest.raises(RevisionMismatch):
        await store.put_project(project, b"x" * CONSUL_VALUE_LIMIT, 2**63, widest)

    monkeypatch.setattr(consul_projects, "CONSUL_VALUE_LIMIT", 10 * CONSUL_VALUE_LIMIT)
    await store.put_project(project, b"{}", None, widest)  # planned from its own last write
    with pytest.raises(ValueTooLarge) as too_large:
        await store.put_project(project, b"x" * (CONSUL_VALUE_LIMIT + 64), 2**63, widest)
    # Consul names its body limit; the figure derived from it is within a few bytes.
    assert abs(too_large.value.limit - CONSUL_VALUE_LIMIT) < 48


async def test_a_consul_with_lower_limits_refuses_with_its_own_figure(
    consul_factory: ConsulFactory, open_store: OpenStore
) -> None:
    agent = consul_factory(
        extra_config="limits { txn_max_req_len = 65536, kv_max_value_size = 65536 }"
    )
    store = await open_store(agent.config())
    with pytest.raises(ValueTooLarge) as too_large:
        await store.put_project("big", b"x" * 60_000)
    limit = too_large.value.limit
    # 64 KiB of transaction, base64, the project twice (beside its version): about 24 KB.
    assert 20_000 < limit < 30_000
    # Some room below it: each write's random Flags value may be a digit or two wider.
    put = await store.put_project("big", b"x" * (limit - 30))
    assert (await store.list_projects()).projects["big"].revision == put.revision


# --- watching projects ----------------------------------------------------------------


async def test_deletes_carry_their_own_revision_between_puts(
    consul_server: ConsulAgent, open_store: OpenStore
) -> None:
    """Deletes and puts that reach the watch in one answer keep their own order, even
    for ids that start with another id (Consul's tombstone probe covers both)."""
    cluster = new_cluster()
    store = await open_store(consul_server.config(), cluster)
    writer = await open_store(consul_server.config(), cluster)
    for project_id in ("app", "app-staging", "app-staging-2", "web"):
        await writer.put_project(project_id, b"{}")
    since = await store.list_projects()
    expected = [
        ProjectChange("delete", "app-staging", await writer.delete_project("app-staging")),
        ProjectChange("put", "web", (await writer.put_project("web", b"1")).revision, b"1"),
        ProjectChange("delete", "app", await writer.delete_project("app")),
        ProjectChange(
            "put", "app-staging-2", (await writer.put_project("app-staging-2", b"2")).revision, b"2"
        ),
    ]
    assert [c.revision for c in expected] == sorted(c.revision for c in expected)
    changes = await collect(store.watch_projects(since), 4)
    assert changes == expected


async def test_a_delete_by_another_consul_client_keeps_its_revision(
    consul_server: ConsulAgent, open_store: OpenStore
) -> None:
    cluster = new_cluster()
    store = await open_store(consul_server.config(), cluster)
    await store.put_project("gone", b"{}")
    since = await store.list_projects()
    watch = store.watch_projects(since)
    consul_server.api("DELETE", f"/v1/kv/sc/projects/{cluster}/gone").raise_for_status()
    [deleted] = await next_batch(watch)
    after = await store.put_project("after", b"{}")
    assert await next_batch(watch) == [ProjectChange("put", "after", after.revision, b"{}")]
    assert (deleted.kind, deleted.id) == ("delete", "gone")
    assert since.revision < deleted.revision < after.revision


async def test_a_change_by_another_client_hidden_behind_a_gateway_write_resets_the_watch(
    consul_server: ConsulAgent, open_store: OpenStore
) -> None:
    """Made before the watch reads the sentinel, a foreign put is masked by the gateway's
    later write (the sentinel shows only the highest revision): the verification that
    follows finds it below the revisions emitted, and the watch asks for a resync."""
    cluster = new_cluster()
    store = await open_store(consul_server.config(), cluster, verify_seconds=0.5)
    since = await store.list_projects()
    consul_server.api("PUT", f"/v1/kv/sc/projects/{cluster}/hidden", content=b"{}")
    ours = await store.put_project("ours", b"{}")
    watch = store.watch_projects(since)
    assert await next_batch(watch) == [ProjectChange("put", "ours", ours.revision, b"{}")]
    with pytest.raises(WatchReset, match="hidden behind"):
        await next_batch(watch)
    listing = await store.list_projects()
    assert set(listing.projects) == {"hidden", "ours"}


def requests_seen(store: ConsulStore) -> list[SentRequest]:
    """Every request the store sends from now on."""
    seen: list[SentRequest] = []
    store._open_client().observers.append(seen.append)
    return seen


def project_listings(requests: list[SentRequest], cluster: str) -> list[SentRequest]:
    """The requests that downloaded the cluster's projects (values and all)."""
    return [
        r for r in requests if r.path == f"/v1/kv/sc/projects/{cluster}/" and "recurse" in r.params
    ]


async def test_the_gateways_writes_reach_the_watch_without_listing_the_projects(
    consul_server: ConsulAgent, open_store: OpenStore
) -> None:
    """Each change costs its log entry (and, for a large value, its version), whatever the
    number of projects; another cluster whose id extends this one's moves the sentinel's
    index, not a listing."""
    cluster = new_cluster()
    watcher = await open_store(consul_server.config(), cluster)
    writer = await open_store(consul_server.config(), cluster)
    neighbour = await open_store(consul_server.config(), cluster + "b")
    for n in range(20):
        await writer.put_project(f"p{n}", b'{"padding":"%s"}' % (b"x" * 2000))
    since = await watcher.list_projects()
    requests = requests_seen(watcher)
    watch = watcher.watch_projects(since)
    expected = []
    for n in range(10):
        await neighbour.put_project("elsewhere", b"{}")
        put = await writer.put_project("p1", b'{"n":%d}' % n)
        expected.append(ProjectChange("put", "p1", put.revision, b'{"n":%d}' % n))
    deleted = await writer.delete_project("p2")
    expected.append(ProjectChange("delete", "p2", deleted))
    large = b'{"padding":"%s"}' % (b"y" * 5000)  # beyond .last: read from its version
    put = await writer.put_project("p3", large)
    expected.append(ProjectChange("put", "p3", put.revision, large))
    assert await collect(watch, len(expected)) == expected
    assert project_listings(requests, cluster) == []
    await watch.aclose()


async def test_a_raft_entry_outside_the_projects_between_two_writes_changes_nothing(
    consul_server: ConsulAgent, open_store: OpenStore
) -> None:
    """Revisions are raft indexes: other keys' writes (registrations, other tools) leave
    gaps between the gateway's writes, which come once each, in order, without a
    listing."""
    cluster = new_cluster()
    store = await open_store(consul_server.config(), cluster)
    since = await store.list_projects()
    requests = requests_seen(store)
    watch = store.watch_projects(since)
    first = await store.put_project("a", b'{"n":1}')
    consul_server.api("PUT", f"/v1/kv/elsewhere/{cluster}", content=b"x").raise_for_status()
    second = await store.put_project("a", b'{"n":2}')
    third = await store.put_project("b", b'{"n":3}')
    assert second.revision > first.revision + 1
    assert await collect(watch, 3) == [
        ProjectChange("put", "a", first.revision, b'{"n":1}'),
        ProjectChange("put", "a", second.revision, b'{"n":2}'),
        ProjectChange("put", "b", third.revision, b'{"n":3}'),
    ]
    assert project_listings(requests, cluster) == []
    await watch.aclose()


async def test_changes_by_another_client_interleaved_with_the_gateways_come_in_order(
    consul_server: ConsulAgent, open_store: OpenStore
) -> None:
    """Rounds of gateway writes followed by a ``consul kv`` put or delete: the listing diff
    that the foreign write causes emits the log's entries and the foreign change, each at
    its own revision, in order, none twice."""
    cluster = new_cluster()
    store = await open_store(consul_server.config(), cluster)
    since = await store.list_projects()
    watch = store.watch_projects(since)
    for round_ in range(4):
        expected = []
        for project_id in ("a", "b"):
            value = b'{"round":%d}' % round_
            put = await store.put_project(project_id, value)
            expected.append(ProjectChange("put", project_id, put.revision, value))
        key = f"/v1/kv/sc/projects/{cluster}/foreign"
        if round_ % 2 == 0:
            consul_server.api("PUT", key, content=b'{"by":"consul"}').raise_for_status()
            revision = consul_server.api("GET", key).json()[0]["ModifyIndex"]
            expected.append(ProjectChange("put", "foreign", revision, b'{"by":"consul"}'))
        else:
            consul_server.api("DELETE", key).raise_for_status()
            expected.append(ProjectChange("delete", "foreign", 0))
        seen = await collect(watch, len(expected))
        if round_ % 2:  # a foreign delete's revision comes from its tombstone
            assert seen[-1].revision > seen[-2].revision
            expected[-1] = ProjectChange("delete", "foreign", seen[-1].revision)
        assert seen == expected
    await watch.aclose()


async def test_the_log_and_its_archive_stay_bounded_and_a_watcher_behind_both_lists_again(
    consul_server: ConsulAgent, open_store: OpenStore
) -> None:
    """The log keeps its newest entries, the archive the older ones: a watch behind the
    log reads the archive, one behind the archive lists again."""
    cluster = new_cluster()
    store = await open_store(consul_server.config(), cluster)
    log = store._projects.log
    log.keep = log.archive.keep = 4
    since = await store.list_projects()
    behind = await open_store(consul_server.config(), cluster)
    stalled = behind.watch_projects(since)  # never read until the archive was pruned past it
    live = store.watch_projects(since)
    written = []
    for n in range(40):
        put = await store.put_project(f"p{n % 3}", b'{"n":%d}' % n)
        written.append(ProjectChange("put", f"p{n % 3}", put.revision, b'{"n":%d}' % n))
        assert await collect(live, 1) == written[-1:]
    await live.aclose()  # and its pruning in the background
    snapshot = await log.read(0, archive=True)
    in_log = [e for e in snapshot.listed if not e["Key"].rsplit("/", 1)[1].startswith(".")]
    archived = (await log.archive.read()).entries
    assert 4 <= len(in_log) <= 4 * 4 and 4 <= len(archived) <= 5 * 4
    assert since.revision < snapshot.pruned < archived[0].revision < in_log[0]["ModifyIndex"]

    # Behind the log, not the archive: the rest comes from the archive, not a listing.
    middle = archived[0].revision - 1
    expected = [change for change in written if change.revision > middle]
    assert len(expected) > len(in_log)
    from_archive = behind.watch_projects(ProjectListing({}, middle))
    requests = requests_seen(behind)
    assert await collect(from_archive, len(expected)) == expected
    assert project_listings(requests, cluster) == []
    assert await store.changes_between(middle, written[-1].revision) == expected

    with pytest.raises(WatchReset, match="pruned"):
        await next_batch(stalled)
    assert await store.changes_between(since.revision, written[-1].revision) is None
    await from_archive.aclose()


async def test_changes_between_replays_the_log_unless_another_client_wrote(
    consul_server: ConsulAgent, open_store: OpenStore
) -> None:
    cluster = new_cluster()
    store = await open_store(consul_server.config(), cluster)
    await store.put_project("first", b"{}")  # the log begins here
    since = await store.list_projects()
    watch = store.watch_projects(since)
    a = await store.put_project("a", b'{"v":1}')
    deleted = await store.delete_project("a")
    b = await store.put_project("b", b'{"v":2}')
    made = await collect(watch, 3)
    assert await store.changes_between(since.revision, b.revision) == made
    assert await store.changes_between(a.revision, deleted) == made[1:2]
    consul_server.api("PUT", f"/v1/kv/sc/projects/{cluster}/c", content=b"{}").raise_for_status()
    [foreign] = await collect(watch, 1)
    assert await store.changes_between(b.revision, foreign.revision) is None
    assert await store.changes_between(since.revision, b.revision) == made
    assert await store.changes_between(since.revision, foreign.revision + 100) is None
    await watch.aclose()


async def test_after_a_restart_the_log_replays_what_the_watch_emitted_before(
    consul_server: ConsulAgent, open_store: OpenStore
) -> None:
    """A new store object (an instance that restarted) replays the range up to its
    listing from the log, as long as no change by another client lies in it: one a watch
    emitted raised the log's foreign mark."""
    cluster = new_cluster()
    store = await open_store(consul_server.config(), cluster)
    await store.put_project("first", b"{}")
    since = await store.list_projects()
    watch = store.watch_projects(since)
    a = await store.put_project("a", b'{"v":1}')
    await store.delete_project("a")
    large = b'{"padding":"%s"}' % (b"y" * 5000)  # read from its version
    b = await store.put_project("b", large)
    made = await collect(watch, 3)

    restarted = await open_store(consul_server.config(), cluster)
    listing = await restarted.list_projects()
    assert await restarted.changes_between(since.revision, listing.revision) == made
    assert await restarted.changes_between(a.revision, b.revision) == made[1:]

    consul_server.api("PUT", f"/v1/kv/sc/projects/{cluster}/c", content=b"{}").raise_for_status()
    [foreign] = await collect(watch, 1)
    c = await store.put_project("c", b'{"v":3}')
    assert (await collect(watch, 1))[0].revision == c.revision
    again = await open_store(consul_server.config(), cluster)
    listing = await again.list_projects()
    assert await again.changes_between(since.revision, listing.revision) is None
    assert await again.changes_between(foreign.revision, listing.revision) == [
        ProjectChange("put", "c", c.revision, b'{"v":3}')
    ]
    await watch.aclose()


async def test_a_change_made_while_no_watch_ran_is_never_replayed_over(
    consul_server: ConsulAgent, open_store: OpenStore
) -> None:
    """``consul kv`` while every instance was down: the next listing finds a key (or a
    tombstone) at a revision the log does not hold."""
    cluster = new_cluster()
    store = await open_store(consul_server.config(), cluster)
    since = await store.list_projects()
    for project_id in ("a", "b"):
        await store.put_project(project_id, b"{}")
    put = await store.put_project("a", b'{"v":2}')
    key = f"/v1/kv/sc/projects/{cluster}/b"
    for foreign in ("put", "delete"):
        if foreign == "put":
            consul_server.api("PUT", key, content=b'{"by":"consul"}').raise_for_status()
        else:
            consul_server.api("DELETE", key).raise_for_status()
        restarted = await open_store(consul_server.config(), cluster)
        listing = await restarted.list_projects()
        assert await restarted.changes_between(since.revision, listing.revision) is None
        assert await restarted.changes_between(listing.revision, listing.revision) == []
    assert put.revision > since.revision


async def test_watch_resets_when_the_index_goes_backwards(
    consul_server: ConsulAgent, open_store: OpenStore
) -> None:
    store = await open_store(consul_server.config(), watch_wait=1)
    listing = await store.list_projects()
    # As if the listing came from a Consul whose data was since replaced by older data.
    ahead = ProjectListing({}, listing.revision + 1_000_000)
    started = time.monotonic()
    with pytest.raises(WatchReset):
        await next_batch(store.watch_projects(ahead))
    assert time.monotonic() - started < 4


# --- instances ------------------------------------------------------------------------


async def test_register_holds_the_key_with_a_session_until_deregistered(
    consul_server: ConsulAgent, store: ConsulStore
) -> None:
    key = instances_prefix(store.cluster_id) + "node-1"
    await store.register("node-1", b'{"id":"node-1"}')
    session_id = held_by(consul_server, key)
    assert session_id
    session = consul_server.api("GET", f"/v1/session/info/{session_id}").json()[0]
    assert (session["Behavior"], session["TTL"], session["LockDelay"]) == ("delete", "10s", 0)
    assert "node-1" in session["Name"]

    await store.update_registration(b'{"id":"node-1","appliedRevision":7}')
    entry = consul_server.api("GET", f"/v1/kv/{key}").json()[0]
    assert base64.b64decode(entry["Value"]) == b'{"id":"node-1","appliedRevision":7}'
    assert entry["Session"] == session_id

    await store.deregister()
    assert consul_server.api("GET", f"/v1/kv/{key}").status_code == 404
    assert consul_server.api("GET", f"/v1/session/info/{session_id}").json() in (None, [])


async def test_a_lost_session_is_replaced_within_seconds(
    consul_server: ConsulAgent, store: ConsulStore
) -> None:
    key = instances_prefix(store.cluster_id) + "node-1"
    await store.register("node-1", b"record")
    lost = held_by(consul_server, key)
    consul_server.api("PUT", f"/v1/session/destroy/{lost}").raise_for_status()
    assert held_by(consul_server, key) is None

    await eventually_async(
        lambda: held_by(consul_server, key) not in (None, lost), 6, "a new session", 0.1
    )
    entry = consul_server.api("GET", f"/v1/kv/{key}").json()[0]
    assert base64.b64decode(entry["Value"]) == b"record"


async def test_an_instance_that_stops_heartbeating_leaves_within_the_ttl(
    consul_server: ConsulAgent, open_store: OpenStore
) -> None:
    cluster = new_cluster()
    watcher = await open_store(consul_server.config(), cluster)
    doomed = await open_store(consul_server.config(), cluster)
    await watcher.register("alive", b"a")
    await doomed.register("doomed", b"d")
    watch = watcher.watch_instances()
    assert await next_batch(watch) == {"alive": b"a", "doomed": b"d"}
    # As kill -9 would: the keeper stops, the session is left for Consul to expire.
    registration = doomed._instances._registration
    assert registration is not None and registration.keeper is not None
    registration.keeper.cancel()
    # Gone from the peers within the TTL (plus a query's wait), where Consul alone may
    # keep the key for up to twice the TTL.
    assert await next_batch(watch, timeout=watcher.instance_ttl + 3) == {"alive": b"a"}


async def test_heartbeats_leave_out_keys_that_stopped_moving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    now = [100.0]
    monkeypatch.setattr(loop, "time", lambda: now[0])
    heartbeats = Heartbeats(silence=7.5)
    assert heartbeats.live({"a": (b"a", 1), "b": (b"b", 2)}, "a") == {"a": b"a", "b": b"b"}
    now[0] = 107.0
    assert heartbeats.live({"a": (b"a", 1), "b": (b"b", 3)}, "a") == {"a": b"a", "b": b"b"}
    now[0] = 114.0  # b moved at 107: alive; a never moved but is this node
    assert heartbeats.live({"a": (b"a", 1), "b": (b"b", 3)}, "a") == {"a": b"a", "b": b"b"}
    now[0] = 115.0  # b silent for 8 s
    assert heartbeats.live({"a": (b"a", 1), "b": (b"b", 3)}, "a") == {"a": b"a"}
    assert heartbeats.live({"a": (b"a", 1), "b": (b"b", 4)}, "a") == {"a": b"a", "b": b"b"}


# --- TLS, ACLs and the CONSUL_* variables -----------------------------------------


async def test_tls_and_acl_from_the_environment(
    secure_consul: ConsulAgent, open_store: OpenStore
) -> None:
    env = secure_consul.env()
    assert env["CONSUL_HTTP_ADDR"].startswith("https://")
    assert {
        "CONSUL_CACERT",
        "CONSUL_CLIENT_CERT",
        "CONSUL_CLIENT_KEY",
        "CONSUL_TLS_SERVER_NAME",
        "CONSUL_HTTP_TOKEN",
    } <= env.keys()
    store = await open_store(ConsulConfig.from_env(env))
    await store.check()
    put = await store.put_project("secure", b"{}", ABSENT)
    assert (await store.list_projects()).projects["secure"].revision == put.revision
    await store.register("node-s", b"s")
    assert await next_batch(store.watch_instances()) == {"node-s": b"s"}
    assert await store.delete_project("secure", put.revision) > put.revision


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (
            {"CONSUL_TLS_SERVER_NAME": "wrong.dc1.consul"},
            ["TLS verification", "wrong.dc1.consul", "CONSUL_TLS_SERVER_NAME"],
        ),
        ({"CONSUL_TLS_SERVER_NAME": ""}, ["TLS verification", "127.0.0.1"]),
        ({"CONSUL_CACERT": ""}, ["TLS verification", "CONSUL_CACERT"]),
        ({"CONSUL_HTTP_TOKEN": ""}, ["403", "without an ACL token", "CONSUL_HTTP_TOKEN"]),
        (
            {"CONSUL_HTTP_TOKEN": str(uuid.UUID(int=1))},
            ["403", "ACL not found", "CONSUL_HTTP_TOKEN"],
        ),
        (
            {"CONSUL_CLIENT_CERT": "", "CONSUL_CLIENT_KEY": ""},
            ["TLS handshake", "CONSUL_CLIENT_CERT"],
        ),
        ({"CONSUL_HTTP_ADDR": "http://127.0.0.1:{port}"}, ["https"]),
    ],
    ids=[
        "wrong-server-name",
        "no-server-name",
        "no-ca",
        "no-token",
        "unknown-token",
        "no-client-cert",
        "plain-http",
    ],
)
async def test_a_setting_that_cannot_work_is_a_config_error(
    secure_consul: ConsulAgent,
    open_store: OpenStore,
    overrides: dict[str, str],
    words: list[str],
) -> None:
    overrides = {name: value.format(port=secure_consul.port) for name, value in overrides.items()}
    store = await open_store(secure_consul.config(**overrides))
    with pytest.raises(StoreConfigError) as error:
        await store.check()
    message = str(error.value)
    assert "\n" not in message
    for word in words:
        assert word in message


async def test_a_read_only_token_passes_the_check_but_cannot_write(
    secure_consul: ConsulAgent, open_store: OpenStore
) -> None:
    read_only = str(uuid.uuid4())
    name = f"read-only-{read_only[:8]}"
    secure_consul.api(
        "PUT",
        "/v1/acl/policy",
        json={
            "Name": name,
            "Rules": 'key_prefix "sc/" { policy = "read" }',
        },
    ).raise_for_status()
    secure_consul.api(
        "PUT",
        "/v1/acl/token",
        json={
            "SecretID": read_only,
            "Policies": [{"Name": name}],
        },
    ).raise_for_status()
    store = await open_store(secure_consul.config(CONSUL_HTTP_TOKEN=read_only))
    await store.check()
    with pytest.raises(StoreConfigError, match=r"refused the ACL token .*Permission denied"):
        await store.put_project("nope", b"{}")
    with pytest.raises(StoreConfigError, match="session/create"):
        await store.register("node-ro", b"{}")


async def test_ssl_verify_false_connects_without_the_ca(
    secure_consul: ConsulAgent, open_store: OpenStore
) -> None:
    config = secure_consul.config(
        CONSUL_CACERT="", CONSUL_TLS_SERVER_NAME="", CONSUL_HTTP_SSL_VERIFY="false"
    )
    store = await open_store(config)
    await store.check()
    await store.put_project("unverified", b"{}")


async def test_http_ssl_with_a_host_port_address_uses_https(
    secure_consul: ConsulAgent, open_store: OpenStore
) -> None:
    config = secure_consul.config(CONSUL_HTTP_ADDR=secure_consul.addr, CONSUL_HTTP_SSL="true")
    assert config.base_url.startswith("https://")
    store = await open_store(config)
    await store.put_project("over-https", b"{}")


async def test_the_acl_token_from_a_token_file(
    secure_consul: ConsulAgent, open_store: OpenStore, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"{secure_consul.client_token}\n")
    from_file = await open_store(
        secure_consul.config(CONSUL_HTTP_TOKEN="", CONSUL_HTTP_TOKEN_FILE=str(token_file))
    )
    await from_file.check()
    await from_file.put_project("from-file", b"{}")
    # As in Consul's own client, the file wins over CONSUL_HTTP_TOKEN.
    both = await open_store(
        secure_consul.config(
            CONSUL_HTTP_TOKEN=str(uuid.UUID(int=1)), CONSUL_HTTP_TOKEN_FILE=str(token_file)
        )
    )
    await both.check()

    token_file.write_text(str(uuid.UUID(int=1)))
    refused = await open_store(secure_consul.config(CONSUL_HTTP_TOKEN_FILE=str(token_file)))
    with pytest.raises(StoreConfigError, match="check CONSUL_HTTP_TOKEN_FILE and its policy"):
        await refused.check()


async def test_ca_certificates_from_a_directory(
    secure_consul: ConsulAgent, open_store: OpenStore, tmp_path: Path
) -> None:
    assert secure_consul.certs is not None
    other_ca = ConsulCertificates.make(tmp_path / "other").ca
    trusted = tmp_path / "trusted"
    (trusted / "nested").mkdir(parents=True)
    shutil.copy(other_ca, trusted / "other.pem")
    shutil.copy(secure_consul.certs.ca, trusted / "nested" / "consul-ca.crt")
    store = await open_store(secure_consul.config(CONSUL_CACERT="", CONSUL_CAPATH=str(trusted)))
    await store.check()
    await store.put_project("ca-path", b"{}")

    untrusted = tmp_path / "untrusted"
    untrusted.mkdir()
    shutil.copy(other_ca, untrusted / "other.pem")
    wrong = await open_store(secure_consul.config(CONSUL_CACERT="", CONSUL_CAPATH=str(untrusted)))
    with pytest.raises(StoreConfigError, match="TLS verification"):
        await wrong.check()

    (untrusted / "notes.txt").write_text("not a certificate")
    with pytest.raises(StoreConfigError, match=r"CONSUL_CAPATH \(.*notes.txt\)"):
        await open_store(secure_consul.config(CONSUL_CACERT="", CONSUL_CAPATH=str(untrusted)))


async def test_a_unix_socket_address(consul_factory: ConsulFactory, open_store: OpenStore) -> None:
    agent = consul_factory(unix_socket=True)
    assert agent.socket is not None
    config = ConsulConfig.from_env({"CONSUL_HTTP_ADDR": f"unix://{agent.socket}"})
    store = await open_store(config)
    await store.check()
    put = await store.put_project("over-a-socket", b"{}", ABSENT)
    assert (await store.list_projects()).projects["over-a-socket"].revision == put.revision
    await store.register("node-u", b"u")
    assert await next_batch(store.watch_instances()) == {"node-u": b"u"}

    missing = f"unix://{agent.socket}.missing"
    nowhere = await open_store(ConsulConfig.from_env({"CONSUL_HTTP_ADDR": missing}), timeout=1)
    with pytest.raises(StoreUnavailable, match=f"cannot reach Consul at {missing}"):
        await nowhere.check()


class BasicAuthProxy:
    """Checks ``Authorization: Basic`` on every request, records it, forwards to Consul.

    One request per connection (answers carry ``Connection: close``) keeps it tiny.
    """

    def __init__(self, upstream: str, user: str, password: str) -> None:
        self.upstream = upstream
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.seen: list[str | None] = []
        self.port = 0

    async def __aenter__(self) -> BasicAuthProxy:
        self._client = httpx.AsyncClient(base_url=self.upstream, trust_env=False)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        await self._server.wait_closed()
        await self._client.aclose()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *lines = head.strip().split("\r\n")
            method, target, _ = request_line.split(" ", 2)
            headers = {}
            for line in lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.seen.append(headers.get("authorization"))
            writer.write(await self._answer(method, target, headers, body))
            await writer.drain()
        finally:
            writer.close()

    async def _answer(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> bytes:
        if headers.get("authorization") != self.expected:
            status, reason, content = 401, "Unauthorized", b"bad credentials"
            extra = {"WWW-Authenticate": 'Basic realm="consul"'}
        else:
            forwarded = {k: v for k, v in headers.items() if k.startswith("x-consul")}
            upstream = await self._client.request(method, target, content=body, headers=forwarded)
            status, reason, content = (
                upstream.status_code,
                upstream.reason_phrase,
                upstream.content,
            )
            extra = {
                k: upstream.headers[k]
                for k in ("X-Consul-Index", "Content-Type")
                if k in upstream.headers
            }
        lines = [
            f"HTTP/1.1 {status} {reason}",
            f"Content-Length: {len(content)}",
            "Connection: close",
            *(f"{k}: {v}" for k, v in extra.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + content


async def test_http_auth_reaches_a_basic_auth_proxy(
    consul_server: ConsulAgent, open_store: OpenStore
) -> None:
    async with BasicAuthProxy(consul_server.url, "gateway", "pa:ss") as proxy:
        addr = f"127.0.0.1:{proxy.port}"
        store = await open_store(
            consul_server.config(CONSUL_HTTP_ADDR=addr, CONSUL_HTTP_AUTH="gateway:pa:ss")
        )
        await store.check()
        put = await store.put_project("proxied", b"{}")
        assert (await store.list_projects()).projects["proxied"].revision == put.revision
        assert proxy.seen and set(proxy.seen) == {proxy.expected}

        refused = await open_store(
            consul_server.config(CONSUL_HTTP_ADDR=addr, CONSUL_HTTP_AUTH="gateway:no")
        )
        with pytest.raises(StoreConfigError, match="CONSUL_HTTP_AUTH"):
            await refused.check()
        anonymous = await open_store(consul_server.config(CONSUL_HTTP_ADDR=addr))
        with pytest.raises(StoreConfigError, match="401"):
            await anonymous.check()
        assert proxy.seen[-1] is None


# --- outages --------------------------------------------------------------------------


async def test_unreachable_is_store_unavailable(open_store: OpenStore) -> None:
    store = await open_store(
        ConsulConfig.from_env({"CONSUL_HTTP_ADDR": f"127.0.0.1:{free_port()}"}), timeout=1
    )
    for call in (store.check, store.list_projects, lambda: store.delete_project("x")):
        with pytest.raises(StoreUnavailable):
            await call()
    with pytest.raises(StoreUnavailable):
        await next_batch(store.watch_instances())


async def test_a_paused_consul_times_out_as_unavailable(
    consul_server: ConsulAgent, open_store: OpenStore
) -> None:
    store = await open_store(consul_server.config(), timeout=0.5)
    await store.check()
    consul_server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="did not answer"):
            await store.check()
        assert time.monotonic() - started < 2
    finally:
        consul_server.resume()
    await store.check()


async def test_stop_and_start_consul_keeps_data_and_registration(
    consul_server: ConsulAgent, open_store: OpenStore
) -> None:
    store = await open_store(consul_server.config(), timeout=2)
    put = await store.put_project("survivor", b'{"kept":true}')
    await store.register("node-r", b"r")
    key = instances_prefix(store.cluster_id) + "node-r"
    since = await store.list_projects()
    watch = store.watch_projects(since)
    blocking = blocking_query_sent(store)
    pending = asyncio.ensure_future(anext(watch))
    await asyncio.wait_for(blocking.wait(), 5)

    consul_server.stop()
    try:
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(pending, 5)
        with pytest.raises(StoreUnavailable):
            await store.list_projects()
        with pytest.raises(StoreUnavailable):
            await store.put_project("lost", b"{}")
    finally:
        consul_server.start()

    listing = await store.list_projects()
    assert listing.projects["survivor"].value == b'{"kept":true}'
    assert listing.projects["survivor"].revision == put.revision
    later = await store.put_project("after", b"{}")
    assert later.revision > put.revision
    await asyncio.to_thread(
        eventually,
        lambda: held_by(consul_server, key) is not None,
        8,
        "the instance key to be held again",
        0.1,
    )
    await store.deregister()
    assert held_by(consul_server, key) is None


def test_a_store_works_in_one_event_loop_after_another(consul_server: ConsulAgent) -> None:
    """The CLI checks the store in its own asyncio.run before uvicorn starts its loop."""
    cluster = new_cluster()

    async def check() -> None:
        throwaway = ConsulStore(consul_server.config(), cluster)
        await throwaway.open()
        await throwaway.check()
        await throwaway.close()

    async def use(store: ConsulStore) -> int:
        await store.open()
        try:
            await store.register("node-l", b"l")
            return (await store.put_project("looped", b"{}")).revision
        finally:
            await store.close()

    asyncio.run(check())
    store = ConsulStore(consul_server.config(), cluster)
    first = asyncio.run(use(store))
    assert asyncio.run(use(store)) > first
    assert held_by(consul_server, instances_prefix(cluster) + "node-l") is None
