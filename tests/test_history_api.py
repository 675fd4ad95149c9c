"""Versions over HTTP, in process (TestClient, lifespan and all) on the local store: the
answers, the bad input, the scope checks and the OpenAPI document. Versions across real
gateways on every store are in ``test_history_cluster.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.access import Principal
from app.access.scopes import ProjectScope, Role
from app.auth import require_admin
from app.settings import Settings
from app.stores.local import LocalStore
from tests.apps import Start, app_starter
from tests.test_api import DEFAULTS, assert_error, auth, client, project

__all__ = ["auth", "client"]

#: tests/conftest.py: no gateway variable, no .env from the repository.
pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Start an app (lifespan included) on a LocalStore keeping PROJECT_VERSIONS."""

    def store_for(settings: Settings) -> LocalStore:
        return LocalStore(tmp_path / "c.yaml", keep_versions=settings.project_versions)

    with app_starter(store_for, DEFAULTS) as start:
        yield start


HISTORY = "/v1/config/projects/{}/history"


def write(client: TestClient, auth: dict[str, str], project_id: str, **extra: object) -> int:
    response = client.put(
        f"/v1/config/projects/{project_id}", json=project(project_id, **extra), headers=auth
    )
    assert response.status_code in (200, 201), response.text
    return response.json()["revision"]


def versions(client: TestClient, auth: dict[str, str], project_id: str, **params: object) -> list:
    response = client.get(HISTORY.format(project_id), params=params, headers=auth)
    assert response.status_code == 200, response.text
    return response.json()["versions"]


def test_writes_are_listed_newest_first_with_who_when_and_where(
    client: TestClient, auth: dict[str, str]
) -> None:
    first = write(client, auth, "app", name="one")
    second = write(client, auth, "app", name="two")
    deleted = client.delete("/v1/config/projects/app", headers=auth)
    assert deleted.status_code == 204
    listed = versions(client, auth, "app")
    assert [(v["revision"], v["op"], v["by"], v["node"]) for v in listed] == [
        (int(deleted.headers["X-Revision"]), "delete", "admin", "node-1"),
        (second, "put", "admin", "node-1"),
        (first, "put", "admin", "node-1"),
    ]
    assert all(v["at"].endswith("Z") for v in listed)
    one = client.get(f"{HISTORY.format('app')}/{first}", headers=auth)
    assert one.status_code == 200 and one.json()["name"] == "one"
    gone = assert_error(
        client.get(f"{HISTORY.format('app')}/{listed[0]['revision']}", headers=auth), 404
    )
    assert "deleted" in gone
    assert [v["revision"] for v in versions(client, auth, "app", limit=1, before=second)] == [first]


def test_rollback_writes_the_old_document_as_a_new_revision(
    client: TestClient, auth: dict[str, str]
) -> None:
    first = write(client, auth, "app", name="good")
    bad = write(client, auth, "app", name="bad")
    rollback = "/v1/config/projects/app/rollback"
    stale = client.post(
        rollback, json={"revision": first}, headers={**auth, "If-Match": f'"{first}"'}
    )
    assert "revision" in assert_error(stale, 412)
    done = client.post(rollback, json={"revision": first}, headers={**auth, "If-Match": f'"{bad}"'})
    assert done.status_code == 200, done.text
    revision = done.json()["revision"]
    assert done.json() == {"project": "app", "revision": revision} and revision > bad
    current = client.get("/v1/config/projects/app", headers=auth)
    assert current.json()["name"] == "good" and current.headers["ETag"] == f'"{revision}"'
    assert versions(client, auth, "app")[0]["revision"] == revision

    deleted = int(client.delete("/v1/config/projects/app", headers=auth).headers["X-Revision"])
    refused = assert_error(client.post(rollback, json={"revision": deleted}, headers=auth), 409)
    assert "deleted" in refused
    revived = client.post(rollback, json={"revision": bad}, headers=auth)
    assert revived.status_code == 200
    assert client.get("/v1/config/projects/app", headers=auth).json()["name"] == "bad"


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/v1/config/projects/nobody/history", None, 404),
        ("GET", "/v1/config/projects/app/history/999999", None, 404),
        ("GET", "/v1/config/projects/app/history/abc", None, 400),
        ("GET", "/v1/config/projects/app/history/-1", None, 400),
        ("GET", "/v1/config/projects/app/history?limit=0", None, 400),
        ("GET", "/v1/config/projects/app/history?limit=51", None, 400),
        ("GET", "/v1/config/projects/app/history?limit=x", None, 400),
        ("GET", "/v1/config/projects/app/history?before=0", None, 400),
        ("GET", "/v1/config/projects/app/history?waitRevision=999999", None, 400),
        ("POST", "/v1/config/projects/app/rollback", b"", 400),
        ("POST", "/v1/config/projects/app/rollback", b"[1]", 400),
        ("POST", "/v1/config/projects/app/rollback", b'{"revision":"1"}', 400),
        ("POST", "/v1/config/projects/app/rollback", b'{"revision":true}', 400),
        ("POST", "/v1/config/projects/app/rollback", b'{"revision":1,"x":2}', 400),
        ("POST", "/v1/config/projects/app/rollback", b'{"revision":' + b"1" * 2000 + b"}", 400),
        ("POST", "/v1/config/projects/app/rollback", b'{"revision":999999}', 404),
        ("POST", "/v1/config/projects/nobody/rollback", b'{"revision":1}', 404),
    ],
)
def test_bad_input_gets_one_sentence_and_the_right_status(
    client: TestClient,
    auth: dict[str, str],
    method: str,
    path: str,
    body: bytes | None,
    status: int,
) -> None:
    write(client, auth, "app")
    response = client.request(method, path, content=body, headers=auth)
    assert_error(response, status)
    operation = client.get("/openapi.json").json()["paths"]
    template = path.split("?")[0].replace("/app/", "/{project}/").replace("/nobody/", "/{project}/")
    template = template.rsplit("/", 1)[0] + "/{revision}" if "/history/" in template else template
    assert str(status) in operation[template][method.lower()]["responses"]


def test_every_route_needs_a_token(client: TestClient) -> None:
    for method, path in [
        ("GET", HISTORY.format("app")),
        ("GET", f"{HISTORY.format('app')}/1"),
        ("POST", "/v1/config/projects/app/rollback"),
    ]:
        assert_error(client.request(method, path), 401)


def test_readers_read_only_their_projects_history_and_never_roll_back(
    start: Start,
) -> None:
    client = start(dev=True)
    first = write(client, {}, "mine")
    write(client, {}, "theirs")
    reader = Principal("ro", Role.READER, ProjectScope.parse(["mine"]))
    client.app.dependency_overrides[require_admin] = lambda: reader  # type: ignore[attr-defined]

    assert [v["revision"] for v in versions(client, {}, "mine")] == [first]
    assert_error(client.get(HISTORY.format("theirs")), 403)
    assert_error(client.get(f"{HISTORY.format('theirs')}/1"), 403)
    refused = client.post("/v1/config/projects/mine/rollback", json={"revision": first})
    assert "may only read" in assert_error(refused, 403)


def test_metrics_count_versions_written_and_pruned(start: Start) -> None:
    client = start(dev=True, project_versions=2)
    for n in range(4):
        write(client, {}, "app", name=f"n{n}")
    assert len(versions(client, {}, "app")) == 2
    text = client.get("/metrics").text
    assert "sc_versions_written_total 4.0" in text
    assert "sc_versions_pruned_total 2.0" in text
