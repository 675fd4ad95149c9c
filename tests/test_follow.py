"""Followers: ``--store-type follow --upstream URL`` mirrors another instance's event stream.

Unit tests drive the pure state machine (:class:`FollowState`) with events; the rest run
real ``space-cloud run`` processes: gateways A and B on the session etcd (a cluster id of
their own per test) and a follower F started with ``--upstream`` A and B and no ETCD_*
variable at all. Bad ``--upstream`` values stop the start: tests/test_cli.py.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from app.follow.sse import SSEEvent, parse_events, sse_lines
from app.follow.state import FollowState
from app.stores.base import ProjectListing, StoreUnavailable, WatchReset
from tests.eventually import eventually
from tests.gateway import ADMIN_PASS, Event, Gateway, SSEStream
from tests.servers.etcd import EtcdServer
from tests.test_cluster import Cluster

# --- unit: the SSE parser ----------------------------------------------------------------


async def _lines(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def test_parse_events_reads_frames_and_skips_comments() -> None:
    lines = _lines(
        "retry: 3000",
        "",
        ": ping",
        "",
        "event: project.put",
        "id: 7",
        'data: {"a":',
        "data: 1}",
        "",
        "event: peers",
        'data: {"peers":[]}',
        "",
    )
    events = [event async for event in parse_events(lines)]
    assert events == [
        SSEEvent("project.put", '{"a":\n1}', "7"),
        SSEEvent("peers", '{"peers":[]}', None),
    ]


# --- unit: the state machine (events in, listings and batches out) ----------------------


def _event(kind: str, data: dict, event_id: int | None = None) -> SSEEvent:
    return SSEEvent(kind, orjson.dumps(data).decode(), None if event_id is None else str(event_id))


def _snapshot(
    revision: int, projects: dict[str, int], *, peers: tuple[str, ...] = (), name: str = ""
) -> SSEEvent:
    data: dict = {
        "revision": revision,
        "projects": [{"id": pid, "name": name or pid} for pid in projects],
        "revisions": projects,
        "peers": [
            {
                "id": p,
                "addr": f"{p}:1",
                "version": "1",
                "startedAt": "t",
                "appliedRevision": revision,
                "self": p == "a",
            }
            for p in peers
        ],
    }
    return _event("snapshot", data, revision)


def _put(pid: str, revision: int, name: str = "") -> SSEEvent:
    project = {"id": pid, "name": name or pid}
    return _event("project.put", {"revision": revision, "project": project}, revision)


def _delete(pid: str, revision: int) -> SSEEvent:
    return _event("project.delete", {"revision": revision, "id": pid}, revision)


def _revisions(listing: ProjectListing) -> dict[str, int]:
    return {pid: project.revision for pid, project in listing.projects.items()}


def _changes(state: FollowState) -> list[tuple[str, str, int]]:
    return [(change.kind, change.id, change.revision) for change in state.take_changes()]


def _connected(*events: SSEEvent, pending_limit: int = 100) -> FollowState:
    state = FollowState(pending_limit)
    assert state.connecting() is None  # no snapshot yet: the stream starts with one
    for event in events:
        state.receive(event)
    return state


def test_the_snapshot_is_the_listing_and_events_are_the_changes() -> None:
    state = FollowState()
    assert not state.ready
    state.connecting()
    assert state.receive(_snapshot(10, {"a": 4, "b": 9}, peers=("a", "b"))) == (
        "from a snapshot at revision 10"
    )
    assert state.ready
    listing = state.take_listing()
    assert (listing.revision, _revisions(listing)) == (10, {"a": 4, "b": 9})
    assert orjson.loads(listing.projects["a"].value) == {"id": "a", "name": "a"}
    assert state.take_changes() == []

    for event in (_put("c", 11), _put("c", 11), _delete("a", 12), _delete("zz", 13)):
        assert state.receive(event) is None  # already live
    # A replayed 11 and a delete of an unknown project change nothing...
    batch = state.take_changes()
    assert [(c.kind, c.id, c.revision) for c in batch] == [("put", "c", 11), ("delete", "a", 12)]
    assert orjson.loads(batch[0].value or b"") == {"id": "c", "name": "c"}
    assert state.revision == 13  # ...but the unknown delete is the next Last-Event-ID
    assert state.take_changes() == []
    assert _revisions(state.take_listing()) == {"b": 9, "c": 11}  # the view: what was taken


def test_the_peers_are_the_upstreams_without_its_self_flag() -> None:
    state = _connected(_snapshot(1, {}, peers=("a", "b")))
    assert state.peers is not None and set(state.peers) == {"a", "b"}
    assert "self" not in orjson.loads(state.peers["a"])  # the sync loop decides who it is
    version = state.peers_version
    state.receive(_event("peers", {"peers": [{"id": "a", "addr": "a:1"}, {"id": "b"}]}))
    state.receive(_event("peers", {"peers": [{"id": "b"}, {"id": "a", "addr": "a:1"}]}))
    assert state.peers_version == version + 1  # the same peers again: no change
    state.receive(_event("peers", {"peers": []}))
    assert state.peers == {} and state.peers_version == version + 2


def test_changes_sharing_a_revision_all_arrive() -> None:
    """An upstream resync may emit a put and a delete with the same id (the listing's
    revision): both are changes, even when the first was already taken."""
    state = _connected(_snapshot(2, {"a": 1, "b": 2}))
    state.take_listing()
    state.receive(_put("b", 4))
    assert _changes(state) == [("put", "b", 4)]
    state.receive(_delete("a", 4))
    state.receive(_delete("a", 4))
    assert _changes(state) == [("delete", "a", 4)]


def test_changes_before_the_first_listing_are_in_it() -> None:
    state = _connected(_snapshot(2, {"a": 1}), _put("b", 3), _delete("a", 4))
    listing = state.take_listing()
    assert (listing.revision, _revisions(listing)) == (4, {"b": 3})
    assert state.take_changes() == []


def test_a_changed_snapshot_resets_the_watch_an_identical_one_does_not() -> None:
    state = _connected(_snapshot(10, {"a": 4}))
    state.take_listing()
    # Reconnected; the upstream's history did not reach back: a snapshot, nothing new.
    assert state.connecting() == 10
    state.receive(_snapshot(15, {"a": 4}))
    state.receive(_put("b", 16))
    assert _changes(state) == [("put", "b", 16)]

    state.receive(_put("x", 20))  # not taken before the jump: the listing has it
    state.receive(_snapshot(30, {"b": 16, "c": 25, "x": 20}, name="changed"))
    with pytest.raises(WatchReset):
        state.take_changes()
    relisted = state.take_listing()
    assert (relisted.revision, _revisions(relisted)) == (30, {"b": 16, "c": 25, "x": 20})
    state.receive(_put("d", 31))
    assert _changes(state) == [("put", "d", 31)]


def test_after_an_outage_the_replayed_changes_still_come_as_events() -> None:
    state = _connected(_snapshot(10, {"a": 4}))
    state.take_listing()
    state.receive(_put("b", 11))
    assert state.lost("cannot follow http://a: gone") is True  # the live stream broke
    assert state.error is None  # ...and may resume elsewhere at once
    assert state.connecting() == 11
    assert state.lost("cannot follow http://b: refused") is False  # the next is down
    assert _changes(state) == [("put", "b", 11)]  # drained first...
    with pytest.raises(StoreUnavailable, match="refused"):
        state.take_changes()  # ...then unavailable: /readyz answers 503
    assert not state.ready

    # Reconnected with Last-Event-ID 11: the upstream replays 12 and 13.
    assert state.connecting() == 11
    assert state.receive(_event("peers", {"peers": []})) == "resuming after revision 11"
    assert state.error is None
    state.receive(_delete("a", 12))
    state.receive(_put("c", 13))
    relisted = state.take_listing()
    # What the sync loop has applied, not the newer state: nothing folded into a listing.
    assert (relisted.revision, _revisions(relisted)) == (11, {"a": 4, "b": 11})
    assert _changes(state) == [("delete", "a", 12), ("put", "c", 13)]


def test_too_many_changes_waiting_reset_the_watch() -> None:
    state = _connected(_snapshot(1, {}), pending_limit=3)
    state.take_listing()
    for revision in range(2, 6):
        state.receive(_put(f"p{revision}", revision))
    with pytest.raises(WatchReset):
        state.take_changes()
    listing = state.take_listing()
    assert (listing.revision, sorted(listing.projects)) == (5, ["p2", "p3", "p4", "p5"])
    state.receive(_put("p6", 6))
    assert _changes(state) == [("put", "p6", 6)]


@pytest.mark.parametrize(
    "event",
    [
        SSEEvent("snapshot", "{not json"),
        SSEEvent("snapshot", '{"revision": 3, "projects": [{"id": "a"}], "peers": []}'),
        SSEEvent("project.put", '{"revision": 3}'),
        SSEEvent("project.put", '{"revision": "x", "project": {"id": "a"}}'),
        SSEEvent("project.delete", "[1]"),
        SSEEvent("peers", '{"peers": [{"addr": "no id"}]}'),
    ],
    ids=[
        "not json",
        "snapshot without revisions",
        "put without project",
        "bad revision",
        "delete not an object",
        "peer without id",
    ],
)
def test_unreadable_event_data_raises_and_changes_nothing(event: SSEEvent) -> None:
    state = _connected(_snapshot(2, {"a": 1}, peers=("a",)))
    state.take_listing()
    before = (dict(state.mirror), state.revision, state.peers)
    with pytest.raises((ValueError, KeyError, TypeError)):
        state.receive(event)
    assert (dict(state.mirror), state.revision, state.peers) == before
    assert state.take_changes() == []


def test_an_unknown_event_only_makes_the_connection_live() -> None:
    state = FollowState()
    state.connecting()
    assert state.receive(SSEEvent("message", "hello")) is not None
    assert state.live and not state.ready  # no snapshot yet: nothing to list


def test_upstream_urls_are_validated_and_split() -> None:
    from app.settings import Settings

    settings = Settings(
        _env_file=None,
        store_type="follow",
        admin_pass="x",
        upstream=["http://a:1, https://[::1]:4122/", "http://b.example.com:80"],
    )
    assert settings.upstream == ["http://a:1", "https://[::1]:4122", "http://b.example.com:80"]
    assert settings.auth_problem() is None  # a follower needs no ADMIN_SECRET


#: Line breaks to str.splitlines (and httpx's aiter_lines), not to the SSE format: a
#: project's JSON holds them unescaped.
NOT_SSE_BREAKS = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


async def _chunks(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def test_sse_lines_split_at_cr_and_lf_only_wherever_the_chunks_end() -> None:
    text = f'data: {{"name":"a{NOT_SSE_BREAKS}b"}}\r\n\r\nid: 7\rdata: x\n\nlast'
    whole = text.encode()
    expected = [f'data: {{"name":"a{NOT_SSE_BREAKS}b"}}', "", "id: 7", "data: x", "", "last"]
    # Every cut: through a CRLF, through a character's UTF-8 bytes, at either end.
    for cut in range(len(whole) + 1):
        lines = [line async for line in sse_lines(_chunks(whole[:cut], whole[cut:]))]
        assert lines == expected, cut
    single_bytes = _chunks(*(whole[i : i + 1] for i in range(len(whole))))
    assert [line async for line in sse_lines(single_bytes)] == expected


# --- real processes --------------------------------------------------------------------


def follower(
    workdir: Path,
    *upstreams: Gateway,
    env: dict[str, str] | None = None,
    start: bool = True,
    name: str = "f",
) -> Gateway:
    """A ``--store-type follow`` instance; tests.gateway strips every ETCD_* variable."""
    args = ["--store-type", "follow"]
    for upstream in upstreams:
        args += ["--upstream", upstream.url]
    # Tokens are bound to their cluster: one the follower signs names the upstream's.
    cluster_id = httpx.get(f"{upstreams[0].url}/v1/config/env", timeout=5).json()["clusterId"]
    defaults = {"STORE_TIMEOUT_SECONDS": "2", "CLUSTER_ID": cluster_id}
    gateway = Gateway(workdir / name, node_id=name, args=args, env={**defaults, **(env or {})})
    assert not any(key.startswith("ETCD_") for key in gateway.env)
    return gateway.start() if start else gateway


def subscribers(gateway: Gateway) -> float:
    text = httpx.get(f"{gateway.url}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("sc_sse_subscribers "):
            return float(line.split()[1])
    return 0.0


def next_change(stream: SSEStream) -> Event:
    return stream.next_of("project.put", "project.delete")


def change_id(event: Event) -> tuple[str, str, int | None]:
    project = event.data.get("id") or event.data["project"]["id"]
    return event.event, project, event.id


def delete(gateway: Gateway, project: str) -> int:
    with gateway.client() as client:
        response = client.delete(f"/v1/config/projects/{project}")
    assert response.status_code == 204, response.text
    return int(response.headers["X-Revision"])


def put(gateway: Gateway, project: str, **fields: object) -> int:
    response = gateway.put(project, {"id": project, "name": project, "modules": {}, **fields})
    assert response.status_code in (200, 201), response.text
    return response.json()["revision"]


@pytest.fixture
def etcd_cluster(etcd_server: EtcdServer, tmp_path: Path) -> Iterator[Cluster]:
    if not etcd_server.running:
        etcd_server.start()
    cluster = Cluster("etcd", etcd_server, tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop_all()


@pytest.fixture(scope="module")
def trio(
    etcd_server: EtcdServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gateway, Gateway, Gateway]]:
    """A and B on etcd, F following them; shared by the tests that kill nobody."""
    if not etcd_server.running:
        etcd_server.start()
    workdir = tmp_path_factory.mktemp("follow")
    cluster = Cluster("etcd", etcd_server, workdir, cluster_id=f"f{uuid.uuid4().hex[:10]}")
    try:
        a, b = cluster.gateway("a"), cluster.gateway("b")
        f = follower(workdir, a, b)
        cluster.gateways.append(f)
        yield a, b, f
    finally:
        cluster.stop_all()


def test_a_write_upstream_is_readable_and_streamed_on_the_follower(
    trio: tuple[Gateway, Gateway, Gateway],
) -> None:
    a, b, f = trio
    env = httpx.get(f"{f.url}/v1/config/env").json()
    assert env["storeType"] == "follow"
    before = put(a, "before", modules={"db": {"on": True}})
    with f.events() as stream:
        snapshot = stream.next()
        assert snapshot.event == "snapshot"
        assert "before" in [p["id"] for p in snapshot.data["projects"]]
        assert snapshot.data["revisions"]["before"] == before

        revision = put(a, "shop", modules={"x": 1})
        got = f.get("/v1/config/projects/shop", waitRevision=revision)
        assert got.status_code == 200 and got.json()["modules"] == {"x": 1}
        assert got.headers["ETag"] == f'"{revision}"'  # the same ETag as on A and B
        assert f.get("/v1/config/projects/before").headers["ETag"] == f'"{before}"'
        assert change_id(next_change(stream)) == ("project.put", "shop", revision)

        deleted = delete(b, "shop")
        assert change_id(next_change(stream)) == ("project.delete", "shop", deleted)
        assert f.get("/v1/config/projects/shop", waitRevision=deleted).status_code == 404

    # The follower's peers are the upstream cluster's instances; it is not one of them.
    eventually(lambda: {p["id"] for p in f.peers()} == {"a", "b"}, 10, "F to list A and B")
    assert not any(peer["self"] for peer in f.peers())
    assert {p["id"] for p in a.peers()} == {"a", "b"}
    assert httpx.get(f"{f.url}/readyz").status_code == 200
    assert not any(path.name == "config.yaml" for path in f.workdir.rglob("*"))


def test_writes_on_a_follower_answer_405_naming_the_upstream(
    trio: tuple[Gateway, Gateway, Gateway],
) -> None:
    a, _, f = trio
    put(a, "ro")
    f.get("/v1/config/projects/ro", waitRevision=put(a, "ro"))
    expected = f"this instance follows {a.url} and is read-only: write there"
    body = {"id": "ro", "name": "ro", "modules": {}}
    with f.client() as client:
        answers = [
            client.put("/v1/config/projects/ro", json=body),
            client.put("/v1/config/projects/new", json=body | {"id": "new"}),
            client.post("/v1/config/projects", json=body | {"id": "new"}),
            client.delete("/v1/config/projects/ro"),
            client.delete("/v1/config/projects/ro", headers={"If-Match": '"1"'}),
        ]
    for response in answers:
        assert response.status_code == 405, response.text
        assert response.json() == {"error": expected}
        assert response.headers["Allow"] == "GET"
    assert httpx.delete(f"{f.url}/v1/config/projects/ro").status_code == 401  # auth first
    assert f.get("/v1/config/projects/ro").status_code == 200
    openapi = httpx.get(f"{f.url}/openapi.json").json()
    assert "405" in openapi["paths"]["/v1/config/projects/{project}"]["put"]["responses"]


def test_sse_clients_resume_across_the_follower_and_its_upstreams(
    trio: tuple[Gateway, Gateway, Gateway],
) -> None:
    a, b, f = trio
    # Follower -> upstream: read on F, resume on B.
    with f.events() as on_f:
        assert on_f.next().event == "snapshot"
        first = put(a, "r1")
        assert change_id(next_change(on_f)) == ("project.put", "r1", first)
    second, third = put(a, "r2"), delete(b, "r1")
    with b.events(last_event_id=first) as on_b:
        assert [change_id(next_change(on_b)) for _ in range(2)] == [
            ("project.put", "r2", second),
            ("project.delete", "r1", third),
        ]
    # Upstream -> follower: read on A, resume on F.
    with a.events() as on_a:
        assert on_a.next().event == "snapshot"
        fourth = put(b, "r4")
        assert change_id(next_change(on_a)) == ("project.put", "r4", fourth)
    fifth = put(a, "r5")
    f.get("/v1/config/projects", waitRevision=fifth)
    with f.events(last_event_id=fourth) as resumed:
        assert change_id(next_change(resumed)) == ("project.put", "r5", fifth)
        assert resumed.next().event == "peers"  # no snapshot: nothing replayed twice


def test_a_follower_with_an_upstream_token_and_no_secret(
    trio: tuple[Gateway, Gateway, Gateway],
    tmp_path: Path,
) -> None:
    a, _, _ = trio
    revision = put(a, "tok")
    f = follower(tmp_path, a, env={"UPSTREAM_TOKEN": a.token(), "ADMIN_SECRET": ""})
    try:
        got = f.get("/v1/config/projects/tok", waitRevision=revision)
        assert got.status_code == 200 and got.headers["ETag"] == f'"{revision}"'
    finally:
        f.stop()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"UPSTREAM_TOKEN": "not-a-token", "ADMIN_SECRET": ""}, "the upstream refused the token"),
        (
            {"ADMIN_SECRET": "another-cluster-secret-0123456789abcdef"},
            "the upstream refused the token",
        ),
        ({"ADMIN_SECRET": ""}, "the upstream requires a token"),
    ],
    ids=["bad token", "wrong secret", "no token"],
)
def test_a_refused_token_stops_the_start_with_one_line(
    trio: tuple[Gateway, Gateway, Gateway],
    tmp_path: Path,
    env: dict[str, str],
    message: str,
) -> None:
    a, _, _ = trio
    f = follower(tmp_path, a, env=env, start=False)
    f.process.start()
    assert f.process.proc is not None
    assert f.process.proc.wait(30) == 2
    lines = f.process.log().splitlines()
    assert len(lines) == 1 and lines[0].startswith("space-cloud: error: "), lines
    assert message in lines[0] and a.url in lines[0]


def test_killing_the_upstream_the_follower_resumes_on_the_next_without_a_gap(
    etcd_cluster: Cluster,
) -> None:
    a, b = etcd_cluster.gateway("a"), etcd_cluster.gateway("b")
    f = follower(etcd_cluster.workdir, a, b)
    etcd_cluster.gateways.append(f)
    eventually(lambda: subscribers(a) == 1, 10, "F to follow A, its first upstream")
    assert subscribers(b) == 0

    written: list[tuple[str, str, int]] = []
    failures: list[str] = []
    stop = threading.Event()

    def write_on_b() -> None:
        for number in range(10_000):
            if stop.is_set():
                return
            try:
                written.append(("project.put", f"p{number}", put(b, f"p{number}")))
            except (AssertionError, httpx.HTTPError) as exc:
                failures.append(repr(exc))
            time.sleep(0.02)  # a steady pace of writes, not a wait

    def writes_landed(count: int) -> bool:
        return len(written) - 1 >= count  # beyond "first"

    with f.events() as stream:
        assert stream.next().event == "snapshot"
        written.append(("project.put", "first", put(b, "first")))
        writer = threading.Thread(target=write_on_b)
        writer.start()
        try:
            eventually(lambda: writes_landed(10), 10, "writes on B before the kill")
            a.kill()  # kill -9 F's upstream while B is being written to
            eventually(lambda: subscribers(b) == 1, 10, "F to resume on B")
            resumed_at = len(written) - 1
            eventually(lambda: writes_landed(resumed_at + 10), 10, "writes on B after it")
        finally:
            stop.set()
            writer.join()
        written.append(("project.delete", "first", delete(b, "first")))
        written.append(("project.put", "last", put(b, "last")))

        assert not failures, failures
        seen = [change_id(next_change(stream)) for _ in written]
        assert seen == written  # every change, in order, none twice
        assert [revision for *_, revision in seen] == sorted({r for *_, r in seen if r is not None})
        on_f = f.get("/v1/config/projects", waitRevision=written[-1][2]).json()["projects"]
        on_b = b.get("/v1/config/projects").json()["projects"]
        assert sorted(on_f, key=lambda p: p["id"]) == sorted(on_b, key=lambda p: p["id"])
        assert httpx.get(f"{f.url}/readyz").status_code == 200
        # A's instance key expires upstream; the follower's peers follow B's.
        eventually(lambda: {p["id"] for p in f.peers()} == {"b"}, 15, "A to leave F's peers")
    print(f"{len(written)} changes across the failover, none missed")


def test_with_no_upstream_the_follower_serves_the_last_configs_then_catches_up(
    etcd_cluster: Cluster,
) -> None:
    a, b = etcd_cluster.gateway("a"), etcd_cluster.gateway("b")
    f = follower(etcd_cluster.workdir, a, b)
    etcd_cluster.gateways.append(f)
    put(a, "gone")
    kept = put(a, "kept")
    f.get("/v1/config/projects", waitRevision=kept)

    with f.events() as stream:
        assert stream.next().event == "snapshot"
        a.kill()
        b.kill()
        ready = eventually(lambda: _not_ready(f), 15, "F to report no upstream")
        assert ready is not None and "cannot follow" in ready
        listing = f.get("/v1/config/projects").json()
        assert sorted(p["id"] for p in listing["projects"]) == ["gone", "kept"]
        assert f.get("/v1/config/projects/kept").headers["ETag"] == f'"{kept}"'

        # The store changes while no gateway runs: A's history starts after F's last id,
        # so F gets a fresh snapshot and must turn it into exactly the difference.
        prefix = f"sc/projects/{etcd_cluster.cluster_id}/"
        etcd_cluster.server.etcdctl(
            "put",
            prefix + "new",
            json.dumps({"id": "new", "name": "new", "secret": "", "modules": {}}),
        )
        etcd_cluster.server.etcdctl("del", prefix + "gone")
        a.start()
        eventually(lambda: httpx.get(f"{f.url}/readyz").status_code == 200, 20, "F to recover")
        new_revision = int(a.get("/v1/config/projects/new").headers["ETag"].strip('"'))
        changes = [change_id(next_change(stream)) for _ in range(2)]
        assert changes[0] == ("project.put", "new", new_revision)
        assert changes[1][:2] == ("project.delete", "gone")
        after = put(a, "after")
        assert change_id(next_change(stream)) == ("project.put", "after", after)
    assert f.get("/v1/config/projects/new").headers["ETag"] == f'"{new_revision}"'


def test_a_stuck_upstream_is_given_up_after_the_read_timeout(etcd_cluster: Cluster) -> None:
    pinging = {"SSE_PING_SECONDS": "0.5"}
    a, b = etcd_cluster.gateway("a", env=pinging), etcd_cluster.gateway("b", env=pinging)
    f = follower(etcd_cluster.workdir, a, b, env={"UPSTREAM_READ_TIMEOUT_SECONDS": "3"})
    etcd_cluster.gateways.append(f)
    eventually(lambda: subscribers(a) == 1, 10, "F to follow A")
    time.sleep(4)  # time passes: pings keep a quiet stream open past the read timeout
    assert subscribers(a) == 1 and subscribers(b) == 0
    a.process.signal(signal.SIGSTOP)  # A hangs: its socket stays open, nothing comes
    try:
        revision = put(b, "while-a-hangs")
        started = time.monotonic()
        got = f.get("/v1/config/projects/while-a-hangs", waitRevision=revision)
        assert got.status_code == 200, got.text
        print(f"F left the hung upstream after {time.monotonic() - started:.1f}s")
    finally:
        a.process.signal(signal.SIGCONT)


def _not_ready(gateway: Gateway) -> str | None:
    with contextlib.suppress(httpx.HTTPError):
        response = httpx.get(f"{gateway.url}/readyz", timeout=2)
        if response.status_code == 503:
            return response.json()["error"]
    return None


def test_login_on_a_follower_uses_its_own_password(
    trio: tuple[Gateway, Gateway, Gateway],
) -> None:
    _, _, f = trio
    bad = httpx.post(f"{f.url}/v1/config/login", json={"user": "admin", "pass": "nope"})
    assert bad.status_code == 401
    good = httpx.post(f"{f.url}/v1/config/login", json={"user": "admin", "pass": ADMIN_PASS})
    assert good.status_code == 200


def test_a_follower_serves_projects_holding_what_splitlines_takes_for_line_breaks(
    tmp_path: Path,
) -> None:
    """A name with U+0085 or U+2028 (valid JSON, sent unescaped) split the follower's
    lines, and it could no longer follow its upstream at all."""
    upstream = Gateway(tmp_path / "upstream").start()
    try:
        name = f"a{NOT_SSE_BREAKS}b"
        before = put(upstream, "before", name=name)
        f = follower(tmp_path, upstream)
        try:
            got = f.get("/v1/config/projects/before", waitRevision=before)
            assert got.status_code == 200 and got.json()["name"] == name, got.text
            after = put(upstream, "after", name=name)
            got = f.get("/v1/config/projects/after", waitRevision=after)
            assert got.status_code == 200 and got.json()["name"] == name, got.text
            assert httpx.get(f"{f.url}/readyz", timeout=5).status_code == 200
        finally:
            f.stop()
    finally:
        upstream.stop()
