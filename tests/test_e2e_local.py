"""End to end on the local store: real ``space-cloud run`` processes over HTTP.

The tests of the API's behaviour share one process (``gateway``), each on projects of
its own; those that stop, kill or configure their process start their own."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests import web
from tests.eventually import eventually
from tests.gateway import Gateway

PROTECTED = [
    ("GET", "/v1/config/projects"),
    ("GET", "/v1/config/projects/p1"),
    ("PUT", "/v1/config/projects/p1"),
    ("POST", "/v1/config/projects"),
    ("DELETE", "/v1/config/projects/p1"),
    ("GET", "/v1/config/peers"),
    ("GET", "/v1/config/events"),
]
OPEN = ["/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/v1/config/env"]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(tmp_path_factory.mktemp("shared")).start()
    yield gw
    gw.stop()


@pytest.fixture
def own_gateway(tmp_path: Path) -> Iterator[Gateway]:
    gw = Gateway(tmp_path).start()
    yield gw
    gw.stop()


def _ids(gateway: Gateway) -> set[str]:
    return {project["id"] for project in gateway.get("/v1/config/projects").json()["projects"]}


def test_login_and_auth_is_required_everywhere_but_the_open_endpoints(gateway: Gateway) -> None:
    bad = web.post(f"{gateway.url}/v1/config/login", json={"user": "admin", "pass": "nope"})
    assert bad.status_code == 401
    assert bad.json() == {"error": "wrong user name or password"}
    for method, path in PROTECTED:
        response = web.request(method, gateway.url + path, json={"id": "p1"})
        assert response.status_code == 401, (method, path)
        assert "error" in response.json()
        forged = web.request(method, gateway.url + path, headers={"Authorization": "Bearer x.y.z"})
        assert forged.status_code == 401, (method, path)
    for path in OPEN:
        assert web.get(gateway.url + path).status_code == 200, path
    env = web.get(f"{gateway.url}/v1/config/env").json()
    assert env["storeType"] == "local" and env["nodeId"] == gateway.node_id
    assert env["advertiseAddr"] == gateway.addr and env["dev"] is False
    assert gateway.get("/v1/config/projects").status_code == 200


def test_create_replace_delete_with_revisions_and_preconditions(gateway: Gateway) -> None:
    created = gateway.put("p1")
    assert created.status_code == 201
    first = created.json()["revision"]
    assert created.json() == {"project": "p1", "revision": first}

    replaced = gateway.put("p1", {"id": "p1", "name": "renamed", "modules": {"db": {}}})
    assert replaced.status_code == 200
    second = replaced.json()["revision"]
    assert second > first

    got = gateway.get("/v1/config/projects/p1")
    assert got.headers["ETag"] == f'"{second}"'
    assert got.json()["name"] == "renamed"

    stale = gateway.put("p1", If_Match=f'"{first}"')
    assert stale.status_code == 412
    assert "error" in stale.json()
    fresh = gateway.put("p1", If_Match=f'"{second}"')
    assert fresh.status_code == 200
    assert gateway.put("p1", If_None_Match="*").status_code == 412
    assert gateway.put("p2", If_None_Match="*").status_code == 201

    with gateway.client() as client:
        assert client.post("/v1/config/projects", json={"id": "p2"}).status_code == 409
        assert client.post("/v1/config/projects", json={"id": "p3"}).status_code == 201
        mismatch = client.put("/v1/config/projects/p4", json={"id": "other"})
        assert mismatch.status_code == 400
        bad_id = client.put("/v1/config/projects/Bad!", json={})
        assert bad_id.status_code == 422
        stale_delete = client.delete("/v1/config/projects/p2", headers={"If-Match": '"1"'})
        assert stale_delete.status_code == 412
        assert client.delete("/v1/config/projects/p2").status_code == 204
        assert client.delete("/v1/config/projects/p2").status_code == 404
        assert client.get("/v1/config/projects/p2").status_code == 404
        listing = client.get("/v1/config/projects").json()
    ids = {project["id"] for project in listing["projects"]}
    assert {"p1", "p3"} <= ids and not {"p2", "p4"} & ids
    assert listing["revision"] >= second


def test_bad_requests_get_json_errors_and_change_nothing(gateway: Gateway) -> None:
    gateway.put("keep")
    before = gateway.get("/v1/config/projects").json()
    with gateway.client() as client:
        not_json = client.put("/v1/config/projects/keep", content=b"{nope")
        assert not_json.status_code == 400 and "error" in not_json.json()
        too_big = client.put(
            "/v1/config/projects/keep",
            json={"id": "keep", "modules": {"blob": "x" * (2 * 1024 * 1024)}},
        )
        assert too_big.status_code == 413 and "error" in too_big.json()
        wrong_type = client.put("/v1/config/projects/keep", json={"id": "keep", "modules": []})
        assert wrong_type.status_code == 422 and "error" in wrong_type.json()
        assert client.get("/v1/config/nowhere").json()["error"]
        assert client.patch("/v1/config/projects/keep").status_code == 405
        bad_etag = client.put(
            "/v1/config/projects/keep", json={"id": "keep"}, headers={"If-Match": "abc"}
        )
        assert bad_etag.status_code == 400
    assert gateway.get("/v1/config/projects").json() == before


def test_sse_snapshot_then_ordered_events_and_exact_resume(gateway: Gateway) -> None:
    gateway.put("a")
    with gateway.events(query_token=True) as stream:
        snapshot = stream.next()
        assert snapshot.event == "snapshot"
        assert stream.retry is not None
        served = _ids(gateway)
        assert "a" in served
        assert sorted(p["id"] for p in snapshot.data["projects"]) == sorted(served)
        assert snapshot.id == snapshot.data["revision"]
        assert [peer["id"] for peer in snapshot.data["peers"]] == [gateway.node_id]

        revisions = [gateway.put(name).json()["revision"] for name in ("b", "c")]
        with gateway.client() as client:
            client.delete("/v1/config/projects/a")
        events = stream.take(3, "project.put", "project.delete")
        assert [(e.event, e.id) for e in events] == [
            ("project.put", revisions[0]),
            ("project.put", revisions[1]),
            ("project.delete", revisions[1] + 1),
        ]
        assert events[0].data["project"]["id"] == "b"
        assert events[2].data == {"revision": revisions[1] + 1, "id": "a"}
        seen = events[0].id

    missed = [gateway.put(name).json()["revision"] for name in ("d", "e")]
    with gateway.events(last_event_id=seen) as resumed:
        replayed = resumed.take(4, "project.put", "project.delete", "snapshot")
    assert [e.id for e in replayed] == [revisions[1], revisions[1] + 1, *missed]
    assert [e.event for e in replayed] == [
        "project.put",
        "project.delete",
        "project.put",
        "project.put",
    ]

    with gateway.events(last_event_id=missed[-1]) as current:
        assert current.next().event == "peers"  # nothing missed: no replay, no snapshot


def test_resume_from_an_id_older_than_the_history_gets_a_snapshot(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, env={"HISTORY_SIZE": "2"}).start()
    try:
        for name in ("a", "b", "c", "d"):
            gw.put(name)
        with gw.events(last_event_id=1) as stream:
            event = stream.next()
        assert event.event == "snapshot"
        assert len(event.data["projects"]) == 4
    finally:
        gw.stop()


def test_restart_keeps_configs_and_revisions(tmp_path: Path) -> None:
    gw = Gateway(tmp_path).start()
    revision = gw.put("kept", {"id": "kept", "name": "Kept", "modules": {"x": {"y": 1}}}).json()[
        "revision"
    ]
    assert gw.stop() == 0
    document = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert [p["id"] for p in document["projects"]] == ["kept"]

    gw = Gateway(tmp_path, port=gw.port, node_id=gw.node_id).start()
    try:
        got = gw.get("/v1/config/projects/kept")
        assert got.json()["modules"] == {"x": {"y": 1}}
        assert got.headers["ETag"] == f'"{revision}"'
        assert gw.put("next").json()["revision"] == revision + 1
    finally:
        gw.stop()


def test_kill_9_during_a_burst_loses_no_acknowledged_write(tmp_path: Path) -> None:
    gw = Gateway(tmp_path).start()
    acknowledged: dict[str, int] = {}
    stop = threading.Event()

    def writer(prefix: str) -> None:
        with gw.client(timeout=5) as client:
            for number in range(10_000):
                if stop.is_set():
                    return
                name = f"{prefix}{number}"
                try:
                    response = client.put(f"/v1/config/projects/{name}", json={"id": name})
                except httpx.HTTPError:
                    return
                if response.status_code in (200, 201):
                    acknowledged[name] = response.json()["revision"]

    threads = [threading.Thread(target=writer, args=(f"w{i}-",)) for i in range(4)]
    for thread in threads:
        thread.start()
    eventually(lambda: len(acknowledged) >= 40, 30, "40 acknowledged writes")
    gw.process.signal(signal.SIGKILL)
    stop.set()
    for thread in threads:
        thread.join(10)

    document = yaml.safe_load((tmp_path / "config.yaml").read_text())  # parses: not torn
    on_disk = {p["id"] for p in document["projects"]}
    assert set(acknowledged) <= on_disk
    assert document["revision"] >= max(acknowledged.values())

    restarted = Gateway(tmp_path).start()
    try:
        served = {p["id"] for p in restarted.get("/v1/config/projects").json()["projects"]}
        assert served == on_disk
    finally:
        restarted.stop()


def test_second_process_on_the_same_file_is_refused(gateway: Gateway) -> None:
    second = Gateway(gateway.workdir)
    second.start(wait_ready=False)
    assert second.process.proc is not None
    assert second.process.proc.wait(20) == 2
    assert "in use by another space-cloud process" in second.process.log()


def test_sigterm_with_open_streams_exits_promptly_and_cleanly(own_gateway: Gateway) -> None:
    gateway = own_gateway
    streams = [gateway.events() for _ in range(3)]
    for stream in streams:
        assert stream.next().event == "snapshot"
    # uvicorn's graceful timeout is 5 s: a hung stream would still be open after 8 s, when
    # stop() sends SIGKILL (exit -9 instead of 0).
    assert gateway.process.stop(timeout=8) == 0
    for stream in streams:
        with pytest.raises((EOFError, httpx.HTTPError)):
            while True:
                stream.next()
        stream.close()
    assert "ASGI callable returned without completing response" not in gateway.process.log()


def test_wait_revision_holds_until_applied_or_refuses_beyond_the_store(gateway: Gateway) -> None:
    revision = gateway.put("w").json()["revision"]
    assert gateway.get("/v1/config/projects", waitRevision=revision).status_code == 200
    # No write of the local store made it: a 400 naming its revision, not a 504.
    late = gateway.get("/v1/config/projects/w", waitRevision=revision + 5)
    assert late.status_code == 400
    assert f"store's current revision {revision}" in late.json()["error"]


def test_metrics_expose_the_promised_series(gateway: Gateway) -> None:
    gateway.put("m")
    # The streams of the tests before have ended, or will as soon as the server notices.
    eventually(lambda: _metric(gateway, "sc_sse_subscribers") == 0, 10, "no open stream")
    with gateway.events() as stream:
        stream.next()
        text = web.get(f"{gateway.url}/metrics").text
    for name in (
        "sc_applied_revision",
        "sc_sse_subscribers 1.0",
        "sc_sse_events_sent_total",
        "sc_store_operation_seconds_bucket",
        "sc_store_errors",
    ):
        assert name in text, name


def _metric(gateway: Gateway, name: str) -> float:
    for line in web.get(f"{gateway.url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")
