"""The HTTP API in process: TestClient (lifespan and all) on the local store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import orjson
import pytest
from fastapi.testclient import TestClient
from httpx import Response

from app.auth import ALGORITHM, ISSUER
from app.main import create_app
from app.settings import Settings
from app.stores.local import LocalStore
from tests.apps import PASSWORD, SECRET, Start, app_settings, app_starter
from tests.environ import clear_gateway_environ
from tests.eventually import eventually

VALUE_LIMIT = 1024


#: tests/conftest.py: no gateway variable, no .env from the repository.
pytestmark = pytest.mark.usefixtures("clean_env")


#: What these tests change from tests/apps.py's settings.
DEFAULTS: dict[str, object] = {
    "local_value_limit": VALUE_LIMIT,
    "wait_revision_timeout_seconds": 0.3,
}


def make_settings(**overrides: object) -> Settings:
    return app_settings(**{**DEFAULTS, **overrides})


def wait_ready(client: TestClient) -> None:
    eventually(lambda: client.get("/readyz").status_code == 200, 5, "the app to be ready")


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Start an app (lifespan included) on a LocalStore in tmp_path; ready when returned."""

    def store_for(settings: Settings) -> LocalStore:
        assert settings.local_value_limit is not None
        return LocalStore(tmp_path / "c.yaml", value_limit=settings.local_value_limit)

    with app_starter(store_for, DEFAULTS) as start:
        yield start


@pytest.fixture
def client(start: Start) -> TestClient:
    return start()


def admin_headers(client: TestClient) -> dict[str, str]:
    """The headers of an admin logged in on ``client``."""
    response = client.post("/v1/config/login", json={"user": "admin", "pass": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


@pytest.fixture
def auth(client: TestClient) -> dict[str, str]:
    return admin_headers(client)


def assert_error(response: Response, status: int) -> str:
    """The response is ``{"error": "<sentence>"}`` JSON with this status."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"], body
    assert isinstance(body["error"], str)
    assert body["error"].strip()
    return body["error"]


def project(project_id: str, **extra: object) -> dict:
    return {"id": project_id, "name": project_id.title(), "secret": "s", "modules": {}, **extra}


# --- start-up, open endpoints -----------------------------------------------------------


def test_ready_after_start_up(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"
    assert client.get("/healthz").json() == {"status": "ok"}


def test_env_is_open(client: TestClient) -> None:
    response = client.get("/v1/config/env")
    assert response.status_code == 200
    body = response.json()
    assert body["storeType"] == "local"
    assert body["nodeId"] == "node-1"
    assert body["clusterId"] == "default-cluster"
    assert body["advertiseAddr"] == "127.0.0.1:4122"
    assert body["dev"] is False
    assert isinstance(body["version"], str)


def test_metrics_are_open(client: TestClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert "sc_applied_revision" in response.text


def test_docs_serve_html(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "swagger" in response.text.lower()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/config/projects"),
        ("POST", "/v1/config/projects"),
        ("GET", "/v1/config/projects/a"),
        ("PUT", "/v1/config/projects/a"),
        ("DELETE", "/v1/config/projects/a"),
        ("GET", "/v1/config/peers"),
        ("GET", "/v1/config/events"),
    ],
)
def test_protected_endpoints_need_a_token(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path, json=project("a"))
    message = assert_error(response, 401)
    assert "token" in message
    assert response.headers["www-authenticate"] == "Bearer"


# --- auth -------------------------------------------------------------------------------


def test_login(client: TestClient) -> None:
    response = client.post("/v1/config/login", json={"user": "admin", "pass": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"token", "expiresAt"}
    assert body["expiresAt"] > time.time()
    headers = {"Authorization": f"Bearer {body['token']}"}
    assert client.get("/v1/config/projects", headers=headers).status_code == 200


@pytest.mark.parametrize(
    "credentials", [{"user": "admin", "pass": "wrong"}, {"user": "root", "pass": PASSWORD}]
)
def test_login_with_a_bad_pair(client: TestClient, credentials: dict) -> None:
    assert_error(client.post("/v1/config/login", json=credentials), 401)


def test_login_validation(client: TestClient) -> None:
    assert_error(client.post("/v1/config/login", json={"user": "admin"}), 422)
    assert_error(
        client.post(
            "/v1/config/login", content=b"[1]", headers={"Content-Type": "application/json"}
        ),
        422,
    )


@pytest.mark.parametrize(
    "authorization",
    ["Bearer not-a-token", "Bearer ", "Basic YWRtaW46dGVzdC1wYXNz", "token-without-scheme"],
)
def test_bad_token(client: TestClient, authorization: str) -> None:
    response = client.get("/v1/config/projects", headers={"Authorization": authorization})
    assert_error(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


def test_token_signed_with_another_secret(client: TestClient) -> None:
    now = int(time.time())
    claims = {"sub": "admin", "iss": ISSUER, "iat": now, "exp": now + 60}
    token = jwt.encode(claims, "another-secret-0123456789-0123456789", algorithm=ALGORITHM)
    response = client.get("/v1/config/projects", headers={"Authorization": f"Bearer {token}"})
    assert_error(response, 401)


def test_expired_token(client: TestClient) -> None:
    now = int(time.time())
    claims = {"sub": "admin", "iss": ISSUER, "iat": now - 120, "exp": now - 60}
    token = jwt.encode(claims, SECRET, algorithm=ALGORITHM)
    response = client.get("/v1/config/peers", headers={"Authorization": f"Bearer {token}"})
    assert "expired" in assert_error(response, 401)


def test_events_bad_query_token(client: TestClient) -> None:
    assert_error(client.get("/v1/config/events", params={"token": "garbage"}), 401)


def test_dev_needs_no_token(start: Start) -> None:
    client = start(dev=True, admin_pass=None, admin_secret=None)
    assert client.get("/v1/config/projects").status_code == 200
    response = client.put("/v1/config/projects/dev", json=project("dev"))
    assert response.status_code == 201
    assert client.get("/v1/config/projects/dev").json()["id"] == "dev"
    assert client.get("/v1/config/peers").status_code == 200
    assert client.get("/v1/config/env").json()["dev"] is True


# --- framework errors as JSON -----------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/v1/config/nope", "/v1/config/projects/a/b"])
def test_unknown_route(client: TestClient, auth: dict[str, str], path: str) -> None:
    assert_error(client.get(path, headers=auth), 404)
    assert_error(client.get(path), 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/v1/config/projects"),
        ("POST", "/healthz"),
        ("PUT", "/v1/config/peers"),
        ("GET", "/v1/config/login"),
    ],
)
def test_wrong_method(client: TestClient, auth: dict[str, str], method: str, path: str) -> None:
    assert_error(client.request(method, path, headers=auth), 405)


def test_validation_errors(client: TestClient, auth: dict[str, str]) -> None:
    assert_error(client.get("/v1/config/projects", params={"waitRevision": -1}, headers=auth), 400)
    assert_error(
        client.put("/v1/config/projects/Bad_Id", json=project("Bad_Id"), headers=auth), 422
    )
    assert_error(
        client.put("/v1/config/projects/a", json=project("a", modules="x"), headers=auth), 422
    )
    assert_error(client.post("/v1/config/projects", json={"name": "no id"}, headers=auth), 422)
    assert_error(client.post("/v1/config/projects", json=project("UPPER"), headers=auth), 422)


@pytest.mark.parametrize("path", ["/v1/config/projects", "/v1/config/peers"])
def test_bad_wait_revision_and_bad_last_event_id_answer_the_same(
    client: TestClient, auth: dict[str, str], path: str
) -> None:
    waiting = client.get(path, params={"waitRevision": "abc"}, headers=auth)
    assert "waitRevision" in assert_error(waiting, 400)
    with client.stream(
        "GET", "/v1/config/events", headers={**auth, "Last-Event-ID": "abc"}
    ) as resumed:
        resumed.read()
        assert "Last-Event-ID" in assert_error(resumed, 400)


def test_bad_json(client: TestClient, auth: dict[str, str]) -> None:
    headers = {**auth, "Content-Type": "application/json"}
    assert_error(client.put("/v1/config/projects/a", content=b"{not json", headers=headers), 400)
    assert_error(client.post("/v1/config/projects", content=b"", headers=headers), 400)
    assert_error(client.put("/v1/config/projects/a", content=b"[1, 2]", headers=headers), 400)


def test_path_and_body_ids_differ(client: TestClient, auth: dict[str, str]) -> None:
    response = client.put("/v1/config/projects/a", json=project("b"), headers=auth)
    assert "differs" in assert_error(response, 400)


def test_too_large(client: TestClient, auth: dict[str, str]) -> None:
    # Over twice the limit: refused from Content-Length alone.
    huge = project("a", modules={"pad": "x" * (3 * VALUE_LIMIT)})
    messages = [
        assert_error(client.put("/v1/config/projects/a", json=huge, headers=auth), 413),
        assert_error(client.post("/v1/config/projects", json=huge, headers=auth), 413),
    ]
    # Over twice the limit without a Content-Length: refused while it streams in.
    chunks = iter([orjson.dumps(huge)])
    streamed = client.put("/v1/config/projects/a", content=chunks, headers=auth)
    messages.append(assert_error(streamed, 413))
    # Under twice the limit as sent, over it once compacted.
    big = project("a", modules={"pad": "x" * (VALUE_LIMIT + 10)})
    assert len(orjson.dumps(big)) < 2 * VALUE_LIMIT
    messages.append(assert_error(client.put("/v1/config/projects/a", json=big, headers=auth), 413))
    # Every 413 names the one limit the store has, never the raw-body allowance.
    for message in messages:
        assert f"at most {VALUE_LIMIT}" in message, message
        assert str(2 * VALUE_LIMIT) not in message, message
    # Pretty-printed whitespace does not count against the limit.
    fits = project("a", modules={"pad": "x" * (VALUE_LIMIT - 200)})
    pretty = orjson.dumps(fits, option=orjson.OPT_INDENT_2).replace(b"\n", b"\n" + b" " * 40)
    assert len(pretty) > VALUE_LIMIT
    response = client.put(
        "/v1/config/projects/a",
        content=pretty,
        headers={**auth, "Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    assert client.get("/v1/config/projects", headers=auth).json()["revision"] == 1


# --- projects ---------------------------------------------------------------------------


def test_project_life_cycle(client: TestClient, auth: dict[str, str]) -> None:
    created = client.put("/v1/config/projects/todo", json=project("todo"), headers=auth)
    assert created.status_code == 201
    assert created.json() == {"project": "todo", "revision": 1}
    assert created.headers["etag"] == '"1"'

    got = client.get("/v1/config/projects/todo", headers=auth)
    assert got.status_code == 200
    assert got.json() == project("todo")
    assert got.headers["etag"] == '"1"'

    replaced = client.put(
        "/v1/config/projects/todo", json=project("todo", name="Two"), headers=auth
    )
    assert replaced.status_code == 200
    assert replaced.json() == {"project": "todo", "revision": 2}

    listed = client.get("/v1/config/projects", headers=auth).json()
    assert listed == {"projects": [project("todo", name="Two")], "revision": 2}

    deleted = client.delete("/v1/config/projects/todo", headers=auth)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_error(client.get("/v1/config/projects/todo", headers=auth), 404)
    assert_error(client.delete("/v1/config/projects/todo", headers=auth), 404)
    assert client.get("/v1/config/projects", headers=auth).json() == {
        "projects": [],
        "revision": 3,
    }


def test_body_without_id_takes_the_path_id(client: TestClient, auth: dict[str, str]) -> None:
    response = client.put("/v1/config/projects/noid", json={"name": "x"}, headers=auth)
    assert response.status_code == 201
    assert client.get("/v1/config/projects/noid", headers=auth).json()["id"] == "noid"


def test_post_creates_and_conflicts(client: TestClient, auth: dict[str, str]) -> None:
    response = client.post("/v1/config/projects", json=project("blog"), headers=auth)
    assert response.status_code == 201
    assert response.json() == {"project": "blog", "revision": 1}
    again = client.post("/v1/config/projects", json=project("blog", name="x"), headers=auth)
    assert "already exists" in assert_error(again, 409)
    assert client.get("/v1/config/projects/blog", headers=auth).json()["name"] == "Blog"


def test_if_match(client: TestClient, auth: dict[str, str]) -> None:
    client.put("/v1/config/projects/a", json=project("a"), headers=auth)  # 1
    client.put("/v1/config/projects/b", json=project("b"), headers=auth)  # 2
    stale = client.put(
        "/v1/config/projects/a", json=project("a", name="x"), headers={**auth, "If-Match": '"2"'}
    )
    assert_error(stale, 412)
    ok = client.put(
        "/v1/config/projects/a", json=project("a", name="y"), headers={**auth, "If-Match": '"1"'}
    )
    assert ok.status_code == 200
    assert ok.json()["revision"] == 3
    star = client.put(
        "/v1/config/projects/a", json=project("a", name="z"), headers={**auth, "If-Match": "*"}
    )
    assert star.status_code == 200
    missing = client.put(
        "/v1/config/projects/zz", json=project("zz"), headers={**auth, "If-Match": "*"}
    )
    assert_error(missing, 412)
    assert_error(client.delete("/v1/config/projects/a", headers={**auth, "If-Match": '"1"'}), 412)
    assert_error(
        client.put(
            "/v1/config/projects/a", json=project("a"), headers={**auth, "If-Match": "yesterday"}
        ),
        400,
    )
    current = client.get("/v1/config/projects/a", headers=auth).headers["etag"]
    deleted = client.delete("/v1/config/projects/a", headers={**auth, "If-Match": current})
    assert deleted.status_code == 204


def test_if_none_match(client: TestClient, auth: dict[str, str]) -> None:
    headers = {**auth, "If-None-Match": "*"}
    assert (
        client.put("/v1/config/projects/a", json=project("a"), headers=headers).status_code == 201
    )
    assert_error(client.put("/v1/config/projects/a", json=project("a"), headers=headers), 412)
    assert_error(
        client.put(
            "/v1/config/projects/a", json=project("a"), headers={**headers, "If-Match": '"1"'}
        ),
        400,
    )


def test_get_honours_if_none_match(client: TestClient, auth: dict[str, str]) -> None:
    revision = client.put("/v1/config/projects/a", json=project("a"), headers=auth).json()[
        "revision"
    ]
    path = "/v1/config/projects/a"
    for tag in (f'"{revision}"', f'W/"{revision}"', f'"{revision + 5}", "{revision}"', "*"):
        response = client.get(path, headers={**auth, "If-None-Match": tag})
        assert response.status_code == 304, tag
        assert response.content == b""
        assert response.headers["ETag"] == f'"{revision}"'
    changed = client.get(path, headers={**auth, "If-None-Match": f'"{revision - 1}"'})
    assert changed.status_code == 200
    assert changed.json()["id"] == "a"
    missing = client.get("/v1/config/projects/b", headers={**auth, "If-None-Match": "*"})
    assert_error(missing, 404)


def test_etag_of_a_project_from_a_space_cloud_file_is_usable(start: Start, tmp_path: Path) -> None:
    """A project loaded from a plain Space Cloud config.yaml (no revisions of ours) is
    served with an ETag that If-Match then accepts."""
    (tmp_path / "c.yaml").write_text("projects:\n  - id: todo\n    name: Todo\n")
    client = start()
    headers = admin_headers(client)
    got = client.get("/v1/config/projects/todo", headers=headers)
    assert got.status_code == 200
    response = client.put(
        "/v1/config/projects/todo",
        json=project("todo"),
        headers={**headers, "If-Match": got.headers["etag"]},
    )
    assert response.status_code == 200, response.text


# --- reads that wait for a revision -----------------------------------------------------


def test_wait_revision_of_an_applied_revision_answers_at_once(
    start: Start,
) -> None:
    client = start(wait_revision_timeout_seconds=5)
    auth = admin_headers(client)
    revision = client.put("/v1/config/projects/a", json=project("a"), headers=auth).json()[
        "revision"
    ]
    started = time.monotonic()
    for path in ("/v1/config/projects", "/v1/config/projects/a", "/v1/config/peers"):
        response = client.get(path, params={"waitRevision": revision}, headers=auth)
        assert response.status_code == 200, response.text
    listed = client.get("/v1/config/projects", params={"waitRevision": revision}, headers=auth)
    assert listed.json()["revision"] == revision
    assert time.monotonic() - started < 2.5  # not held up to the 5 s bound


def test_wait_revision_beyond_the_store_answers_400_at_once(
    start: Start,
) -> None:
    client = start(wait_revision_timeout_seconds=5)
    auth = admin_headers(client)
    revision = client.put("/v1/config/projects/a", json=project("a"), headers=auth).json()[
        "revision"
    ]
    started = time.monotonic()
    response = client.get("/v1/config/projects", params={"waitRevision": 99}, headers=auth)
    message = assert_error(response, 400)
    assert "99" in message and f"store's current revision {revision}" in message
    assert time.monotonic() - started < 2.5  # not held up to the 5 s bound


# --- peers ------------------------------------------------------------------------------


def test_peers_hold_this_instance(client: TestClient, auth: dict[str, str]) -> None:
    [peer] = eventually(
        lambda: client.get("/v1/config/peers", headers=auth).json()["peers"],
        5,
        "this instance in its peer list",
    )
    assert peer["id"] == "node-1"
    assert peer["addr"] == "127.0.0.1:4122"
    assert peer["self"] is True
    assert set(peer) == {"id", "addr", "version", "startedAt", "appliedRevision", "self"}


# --- OpenAPI ----------------------------------------------------------------------------

ENDPOINTS = [
    ("post", "/v1/config/login"),
    ("get", "/v1/config/projects"),
    ("post", "/v1/config/projects"),
    ("get", "/v1/config/projects/{project}"),
    ("put", "/v1/config/projects/{project}"),
    ("delete", "/v1/config/projects/{project}"),
    ("get", "/v1/config/peers"),
    ("get", "/v1/config/events"),
    ("get", "/v1/config/env"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
]


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The OpenAPI document of a started app, built once: the checks below only read it."""
    workdir = tmp_path_factory.mktemp("openapi")
    with pytest.MonkeyPatch.context() as monkeypatch:
        clear_gateway_environ(monkeypatch)
        monkeypatch.chdir(workdir)  # no .env from the repository
        settings = make_settings()
        assert settings.local_value_limit is not None
        store = LocalStore(workdir / "c.yaml", value_limit=settings.local_value_limit)
        with TestClient(create_app(settings, store)) as client:
            wait_ready(client)
            response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def resolve(document: dict, schema: dict) -> dict:
    while "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/components/schemas/"), ref
        schema = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return schema


def assert_real_schema(document: dict, schema: dict, *properties: str) -> dict:
    assert "$ref" in schema, schema  # a named component, not an inline {}
    resolved = resolve(document, schema)
    assert resolved.get("properties"), resolved
    for name in properties:
        assert name in resolved["properties"], (name, resolved)
    return resolved


def json_schema(operation: dict, status: str = "200") -> dict:
    return operation["responses"][status]["content"]["application/json"]["schema"]


def test_openapi_documents_every_endpoint(openapi: dict) -> None:
    for method, path in ENDPOINTS:
        assert method in openapi["paths"].get(path, {}), (method, path)
        operation = openapi["paths"][path][method]
        assert operation.get("summary") or operation.get("description"), (method, path)


def test_openapi_response_schemas_are_real(openapi: dict) -> None:
    paths = openapi["paths"]
    listing = assert_real_schema(
        openapi, json_schema(paths["/v1/config/projects"]["get"]), "projects", "revision"
    )
    assert_real_schema(openapi, listing["properties"]["projects"]["items"], "id", "modules")
    assert_real_schema(
        openapi,
        json_schema(paths["/v1/config/projects/{project}"]["get"]),
        "id",
        "name",
        "secret",
        "modules",
    )
    peers = assert_real_schema(openapi, json_schema(paths["/v1/config/peers"]["get"]), "peers")
    assert_real_schema(
        openapi,
        peers["properties"]["peers"]["items"],
        "id",
        "addr",
        "version",
        "startedAt",
        "appliedRevision",
        "self",
    )
    assert_real_schema(
        openapi,
        json_schema(paths["/v1/config/env"]["get"]),
        "version",
        "storeType",
        "clusterId",
        "nodeId",
        "advertiseAddr",
        "dev",
    )
    assert_real_schema(openapi, json_schema(paths["/v1/config/login"]["post"]), "token")
    for method in ("put", "post"):
        path = "/v1/config/projects/{project}" if method == "put" else "/v1/config/projects"
        operation = paths[path][method]
        status = "200" if method == "put" else "201"
        assert_real_schema(openapi, json_schema(operation, status), "project", "revision")


def test_openapi_request_bodies_are_real(openapi: dict) -> None:
    paths = openapi["paths"]
    login = paths["/v1/config/login"]["post"]["requestBody"]["content"]["application/json"]
    assert_real_schema(openapi, login["schema"], "user", "pass")
    for path, method in (("/v1/config/projects/{project}", "put"), ("/v1/config/projects", "post")):
        body = paths[path][method]["requestBody"]["content"]["application/json"]
        assert_real_schema(openapi, body["schema"], "id", "modules")


def test_openapi_documents_the_conditional_get(openapi: dict) -> None:
    operation = openapi["paths"]["/v1/config/projects/{project}"]["get"]
    assert "304" in operation["responses"]
    headers = [p["name"] for p in operation["parameters"] if p["in"] == "header"]
    assert "If-None-Match" in headers


def test_openapi_errors_use_the_error_schema(openapi: dict) -> None:
    expected = {
        ("/v1/config/login", "post"): ["401"],
        ("/v1/config/projects/{project}", "get"): ["400", "401", "404"],
        ("/v1/config/projects", "get"): ["400", "401"],
        ("/v1/config/peers", "get"): ["400", "401"],
        ("/v1/config/projects/{project}", "put"): ["400", "401", "412", "413"],
        ("/v1/config/projects", "post"): ["409", "413"],
        ("/v1/config/projects/{project}", "delete"): ["404", "412"],
    }
    for (path, method), codes in expected.items():
        responses = openapi["paths"][path][method]["responses"]
        for code in codes:
            schema = responses[code]["content"]["application/json"]["schema"]
            assert_real_schema(openapi, schema, "error")


def test_every_documented_error_is_the_error_body(openapi: dict) -> None:
    """Every 4xx/5xx of every operation is ``{"error"}``: none is FastAPI's default 422
    schema (``{"detail": [...]}``), which the app never answers."""
    assert "HTTPValidationError" not in openapi["components"]["schemas"]
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            for code, response in operation["responses"].items():
                if int(code) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path)
