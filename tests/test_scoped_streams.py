"""Scoped event streams across real ``space-cloud run`` processes on a real etcd and a
real Consul: a reader's stream holds exactly its projects' events, ``?projects=``
narrows any stream, a scoped resume on the other instance misses nothing, and a stream
never outlives its token (revocation on A ends it on B: the time is measured and
printed, never asserted; expiry ends it). A follower given a reader token serves
exactly that token's projects."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.auth import TokenIssuer
from tests.eventually import eventually
from tests.gateway import ADMIN_PASS, ADMIN_SECRET, Event, Gateway, SSEStream
from tests.test_cluster import TTL, Cluster, own_cluster
from tests.test_follow import follower
from tests.test_tokens_cluster import as_token, cluster, mint

#: Revocations timed per store.
REVOCATIONS = 3
#: The projects the mixed writes go to; the reader's token covers ``shop*``.
PROJECTS = ("shop", "blog", "shop-eu", "other", "shop-new")

Change = tuple[str, str, int | None]

__all__ = ["cluster"]  # a fixture: each test over every store


@pytest.fixture
def etcd_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """For what does not depend on the store (a follower reads an instance)."""
    with own_cluster(request, "etcd", tmp_path) as cluster:
        yield cluster


def start_pair(cluster: Cluster) -> tuple[Gateway, Gateway]:
    env = {"INSTANCE_TTL_SECONDS": str(TTL[cluster.kind])}
    return cluster.gateway("a", env=env), cluster.gateway("b", env=env)


def accepted_on(gateway: Gateway, token: str) -> None:
    """Wait until ``gateway`` applied the token's record through its watch."""
    with as_token(gateway, token) as client:
        eventually(lambda: client.get("/v1/config/peers").status_code == 200, 10, "accepted")


def mixed_writes(gateway: Gateway, count: int, offset: int = 0) -> list[Change]:
    """``count`` puts and deletes across :data:`PROJECTS`, as the stream names them."""
    written: list[Change] = []
    existing = set(
        project["id"] for project in gateway.get("/v1/config/projects").json()["projects"]
    )
    with gateway.client() as client:
        for n in range(offset, offset + count):
            project_id = PROJECTS[n % len(PROJECTS)]
            if n % 7 == 3 and project_id in existing:
                response = client.delete(f"/v1/config/projects/{project_id}")
                assert response.status_code == 204, response.text
                existing.discard(project_id)
                written.append(("project.delete", project_id, int(response.headers["X-Revision"])))
                continue
            body = {"id": project_id, "name": f"{project_id} {n}", "modules": {}}
            response = client.put(f"/v1/config/projects/{project_id}", json=body)
            assert response.status_code in (200, 201), response.text
            existing.add(project_id)
            written.append(("project.put", project_id, response.json()["revision"]))
    return written


def change(event: Event) -> Change:
    project_id = (
        event.data["id"] if event.event == "project.delete" else event.data["project"]["id"]
    )
    return event.event, project_id, event.id


def changes(stream: SSEStream, count: int) -> list[Change]:
    return [change(stream.next_of("project.put", "project.delete")) for _ in range(count)]


def snapshot_ids(stream: SSEStream) -> tuple[list[str], list[str]]:
    data = stream.next_of("snapshot").data
    return [project["id"] for project in data["projects"]], sorted(data["revisions"])


def test_a_readers_stream_holds_exactly_its_projects_events_in_order(cluster: Cluster) -> None:
    a, b = start_pair(cluster)
    for project_id in ("shop", "shop-eu", "blog"):
        assert a.put(project_id).status_code == 201
    reader = mint(a, "reader", ["shop*"])["token"]
    accepted_on(b, reader)
    with (
        b.events(token=reader) as scoped,
        b.events(token=reader, projects="shop-eu") as narrowed,
        a.events(projects="blog,other") as admin_narrowed,
        a.events() as everything,
    ):
        assert snapshot_ids(scoped) == (["shop", "shop-eu"], ["shop", "shop-eu"])
        assert snapshot_ids(narrowed) == (["shop-eu"], ["shop-eu"])
        assert snapshot_ids(admin_narrowed) == (["blog"], ["blog"])
        assert len(snapshot_ids(everything)[0]) == 3

        written = mixed_writes(a, 100)
        # The sentinel: the next change each stream may see after the 100 writes.
        sentinel = ("project.put", "shop-eu", a.put("shop-eu").json()["revision"])
        other = ("project.put", "blog", a.put("blog").json()["revision"])
        for stream, sees in (
            (scoped, lambda project_id: project_id.startswith("shop")),
            (narrowed, lambda project_id: project_id == "shop-eu"),
            (admin_narrowed, lambda project_id: project_id in ("blog", "other")),
            (everything, lambda project_id: True),
        ):
            expected = [item for item in [*written, sentinel, other] if sees(item[1])]
            assert changes(stream, len(expected)) == expected


def test_bad_or_forbidden_projects_in_the_filter(cluster: Cluster) -> None:
    a = cluster.gateway("a")
    reader = mint(a, "reader", ["shop*"])["token"]
    with as_token(a, reader) as client:
        for bad in ("", "Shop", "shop,,blog", "a/b", ",".join(f"p{n}" for n in range(101))):
            answer = client.get("/v1/config/events", params={"projects": bad})
            assert answer.status_code == 400, bad
            assert "comma-separated project ids" in answer.json()["error"]
        answer = client.get("/v1/config/events", params={"projects": "shop,blog"})
        assert answer.status_code == 403
        assert answer.json() == {"error": "the token 'reader-svc' may not read project 'blog'"}


def test_a_scoped_stream_resumes_on_the_other_instance_missing_nothing(cluster: Cluster) -> None:
    a, b = start_pair(cluster)
    reader = mint(a, "reader", ["shop*"])["token"]
    accepted_on(b, reader)
    with b.events(token=reader) as first:
        first.next_of("snapshot")
        written = [item for item in mixed_writes(a, 20) if item[1].startswith("shop")]
        seen = changes(first, 4)
    assert seen == written[:4]
    written += [item for item in mixed_writes(a, 20, offset=20) if item[1].startswith("shop")]
    with a.events(last_event_id=seen[-1][2], token=reader) as resumed:
        assert changes(resumed, len(written) - 4) == written[4:]
        assert resumed.next().event == "peers"  # the replay ended; nothing else came


def read_to_the_end(stream: SSEStream) -> None:
    with pytest.raises(EOFError):
        while True:
            stream.next()


def test_revoking_a_token_on_a_ends_its_streams_on_b(cluster: Cluster) -> None:
    a, b = start_pair(cluster)
    assert a.put("shop").status_code == 201
    seconds: list[float] = []
    for number in range(REVOCATIONS):
        minted = mint(a, "reader", ["shop"], name=f"revoked-{number}")
        accepted_on(b, minted["token"])
        with b.events(token=minted["token"], read_timeout=10) as stream:
            stream.next_of("snapshot")
            with a.client() as admin_on_a:
                started = time.perf_counter()
                assert admin_on_a.delete(f"/v1/config/tokens/{minted['id']}").status_code == 204
            read_to_the_end(stream)
            seconds.append(time.perf_counter() - started)
        with as_token(b, minted["token"]) as client:
            assert client.get("/v1/config/events").status_code == 401
    print(
        f"\n{cluster.kind}: revocation on A -> stream on B closed, over {REVOCATIONS} tokens: "
        f"median {statistics.median(seconds) * 1000:.1f} ms, max {max(seconds) * 1000:.1f} ms"
    )
    assert "its token was revoked" in b.process.log()


def test_a_short_lived_token_and_an_admin_login_end_their_streams(cluster: Cluster) -> None:
    a, b = start_pair(cluster)
    with a.client() as client:
        body = {"name": "brief", "role": "reader", "projects": ["*"], "ttlSeconds": 2}
        minted = client.post("/v1/config/tokens", json=body).json()
    accepted_on(b, minted["token"])
    issuer = TokenIssuer("admin", ADMIN_PASS, ADMIN_SECRET, 2, cluster_id=cluster.cluster_id)
    admin_token, _ = issuer.issue("admin")
    with (
        b.events(token=minted["token"], read_timeout=10) as minted_stream,
        b.events(token=admin_token, read_timeout=10) as admin_stream,
    ):
        minted_stream.next_of("snapshot")
        admin_stream.next_of("snapshot")
        read_to_the_end(minted_stream)
        read_to_the_end(admin_stream)
    for token in (minted["token"], admin_token):
        with as_token(b, token) as client:
            assert client.get("/v1/config/events").status_code == 401
    assert b.process.log().count("its token expired") == 2


def test_a_follower_with_a_reader_token_serves_exactly_its_projects(
    etcd_cluster: Cluster, tmp_path: Path
) -> None:
    a = etcd_cluster.gateway("a")
    for project_id in ("shop", "shop-eu", "blog"):
        assert a.put(project_id).status_code == 201
    reader = mint(a, "reader", ["shop*"])["token"]
    f = follower(tmp_path, a, env={"UPSTREAM_TOKEN": reader, "ADMIN_SECRET": ""})
    try:
        listed = f.get("/v1/config/projects").json()["projects"]
        assert [project["id"] for project in listed] == ["shop", "shop-eu"]
        revision = a.put("shop-new").json()["revision"]
        a.put("blog-new")
        assert f.get("/v1/config/projects/shop-new", waitRevision=revision).status_code == 200
        assert f.get("/v1/config/projects/blog").status_code == 404
        with f.events() as stream:
            assert snapshot_ids(stream)[0] == ["shop", "shop-eu", "shop-new"]
            revision = a.put("shop").json()["revision"]
            a.put("blog")
            assert changes(stream, 1) == [("project.put", "shop", revision)]
    finally:
        f.stop()


def test_the_stream_of_a_scoped_token_needs_no_admin(etcd_cluster: Cluster) -> None:
    a = etcd_cluster.gateway("a")
    reader = mint(a, "reader", ["shop"])["token"]
    with httpx.stream(
        "GET", f"{a.url}/v1/config/events", params={"token": reader}, timeout=10
    ) as response:
        assert response.status_code == 200
        assert next(response.iter_lines()) == "event: snapshot"
