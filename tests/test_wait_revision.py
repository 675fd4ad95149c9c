"""``?waitRevision=`` against real etcd and Consul: a revision beyond the store's current
one is a 400 at once naming it; one the store has is waited for, on any instance; a 504
only when this instance cannot apply it within the bound (docs/design.md §12)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.proxy import CuttableProxy
from tests.test_cluster import STORES, Cluster, own_cluster


@pytest.fixture(params=STORES)
def store_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    with own_cluster(request, request.param, tmp_path) as cluster:
        yield cluster


def test_beyond_the_store_is_400_at_once_and_a_fresh_write_is_never_refused(
    store_cluster: Cluster,
) -> None:
    a, b = store_cluster.gateway("a"), store_cluster.gateway("b")
    revision = a.put("shop").json()["revision"]

    started = time.monotonic()
    refused = b.get("/v1/config/projects", waitRevision=revision + 1_000_000)
    elapsed = time.monotonic() - started
    assert refused.status_code == 400
    message = refused.json()["error"]
    named = re.search(r"store's current revision (\d+)", message)
    assert named and revision <= int(named.group(1)) < revision + 1_000_000, message
    assert elapsed < 2  # at once, not after the 10 s bound
    assert b.get("/v1/config/projects", waitRevision="abc").status_code == 400

    # Written on one instance, read at once on the other: always served, never a 400.
    for n in range(20):
        written = a.put(f"p{n}").json()["revision"]
        got = b.get(f"/v1/config/projects/p{n}", waitRevision=written)
        assert got.status_code == 200, got.text
        assert got.headers["ETag"] == f'"{written}"'


def test_504_only_when_the_store_has_it_and_this_instance_cannot_apply_it(
    store_cluster: Cluster,
) -> None:
    proxy = CuttableProxy(*store_cluster.store_addr).start()
    try:
        cut_off = store_cluster.gateway(
            "cut", env={**store_cluster.store_env_via(proxy), "WAIT_REVISION_TIMEOUT_SECONDS": "2"}
        )
        writer = store_cluster.gateway("writer")
        proxy.cut()
        revision = writer.put("shop").json()["revision"]
        response = cut_off.get("/v1/config/projects", waitRevision=revision)
        assert response.status_code == 504, response.text
        assert str(revision) in response.json()["error"]
    finally:
        proxy.close()
