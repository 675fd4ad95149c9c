"""``space-cloud tokens`` and ``history``/``rollback`` against a real gateway process: what
the client sends is what the server's contract takes. The commands run in this process
(``cli.main``, the console script's entry; tests/test_client.py runs it as processes)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from tests import client_cli
from tests.gateway import Gateway


def space_cloud(
    gateway: Gateway, *args: str, token: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return client_cli.space_cloud(gateway, *args, stdin=stdin, SPACE_CLOUD_TOKEN=token)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def api_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stderr.startswith("space-cloud: error: ")
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = Gateway(tmp_path_factory.mktemp("client-real")).start()
    try:
        yield gateway
    finally:
        gateway.stop()


def test_a_token_created_listed_used_and_revoked(gateway: Gateway) -> None:
    admin = gateway.token()
    ok(space_cloud(gateway, "put", "shop", "-", token=admin, stdin='{"name": "Shop"}'))
    ok(space_cloud(gateway, "put", "blog", "-", token=admin, stdin='{"name": "Blog"}'))
    created = json.loads(
        ok(
            space_cloud(
                gateway,
                *("tokens", "create", "--name", "shop-reader", "--role", "reader"),
                *("--project", "shop", "--ttl", "3600"),
                token=admin,
            )
        )
    )
    assert (created["name"], created["role"], created["projects"]) == (
        "shop-reader",
        "reader",
        ["shop"],
    )
    reader = created["token"]

    listed = json.loads(ok(space_cloud(gateway, "tokens", "list", token=admin)))
    assert [item["id"] for item in listed["tokens"]] == [created["id"]]
    assert reader not in json.dumps(listed)

    visible = json.loads(ok(space_cloud(gateway, "list", token=reader)))
    assert [project["id"] for project in visible["projects"]] == ["shop"]
    assert "blog" in api_error(space_cloud(gateway, "get", "blog", token=reader))
    api_error(space_cloud(gateway, "put", "shop", "-", token=reader, stdin='{"name": "x"}'))
    api_error(space_cloud(gateway, "tokens", "list", token=reader))

    assert ok(space_cloud(gateway, "tokens", "revoke", created["id"], token=admin)) == ""
    api_error(space_cloud(gateway, "list", token=reader))
    api_error(space_cloud(gateway, "tokens", "revoke", created["id"], token=admin))  # gone


def test_history_and_rollback(gateway: Gateway) -> None:
    admin = gateway.token()
    first = json.loads(
        ok(space_cloud(gateway, "put", "docs", "-", token=admin, stdin='{"name": "v1"}'))
    )
    second = json.loads(
        ok(space_cloud(gateway, "put", "docs", "-", token=admin, stdin='{"name": "v2"}'))
    )
    versions = json.loads(ok(space_cloud(gateway, "history", "docs", token=admin)))["versions"]
    assert [v["revision"] for v in versions] == [second["revision"], first["revision"]]
    assert {v["op"] for v in versions} == {"put"} and {v["by"] for v in versions} == {"admin"}

    old = json.loads(
        ok(space_cloud(gateway, "history", "docs", str(first["revision"]), token=admin))
    )
    assert old["name"] == "v1"

    stale = space_cloud(
        gateway,
        *("rollback", "docs", str(first["revision"])),
        *("--if-match", str(first["revision"])),
        token=admin,
    )
    api_error(stale)
    rolled = json.loads(
        ok(
            space_cloud(
                gateway,
                *("rollback", "docs", str(first["revision"])),
                *("--if-match", str(second["revision"])),
                token=admin,
            )
        )
    )
    assert rolled["revision"] > second["revision"]
    current = json.loads(ok(space_cloud(gateway, "get", "docs", token=admin)))
    assert current["name"] == "v1"
    api_error(space_cloud(gateway, "history", "docs", "999999", token=admin))
