"""Values written by other tools (``etcdctl put``, ``consul kv put``) on a real cluster.

Two gateways on real etcd and real Consul, an event stream and a follower attached; every
foreign-value case is written with the store's own command-line tool. The list stays
JSON, the stream stays well framed, the follower keeps applying changes and a new one
becomes ready, the bad values are listed on ``/readyz`` (which stays 200), and a later
valid write to a skipped key is served (docs/design.md §12).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.stores.base import ETCD_VALUE_LIMIT
from tests.eventually import eventually
from tests.gateway import Event, Gateway, SSEStream
from tests.servers.binaries import binary
from tests.test_cluster import STORES, Cluster, own_cluster
from tests.test_follow import follower

PRETTY = (
    b'{\n  "id": "pretty",\n  "name": "Pretty",\n  "modules": {\n    "db": {"on": true}\n  }\n}\n'
)

#: key -> value: none of them may be served, on either store.
FOREIGN: dict[str, bytes] = {
    "not-json": b"this is { not json",
    "array": b'[{"id": "array"}]',
    "string": b'"a string"',
    "number": b"42",
    "null": b"null",
    "UPPER": b'{"id": "UPPER"}',
    "a/b": b'{"id": "a/b"}',
    "mismatch": b'{\n  "id": "other"\n}',
}
#: The reason /readyz gives for each.
REASONS = {
    "not-json": "not_json",
    "array": "not_object",
    "string": "not_object",
    "number": "not_object",
    "null": "not_object",
    "UPPER": "bad_key",
    "a/b": "bad_key",
    "mismatch": "id_mismatch",
    "too-large": "too_large",
}


@pytest.fixture(params=STORES)
def store_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    with own_cluster(request, request.param, tmp_path) as cluster:
        yield cluster


def store_cli(cluster: Cluster, verb: str, key: str | bytes, value: bytes | None = None) -> None:
    """``put`` or ``delete`` a key under the cluster's projects prefix with the store's CLI
    (the value on stdin: etcdctl and ``consul kv put KEY -`` both read it there)."""
    name = key if isinstance(key, bytes) else key.encode()
    full = b"sc/projects/%s/%s" % (cluster.cluster_id.encode(), name)
    if cluster.kind == "etcd":
        command: list[str | bytes] = [
            binary("etcdctl"),
            f"--endpoints=http://{cluster.server.endpoints}",
        ]
        command += ["put", full] if verb == "put" else ["del", full]
        env = {"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}
    else:
        command = [binary("consul"), "kv", verb, f"-http-addr={cluster.server.addr}", full]
        command += ["-"] if verb == "put" else []
        env = {"PATH": "/usr/bin:/bin"}
    result = subprocess.run(command, input=value, capture_output=True, env=env, timeout=20)
    assert result.returncode == 0, result.stderr.decode()


def next_change(stream: SSEStream) -> Event:
    return stream.next_of("project.put", "project.delete")


def data_lines(event: Event) -> list[str]:
    return [line for line in event.raw if line.startswith("data:")]


def project_ids(gateway: Gateway) -> set[str]:
    response = gateway.get("/v1/config/projects")
    assert response.status_code == 200
    body = json.loads(response.content)  # the body itself must be JSON
    return {project["id"] for project in body["projects"]}


def test_foreign_values_never_break_a_list_a_stream_or_a_follower(
    store_cluster: Cluster,
) -> None:
    cluster = store_cluster
    a, b = cluster.gateway("a"), cluster.gateway("b")
    f = follower(cluster.workdir, a)
    cluster.gateways.append(f)  # stopped with the cluster's gateways
    assert a.put("before").status_code == 201
    foreign = dict(FOREIGN)
    if cluster.kind == "etcd":
        # Consul refuses values over its own limit, which is the gateway's limit there.
        pad = b"x" * ETCD_VALUE_LIMIT
        foreign["too-large"] = b'{"id": "too-large", "pad": "' + pad + b'"}'

    seen_on_b: list[Event] = []
    with b.events() as on_b, f.events() as on_f:
        assert on_b.next().event == on_f.next().event == "snapshot"

        store_cli(cluster, "put", "pretty", PRETTY)
        event = next_change(on_b)
        seen_on_b.append(event)
        assert event.event == "project.put"
        assert event.data["project"] == {
            "id": "pretty",
            "name": "Pretty",
            "modules": {"db": {"on": True}},
        }
        compact = '{"id":"pretty","name":"Pretty","modules":{"db":{"on":true}}}'
        assert data_lines(event) == [f'data: {{"revision":{event.id},"project":{compact}}}']

        for key, value in foreign.items():
            store_cli(cluster, "put", key, value)
        if cluster.kind == "etcd":  # a key that is not UTF-8 (Consul's keys are JSON text)
            store_cli(cluster, "put", b"caf\xe9", b"{}")
        # None of them is an event: the next one is this valid value, served with its id.
        store_cli(cluster, "put", "no-id", b'{"name": "No id"}')
        event = next_change(on_b)
        seen_on_b.append(event)
        assert (event.event, event.data["project"]) == (
            "project.put",
            {"id": "no-id", "name": "No id"},
        )

        # Served, then invalid (removed: a delete), then valid again (served).
        for value, kind in [
            (b'{"id": "flip", "v": 1}', "project.put"),
            (b"{broken", "project.delete"),
            (b'{"id": "flip", "v": 2}', "project.put"),
        ]:
            store_cli(cluster, "put", "flip", value)
            event = next_change(on_b)
            seen_on_b.append(event)
            assert (event.event, event.data.get("id", event.data.get("project", {}).get("id"))) == (
                kind,
                "flip",
            )

        # A skipped key written validly later is served.
        store_cli(cluster, "put", "mismatch", b'{"id": "mismatch"}')
        seen_on_b.append(event := next_change(on_b))
        assert event.data["project"] == {"id": "mismatch"}

        written = a.put("after")
        assert written.status_code == 201
        seen_on_b.append(event := next_change(on_b))
        assert event.id == written.json()["revision"]

        # The follower, attached all along, received the very same changes.
        seen_on_f = [next_change(on_f) for _ in seen_on_b]
        assert [(e.event, e.id, e.data) for e in seen_on_f] == [
            (e.event, e.id, e.data) for e in seen_on_b
        ]

    served = {"before", "pretty", "no-id", "flip", "mismatch", "after"}
    for gateway in (a, b, f):
        assert project_ids(gateway) == served
    for gateway in (a, b):
        ready = gateway.get("/readyz")
        assert ready.status_code == 200
        skipped = {value["key"]: value["reason"] for value in ready.json()["skipped"]}
        expected = {key: REASONS[key] for key in foreign if key != "mismatch"}
        if cluster.kind == "etcd":
            expected["caf\\xe9"] = "bad_key"
        assert skipped == expected
        metrics = gateway.get("/metrics").text
        bad_keys = 3 if cluster.kind == "etcd" else 2
        assert f'sc_store_values_skipped_total{{reason="bad_key"}} {bad_keys}.0' in metrics
    assert a.get("/v1/config/projects/flip").json() == {"id": "flip", "v": 2}
    assert f.get("/readyz").status_code == 200

    # A follower started now, with every bad value in the store, becomes ready.
    late = follower(cluster.workdir, b, name="late")
    cluster.gateways.append(late)
    assert project_ids(late) == served

    # Deleting a skipped key takes it off /readyz.
    store_cli(cluster, "delete", "not-json")
    eventually(
        lambda: "not-json" not in {v["key"] for v in a.get("/readyz").json()["skipped"]},
        10,
        "the deleted key to leave /readyz",
    )


def test_a_hand_edited_config_file_with_bad_entries_starts_and_reports_them(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "projects:\n"
        "  - id: shop\n    name: Shop\n"
        "  - name: no id at all\n"
        "  - id: UPPER\n"
        "  - id: 5\n"
        "  - just a string\n"
        "  - id: ok\n    modules: {db: {on: true}}\n"
    )
    gateway = Gateway(tmp_path / "gw", args=["--config", str(config)]).start()
    try:
        assert project_ids(gateway) == {"shop", "ok"}
        ready = gateway.get("/readyz")
        assert ready.status_code == 200
        assert {v["key"]: v["reason"] for v in ready.json()["skipped"]} == {
            "projects[1]": "bad_key",
            "UPPER": "bad_key",
            "projects[3]": "bad_key",
            "projects[4]": "bad_key",
        }
        assert gateway.put("new").status_code == 201
        assert project_ids(gateway) == {"shop", "ok", "new"}
        assert "no id at all" in config.read_text()  # the operator's entry is kept
    finally:
        gateway.stop()
