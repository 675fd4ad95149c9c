"""``--cache-file``: the file itself, and a real gateway started while etcd is down."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import orjson
import pytest

from app.stores.base import StoredProject
from app.sync.cache import CacheFile, CacheFileError, CacheWriter
from tests.eventually import eventually, eventually_async
from tests.gateway import Gateway, space_cloud_command
from tests.servers.etcd import EtcdFactory
from tests.servers.proxy import CuttableProxy
from tests.test_cluster import Cluster

# --- the file --------------------------------------------------------------------------


def test_a_written_cache_reads_back_as_the_listing(tmp_path: Path) -> None:
    cache = CacheFile(tmp_path / "cache.json", "prod", "etcd")
    projects = [StoredProject("a", b'{"id":"a","n":1}', 3), StoredProject("b", b'{"id":"b"}', 7)]
    cache.write(cache.encode(projects, 9))
    listing = cache.read()
    assert listing.revision == 9
    assert listing.projects == {p.id: p for p in projects}
    assert [p.name for p in tmp_path.iterdir()] == ["cache.json"]  # no temp file left


def cache_document(**fields: object) -> bytes:
    document = {"format": 1, "cluster": "prod", "storeType": "etcd", "revision": 1}
    return orjson.dumps({**document, "projects": [], **fields})


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "not a cache file"),
        (cache_document(revision=-1), "not a cache"),
        (cache_document(projects=[{"id": "a"}]), "not a cache"),
        (cache_document(cluster="other"), "'other'"),
        (cache_document(format=2), "format 2"),
        (cache_document(storeType="consul"), "'consul' store"),
    ],
)
def test_an_unusable_cache_file_is_refused_with_one_line(
    tmp_path: Path, content: bytes, why: str
) -> None:
    path = tmp_path / "cache.json"
    path.write_bytes(content)
    with pytest.raises(CacheFileError) as caught:
        CacheFile(path, "prod", "etcd").read()
    assert why in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_cache_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CacheFileError, match="cannot read"):
        CacheFile(tmp_path / "absent.json", "prod", "etcd").read()


async def test_the_writer_coalesces_changes_and_writes_at_shutdown(tmp_path: Path) -> None:
    cache = CacheFile(tmp_path / "cache.json", "prod", "etcd")
    applied: dict[str, StoredProject] = {}
    revision = 0
    writes = 0
    write = cache.write

    def counted(data: bytes) -> None:
        nonlocal writes
        write(data)
        writes += 1

    cache.write = counted  # type: ignore[method-assign]
    writer = CacheWriter(cache, lambda: (list(applied.values()), revision), delay=0.05)
    for n in range(1, 6):
        applied[f"p{n}"] = StoredProject(f"p{n}", b'{"id":"p%d"}' % n, n)
        revision = n
        writer.changed()
    await eventually_async(lambda: writes, 2, "the delayed write", 0.01)
    assert writes == 1 and cache.read().revision == 5  # five changes, one write
    revision = 6
    applied["p6"] = StoredProject("p6", b'{"id":"p6"}', 6)
    writer.changed()
    await writer.flush()  # before the delay is up
    assert writes == 2 and set(cache.read().projects) == {f"p{n}" for n in range(1, 7)}
    await writer.flush()  # nothing new: no write
    assert writes == 2


# --- a real gateway on etcd ---------------------------------------------------------------


def status(gateway: Gateway, path: str) -> int:
    """The status ``path`` answers; 0 while the process does not take connections yet."""
    try:
        return gateway.get(path).status_code
    except httpx.HTTPError:
        return 0


def cached_revision(path: Path) -> int:
    try:
        return int(orjson.loads(path.read_bytes())["revision"])
    except (OSError, ValueError):
        return 0


def test_started_without_etcd_it_serves_the_cache_then_emits_exactly_the_difference(
    etcd_factory: EtcdFactory, tmp_path: Path
) -> None:
    etcd = etcd_factory()
    cluster = Cluster("etcd", etcd, tmp_path)
    cache = tmp_path / "cache.json"
    proxy = CuttableProxy(*cluster.store_addr).start()
    env = {**cluster.store_env_via(proxy), "CACHE_FILE": str(cache)}
    try:
        first = cluster.gateway("a", env=env)
        for name in ("keep", "change", "remove"):
            assert first.put(name).status_code == 201
        last = first.put("keep", {"id": "keep", "name": "kept"}).json()["revision"]
        eventually(lambda: cached_revision(cache) == last, 5, "the cache file to hold the writes")
        first.kill()  # kill -9: no shutdown write
        proxy.cut()
        etcd.stop()

        second = cluster.gateway("a2", env=env, start=False)
        second.start(wait_ready=False)
        eventually(lambda: status(second, "/v1/config/projects") == 200, 20, "the cache served")
        listed = second.get("/v1/config/projects").json()
        assert listed["revision"] == last
        assert {p["id"]: p.get("name") for p in listed["projects"]} == {
            "keep": "kept",
            "change": "change",
            "remove": "remove",
        }
        assert second.get("/v1/config/projects/keep").headers["ETag"] == f'"{last}"'
        ready = second.get("/readyz")
        assert ready.status_code == 503 and "cache file" in ready.json()["error"]
        refused = second.put("new")
        assert refused.status_code == 503 and "error" in refused.json()

        with second.events() as stream:
            snapshot = stream.next()
            assert snapshot.event == "snapshot" and snapshot.id == last
            assert {p["id"] for p in snapshot.data["projects"]} == {"keep", "change", "remove"}

            # etcd comes back; changes are made before this gateway can reach it again.
            etcd.start()
            prefix = f"sc/projects/{cluster.cluster_id}/"
            etcd.etcdctl("put", prefix + "change", json.dumps({"id": "change", "v": 2}))
            etcd.etcdctl("del", prefix + "remove")
            etcd.etcdctl("put", prefix + "added", json.dumps({"id": "added"}))
            proxy.restore()

            # A deletion found by a listing has lost its own revision and takes a free one
            # (docs/design.md §4), so the order of the three may differ; the ids only grow.
            changes = [stream.next_of("project.put", "project.delete") for _ in range(3)]
            assert {(e.event, e.data.get("id") or e.data["project"]["id"]) for e in changes} == {
                ("project.put", "change"),
                ("project.delete", "remove"),
                ("project.put", "added"),
            }
            revisions = [e.id for e in changes]
            assert None not in revisions
            assert revisions == sorted({r for r in revisions if r is not None})
            assert (revisions[0] or 0) > last
            changed = next(e for e in changes if e.data.get("project", {}).get("id") == "change")
            assert changed.data["project"] == {"id": "change", "v": 2}
            second.wait_ready(20)
            marker = second.put("marker")
            assert marker.status_code == 201
            after = stream.next_of("project.put", "project.delete")
            assert (after.event, after.id) == ("project.put", marker.json()["revision"])
        eventually(
            lambda: cached_revision(cache) == marker.json()["revision"], 5, "the cache updated"
        )
    finally:
        cluster.stop_all()
        proxy.close()


def test_a_bad_cache_file_does_not_stop_the_start(
    etcd_factory: EtcdFactory, tmp_path: Path
) -> None:
    """A cache file from elsewhere is not served; the gateway waits for the store."""
    etcd = etcd_factory()
    cache = tmp_path / "cache.json"
    cache.write_bytes(b'{"format": 1, "cluster": "elsewhere", "revision": 5, "projects": []}')
    cluster = Cluster("etcd", etcd, tmp_path)
    etcd.stop()
    gateway = cluster.gateway("a", env={"CACHE_FILE": str(cache)}, start=False)
    try:
        gateway.start(wait_ready=False)
        eventually(lambda: "is not served" in gateway.process.log(), 20, "the refusal to be logged")
        assert status(gateway, "/v1/config/projects") == 503
        # Not written over while nothing is applied; once the store answers, the file
        # holds what was applied from it (written within a second), so check before.
        assert cached_revision(cache) == 5
        etcd.start()
        gateway.wait_ready(30)
    finally:
        gateway.stop()


@pytest.mark.parametrize("where", ["missing-folder/cache.json", "."])
def test_a_cache_file_that_cannot_be_exits_2_with_one_line(tmp_path: Path, where: str) -> None:
    result = subprocess.run(
        [*space_cloud_command(), "run", "--dev", "--cache-file", str(tmp_path / where)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--cache-file / CACHE_FILE" in lines[0], result.stderr
