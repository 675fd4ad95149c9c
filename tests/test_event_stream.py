"""The event stream on the wire: HTTP/1.0 framing, and the drop of a stuck reader (sockets)
while another reads on, undelayed."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import pytest

from tests import web
from tests.eventually import eventually
from tests.gateway import Gateway, SSEStream


def _request(gateway: Gateway, version: str) -> bytes:
    return (
        f"GET /v1/config/events HTTP/{version}\r\nHost: x\r\n"
        f"Authorization: Bearer {gateway.token()}\r\n\r\n"
    ).encode()


def _read_head(sock: socket.socket) -> tuple[str, list[tuple[str, str]], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before the headers: {data!r}"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    status, *lines = head.decode().split("\r\n")
    headers = [(name.lower(), value.strip()) for name, value in (h.split(":", 1) for h in lines)]
    return status, headers, rest


def _read_to_eof(sock: socket.socket, deadline: float) -> bytes:
    data = b""
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    raise AssertionError("the server did not close the connection")


def test_an_http10_client_gets_one_complete_unchunked_response(tmp_path: Path) -> None:
    gw = Gateway(tmp_path).start()
    try:
        gw.put("one")
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
            sock.sendall(_request(gw, "1.0"))
            status, headers, rest = _read_head(sock)
            body = rest + _read_to_eof(sock, time.monotonic() + 10)
        names = [name for name, _ in headers]
        assert status.split()[1] == "200"
        assert "transfer-encoding" not in names
        assert names.count("connection") == 1 and dict(headers)["connection"] == "close"
        assert int(dict(headers)["content-length"]) == len(body)
        assert dict(headers)["content-type"].startswith("text/event-stream")
        assert body.startswith(b"event: snapshot\n") and b'"id":"one"' in body
        assert body.endswith(b"\n\n")

        # HTTP/1.1 streams, chunked, with no connection header of its own.
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
            sock.sendall(_request(gw, "1.1"))
            status, headers, rest = _read_head(sock)
        names = [name for name, _ in headers]
        assert status.split()[1] == "200"
        assert dict(headers)["transfer-encoding"] == "chunked"
        assert "connection" not in names
        assert "content-length" not in names
    finally:
        gw.stop()


@pytest.mark.parametrize(
    "limits",
    [
        pytest.param({"SSE_SEND_TIMEOUT_SECONDS": "60", "SSE_QUEUE_SIZE": "16"}, id="backlog"),
        pytest.param({"SSE_SEND_TIMEOUT_SECONDS": "1", "SSE_QUEUE_SIZE": "100000"}, id="timeout"),
    ],
)
def test_a_stuck_subscriber_is_dropped_and_logged_once_without_delaying_the_others(
    tmp_path: Path, limits: dict
) -> None:
    gw = Gateway(tmp_path, env=limits).start()
    stuck = socket.socket()
    try:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect
        stuck.connect(("127.0.0.1", gw.port))
        stuck.sendall(_request(gw, "1.1"))
        with gw.events() as reader:
            assert reader.next().event == "snapshot"
            eventually(lambda: _metric(gw, "sc_sse_subscribers") == 2, 10, "both subscribers")
            received: list[int | None] = []
            threading.Thread(target=_collect, args=(reader, received), daemon=True).start()
            blob = "x" * 64 * 1024
            revisions = []
            for n in range(200):
                put = gw.put("big", {"id": "big", "name": str(n), "modules": {"b": blob}})
                revisions.append(put.json()["revision"])
                if _metric(gw, "sc_sse_subscribers_dropped_total"):
                    break
            eventually(lambda: _metric(gw, "sc_sse_subscribers") == 1, 15, "the drop")
            eventually(lambda: len(received) >= len(revisions), 30, "the reader to get all")
            assert received == revisions  # the reading subscriber got all, in order
        assert _metric(gw, "sc_sse_subscribers_dropped_total") == 1
        # The server closed the connection: what was in flight, then EOF.
        stuck.settimeout(10)
        _read_to_eof(stuck, time.monotonic() + 30)
    finally:
        stuck.close()
        gw.stop()
    log = gw.process.log()
    drops = [line for line in log.splitlines() if "dropped subscriber" in line]
    assert len(drops) == 1, log[-3000:]
    assert " INFO " in drops[0]
    assert "returned without completing response" not in log
    assert " ERROR " not in log


def _collect(stream: SSEStream, received: list[int | None]) -> None:
    """Every ``project.put`` id of ``stream`` into ``received``, until the stream ends."""
    with contextlib.suppress(Exception):  # closed under it at the end of the test
        while True:
            received.append(stream.next_of("project.put").id)


def _metric(gateway: Gateway, name: str) -> float:
    for line in web.get(f"{gateway.url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")
