"""The command-line client (``space-cloud login|list|get|put|delete|peers|watch``) against
a real gateway process: in this process through the console script's entry (``cli.main``),
and as real processes where the process is the point (login's stdout, ``watch`` across a
gateway restart)."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client_cli import client_env, space_cloud, space_cloud_process
from tests.gateway import ADMIN_PASS, Gateway, space_cloud_command
from tests.servers.process import free_port


def as_admin(gateway: Gateway, *args: str, stdin: str | None = None):
    return space_cloud(gateway, *args, stdin=stdin, SPACE_CLOUD_TOKEN=gateway.token())


def one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("space-cloud: error: ")
    return lines[0]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = Gateway(tmp_path_factory.mktemp("client")).start()
    try:
        yield gateway
    finally:
        gateway.stop()


def test_login_prints_only_the_token(gateway: Gateway) -> None:
    # The process itself: nothing but the token on its stdout, nothing on stderr.
    result = space_cloud_process(gateway, "login", SPACE_CLOUD_PASS=ADMIN_PASS)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    token = result.stdout.strip()
    assert result.stdout == token + "\n"
    assert token.count(".") == 2  # a JSON Web Token, nothing around it
    # The token works; the password may also come on stdin (no terminal to prompt on).
    assert space_cloud(gateway, "list", SPACE_CLOUD_TOKEN=token).returncode == 0
    piped = space_cloud(gateway, "login", "--user", "admin", stdin=ADMIN_PASS + "\n")
    assert piped.returncode == 0 and piped.stdout.count(".") == 2, piped.stderr


def test_login_with_a_wrong_password_prints_the_api_sentence(gateway: Gateway) -> None:
    line = one_error_line(space_cloud(gateway, "login", SPACE_CLOUD_PASS="nope"), 1)
    assert "wrong user name or password" in line


def test_project_life_cycle(gateway: Gateway, tmp_path: Path) -> None:
    document = tmp_path / "shop.json"
    document.write_text(json.dumps({"name": "Shop", "modules": {"db": {"enabled": True}}}))
    created = as_admin(gateway, "put", "shop", str(document))
    assert created.returncode == 0, created.stderr
    revision = json.loads(created.stdout)["revision"]
    assert json.loads(created.stdout) == {"project": "shop", "revision": revision}

    got = json.loads(as_admin(gateway, "get", "shop").stdout)
    assert got["name"] == "Shop" and got["modules"] == {"db": {"enabled": True}}
    listed = json.loads(as_admin(gateway, "list").stdout)
    assert "shop" in [p["id"] for p in listed["projects"]]
    assert listed["revision"] >= revision

    # From stdin, conditional on the revision just written.
    replaced = as_admin(
        gateway, "put", "shop", "-", "--if-match", str(revision), stdin='{"name": "Shop 2"}'
    )
    assert replaced.returncode == 0, replaced.stderr
    newer = json.loads(replaced.stdout)["revision"]
    stale = as_admin(gateway, "put", "shop", "-", "--if-match", str(revision), stdin="{}")
    assert f"not {revision}" in one_error_line(stale, 1)

    stale_delete = as_admin(gateway, "delete", "shop", "--if-match", str(revision))
    one_error_line(stale_delete, 1)
    deleted = as_admin(gateway, "delete", "shop", "--if-match", str(newer))
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout)["revision"] > newer
    missing = as_admin(gateway, "get", "shop")
    assert "does not exist" in one_error_line(missing, 1)


def test_bad_json_is_the_api_sentence(gateway: Gateway) -> None:
    line = one_error_line(as_admin(gateway, "put", "bad", "-", stdin="{not json"), 1)
    assert "not JSON" in line


def test_peers(gateway: Gateway) -> None:
    result = as_admin(gateway, "peers")
    assert result.returncode == 0, result.stderr
    peers = json.loads(result.stdout)["peers"]
    assert [(p["id"], p["addr"], p["self"]) for p in peers] == [
        (gateway.node_id, gateway.addr, True)
    ]


def test_without_a_token_says_how_to_get_one(gateway: Gateway) -> None:
    line = one_error_line(space_cloud(gateway, "list"), 1)
    assert "token" in line and "space-cloud login" in line


def test_addr_flag_beats_the_variable(gateway: Gateway) -> None:
    dead = f"127.0.0.1:{free_port()}"
    flagged = space_cloud(
        gateway, "list", "--addr", gateway.url, SPACE_CLOUD_ADDR=dead, SPACE_CLOUD_TOKEN="x"
    )
    assert "token" in one_error_line(flagged, 1)  # it reached the gateway
    unreachable = space_cloud(gateway, "list", SPACE_CLOUD_ADDR=dead)
    assert "cannot connect" in one_error_line(unreachable, 1)
    assert dead in unreachable.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["get"], "id"),
        (["put", "a", "/nonexistent/file.json"], "/nonexistent/file.json"),
        (["get", "a", "--no-such-flag"], "space-cloud get --help"),
        (["rollback", "a", "not-a-revision"], "revision"),
        (["tokens", "create", "--name", "ci"], "--role"),
    ],
)
def test_usage_errors_exit_2(gateway: Gateway, args: list[str], expected: str) -> None:
    assert expected in one_error_line(as_admin(gateway, *args), 2)


# --- watch --------------------------------------------------------------------------------


class Watcher:
    """``space-cloud watch`` as a child process; its stdout lines read by a thread."""

    def __init__(self, gateway: Gateway, *args: str) -> None:
        self.process = subprocess.Popen(
            [*space_cloud_command(), "watch", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=client_env(gateway, SPACE_CLOUD_TOKEN=gateway.token()),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def next(self, timeout: float = 20.0) -> dict:
        line = self.lines.get(timeout=timeout)
        assert line.endswith("\n") and "\n" not in line[:-1]
        return json.loads(line)

    def next_of(self, *kinds: str, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            event = self.next(max(0.1, deadline - time.monotonic()))
            if event["event"] in kinds:
                return event

    def stop(self) -> str:
        self.process.terminate()
        _, stderr = self.process.communicate(timeout=10)
        return stderr


def put(gateway: Gateway, project: str, name: str) -> int:
    response = gateway.put(project, {"id": project, "name": name, "modules": {}})
    assert response.status_code in (200, 201), response.text
    return response.json()["revision"]


def test_watch_prints_one_json_object_per_event(gateway: Gateway) -> None:
    watcher = Watcher(gateway, "--project", "w1", "--project", "w2")
    try:
        snapshot = watcher.next_of("snapshot")
        assert {p["id"] for p in snapshot["data"]["projects"]} <= {"w1", "w2"}
        put(gateway, "other", "not watched")
        first = put(gateway, "w1", "one")
        event = watcher.next_of("project.put", "project.delete")
        assert event["id"] == first
        assert event["data"]["project"] == {"id": "w1", "name": "one", "secret": "", "modules": {}}
        gateway.put("w2")
        assert watcher.next_of("project.put")["data"]["project"]["id"] == "w2"
    finally:
        watcher.stop()


def test_watch_resumes_across_a_gateway_restart(tmp_path: Path) -> None:
    gateway = Gateway(tmp_path / "restart").start()
    watcher = Watcher(gateway, "--project", "r")
    try:
        watcher.next_of("snapshot")
        before = put(gateway, "r", "before")
        assert watcher.next_of("project.put")["id"] == before

        assert gateway.stop() == 0
        gateway.start()
        after = put(gateway, "r", "after")
        # Resumed from Last-Event-ID: the change made while it was away, or right after it
        # came back, exactly once, with no fresh snapshot and nothing printed twice.
        resumed = watcher.next_of("project.put", "project.delete", "snapshot")
        assert resumed["event"] == "project.put", resumed
        assert resumed["id"] == after
        assert resumed["data"]["project"]["name"] == "after"
        put(gateway, "r", "later")
        assert watcher.next_of("project.put")["data"]["project"]["name"] == "later"
    finally:
        stderr = watcher.stop()
        gateway.stop()
    assert "reconnecting" in stderr
