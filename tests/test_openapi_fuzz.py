"""The OpenAPI document is true (issue 15): ``schemathesis run``, driven by the document a
real ``space-cloud run`` serves, finds no server error, no undocumented status, no
undocumented content type and no body off its documented schema, on every operation but
the streams (a fuzzer cannot end a stream). Deterministic: the same cases on every run.
Beside it, hostile inputs a fuzzer rarely draws (thousands of digits, digits of other
scripts, bytes that are not UTF-8) each get a documented JSON error.

The command line rather than schemathesis's pytest loader: the loader that takes the
schema from a fixture (the gateway's port is only known then) sets a private attribute
pytest 9 no longer has, and the command also runs the coverage and stateful phases.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway import Gateway

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
STREAM_TYPE = "text/event-stream"
#: Cases per operation and phase: the run stays under a minute on two busy cores.
EXAMPLES = 50
SEED = 15
RUN_TIMEOUT_SECONDS = 240
#: More digits than int() takes (4 300), well within the request head limit.
DIGITS = "9" * 5000


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = Gateway(tmp_path_factory.mktemp("fuzz")).start()
    # The token first: the fuzzer's failed logins may get this address refused a while.
    gateway.token()
    try:
        yield gateway
    finally:
        gateway.stop()


def stream_paths(document: dict[str, Any]) -> list[str]:
    """The paths with an operation that answers an event stream."""
    return [
        path
        for path, operations in document["paths"].items()
        for operation in operations.values()
        if any(STREAM_TYPE in r.get("content", {}) for r in operation["responses"].values())
    ]


def operation_count(document: dict[str, Any], leaving_out: list[str]) -> int:
    return sum(
        len(operations) for path, operations in document["paths"].items() if path not in leaving_out
    )


def schemathesis_command() -> list[str]:
    return [str(Path(sys.executable).with_name("schemathesis"))]


def fuzz(gateway: Gateway, streams: list[str], workdir: Path) -> subprocess.CompletedProcess[str]:
    """One ``schemathesis run`` of the gateway's document; its JSON report in ``workdir``."""
    excluded = [argument for path in streams for argument in ("--exclude-path", path)]
    return subprocess.run(
        [
            *schemathesis_command(),
            "run",
            f"{gateway.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {gateway.token()}",
            *excluded,
            "--checks",
            ",".join(CHECKS),
            "--max-examples",
            str(EXAMPLES),
            "--seed",
            str(SEED),
            "--generation-deterministic",  # derandomized, and no example database
            "--workers",
            "1",
            "--no-color",
            "--report",
            "json",
            "--report-json-path",
            str(workdir / "report.json"),
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )


@pytest.mark.fuzz
def test_schemathesis_finds_nothing(gateway: Gateway, tmp_path: Path) -> None:
    document = httpx.get(f"{gateway.url}/openapi.json", timeout=10).json()
    streams = stream_paths(document)
    assert "/v1/config/events" in streams

    run = fuzz(gateway, streams, tmp_path)

    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]
    report = json.loads((tmp_path / "report.json").read_text())
    # It ran: every operation but the streams, every phase, and found nothing.
    assert report["operations"]["tested"] == operation_count(document, streams)
    assert {phase["status"] for phase in report["phases"].values()} == {"success"}
    assert report["test_cases"]["generated"] >= EXAMPLES * report["operations"]["tested"]
    assert report["failures"] == [] and report["errors"] == []


@pytest.fixture(scope="module")
def document(gateway: Gateway) -> dict[str, Any]:
    gateway.put("shop")
    return httpx.get(f"{gateway.url}/openapi.json", timeout=10).json()


PROJECTS = "/v1/config/projects"
PLAIN_TEXT = {"Content-Type": "text/plain"}


def operation_of(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    """The document's operation that a request to ``path`` (a query left off) meets."""
    path = path.split("?")[0]
    for template, operations in document["paths"].items():
        pattern = re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path) and method.lower() in operations:
            return operations[method.lower()]
    raise AssertionError(f"no operation for {method} {path}")


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status"),
    [
        ("GET", f"{PROJECTS}?waitRevision={DIGITS}", {}, None, 400),
        ("GET", f"{PROJECTS}?waitRevision=%C2%B2", {}, None, 400),
        ("GET", "/v1/config/peers?waitRevision=9223372036854775808", {}, None, 400),
        ("GET", f"{PROJECTS}/{'a' * 3000}", {}, None, 422),
        ("PUT", f"{PROJECTS}/shop", {"If-Match": f'"{DIGITS}"'}, b"{}", 400),
        ("PUT", f"{PROJECTS}/shop", {}, b'{"id": "shop",', 400),
        ("PUT", f"{PROJECTS}/shop", {}, b"\xe5\x85", 400),
        ("POST", PROJECTS, {}, b"[]", 400),
        ("GET", f"{PROJECTS}/shop/history/{DIGITS}", {}, None, 400),
        ("GET", f"{PROJECTS}/shop/history?limit=%C2%B2", {}, None, 400),
        ("GET", f"{PROJECTS}/shop/history?before={DIGITS}", {}, None, 400),
        ("POST", f"{PROJECTS}/shop/rollback", {}, b'{"revision": 9223372036854775808}', 400),
        ("POST", "/v1/config/login", {}, b'{"user": ', 400),
        ("POST", "/v1/config/login", {}, b"\xe5\x85", 400),
        ("POST", "/v1/config/login", PLAIN_TEXT, b'{"user": "a", "pass": "b"}', 422),
        ("POST", "/v1/config/login", {}, b'{"user": "%s"}' % (b"a" * 5000), 413),
        ("POST", "/v1/config/tokens", {}, b"\xff", 400),
    ],
)
def test_hostile_input_gets_a_documented_json_error(
    gateway: Gateway,
    document: dict[str, Any],
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None,
    status: int,
) -> None:
    sent = {"Content-Type": "application/json", **gateway.headers(), **headers}
    response = httpx.request(method, gateway.url + path, headers=sent, content=body, timeout=10)

    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert isinstance(response.json()["error"], str)
    assert str(status) in operation_of(document, method, path)["responses"]


def test_a_huge_if_none_match_is_no_match(gateway: Gateway, document: dict[str, Any]) -> None:
    with gateway.client() as client:
        response = client.get("/v1/config/projects/shop", headers={"If-None-Match": f'"{DIGITS}"'})
    assert response.status_code == 200, response.text


def test_login_reads_no_more_than_its_limit(gateway: Gateway) -> None:
    """Sent in chunks without a Content-Length, a body over the limit is refused once
    the limit is passed: the open route never buffers what it is sent."""
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:
        for _ in range(1000):  # up to 64 MiB
            sent.append(1)
            yield b" " * 65536

    response = httpx.post(f"{gateway.url}/v1/config/login", content=chunks(), timeout=10)

    assert response.status_code == 413, response.text
    assert response.json()["error"] == "the body is over 4096 bytes"
    assert len(sent) < 1000
