"""GET /v1/config/projects/{id}: every check of the route that checks them itself (no
FastAPI dependency on it, for speed: docs/design.md §5), in order, and its OpenAPI entry.
In process (TestClient, lifespan and all) on the local store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from app.stores.local import LocalStore

PASSWORD = "test-pass"
SECRET = "test-secret-0123456789-0123456789-abcdef"
PATTERN = "^[a-z0-9][a-z0-9_-]{0,62}$"


#: tests/conftest.py: no gateway variable, no .env from the repository.
pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        admin_pass=PASSWORD,
        admin_secret=SECRET,
        node_id="node-1",
        advertise_addr="127.0.0.1:4122",
        wait_revision_timeout_seconds=0.3,
    )
    with TestClient(create_app(settings, LocalStore(tmp_path / "c.yaml"))) as client:
        deadline = time.monotonic() + 5
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the app did not become ready"
            time.sleep(0.01)
        yield client


@pytest.fixture
def admin(client: TestClient) -> dict[str, str]:
    response = client.post("/v1/config/login", json={"user": "admin", "pass": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def reader_of(client: TestClient, admin: dict[str, str], projects: list[str]) -> dict[str, str]:
    body = {"name": "ci", "role": "reader", "projects": projects}
    response = client.post("/v1/config/tokens", json=body, headers=admin)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str), body
    return body["error"]


def put(client: TestClient, admin: dict[str, str], project: str) -> int:
    response = client.put(f"/v1/config/projects/{project}", json={"id": project}, headers=admin)
    assert response.status_code in (200, 201), response.text
    return response.json()["revision"]


def test_a_read_answers_the_stored_bytes_with_the_revision_as_etag(
    client: TestClient, admin: dict[str, str]
) -> None:
    revision = put(client, admin, "shop")
    response = client.get("/v1/config/projects/shop", headers=admin)
    assert response.status_code == 200
    assert response.json()["id"] == "shop"
    assert response.headers["etag"] == f'"{revision}"'
    assert response.headers["content-type"] == "application/json"
    unchanged = client.get(
        "/v1/config/projects/shop", headers={**admin, "If-None-Match": f'"{revision}"'}
    )
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert unchanged.headers["etag"] == f'"{revision}"'


def test_the_token_is_checked_before_anything_else(client: TestClient) -> None:
    for path in ("/v1/config/projects/shop", "/v1/config/projects/Bad!?waitRevision=x"):
        assert "token is required" in error(client.get(path), 401)
        refused = client.get(path, headers={"Authorization": "Bearer nonsense"})
        assert error(refused, 401) and refused.headers["www-authenticate"] == "Bearer"
    assert "Bearer <token>" in error(
        client.get("/v1/config/projects/shop", headers={"Authorization": "Basic eA=="}), 401
    )


def test_wait_revision_is_checked_before_the_id(client: TestClient, admin: dict[str, str]) -> None:
    assert "waitRevision" in error(
        client.get("/v1/config/projects/Bad!?waitRevision=x", headers=admin), 400
    )
    assert "beyond the store's current revision" in error(
        client.get("/v1/config/projects/shop?waitRevision=999999", headers=admin), 400
    )


@pytest.mark.parametrize("project", ["Bad!", "UPPER", "a" * 64, "-x", "shop%0A"])
def test_an_id_outside_the_pattern_is_422_as_for_the_other_routes(
    client: TestClient, admin: dict[str, str], project: str
) -> None:
    message = error(client.get(f"/v1/config/projects/{project}", headers=admin), 422)
    assert message == f"path.project: String should match pattern '{PATTERN}'"
    written = client.put(f"/v1/config/projects/{project}", json={}, headers=admin)
    assert error(written, 422) == message


def test_a_scoped_token_gets_403_outside_its_projects_whether_they_exist_or_not(
    client: TestClient, admin: dict[str, str]
) -> None:
    put(client, admin, "shop")
    put(client, admin, "blog")
    reader = reader_of(client, admin, ["shop"])
    assert client.get("/v1/config/projects/shop", headers=reader).status_code == 200
    assert "may not read project 'blog'" in error(
        client.get("/v1/config/projects/blog", headers=reader), 403
    )
    assert "may not read project 'nope'" in error(
        client.get("/v1/config/projects/nope", headers=reader), 403
    )
    assert error(client.get("/v1/config/projects/nope", headers=admin), 404) == (
        "project 'nope' does not exist"
    )


def test_the_route_keeps_fastapi_dependencies_off_its_requests(client: TestClient) -> None:
    """The checks are calls in the route, not dependencies FastAPI solves per request."""
    routes = [
        route
        for route in client.app.routes  # type: ignore[attr-defined]
        if isinstance(route, APIRoute)
        and route.path == "/v1/config/projects/{project}"
        and "GET" in (route.methods or set())
    ]
    assert len(routes) == 1
    dependant = routes[0].dependant
    assert dependant.dependencies == [] and dependant.path_params == []
    assert dependant.query_params == [] and dependant.header_params == []


def test_openapi_documents_what_the_route_checks(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    operation = document["paths"]["/v1/config/projects/{project}"]["get"]
    assert operation["security"] == [{"AdminBearer": []}]
    assert document["components"]["securitySchemes"]["AdminBearer"]["scheme"] == "bearer"
    parameters = {(p["in"], p["name"]): p for p in operation["parameters"]}
    assert set(parameters) == {
        ("path", "project"),
        ("query", "waitRevision"),
        ("header", "If-None-Match"),
    }
    project = parameters[("path", "project")]
    assert project["required"] is True and project["schema"]["pattern"] == PATTERN
    responses = operation["responses"]
    assert set(responses) == {"200", "304", "400", "401", "403", "404", "422", "503", "504"}
    assert responses["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Project"
    }
    for code in ("400", "401", "403", "404", "422", "503", "504"):
        schema = responses[code]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}, code
