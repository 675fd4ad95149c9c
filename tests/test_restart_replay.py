"""A stream resumed on an instance that restarted: real ``space-cloud run`` processes.

On etcd, the changes the client missed while its instance was down are replayed from the
store's history, byte for byte what a live stream on another instance got, until etcd
compacts them away; on Consul, from the change log, unless another client's change lies
in the range; on the local store, whose file keeps no change log, a snapshot comes
(docs/design.md §6)."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.gateway import Event, Gateway, SSEStream
from tests.servers.consul import ConsulAgent
from tests.servers.etcd import EtcdServer
from tests.test_cluster import Cluster, next_change, wait_for_peers


def first_frames(stream: SSEStream) -> list[Event]:
    """The events a resumed stream starts with: everything up to the ``peers`` after the
    replay (a snapshot instead, alone)."""
    events = [stream.next()]
    while events[-1].event not in ("peers", "snapshot"):
        events.append(stream.next())
    return events


def resumes(gateway: Gateway) -> dict[str, float]:
    counts = {}
    for line in httpx.get(f"{gateway.url}/metrics", timeout=5).text.splitlines():
        if line.startswith("sc_sse_resumes_total{"):
            name, value = line.split(" ")
            counts[name.split('"')[1]] = float(value)
    return counts


def seen_then_killed(cluster: Cluster) -> tuple[Gateway, int]:
    """Gateways a and b; a stream on a sees "one" and "two", then a is killed (kill -9:
    its history is gone with it). Returns b and the last id the stream saw."""
    a, b = cluster.gateway("a"), cluster.gateway("b")
    wait_for_peers(b, {"a", "b"})
    with a.events() as on_a:
        assert on_a.next().event == "snapshot"
        a.put("one")
        a.put("two")
        next_change(on_a)
        last_seen = next_change(on_a).id
    assert last_seen is not None
    a.kill()
    return b, last_seen


def write_while_down(gateway: Gateway) -> None:
    """The gateway writes the client misses: "three" twice, then "one" deleted."""
    gateway.put("three", {"id": "three", "name": "first", "modules": {}})
    gateway.put("three", {"id": "three", "name": "second", "modules": {}})
    with gateway.client() as client:
        assert client.delete("/v1/config/projects/one").status_code == 204


def assert_replayed(restarted: Gateway, last_seen: int, live: list[Event]) -> None:
    """A resume from ``last_seen`` replays, from the store, exactly the frames ``live``."""
    with restarted.events(last_event_id=last_seen) as resumed:
        replayed = first_frames(resumed)
    assert replayed[-1].event == "peers"
    assert [event.raw for event in replayed[:-1]] == [event.raw for event in live]
    assert resumes(restarted) == {"store": 1}


def assert_snapshot_after_restart(cluster: Cluster, last_seen: int) -> None:
    """A new instance answers a resume from ``last_seen`` with a snapshot."""
    again = cluster.gateway("a-third")
    with again.events(last_event_id=last_seen) as resumed:
        [snapshot] = first_frames(resumed)
    assert snapshot.event == "snapshot"
    assert sorted(p["id"] for p in snapshot.data["projects"]) == ["five", "four", "three", "two"]
    assert resumes(again) == {"snapshot": 1}


def test_a_resume_after_a_restart_replays_the_missed_changes_from_etcd(
    etcd_server: EtcdServer, tmp_path: Path
) -> None:
    cluster = Cluster("etcd", etcd_server, tmp_path)
    try:
        b, last_seen = seen_then_killed(cluster)
        with b.events() as on_b:
            assert on_b.next().event == "snapshot"
            write_while_down(b)
            key = f"sc/projects/{cluster.cluster_id}/four"
            etcd_server.etcdctl("put", key, '{"name": "written by another tool",\n "n": 1}')
            restarted = cluster.gateway("a-again")
            after_restart = restarted.put("five").json()["revision"]
            live = [next_change(on_b) for _ in range(5)]
        assert [event.id for event in live][-1] == after_restart
        assert restarted.get("/v1/config/projects", waitRevision=after_restart).is_success
        assert_replayed(restarted, last_seen, live)

        # A scoped stream gets only its projects' changes.
        with restarted.events(last_event_id=last_seen, projects="three") as scoped:
            only_three = first_frames(scoped)
        assert [event.raw for event in only_three[:-1]] == [
            event.raw for event in live if event.data.get("project", {}).get("id") == "three"
        ]

        # Once etcd has compacted them away, they cannot be replayed: a snapshot.
        restarted.stop()
        etcd_server.compact()
        assert_snapshot_after_restart(cluster, last_seen)
    finally:
        cluster.stop_all()


def test_a_resume_after_a_restart_replays_the_missed_changes_from_consuls_log(
    consul_server: ConsulAgent, tmp_path: Path
) -> None:
    cluster = Cluster("consul", consul_server, tmp_path)
    try:
        b, last_seen = seen_then_killed(cluster)
        with b.events() as on_b:
            assert on_b.next().event == "snapshot"
            write_while_down(b)
            restarted = cluster.gateway("a-again")
            after_restart = restarted.put("five").json()["revision"]
            live = [next_change(on_b) for _ in range(4)]
            assert [event.id for event in live][-1] == after_restart
            assert restarted.get("/v1/config/projects", waitRevision=after_restart).is_success
            assert_replayed(restarted, last_seen, live)

            # Another client's change in the range: the log cannot vouch for it.
            restarted.stop()
            key = f"/v1/kv/sc/projects/{cluster.cluster_id}/four"
            consul_server.api("PUT", key, content=b'{"id": "four"}').raise_for_status()
            assert next_change(on_b).data["project"]["id"] == "four"
        assert_snapshot_after_restart(cluster, last_seen)
    finally:
        cluster.stop_all()


def test_a_resume_after_a_restart_on_the_local_store_gets_a_snapshot(tmp_path: Path) -> None:
    gateway = Gateway(tmp_path, node_id="local").start()
    try:
        with gateway.events() as stream:
            assert stream.next().event == "snapshot"
            gateway.put("one")
            last_seen = next_change(stream).id
        gateway.put("two")  # missed
        gateway.kill()
        gateway = Gateway(tmp_path, node_id="local").start()
        with gateway.events(last_event_id=last_seen) as resumed:
            [snapshot] = first_frames(resumed)
        assert snapshot.event == "snapshot"
        assert sorted(p["id"] for p in snapshot.data["projects"]) == ["one", "two"]
    finally:
        gateway.stop()
