"""Hostile clients with nothing but sockets cannot stall an instance or push it out of its
cluster (issue 14): real gateways on a real etcd, attacked over loopback sockets.

The figures of every attack are printed (``-s`` shows them); only the contract is
asserted: ``/healthz`` within 1 s, the instance on its peer's list, RSS growth under
150 MiB, every half-open connection closed by the header timeout.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import uvicorn
from uvicorn.server import ServerState

from app.http_limits import ConnectionLimits, LimitedHttpToolsProtocol
from app.server import ServerConfigError, connection_limits
from app.settings import Settings
from tests import web
from tests.attacks import (
    MIB,
    HalfOpenHeaders,
    Watch,
    big_headers,
    etcd_lease_ttl,
    raise_descriptor_limit,
)
from tests.environ import clean_environ
from tests.eventually import eventually, eventually_async
from tests.gateway import Gateway
from tests.servers.etcd import EtcdServer
from tests.servers.process import free_port

HEADER_TIMEOUT = 3.0
BODY_TIMEOUT = 3.0
HALF_OPEN = 1500


def etcd_gateway(etcd: EtcdServer, workdir: Path, name: str, cluster: str, **env: str) -> Gateway:
    return Gateway(
        workdir / name,
        node_id=name,
        args=["--store-type", "etcd", "--cluster", cluster],
        env={**etcd.env(), **env},
    ).start()


@pytest.fixture(scope="module")
def cluster_id() -> str:
    return f"h{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def target(etcd_server: EtcdServer, workdir: Path, cluster_id: str) -> Iterator[Gateway]:
    """The attacked instance, shared by the module: later tests also show it still serves."""
    gateway = etcd_gateway(
        etcd_server,
        workdir,
        "target",
        cluster_id,
        HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
        BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT),
        KEEP_ALIVE_TIMEOUT_SECONDS="2",
    )
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def peer(etcd_server: EtcdServer, workdir: Path, cluster_id: str) -> Iterator[Gateway]:
    gateway = etcd_gateway(etcd_server, workdir, "peer", cluster_id)
    yield gateway
    gateway.stop()


def raw_exchange(port: int, request: bytes, timeout: float = 10.0) -> tuple[bytes, float]:
    """Send ``request`` on a new connection; return all the server sent until it closed,
    and how long that took."""
    start = time.monotonic()
    reply = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            reply += chunk
    return reply, time.monotonic() - start


def status_and_body(reply: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), headers, body


# --- the attacks of the issue, at once --------------------------------------------------


def test_big_headers_and_half_open_connections_neither_stall_nor_evict(
    etcd_server: EtcdServer, target: Gateway, peer: Gateway, cluster_id: str
) -> None:
    raise_descriptor_limit(HALF_OPEN + 512)
    watch = Watch(
        target.url,
        target.process.pid,
        peers=lambda: [item["id"] for item in peer.peers()],
        node_id=target.node_id,
        lease_ttl=etcd_lease_ttl(etcd_server.etcdctl, f"sc/instances/{cluster_id}/target"),
    )
    with watch as figures:
        half_open = HalfOpenHeaders(target.port, HALF_OPEN, interval=1.0).start()
        try:
            results = big_headers(target.port, count=3, size=100 * MIB)
            all_closed = half_open.wait_all_closed(HEADER_TIMEOUT + 10)
            time.sleep(1)  # time passes: a last probe of /healthz, RSS and peers after the attack
        finally:
            half_open.close()
    closed = sorted(half_open.closed_after.values())
    print(
        json.dumps(
            {
                "big_headers": [
                    (r.status, round(r.sent / MIB, 1), round(r.seconds, 2)) for r in results
                ],
                "half_open_closed_after_s": (closed[0], closed[-1]) if closed else None,
                **figures.summary(),
            }
        )
    )

    assert [result.status for result in results] == [431, 431, 431]
    assert all(result.sent < 100 * MIB for result in results), "the server read a whole header"
    assert half_open.connect_failures == 0
    assert all_closed, f"{half_open.open_count} half-open connections were never closed"
    assert len(closed) == HALF_OPEN
    # Closed by the header timeout (not earlier: the header lines kept coming every second).
    assert closed[0] >= HEADER_TIMEOUT / 2, closed
    assert closed[-1] <= HEADER_TIMEOUT + 3, closed
    assert figures.healthz_failures == 0, figures.notes
    assert figures.healthz_count > 10
    assert figures.healthz_worst < 1.0
    assert figures.absent_from_peers == 0
    assert figures.lease_min_ttl is not None and figures.lease_min_ttl > 0
    assert figures.rss_growth < 150 * MIB


# --- the protocol alone: what reaches the parser ----------------------------------------


class RecordingTransport(asyncio.Transport):
    """Collects what the protocol writes; ``close`` marks it closing, as a socket would."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closing = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 4122) if name in ("peername", "sockname") else default

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written += data

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _limits(max_header_bytes: int = 65536) -> ConnectionLimits:
    return ConnectionLimits(
        max_header_bytes=max_header_bytes,
        header_timeout=10,
        body_timeout=30,
        max_connections=10,
        overflow=5,
    )


def _connected(
    app: Any, limits: ConnectionLimits, state: ServerState | None = None, **loop: Any
) -> tuple[LimitedHttpToolsProtocol, RecordingTransport]:
    """The protocol of ``app`` with the limits, connected to a recording transport."""
    config = uvicorn.Config(app, log_level="error")
    config.load()
    protocol = LimitedHttpToolsProtocol(
        config=config, server_state=state or ServerState(), app_state={}, limits=limits, **loop
    )
    transport = RecordingTransport()
    protocol.connection_made(transport)
    return protocol, transport


async def _never_called(scope: object, receive: object, send: object) -> None:
    raise AssertionError("the app saw a request the protocol should have refused")


async def test_the_parser_never_sees_more_than_the_header_limit() -> None:
    """100 MiB of header in 256 KiB reads: the parser is fed at most the limit, then 431."""
    protocol, transport = _connected(_never_called, _limits())
    fed: list[int] = []
    feed = protocol.parser.feed_data

    def counted_feed(data: bytes) -> None:
        fed.append(len(data))
        feed(data)

    protocol.parser = SimpleNamespace(feed_data=counted_feed)  # type: ignore[assignment]
    protocol.data_received(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: ")
    chunk = b"a" * (256 * 1024)
    reads = 0
    while not transport.is_closing() and reads < 400:
        protocol.data_received(chunk)
        reads += 1
    protocol.data_received(chunk)  # a read after the refusal is dropped
    assert reads == 1
    assert sum(fed) == 65536
    assert transport.written.startswith(b"HTTP/1.1 431 ")
    protocol.connection_lost(None)


async def test_a_body_in_the_same_read_as_the_head_is_not_counted_as_head() -> None:
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def app(scope: object, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        received.set_result(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    protocol, transport = _connected(app, _limits(1024))
    body = b"b" * (200 * 1024)
    head = b"PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
    protocol.data_received(head + body)
    assert await asyncio.wait_for(received, 5) == body
    await asyncio.sleep(0)
    assert transport.written.startswith(b"HTTP/1.1 200 ")
    protocol.connection_lost(None)


async def _answer_at_once(scope: object, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 401, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.mark.parametrize("body_first", [True, False])
async def test_an_answer_before_the_body_is_in_says_connection_close(body_first: bool) -> None:
    """A keep-alive client must not reuse a connection whose request body the server
    answered before reading; once the body is in, keep-alive is as usual."""
    protocol, transport = _connected(_answer_at_once, _limits())
    protocol.data_received(b"PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n")
    if body_first:
        protocol.data_received(b"{}")
    await eventually_async(lambda: transport.written, 2, "the app's answer", 0.001)
    assert transport.written.startswith(b"HTTP/1.1 401 ")
    assert (b"connection: close" in transport.written) is not body_first
    assert transport.is_closing() is not body_first
    protocol.connection_lost(None)


def test_beyond_the_overflow_a_connection_is_closed_unread() -> None:
    limits = _limits()
    state = ServerState()
    loop = asyncio.new_event_loop()
    try:
        transports = [
            _connected(_never_called, limits, state, _loop=loop)[1]
            for _ in range(limits.max_connections + limits.overflow + 1)
        ]
        # The cap and the overflow are open and waiting for their heads; the next is not.
        assert [t.closing for t in transports] == [False] * 15 + [True]
        assert transports[-1].written == b""
    finally:
        loop.close()


# --- the header limit -------------------------------------------------------------------


def test_header_over_the_limit_is_a_431_and_closed(target: Gateway) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * (100 * 1024) + b"\r\n\r\n"
    reply, _ = raw_exchange(target.port, request)
    status, headers, body = status_and_body(reply)
    assert status == 431
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert json.loads(body) == {"error": "the request headers exceed the limit of 65536 bytes"}


def test_headers_within_the_limit_and_big_bodies_pass(target: Gateway) -> None:
    near_limit = {"X-Padding": "a" * 60_000}
    assert web.get(f"{target.url}/healthz", headers=near_limit).status_code == 200
    # A body is not a header: a project far over the header limit is written as usual.
    document = {"id": "big", "name": "big", "modules": {"blob": "b" * 500_000}}
    assert target.put("big", document).status_code == 201


def test_pipelined_requests_are_each_answered(target: Gateway) -> None:
    one = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    last = b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    reply, _ = raw_exchange(target.port, one * 3 + last)
    assert reply.count(b"HTTP/1.1 200 OK") == 4


def test_invalid_http_is_a_json_400(target: Gateway) -> None:
    reply, _ = raw_exchange(target.port, b"NOT HTTP\x00\r\n\r\n")
    status, headers, body = status_and_body(reply)
    assert status == 400
    assert headers["connection"] == "close"
    assert json.loads(body) == {"error": "the request is not valid HTTP/1.1"}


# --- the header timeout (slowloris) and the keep-alive idle timeout ----------------------


def test_partial_header_slowloris_is_a_408_at_the_header_timeout(target: Gateway) -> None:
    with socket.create_connection(("127.0.0.1", target.port), timeout=15) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        start = time.monotonic()
        reply = b""
        sock.settimeout(0.5)
        while time.monotonic() - start < HEADER_TIMEOUT + 5:
            try:
                sock.sendall(b"a")  # one byte of the header line every half second
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if not chunk:
                break
            reply += chunk
        elapsed = time.monotonic() - start
    status, _, body = status_and_body(reply)
    assert status == 408
    assert json.loads(body) == {"error": "the request headers did not arrive in time"}
    assert HEADER_TIMEOUT / 2 <= elapsed <= HEADER_TIMEOUT + 3


def test_silent_and_idle_keep_alive_connections_are_closed(target: Gateway) -> None:
    # Silent from the start: closed at the header timeout, without an answer.
    reply, elapsed = raw_exchange(target.port, b"")
    assert reply == b""
    assert HEADER_TIMEOUT / 2 <= elapsed <= HEADER_TIMEOUT + 3
    # Idle after a response: closed at the keep-alive timeout (2 s here).
    reply, elapsed = raw_exchange(target.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK")
    assert 1.0 <= elapsed <= 2 + 3


def trickle_body(
    port: int, path: str, seconds: float, length: int = 100_000
) -> tuple[bytes, float | None]:
    """Send a request head announcing ``length`` bytes of body (within the route's
    limit, or it is refused at once), then one byte of it every 0.5 s; return what came
    back and when the server closed (None: still open after ``seconds``)."""
    head = (
        f"PUT {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n{{"
    )
    if path.endswith("login"):
        head = head.replace("PUT", "POST")
    reply = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head.encode())
        sock.settimeout(0.5)
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            try:
                sock.sendall(b" ")
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                return reply, time.monotonic() - start
            if not chunk:
                return reply, time.monotonic() - start
            reply += chunk
    return reply, None


def test_a_slow_body_to_an_open_endpoint_is_a_408_at_the_body_timeout(target: Gateway) -> None:
    # Login takes at most 4 KiB (a larger announced body is a 413 at once).
    reply, closed_after = trickle_body(target.port, "/v1/config/login", BODY_TIMEOUT + 5, 2000)
    assert closed_after is not None, "the slow body was never cut off"
    status, _, body = status_and_body(reply)
    assert status == 408
    assert json.loads(body) == {"error": "the request body did not arrive in time"}
    assert BODY_TIMEOUT / 2 <= closed_after <= BODY_TIMEOUT + 3


def test_an_answer_before_the_body_closes_the_connection(target: Gateway) -> None:
    # No token: 401 at once; trickling the rest of the body must not keep the connection.
    reply, closed_after = trickle_body(target.port, "/v1/config/projects/slow", 5)
    assert closed_after is not None, "the connection outlived its answer"
    status, _, _ = status_and_body(reply)
    assert status == 401
    assert closed_after < BODY_TIMEOUT


# --- the connection cap -----------------------------------------------------------------


def test_connections_beyond_the_cap_get_503_but_probes_are_served(
    etcd_server: EtcdServer, workdir: Path, cluster_id: str
) -> None:
    cap = 8
    gateway = etcd_gateway(
        etcd_server,
        workdir,
        "capped",
        cluster_id,
        MAX_CONNECTIONS=str(cap),
        KEEP_ALIVE_TIMEOUT_SECONDS="60",
    )
    holders: list[httpx.Client] = []
    try:
        # ``cap`` kept-alive connections, each known to the server (it answered on it).
        for _ in range(cap):
            client = web.client(base_url=gateway.url, timeout=5)
            holders.append(client)
            assert client.get("/healthz").status_code == 200
        refused = web.get(f"{gateway.url}/v1/config/env", timeout=5)
        assert refused.status_code == 503
        assert refused.json() == {"error": "the instance is at its connection limit; retry shortly"}
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["connection"] == "close"
        for probe in ("/healthz", "/readyz"):
            assert web.get(f"{gateway.url}{probe}", timeout=5).status_code == 200
        for client in holders:
            client.close()
        # Room again once the holders are gone.
        eventually(
            lambda: web.get(f"{gateway.url}/v1/config/env", timeout=5).status_code == 200,
            5,
            "the cap to free up",
            0.1,
        )
    finally:
        for client in holders:
            client.close()
        gateway.stop()


# --- the settings -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("descriptors", "cap", "overflow"), [(20_000, 18_000, 256), (1024, 896, 64), (200, 72, 64)]
)
def test_the_default_cap_leaves_a_reserve_of_descriptors(
    descriptors: int, cap: int, overflow: int
) -> None:
    settings = Settings(_env_file=None, admin_pass="pw")
    limits = connection_limits(settings, descriptors)
    assert (limits.max_connections, limits.overflow) == (cap, overflow)
    assert limits.max_connections + limits.overflow < descriptors


def test_a_cap_above_the_descriptors_is_refused() -> None:
    settings = Settings(_env_file=None, admin_pass="pw", max_connections=1000)
    assert connection_limits(settings, 4096).max_connections == 1000
    with pytest.raises(ServerConfigError, match="at most 896"):
        connection_limits(settings, 1024)


def test_a_cap_above_the_descriptors_stops_the_process_with_one_line(tmp_path: Path) -> None:
    """Refused when the server is built, past what test_cli.py's in-process cases reach
    (the other bad limits are among them)."""
    env = {**clean_environ(), "ADMIN_PASS": "pw", "HOST": "127.0.0.1", "PORT": str(free_port())}
    result = subprocess.run(
        [sys.executable, "-m", "app", "run", "--config", str(tmp_path / "c.yaml")],
        cwd=tmp_path,
        env={**env, "MAX_CONNECTIONS": "100000000"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("space-cloud: error: "), result.stderr
    assert "MAX_CONNECTIONS" in lines[0] and "at most" in lines[0]
