"""Minted tokens in process (TestClient over a local store): minting, listing, revoking,
bad input, the 403 matrix per role. Across real gateways on etcd and Consul:
tests/test_tokens_cluster.py."""

# The tests read a small file in tmp_path directly.

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from app.access import minted
from app.access.token_records import MAX_TTL_SECONDS
from app.main import create_app
from app.settings import Settings
from app.stores.local import LocalStore
from tests.apps import PASSWORD, SECRET, Start, app_starter
from tests.eventually import eventually

#: tests/conftest.py: no gateway variable, no .env from the repository.
pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return tmp_path / "c.yaml"


@pytest.fixture
def start(config: Path) -> Iterator[Start]:
    """An app on a local store, lifespan running, ready when returned."""
    with app_starter(lambda _: LocalStore(config)) as start:
        yield start


@pytest.fixture
def client(start: Start) -> TestClient:
    return start()


@pytest.fixture
def admin(client: TestClient) -> dict[str, str]:
    response = client.post("/v1/config/login", json={"user": "admin", "pass": PASSWORD})
    return bearer(response.json()["token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(response: httpx.Response, status: int, contains: str = "") -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str)
    assert contains in body["error"]
    return body["error"]


def mint(
    client: TestClient, admin: dict[str, str], role: str, projects: list[str], **extra: object
) -> dict:
    body = {"name": f"{role}-token", "role": role, "projects": projects, **extra}
    response = client.post("/v1/config/tokens", json=body, headers=admin)
    assert response.status_code == 201, response.text
    return response.json()


def put(client: TestClient, headers: dict[str, str], project: str) -> httpx.Response:
    body = {"id": project, "name": project, "modules": {}}
    return client.put(f"/v1/config/projects/{project}", json=body, headers=headers)


# --- minting, listing, revoking ---------------------------------------------------------


def test_a_minted_token_is_shown_once_and_listed_without_its_string(
    client: TestClient, admin: dict[str, str], config: Path
) -> None:
    before = int(time.time())
    minted_token = mint(client, admin, "reader", ["shop", "shop-*"], ttlSeconds=3600)
    token = minted_token.pop("token")
    assert minted.parse(token).id == minted_token["id"]
    assert minted_token["name"] == "reader-token"
    assert (minted_token["role"], minted_token["projects"]) == ("reader", ["shop", "shop-*"])
    assert before <= minted_token["createdAt"] <= before + 5
    assert minted_token["expiresAt"] == minted_token["createdAt"] + 3600

    listed = client.get("/v1/config/tokens", headers=admin)
    assert listed.status_code == 200
    assert listed.json() == {"tokens": [minted_token]}
    secret = token.partition(".")[2]
    assert secret not in listed.text and secret not in config.read_text()
    stored = yaml.safe_load(config.read_text())["tokens"][minted_token["id"]]
    assert stored["secretHash"] == minted.hash_secret(secret)

    assert client.get("/v1/config/projects", headers=bearer(token)).status_code == 200


def test_a_token_without_ttl_never_expires(client: TestClient, admin: dict[str, str]) -> None:
    assert mint(client, admin, "writer", ["*"])["expiresAt"] is None


def test_revoking_refuses_the_token_at_once(client: TestClient, admin: dict[str, str]) -> None:
    minted_token = mint(client, admin, "reader", ["*"])
    token_id, token = minted_token["id"], minted_token["token"]
    assert client.get("/v1/config/projects", headers=bearer(token)).status_code == 200
    assert client.delete(f"/v1/config/tokens/{token_id}", headers=admin).status_code == 204
    assert_error(
        client.get("/v1/config/projects", headers=bearer(token)), 401, "revoked or never minted"
    )
    assert client.get("/v1/config/tokens", headers=admin).json() == {"tokens": []}
    assert_error(client.delete(f"/v1/config/tokens/{token_id}", headers=admin), 404, token_id)


def test_tokens_outlive_a_restart(start: Start, client: TestClient, admin: dict[str, str]) -> None:
    token = mint(client, admin, "reader", ["*"])["token"]
    client.__exit__(None, None, None)  # releases the file's lock
    again = start()
    assert again.get("/v1/config/projects", headers=bearer(token)).status_code == 200


def test_an_expired_token_is_refused(client: TestClient, admin: dict[str, str]) -> None:
    token = mint(client, admin, "reader", ["*"], ttlSeconds=1)["token"]

    def refused() -> httpx.Response | None:
        answer = client.get("/v1/config/projects", headers=bearer(token))
        return answer if answer.status_code != 200 else None

    answer = eventually(refused, 5, "the token to expire", 0.1)
    assert answer is not None
    assert_error(answer, 401, "expired")


@pytest.mark.parametrize(
    ("token", "says"),
    [
        ("sct_0123456789abcdef." + "A" * 43, "revoked or never minted"),
        ("sct_nothex." + "A" * 43, "id is 16 lower-case hex digits"),
        ("sct_0123456789abcdef", "sct_<id>.<secret>"),
        ("sct_0123456789abcdef.short", "43 URL-safe base64"),
    ],
)
def test_unknown_and_malformed_minted_tokens_get_401(
    client: TestClient, token: str, says: str
) -> None:
    answer = client.get("/v1/config/projects", headers=bearer(token))
    assert_error(answer, 401, says)
    assert answer.headers["WWW-Authenticate"] == "Bearer"


def test_a_wrong_secret_for_a_known_id_is_refused(
    client: TestClient, admin: dict[str, str]
) -> None:
    token_id = mint(client, admin, "admin", ["*"])["id"]
    forged = f"sct_{token_id}.{'A' * 43}"
    assert_error(client.get("/v1/config/projects", headers=bearer(forged)), 401, "not valid")


# --- bad input --------------------------------------------------------------------------

GOOD = {"name": "ci", "role": "reader", "projects": ["shop"]}


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({**GOOD, "role": "owner"}, 422, "unknown role 'owner'"),
        ({**GOOD, "role": 1}, 422, "unknown role"),
        ({**GOOD, "projects": []}, 422, "at least one pattern"),
        ({**GOOD, "projects": "shop"}, 422, "must be a list"),
        ({**GOOD, "projects": ["Shop"]}, 422, "'Shop' is neither a project id"),
        ({**GOOD, "projects": ["sh*op"]}, 422, "neither a project id"),
        ({**GOOD, "projects": ["-*"]}, 422, "not a project id prefix"),
        ({**GOOD, "projects": [5]}, 422, "must be a string"),
        ({**GOOD, "projects": [f"p{i}" for i in range(101)]}, 422, "at most 100"),
        ({**GOOD, "ttlSeconds": 0}, 422, "between 1 and"),
        ({**GOOD, "ttlSeconds": -5}, 422, "between 1 and"),
        ({**GOOD, "ttlSeconds": MAX_TTL_SECONDS + 1}, 422, "between 1 and"),
        ({**GOOD, "ttlSeconds": 10**30}, 422, "ttlSeconds must be"),
        ({**GOOD, "ttlSeconds": "60"}, 422, "whole number"),
        ({**GOOD, "ttlSeconds": 1.5}, 422, "whole number"),
        ({**GOOD, "ttlSeconds": True}, 422, "whole number"),
        ({**GOOD, "name": ""}, 422, "a token name is 1-64"),
        ({**GOOD, "name": "x" * 65}, 422, "a token name is 1-64"),
        ({**GOOD, "name": "bad\nname"}, 422, "a token name is 1-64"),
        ({"role": "reader", "projects": ["shop"]}, 422, "name is required"),
        ({"name": "ci", "projects": ["shop"]}, 422, "role is required"),
        ({"name": "ci", "role": "reader"}, 422, "projects is required"),
        ({**GOOD, "token": "sct_mine"}, 422, "unknown field 'token'"),
        ([GOOD], 400, "must be a JSON object"),
    ],
)
def test_bad_mint_requests_get_a_clear_error_and_store_nothing(
    client: TestClient, admin: dict[str, str], config: Path, body: object, status: int, says: str
) -> None:
    assert_error(client.post("/v1/config/tokens", json=body, headers=admin), status, says)
    assert client.get("/v1/config/tokens", headers=admin).json() == {"tokens": []}
    assert "tokens" not in (yaml.safe_load(config.read_text()) if config.exists() else {})


def test_a_body_that_is_not_json_or_too_large_is_refused(
    client: TestClient, admin: dict[str, str]
) -> None:
    headers = {**admin, "Content-Type": "application/json"}
    not_json = client.post("/v1/config/tokens", content=b"{name", headers=headers)
    assert_error(not_json, 400, "not JSON")
    huge = b'{"name": "' + b"x" * 20_000 + b'"}'
    assert_error(client.post("/v1/config/tokens", content=huge, headers=headers), 413, "over")


@pytest.mark.parametrize("token_id", ["0123456789abcdef", "nothex", "x" * 300])
def test_revoking_a_token_that_does_not_exist_is_404(
    client: TestClient, admin: dict[str, str], token_id: str
) -> None:
    assert_error(client.delete(f"/v1/config/tokens/{token_id}", headers=admin), 404, "no token")


# --- who may do what --------------------------------------------------------------------


@pytest.fixture
def tokens(client: TestClient, admin: dict[str, str]) -> dict[str, dict[str, str]]:
    """Projects shop, shop-eu and blog; a reader, a writer and a scoped admin of shop*."""
    for project in ("shop", "shop-eu", "blog"):
        assert put(client, admin, project).status_code == 201
    return {
        role: bearer(mint(client, admin, role, ["shop*"])["token"])
        for role in ("reader", "writer", "admin")
    }


def test_readers_read_their_projects_only(
    client: TestClient, tokens: dict[str, dict[str, str]], admin: dict[str, str]
) -> None:
    reader = tokens["reader"]
    listed = client.get("/v1/config/projects", headers=reader).json()
    everything = client.get("/v1/config/projects", headers=admin).json()
    assert [project["id"] for project in listed["projects"]] == ["shop", "shop-eu"]
    assert listed["revision"] == everything["revision"]  # the cluster's revision
    assert client.get("/v1/config/projects/shop-eu", headers=reader).status_code == 200
    assert_error(client.get("/v1/config/projects/blog", headers=reader), 403, "may not read")
    # A project outside the scope is 403 whether it exists or not.
    assert_error(client.get("/v1/config/projects/none", headers=reader), 403, "may not read")
    assert_error(client.get("/v1/config/projects/shop-none", headers=reader), 404)
    assert_error(put(client, reader, "shop"), 403, "may only read project 'shop'")
    assert_error(client.delete("/v1/config/projects/shop", headers=reader), 403, "may only read")
    body = {"id": "shop-new", "name": "x", "modules": {}}
    assert_error(client.post("/v1/config/projects", json=body, headers=reader), 403)


def test_writers_write_their_projects_only(
    client: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    writer = tokens["writer"]
    assert put(client, writer, "shop").status_code == 200
    assert put(client, writer, "shop-us").status_code == 201
    body = {"id": "shop-new", "name": "x", "modules": {}}
    assert client.post("/v1/config/projects", json=body, headers=writer).status_code == 201
    assert client.delete("/v1/config/projects/shop-us", headers=writer).status_code == 204
    assert_error(put(client, writer, "blog"), 403, "may not write project 'blog'")
    assert_error(client.delete("/v1/config/projects/blog", headers=writer), 403)
    blog = {"id": "blog", "name": "x", "modules": {}}
    assert_error(client.post("/v1/config/projects", json=blog, headers=writer), 403)
    assert_error(client.get("/v1/config/projects/blog", headers=writer), 403)


@pytest.mark.parametrize("role", ["reader", "writer", "admin"])
def test_only_an_admin_of_every_project_manages_tokens(
    client: TestClient, tokens: dict[str, dict[str, str]], role: str
) -> None:
    headers = tokens[role]
    body = {"name": "more", "role": "reader", "projects": ["shop"]}
    assert_error(client.post("/v1/config/tokens", json=body, headers=headers), 403, "admin")
    assert_error(client.get("/v1/config/tokens", headers=headers), 403, "admin")
    assert_error(client.delete("/v1/config/tokens/0123456789abcdef", headers=headers), 403)


def test_a_minted_admin_of_every_project_manages_tokens(
    client: TestClient, admin: dict[str, str]
) -> None:
    minted_admin = bearer(mint(client, admin, "admin", ["*"])["token"])
    made = client.post(
        "/v1/config/tokens",
        json={"name": "made", "role": "reader", "projects": ["*"]},
        headers=minted_admin,
    )
    assert made.status_code == 201
    assert (
        client.delete(f"/v1/config/tokens/{made.json()['id']}", headers=minted_admin).status_code
        == 204
    )


def test_tokens_need_a_token(client: TestClient) -> None:
    assert_error(client.get("/v1/config/tokens"), 401, "a token is required")
    assert_error(client.post("/v1/config/tokens", json=GOOD), 401)


def test_the_event_stream_refuses_a_filter_outside_the_token_or_not_of_ids(
    client: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    # The streams themselves (scoped snapshots and events) are in test_scoped_streams.py.
    reader = tokens["reader"]
    answer = client.get("/v1/config/events", params={"projects": "shop,blog"}, headers=reader)
    assert_error(answer, 403, "may not read project 'blog'")
    answer = client.get(
        "/v1/config/events",
        params={"projects": "blog", "token": reader["Authorization"][7:]},
    )
    assert_error(answer, 403, "may not read project 'blog'")
    for bad in ("", "shop,", "Shop", "shop/eu"):
        answer = client.get("/v1/config/events", params={"projects": bad}, headers=reader)
        assert_error(answer, 400, "comma-separated project ids")
    events = client.get("/openapi.json").json()["paths"]["/v1/config/events"]["get"]
    assert {"400", "401", "403"} <= set(events["responses"])
    assert "projects" in {parameter["name"] for parameter in events["parameters"]}


def test_the_routes_and_their_errors_are_documented(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths["/v1/config/tokens"]) == {"get", "post"}
    post = paths["/v1/config/tokens"]["post"]
    assert {"201", "400", "401", "403", "405", "413", "422"} <= set(post["responses"])
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["required"]) == {"name", "role", "projects"}
    revoke = paths["/v1/config/tokens/{token_id}"]["delete"]
    assert {"204", "401", "403", "404", "405"} <= set(revoke["responses"])
    for method in ("get", "put", "delete"):
        assert "403" in paths["/v1/config/projects/{project}"][method]["responses"]


def test_a_follower_holds_no_tokens(tmp_path: Path) -> None:
    options: dict = {
        "admin_pass": PASSWORD,
        "admin_secret": SECRET,
        "node_id": "f1",
        "store_type": "follow",
        "upstream": ["http://127.0.0.1:9"],
    }
    app = create_app(Settings(_env_file=None, **options))
    with TestClient(app) as follower:
        login = follower.post("/v1/config/login", json={"user": "admin", "pass": PASSWORD})
        admin = bearer(login.json()["token"])
        answers = [
            follower.post("/v1/config/tokens", json=GOOD, headers=admin),
            follower.get("/v1/config/tokens", headers=admin),
            follower.delete("/v1/config/tokens/0123456789abcdef", headers=admin),
        ]
        for answer in answers:
            assert_error(answer, 405, "holds no tokens")
        forged = bearer("sct_0123456789abcdef." + "A" * 43)
        assert_error(follower.get("/v1/config/peers", headers=forged), 401, "follows another")


def test_a_token_tells_who_it_stands_for(client: TestClient, admin: dict[str, str]) -> None:
    me = client.get("/v1/config/tokens/self", headers=admin).json()
    assert (me["name"], me["role"], me["projects"]) == ("admin", "admin", ["*"])
    assert me["expiresAt"] > time.time()
    reader = mint(client, admin, "reader", ["shop", "blog-*"], ttlSeconds=60)
    answer = client.get("/v1/config/tokens/self", headers=bearer(reader["token"]))
    assert answer.json() == {
        "name": "reader-token",
        "role": "reader",
        "projects": ["shop", "blog-*"],
        "expiresAt": reader["expiresAt"],
    }
    assert_error(client.get("/v1/config/tokens/self"), 401)
    assert_error(client.delete("/v1/config/tokens/self", headers=admin), 404)
