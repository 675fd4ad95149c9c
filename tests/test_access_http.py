"""Access control across the HTTP boundary: login limiting, token binding, CORS, who
writes. In process (TestClient) first, then real ``space-cloud run`` processes."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from app.access import Principal
from app.access.admin_tokens import password_fingerprint
from app.auth import ALGORITHM, ISSUER, Admin, CurrentPrincipal
from app.settings import Settings
from app.stores.local import LocalStore
from tests import web
from tests.apps import PASSWORD, SECRET, Start, app_starter
from tests.gateway import ADMIN_PASS, ADMIN_SECRET, Gateway
from tests.servers.process import ROOT

CLUSTER = "default-cluster"


#: tests/conftest.py: no gateway variable, no .env from the repository.
pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """An app on a LocalStore of its own in tmp_path, lifespan running; ready when
    returned."""

    def prepare(app: FastAPI) -> None:
        app.include_router(_whoami_router())

    files = (tmp_path / f"c{number}.yaml" for number in itertools.count())
    with app_starter(lambda _: LocalStore(next(files)), prepare=prepare) as start:
        yield start


def _whoami_router() -> APIRouter:
    """A write-like route guarded like the projects router, to see the principal arrive."""
    router = APIRouter(dependencies=[Admin])

    @router.post("/test/whoami")
    async def whoami(principal: CurrentPrincipal) -> dict:
        return {"name": principal.name, "role": principal.role, "admin": principal.may_admin}

    return router


def login(client: TestClient, password: str = PASSWORD) -> httpx.Response:
    return client.post("/v1/config/login", json={"user": "admin", "pass": password})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(response: httpx.Response, status: int, contains: str = "") -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str), body
    assert contains in body["error"]
    return body["error"]


# --- the login limiter ------------------------------------------------------------------


def test_failed_logins_turn_into_429_with_retry_after(start: Start) -> None:
    client = start(login_max_failures=3)
    for _ in range(3):
        assert_error(login(client, "wrong"), 401, "wrong user name or password")
    blocked = login(client, "wrong")
    message = assert_error(blocked, 429, "too many failed logins")
    retry_after = int(blocked.headers["Retry-After"])
    assert retry_after >= 1 and f"{retry_after}s" in message
    # Even the right password waits: the password is not checked while blocked.
    assert_error(login(client), 429)


def test_a_success_resets_the_count(start: Start) -> None:
    client = start(login_max_failures=3)
    for _ in range(2):
        assert_error(login(client, "wrong"), 401)
    assert login(client).status_code == 200
    for _ in range(2):
        assert_error(login(client, "wrong"), 401)
    assert login(client).status_code == 200


def test_429_is_documented(start: Start) -> None:
    responses = start().get("/openapi.json").json()["paths"]["/v1/config/login"]["post"]
    assert "Retry-After" in responses["responses"]["429"]["headers"]
    assert responses["responses"]["429"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }


def test_dev_mode_logs_in_without_limits(start: Start) -> None:
    client = start(dev=True, admin_pass=None, login_max_failures=1)
    for _ in range(3):
        assert login(client, "anything").status_code == 200


# --- refused tokens ---------------------------------------------------------------------


def _claims(**changes: object) -> dict:
    now = int(time.time())
    claims = {
        "sub": "admin",
        "role": "admin",
        "iss": ISSUER,
        "aud": CLUSTER,
        "pwf": password_fingerprint(SECRET, PASSWORD),
        "iat": now,
        "exp": now + 600,
        **changes,
    }
    return claims


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (jwt.encode(_claims(), None, algorithm="none"), "the token is not valid"),
        (jwt.encode(_claims(), "x" * 40, algorithm=ALGORITHM), "the token is not valid"),
        (
            jwt.encode(_claims(exp=int(time.time()) - 5), SECRET, algorithm=ALGORITHM),
            "the token has expired",
        ),
        (
            jwt.encode(_claims(aud="another-cluster"), SECRET, algorithm=ALGORITHM),
            "another cluster",
        ),
        (
            jwt.encode(
                _claims(pwf=password_fingerprint(SECRET, "old-pass")), SECRET, algorithm=ALGORITHM
            ),
            "before the admin password changed",
        ),
        ("sct_0123456789abcdef." + "a" * 43, "the token is not valid"),
    ],
    ids=["alg none", "another secret", "expired", "another cluster", "old password", "minted"],
)
def test_refused_tokens_get_401_with_one_sentence(start: Start, token: str, message: str) -> None:
    client = start()
    for path in ("/v1/config/projects", "/v1/config/peers"):
        response = client.get(path, headers=bearer(token))
        assert_error(response, 401, message)
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert_error(client.get(f"/v1/config/events?token={token}"), 401, message)
    # The valid twin is accepted, so each refusal comes from its one change.
    twin = jwt.encode(_claims(), SECRET, algorithm=ALGORITHM)
    assert client.get("/v1/config/projects", headers=bearer(twin)).status_code == 200


def test_the_query_token_of_the_event_stream_still_works(start: Start) -> None:
    client = start()
    token = login(client).json()["token"]
    with client.stream("GET", f"/v1/config/events?token={token}") as stream:
        assert stream.status_code == 200
        assert next(stream.iter_lines()).startswith(("retry:", "event: snapshot", ":"))


# --- who makes a request ----------------------------------------------------------------


def test_routes_get_the_principal(start: Start) -> None:
    client = start()
    token = login(client).json()["token"]
    assert client.post("/test/whoami", headers=bearer(token)).json() == {
        "name": "admin",
        "role": "admin",
        "admin": True,
    }
    assert_error(client.post("/test/whoami"), 401)


def test_the_guard_and_the_route_share_one_authentication(
    start: Start,
) -> None:
    client = start()
    token = login(client).json()["token"]
    tokens = client.app.state.tokens  # type: ignore[attr-defined]
    calls = []
    authenticate = tokens.authenticate

    def counted(text: str) -> object:
        calls.append(text)
        return authenticate(text)

    tokens.authenticate = counted
    assert client.post("/test/whoami", headers=bearer(token)).status_code == 200
    assert calls == [token]


def test_dev_mode_principal(start: Start) -> None:
    client = start(dev=True, admin_pass=None)
    assert client.post("/test/whoami").json()["name"] == "dev"
    assert Principal.admin("dev").may_admin


# --- CORS -------------------------------------------------------------------------------


def test_cors_is_off_by_default(start: Start) -> None:
    client = start()
    response = client.get("/v1/config/env", headers={"Origin": "https://app.example.com"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    preflight = client.options(
        "/v1/config/projects",
        headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_allows_only_listed_origins(start: Start) -> None:
    client = start(cors_origins="https://app.example.com, http://localhost:3000")
    token = login(client).json()["token"]
    listed = client.get(
        "/v1/config/projects",
        headers={"Origin": "https://app.example.com", **bearer(token)},
    )
    assert listed.headers["access-control-allow-origin"] == "https://app.example.com"
    exposed = listed.headers["access-control-expose-headers"].lower()
    assert {"etag", "x-revision", "retry-after"} <= {name.strip() for name in exposed.split(",")}
    preflight = client.options(
        "/v1/config/projects/shop",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "authorization, content-type, if-match",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
    other = client.get(
        "/v1/config/projects", headers={"Origin": "https://evil.example.net", **bearer(token)}
    )
    assert "access-control-allow-origin" not in other.headers
    refused = client.options(
        "/v1/config/projects",
        headers={"Origin": "https://evil.example.net", "Access-Control-Request-Method": "GET"},
    )
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers


@pytest.mark.parametrize(
    "value",
    ["app.example.com", "ftp://x.example", "https://x.example/path", "*", "https://u@x.example"],
)
def test_bad_cors_origins_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="cors_origins"):
        Settings(admin_pass="pw", cors_origins=value)


# --- tokens issued by another app ------------------------------------------------------


def test_a_token_from_another_cluster_with_the_same_secret_is_refused(start: Start) -> None:
    one, two = start(cluster_id="one"), start(cluster_id="two")
    token = login(one).json()["token"]
    assert one.get("/v1/config/projects", headers=bearer(token)).status_code == 200
    project = {"id": "p", "name": "p", "modules": {}}
    for response in (
        two.get("/v1/config/projects", headers=bearer(token)),
        two.put("/v1/config/projects/p", json=project, headers=bearer(token)),
    ):
        assert_error(response, 401, "another cluster")


def test_tokens_from_before_a_password_change_are_refused(start: Start) -> None:
    old_token = login(start()).json()["token"]
    changed = start(admin_pass="a-new-password")
    response = changed.get("/v1/config/projects", headers=bearer(old_token))
    assert_error(response, 401, "before the admin password changed")
    assert_error(login(changed), 401)
    new_token = login(changed, "a-new-password").json()["token"]
    assert changed.get("/v1/config/projects", headers=bearer(new_token)).status_code == 200


# --- real processes ---------------------------------------------------------------------


def _login(gateway: Gateway, password: str = ADMIN_PASS, **headers: str) -> httpx.Response:
    return web.post(
        f"{gateway.url}/v1/config/login",
        json={"user": "admin", "pass": password},
        headers=headers,
        timeout=5,
    )


@pytest.fixture
def gateways() -> Iterator[list[Gateway]]:
    started: list[Gateway] = []
    yield started
    for gateway in started:
        gateway.stop()


def test_login_limiting_on_real_sockets_and_behind_a_proxy(
    tmp_path: Path, gateways: list[Gateway]
) -> None:
    # uvicorn trusts X-Forwarded-For from loopback by default (FORWARDED_ALLOW_IPS):
    # each forwarded client is limited on its own.
    proxied = Gateway(tmp_path / "p", env={"LOGIN_MAX_FAILURES": "3"}).start()
    gateways.append(proxied)
    for _ in range(3):
        assert_error(_login(proxied, "wrong", **{"X-Forwarded-For": "203.0.113.1"}), 401)
    blocked = _login(proxied, "wrong", **{"X-Forwarded-For": "203.0.113.1"})
    assert_error(blocked, 429, "too many failed logins")
    assert int(blocked.headers["Retry-After"]) >= 1
    assert _login(proxied, **{"X-Forwarded-For": "203.0.113.2"}).status_code == 200
    assert _login(proxied).status_code == 200  # the proxy itself is not blocked
    # Trusting no proxy: the header is ignored and the socket peer is what counts.
    direct = Gateway(
        tmp_path / "d", env={"LOGIN_MAX_FAILURES": "3", "FORWARDED_ALLOW_IPS": ""}
    ).start()
    gateways.append(direct)
    for index in range(3):
        assert_error(_login(direct, "wrong", **{"X-Forwarded-For": f"203.0.113.{index}"}), 401)
    assert_error(_login(direct, **{"X-Forwarded-For": "198.51.100.9"}), 429)


def test_cors_on_a_real_gateway(tmp_path: Path, gateways: list[Gateway]) -> None:
    gateway = Gateway(tmp_path / "c", env={"CORS_ORIGINS": "https://admin.example.com"})
    gateways.append(gateway.start())
    url = f"{gateway.url}/v1/config/projects"
    for origin, allowed in (("https://admin.example.com", True), ("https://evil.example", False)):
        response = web.get(url, headers={"Origin": origin, **gateway.headers()})
        assert response.status_code == 200
        assert response.headers.get("access-control-allow-origin") == (origin if allowed else None)


def test_the_test_secrets_are_long_enough() -> None:
    assert len(ADMIN_SECRET.encode()) >= 32 and len(SECRET.encode()) >= 32


def test_make_env_writes_a_secret_the_gateway_accepts(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    shutil.copy(ROOT / ".env.example", tmp_path / ".env.example")
    subprocess.run(["bash", "scripts/make-env.sh"], cwd=tmp_path, check=True, capture_output=True)
    values = dict(
        line.split("=", 1)
        for line in (tmp_path / ".env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert len(values["ADMIN_SECRET"].encode()) >= 32
    settings = Settings(_env_file=tmp_path / ".env")
    assert settings.admin_secret == values["ADMIN_SECRET"] and settings.auth_problem() is None
