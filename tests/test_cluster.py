"""A real cluster: several ``space-cloud run`` processes sharing one etcd or one Consul.

The same suite runs over both stores (parametrised; see docs/design.md). Each test uses its
own cluster id on the shared store server, so tests never see each other's keys.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.eventually import eventually
from tests.gateway import Event, Gateway, SSEStream
from tests.servers.proxy import CuttableProxy

STORES = ["etcd", "consul"]  # tests/conftest.py marks each test with the store it needs
#: etcd leases can be short; Consul's minimum session TTL is 10 s.
TTL = {"etcd": 3, "consul": 10}
#: A dead instance leaves the peer lists within its TTL plus a watch round trip (on
#: Consul through the instances' heartbeats, not the session expiry, which may take 2x).
LEAVE_WITHIN = {"etcd": TTL["etcd"] + 5, "consul": TTL["consul"] + 8}


@dataclass
class Cluster:
    kind: str
    server: Any  # tests.servers.etcd.EtcdServer | tests.servers.consul.ConsulAgent
    workdir: Path
    cluster_id: str = field(default_factory=lambda: f"c{uuid.uuid4().hex[:10]}")
    gateways: list[Gateway] = field(default_factory=list)

    def gateway(
        self,
        name: str,
        *,
        env: dict[str, str] | None = None,
        ttl: int | None = None,
        start: bool = True,
    ) -> Gateway:
        gateway = Gateway(
            self.workdir / name,
            node_id=name,
            args=["--store-type", self.kind, "--cluster", self.cluster_id],
            env={
                **self.server.env(),
                "INSTANCE_TTL_SECONDS": str(ttl or TTL[self.kind]),
                "STORE_TIMEOUT_SECONDS": "2",
                **(env or {}),
            },
        )
        self.gateways.append(gateway)
        return gateway.start() if start else gateway

    def store_env_via(self, proxy: CuttableProxy) -> dict[str, str]:
        key = "ETCD_ENDPOINTS" if self.kind == "etcd" else "CONSUL_HTTP_ADDR"
        return {key: proxy.addr}

    @property
    def store_addr(self) -> tuple[str, int]:
        env = self.server.env()
        addr = env.get("ETCD_ENDPOINTS") or env["CONSUL_HTTP_ADDR"]
        host, _, port = addr.rpartition("://")[2].split(",")[0].rpartition(":")
        return host, int(port)

    def stop_all(self) -> None:
        for gateway in self.gateways:
            gateway.stop()


@contextmanager
def own_cluster(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of its own (a fresh cluster id) on the run's ``kind`` server, started
    again if a test stopped it; its gateways stopped at the end."""
    server = request.getfixturevalue(f"{kind}_server")
    if not server.running:
        server.start()
    cluster = Cluster(kind, server, tmp_path, f"k{uuid.uuid4().hex[:10]}")
    try:
        yield cluster
    finally:
        cluster.stop_all()


@pytest.fixture(params=STORES)
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    server = request.getfixturevalue(f"{request.param}_server")
    if not server.running:
        server.start()
    cluster = Cluster(request.param, server, tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop_all()
        server.resume()
        if not server.running:
            server.start()


def peer_addrs(gateway: Gateway) -> dict[str, str]:
    return {peer["id"]: peer["addr"] for peer in gateway.peers()}


def wait_for_peers(gateway: Gateway, expected: set[str], timeout: float = 20) -> None:
    eventually(
        lambda: set(peer_addrs(gateway)) == expected,
        timeout,
        f"{gateway.node_id} to see peers {sorted(expected)}",
    )


def next_change(stream: SSEStream) -> Event:
    return stream.next_of("project.put", "project.delete")


def test_a_write_on_one_instance_reaches_the_others(cluster: Cluster) -> None:
    a, b, c = (cluster.gateway(name) for name in ("a", "b", "c"))
    for gateway in (a, b, c):
        wait_for_peers(gateway, {"a", "b", "c"})
        assert peer_addrs(gateway) == {"a": a.addr, "b": b.addr, "c": c.addr}
        selves = [peer["id"] for peer in gateway.peers() if peer["self"]]
        assert selves == [gateway.node_id]

    with b.events() as on_b, c.events() as on_c:
        assert on_b.next().event == on_c.next().event == "snapshot"
        written = a.put("shop", {"id": "shop", "name": "Shop", "modules": {"db": {"on": True}}})
        assert written.status_code == 201
        revision = written.json()["revision"]
        for gateway in (b, c):
            got = gateway.get("/v1/config/projects/shop", waitRevision=revision)
            assert got.status_code == 200
            assert got.json()["modules"] == {"db": {"on": True}}
            assert got.headers["ETag"] == f'"{revision}"'
        for stream in (on_b, on_c):
            event = next_change(stream)
            assert (event.event, event.id) == ("project.put", revision)
            assert event.data["project"]["name"] == "Shop"

    with c.client() as client:
        assert client.delete("/v1/config/projects/shop").status_code == 204
    for gateway in (a, b):
        eventually(
            functools.partial(_answers, gateway, "/v1/config/projects/shop", 404),
            10,
            f"the delete to reach {gateway.node_id}",
        )
    env = httpx.get(f"{a.url}/v1/config/env").json()
    assert env["storeType"] == cluster.kind and env["clusterId"] == cluster.cluster_id
    assert not any(path.name == "config.yaml" for path in cluster.workdir.rglob("*"))


def test_dead_instance_leaves_the_peer_lists(cluster: Cluster) -> None:
    a, _, c = (cluster.gateway(name) for name in ("a", "b", "c"))
    wait_for_peers(a, {"a", "b", "c"})
    with a.events() as stream:
        assert stream.next().event == "snapshot"
        killed_at = time.monotonic()
        c.kill()
        wait_for_peers(a, {"a", "b"}, timeout=LEAVE_WITHIN[cluster.kind])
        left_after = time.monotonic() - killed_at
        event = stream.next_of("peers")
        while {peer["id"] for peer in event.data["peers"]} != {"a", "b"}:
            event = stream.next_of("peers")
        print(f"{cluster.kind}: a kill -9'd instance left the peer list after {left_after:.1f}s")


def test_sigterm_leaves_at_once(cluster: Cluster) -> None:
    a = cluster.gateway("a", ttl=30)
    b = cluster.gateway("b", ttl=30)
    wait_for_peers(a, {"a", "b"})
    assert b.stop() == 0
    wait_for_peers(a, {"a"}, timeout=5)  # a TTL of 30 s cannot explain this


def test_configs_and_revisions_survive_restarting_every_instance(cluster: Cluster) -> None:
    a, b = cluster.gateway("a"), cluster.gateway("b")
    revisions = {name: a.put(name).json()["revision"] for name in ("p1", "p2")}
    revisions["p3"] = b.put("p3", {"id": "p3", "name": "three", "modules": {"x": 1}}).json()[
        "revision"
    ]
    cluster.stop_all()
    cluster.gateways.clear()

    c = cluster.gateway("c")
    listing = c.get("/v1/config/projects", waitRevision=max(revisions.values())).json()
    assert {p["id"] for p in listing["projects"]} == {"p1", "p2", "p3"}
    for name, revision in revisions.items():
        assert c.get(f"/v1/config/projects/{name}").headers["ETag"] == f'"{revision}"'
    assert c.get("/v1/config/projects/p3").json()["modules"] == {"x": 1}


def test_racing_if_match_writes_exactly_one_wins(cluster: Cluster) -> None:
    a, b = cluster.gateway("a"), cluster.gateway("b")
    revision = a.put("race").json()["revision"]
    for round_number in range(15):
        b.get("/v1/config/projects/race", waitRevision=revision)
        results = _race([a, b], "race", revision, round_number)
        codes = sorted(response.status_code for response in results.values())
        assert codes == [200, 412], f"round {round_number}: {codes}"
        winner = next(name for name, r in results.items() if r.status_code == 200)
        revision = results[winner].json()["revision"]
        stored = a.get("/v1/config/projects/race", waitRevision=revision).json()
        assert stored["name"] == f"{winner}-{round_number}"


def _race(
    gateways: list[Gateway], project: str, expected: int, round_number: int
) -> dict[str, httpx.Response]:
    """The same If-Match write from every gateway at the same moment."""
    results: dict[str, httpx.Response] = {}
    barrier = threading.Barrier(len(gateways))

    def write(gateway: Gateway) -> None:
        body = {"id": project, "name": f"{gateway.node_id}-{round_number}", "modules": {}}
        barrier.wait()
        results[gateway.node_id] = gateway.put(project, body, If_Match=f'"{expected}"')

    threads = [threading.Thread(target=write, args=(gateway,)) for gateway in gateways]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    return results


def test_sse_resumes_on_another_instance_with_exactly_the_missed_events(cluster: Cluster) -> None:
    a, b, c = (cluster.gateway(name) for name in ("a", "b", "c"))
    with a.events() as stream:
        assert stream.next().event == "snapshot"
        a.put("first")
        last_seen = next_change(stream).id
    assert last_seen is not None

    missed = [b.put("second").json()["revision"], b.put("third").json()["revision"]]
    with b.client() as client:
        response = client.delete("/v1/config/projects/first")
        assert response.status_code == 204
    deleted = int(response.headers["X-Revision"])
    c.get("/v1/config/projects", waitRevision=deleted)

    with c.events(last_event_id=last_seen) as resumed:
        events = [next_change(resumed) for _ in range(3)]
    assert [(e.event, e.id) for e in events] == [
        ("project.put", missed[0]),
        ("project.put", missed[1]),
        ("project.delete", deleted),
    ]
    assert [e.data.get("id") or e.data["project"]["id"] for e in events] == [
        "second",
        "third",
        "first",
    ]


def test_store_outage_serves_last_configs_refuses_writes_and_recovers(cluster: Cluster) -> None:
    a = cluster.gateway("a")
    a.put("kept", {"id": "kept", "name": "before", "modules": {}})
    with a.events() as stream:
        assert stream.next().event == "snapshot"
        cluster.server.kill()
        try:
            eventually(
                lambda: httpx.get(f"{a.url}/readyz").status_code == 503,
                30,
                "readyz to report the outage",
            )
            assert "error" in httpx.get(f"{a.url}/readyz").json()
            assert a.get("/v1/config/projects/kept").json()["name"] == "before"
            refused = a.put("kept", {"id": "kept", "name": "during", "modules": {}})
            assert refused.status_code == 503
            assert "Retry-After" in refused.headers
        finally:
            recovered_at = time.monotonic()
            cluster.server.start()
        a.wait_ready(60)
        recovery = time.monotonic() - recovered_at
        print(f"{cluster.kind}: ready {recovery:.1f}s after the store came back")
        written = eventually(lambda: _put_ok(a, "after"), 30, "a write after recovery")
        event = next_change(stream)
        while event.data.get("project", {}).get("id") != "after":
            event = next_change(stream)
        assert event.id == written
    wait_for_peers(a, {"a"}, timeout=30)


def test_frozen_store_gives_503_and_recovers(cluster: Cluster) -> None:
    a = cluster.gateway("a")
    a.put("kept")
    cluster.server.pause()
    try:
        refused = a.put("kept", {"id": "kept", "name": "frozen", "modules": {}})
        assert refused.status_code == 503
        assert a.get("/v1/config/projects/kept").status_code == 200
        eventually(
            lambda: httpx.get(f"{a.url}/readyz").status_code == 503,
            40,
            "readyz to notice the frozen store",
        )
    finally:
        cluster.server.resume()
    a.wait_ready(60)
    assert eventually(lambda: _put_ok(a, "thawed"), 30, "a write after the thaw")


def test_instance_cut_off_from_the_store_resyncs_exactly(cluster: Cluster) -> None:
    proxy = CuttableProxy(*cluster.store_addr).start()
    try:
        a = cluster.gateway("a", env=cluster.store_env_via(proxy))
        b = cluster.gateway("b")
        for name in ("keep", "change", "drop"):
            b.put(name)
        wait_for_peers(a, {"a", "b"})
        a.get("/v1/config/projects", waitRevision=b.get("/v1/config/projects").json()["revision"])
        with a.events() as stream:
            assert stream.next().event == "snapshot"
            proxy.cut()
            changed = b.put("change", {"id": "change", "name": "new", "modules": {}}).json()
            added = b.put("added").json()
            with b.client() as client:
                assert client.delete("/v1/config/projects/drop").status_code == 204
            if cluster.kind == "etcd":
                cluster.server.compact()
            eventually(lambda: not _ready(a), 30, "a to notice it is cut off from the store")
            proxy.restore()
            events = [next_change(stream) for _ in range(3)]
        by_id = {e.data.get("id") or e.data["project"]["id"]: e for e in events}
        assert set(by_id) == {"change", "added", "drop"}
        assert by_id["change"].id == changed["revision"]
        assert by_id["added"].id == added["revision"]
        assert by_id["drop"].event == "project.delete"
        ids = [e.id for e in events]
        assert None not in ids and ids == sorted(i for i in ids if i is not None)
        final_b = b.get("/v1/config/projects").json()["projects"]
        final_a = a.get("/v1/config/projects").json()["projects"]
        assert sorted(final_a, key=lambda p: p["id"]) == sorted(final_b, key=lambda p: p["id"])
    finally:
        proxy.close()


def test_clusters_with_a_common_prefix_do_not_mix(cluster: Cluster) -> None:
    a = cluster.gateway("a")
    other = Cluster(
        cluster.kind, cluster.server, cluster.workdir / "other", cluster_id=cluster.cluster_id + "b"
    )
    try:
        b = other.gateway("b")
        a.put("mine")
        b.put("theirs")
        # Both clusters' changes share the store's revision order: once a has applied a
        # write made after "theirs", a leaked "theirs" would have been applied too.
        later = a.put("later").json()["revision"]
        listing = a.get("/v1/config/projects", waitRevision=later).json()
        assert listing["revision"] >= later
        assert sorted(p["id"] for p in listing["projects"]) == ["later", "mine"]
        assert [p["id"] for p in b.get("/v1/config/projects").json()["projects"]] == ["theirs"]
        assert set(peer_addrs(a)) == {"a"}
    finally:
        other.stop_all()


def _put_ok(gateway: Gateway, name: str) -> int | None:
    response = gateway.put(name)
    return response.json()["revision"] if response.status_code in (200, 201) else None


def _ready(gateway: Gateway) -> bool:
    return httpx.get(f"{gateway.url}/readyz", timeout=5).status_code == 200


def _answers(gateway: Gateway, path: str, status: int) -> bool:
    return gateway.get(path).status_code == status
