"""Versions across real ``space-cloud run`` processes, on the local file, etcd and Consul.

Written on one instance, read and rolled back on another; intact after the project's
deletion, restarts, etcd compaction and defragmentation; and a ``kill -9`` in a burst of
writes leaves every acknowledged write with its version and every version with its write.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import web
from tests.eventually import eventually
from tests.gateway import Gateway

STORES = ["local", "etcd", "consul"]


@dataclass
class Deployment:
    """Gateways of one cluster on one store; the local store takes one at a time."""

    kind: str
    server: Any  # EtcdServer | ConsulAgent | None
    workdir: Path
    cluster_id: str = field(default_factory=lambda: f"h{uuid.uuid4().hex[:10]}")
    gateways: list[Gateway] = field(default_factory=list)

    def gateway(self, name: str, **env: str) -> Gateway:
        if self.kind == "local":
            # The same config file (and lock) for every instance: one runs at a time.
            args = ["--config", str(self.workdir / "config.yaml")]
            store_env: dict[str, str] = {}
        else:
            args = ["--store-type", self.kind, "--cluster", self.cluster_id]
            store_env = {**self.server.env(), "STORE_TIMEOUT_SECONDS": "2"}
        gateway = Gateway(self.workdir / name, node_id=name, args=args, env={**store_env, **env})
        self.gateways.append(gateway)
        return gateway.start()

    def second(self, first: Gateway, name: str) -> Gateway:
        """Another instance of the cluster; on the local store, the first one again."""
        return first if self.kind == "local" else self.gateway(name)

    def stop_all(self) -> None:
        for gateway in self.gateways:
            gateway.stop()
        self.gateways.clear()


@pytest.fixture(params=STORES)
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    server = (
        None if request.param == "local" else request.getfixturevalue(f"{request.param}_server")
    )
    deployment = Deployment(request.param, server, tmp_path)
    try:
        yield deployment
    finally:
        deployment.stop_all()


def history(gateway: Gateway, project: str, **params: str | int) -> list[dict]:
    response = gateway.get(f"/v1/config/projects/{project}/history", **params)
    assert response.status_code == 200, response.text
    return response.json()["versions"]


def rollback(gateway: Gateway, project: str, revision: int, **headers: str) -> httpx.Response:
    with gateway.client() as client:
        return client.post(
            f"/v1/config/projects/{project}/rollback", json={"revision": revision}, headers=headers
        )


def test_written_on_a_read_and_rolled_back_on_b_kept_after_delete_and_restart(
    deployment: Deployment,
) -> None:
    a = deployment.gateway("a")
    b = deployment.second(a, "b")
    revisions = []
    for n in range(5):
        response = a.put("app", {"id": "app", "name": f"v{n}", "modules": {"n": n}})
        assert response.status_code in (200, 201), response.text
        revisions.append(response.json()["revision"])

    listed = history(b, "app", waitRevision=revisions[-1])
    assert [(v["revision"], v["op"], v["by"], v["node"]) for v in listed] == [
        (revision, "put", "admin", "a") for revision in reversed(revisions)
    ]
    for n, revision in enumerate(revisions):
        document = b.get(f"/v1/config/projects/app/history/{revision}")
        assert document.status_code == 200
        assert (document.json()["name"], document.json()["modules"]) == (f"v{n}", {"n": n})

    stale = rollback(b, "app", revisions[1], **{"If-Match": f'"{revisions[3]}"'})
    assert stale.status_code == 412, stale.text
    fresh = rollback(b, "app", revisions[1], **{"If-Match": f'"{revisions[-1]}"'})
    assert fresh.status_code == 200, fresh.text
    rolled_back = fresh.json()["revision"]
    current = a.get("/v1/config/projects/app", waitRevision=rolled_back)
    assert current.json()["name"] == "v1" and current.headers["ETag"] == f'"{rolled_back}"'
    newest = history(a, "app", limit=1)[0]
    assert (newest["revision"], newest["op"], newest["node"]) == (rolled_back, "put", b.node_id)

    with a.client() as client:
        deleted = int(client.delete("/v1/config/projects/app").headers["X-Revision"])
    after_delete = history(b, "app", waitRevision=deleted)
    assert [v["revision"] for v in after_delete] == [deleted, rolled_back, *reversed(revisions)]
    assert after_delete[0]["op"] == "delete"
    assert b.get("/v1/config/projects/app").status_code == 404

    deployment.stop_all()
    c = deployment.gateway("c")
    assert history(c, "app", waitRevision=deleted) == after_delete
    assert c.get(f"/v1/config/projects/app/history/{revisions[2]}").json()["name"] == "v2"


@pytest.mark.parametrize("deployment", ["etcd"], indirect=True)
def test_history_survives_etcd_compaction_and_defragmentation(deployment: Deployment) -> None:
    a = deployment.gateway("a")
    revisions = [a.put("app", {"id": "app", "name": f"v{n}"}).json()["revision"] for n in range(4)]
    before = history(a, "app")
    deployment.server.compact()
    deployment.server.etcdctl("defrag")
    assert history(a, "app") == before
    assert [v["revision"] for v in before] == revisions[::-1]
    b = deployment.gateway("b")
    document = b.get(f"/v1/config/projects/app/history/{revisions[0]}", waitRevision=revisions[-1])
    assert document.json()["name"] == "v0"
    back = rollback(b, "app", revisions[0])
    assert back.status_code == 200, back.text


def test_kill_9_in_a_burst_leaves_every_acknowledged_write_with_its_version(
    deployment: Deployment,
) -> None:
    """Every acknowledged write has its version; every version is a write that was made
    (its document is one that was sent, and, seen by another instance's event stream,
    the very change at that revision); the newest version is the current project."""
    writer = deployment.gateway("writer", PROJECT_VERSIONS="1000")
    keep = {"PROJECT_VERSIONS": "1000"}
    observer = None if deployment.kind == "local" else deployment.gateway("observer", **keep)
    # The observer replays its changes from here (its own revision: within its buffer).
    start = (observer or writer).get("/v1/config/projects").json()["revision"]
    acknowledged: dict[int, str] = {}
    sent: set[str] = set()
    lock = threading.Lock()

    def burst(thread: int) -> None:
        with web.client(base_url=writer.url, headers=writer.headers(), timeout=5) as client:
            for n in range(200):
                name = f"t{thread}-{n}"
                with lock:
                    sent.add(name)
                try:
                    response = client.put(
                        f"/v1/config/projects/p{thread % 2}",
                        json={"id": f"p{thread % 2}", "name": name},
                    )
                except httpx.HTTPError:
                    return
                if response.status_code in (200, 201):
                    with lock:
                        acknowledged[response.json()["revision"]] = name

    threads = [threading.Thread(target=burst, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    eventually(lambda: len(acknowledged) >= 40, 30, "40 acknowledged writes")
    writer.kill()
    for thread in threads:
        thread.join(10)

    reader = observer or deployment.gateway("after", **keep)
    versions: dict[int, tuple[str, str]] = {}
    for project in ("p0", "p1"):
        for version in history(reader, project, limit=1000):
            document = reader.get(f"/v1/config/projects/{project}/history/{version['revision']}")
            versions[version["revision"]] = (project, document.json()["name"])
        current = reader.get(f"/v1/config/projects/{project}")
        newest = history(reader, project, limit=1)[0]["revision"]
        assert current.headers["ETag"] == f'"{newest}"'

    assert {r: versions[r][1] for r in acknowledged} == acknowledged
    assert {name for _, name in versions.values()} <= sent
    if observer is not None:
        with observer.events(last_event_id=start) as stream:
            seen: dict[int, tuple[str, str]] = {}
            while len(seen) < len(versions):
                event = stream.next_of("project.put", "snapshot")
                assert event.event == "project.put", "the observer could not replay the burst"
                assert event.id is not None
                seen[event.id] = (event.data["project"]["id"], event.data["project"]["name"])
        assert seen == versions
