"""Hostile clients made of plain sockets, and the probes that watch a gateway under them.

Used by ``tests/test_hostile.py``; ``python -m tests.attacks [--store consul] [--flood 15]``
runs the attacks of issue 14 against a fresh etcd (or Consul) and two gateways and prints
the figures of each phase (``/healthz`` worst latency, RSS, the peer's list, the lease TTL
or Consul heartbeat left, half-open connections closed) for before/after comparisons.
"""

from __future__ import annotations

import argparse
import json
import resource
import selectors
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from tests import web
from tests.eventually import NeverHappened, eventually

if TYPE_CHECKING:
    from tests.gateway import Gateway
    from tests.servers.consul import ConsulAgent
    from tests.servers.etcd import EtcdServer

MIB = 1 << 20
_CHUNK = b"a" * MIB


def raise_descriptor_limit(needed: int) -> None:
    """Raise this process's soft descriptor limit towards its hard limit if ``needed``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


# --- attacks ------------------------------------------------------------------------


@dataclass
class BigHeaderResult:
    sent: int  # bytes the server took before it closed (or all of them)
    seconds: float
    status: int | None  # the status line's code, if one came back
    reply: bytes = b""


def send_big_header(port: int, size: int, timeout: float = 120.0) -> BigHeaderResult:
    """``GET /healthz`` whose one header value is ``size`` bytes, sent as fast as the
    server reads it; then whatever the server answers."""
    start = time.monotonic()
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: attack\r\nX-Big: ")
            while sent < size:
                chunk = _CHUNK[: min(MIB, size - sent)]
                sock.sendall(chunk)
                sent += len(chunk)
            sock.sendall(b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = _read_reply(sock)
    status = _status_of(reply)
    return BigHeaderResult(sent, time.monotonic() - start, status, reply)


def _read_reply(sock: socket.socket) -> bytes:
    reply = b""
    try:
        while chunk := sock.recv(65536):
            reply += chunk
    except (ConnectionResetError, TimeoutError, OSError):
        pass
    return reply


def _status_of(reply: bytes) -> int | None:
    parts = reply.split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return None


class HalfOpenHeaders:
    """``count`` connections that send a request line, then one more header line every
    ``interval`` seconds and never finish their headers; notes when the server closes
    each one."""

    def __init__(self, port: int, count: int, interval: float = 2.0) -> None:
        self.port = port
        self.count = count
        self.interval = interval
        self.opened_at: dict[int, float] = {}
        self.closed_after: dict[int, float] = {}  # socket index -> seconds open
        self.connect_failures = 0
        self._sockets: dict[int, socket.socket] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="half-open", daemon=True)

    def start(self) -> HalfOpenHeaders:
        for index in range(self.count):
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            except OSError:
                self.connect_failures += 1
                continue
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: attack\r\n")
            sock.setblocking(False)
            self._sockets[index] = sock
            self.opened_at[index] = time.monotonic()
        self._thread.start()
        return self

    @property
    def open_count(self) -> int:
        return len(self._sockets) - len(self.closed_after)

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        for index, sock in self._sockets.items():
            selector.register(sock, selectors.EVENT_READ, index)
        next_line = time.monotonic() + self.interval
        while not self._stop.is_set() and self.open_count:
            for key, _ in selector.select(timeout=0.05):
                self._closed(selector, key.data, key.fileobj)  # type: ignore[arg-type]
            if time.monotonic() >= next_line:
                next_line += self.interval
                for index, sock in list(self._sockets.items()):
                    if index not in self.closed_after:
                        try:
                            sock.send(b"X-Slow: 1\r\n")
                        except OSError:
                            self._closed(selector, index, sock)
        selector.close()

    def _closed(self, selector: selectors.BaseSelector, index: int, sock: socket.socket) -> None:
        try:
            if sock.recv(65536):
                return  # an answer (408): the close follows
        except BlockingIOError:
            return
        except OSError:
            pass
        if index not in self.closed_after:
            self.closed_after[index] = time.monotonic() - self.opened_at[index]
            selector.unregister(sock)

    def wait_all_closed(self, timeout: float) -> bool:
        try:
            eventually(lambda: not self.open_count, timeout, "the sockets to be closed", 0.1)
        except NeverHappened:
            return False
        return True

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        for sock in self._sockets.values():
            sock.close()


# --- probes -------------------------------------------------------------------------


@dataclass
class Figures:
    healthz_worst: float = 0.0  # seconds
    healthz_failures: int = 0
    healthz_count: int = 0
    rss_start: int = 0
    rss_peak: int = 0
    absent_from_peers: int = 0  # polls of the peer's list without the instance
    #: Seconds left on the instance's etcd lease (or Consul heartbeat), at worst.
    lease_min_ttl: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def rss_growth(self) -> int:
        return self.rss_peak - self.rss_start

    def summary(self) -> dict[str, object]:
        return {
            "healthz_worst_s": round(self.healthz_worst, 3),
            "healthz_failures": self.healthz_failures,
            "healthz_probes": self.healthz_count,
            "rss_start_mib": round(self.rss_start / MIB, 1),
            "rss_peak_mib": round(self.rss_peak / MIB, 1),
            "absent_from_peers": self.absent_from_peers,
            "lease_min_ttl_s": self.lease_min_ttl,
            **({"notes": self.notes} if self.notes else {}),
        }


class Watch:
    """Threads that probe ``/healthz`` (a new connection each time), sample the RSS,
    poll a peer's list and, given ``lease_ttl``, the instance's remaining lease TTL."""

    def __init__(
        self,
        url: str,
        pid: int,
        peers: Callable[[], list[str]] | None = None,
        node_id: str = "",
        lease_ttl: Callable[[], int | None] | None = None,
    ) -> None:
        self.url = url
        self.pid = pid
        self.peers = peers
        self.node_id = node_id
        self.lease_ttl = lease_ttl
        self.figures = Figures()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._healthz), threading.Thread(target=self._rss)]
        if peers is not None:
            self._threads.append(threading.Thread(target=self._peers))
        if lease_ttl is not None:
            self._threads.append(threading.Thread(target=self._lease))

    def __enter__(self) -> Figures:
        self.figures.rss_start = self.figures.rss_peak = rss_bytes(self.pid)
        for thread in self._threads:
            thread.daemon = True
            thread.start()
        return self.figures

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _every(self, seconds: float) -> Iterator[None]:
        while not self._stop.is_set():
            yield
            self._stop.wait(seconds)

    def _healthz(self) -> None:
        for _ in self._every(0.1):
            start = time.monotonic()
            try:
                ok = web.get(f"{self.url}/healthz", timeout=30).status_code == 200
            except httpx.HTTPError as error:
                ok = False
                self.figures.notes.append(f"healthz: {error!r}")
            elapsed = time.monotonic() - start
            self.figures.healthz_count += 1
            self.figures.healthz_worst = max(self.figures.healthz_worst, elapsed)
            self.figures.healthz_failures += not ok

    def _rss(self) -> None:
        for _ in self._every(0.1):
            try:
                self.figures.rss_peak = max(self.figures.rss_peak, rss_bytes(self.pid))
            except (OSError, RuntimeError):
                return

    def _peers(self) -> None:
        assert self.peers is not None
        for _ in self._every(0.5):
            try:
                present = self.node_id in self.peers()
            except httpx.HTTPError:
                continue
            self.figures.absent_from_peers += not present

    def _lease(self) -> None:
        assert self.lease_ttl is not None
        for _ in self._every(0.5):
            ttl = self.lease_ttl()
            if ttl is not None:
                worst = self.figures.lease_min_ttl
                self.figures.lease_min_ttl = ttl if worst is None else min(worst, ttl)


def etcd_lease_ttl(etcdctl: Callable[..., str], key: str) -> Callable[[], int | None]:
    """A probe of the seconds left on the lease that holds ``key`` (None: no key; -1:
    the key is gone or its lease expired)."""

    def probe() -> int | None:
        try:
            found = json.loads(etcdctl("get", key, "-w", "json"))
            kvs = found.get("kvs") or []
            if not kvs:
                return -1
            lease = int(kvs[0]["lease"])
            alive = json.loads(etcdctl("lease", "timetolive", f"{lease:x}", "-w", "json"))
            return int(alive["ttl"])
        except (RuntimeError, ValueError, KeyError):
            return None

    return probe


# --- the attacks of issue 14, end to end --------------------------------------------


def consul_heartbeat_left(url: str, key: str, ttl: float) -> Callable[[], int | None]:
    """A probe of the seconds left before the instance's Consul heartbeat (the key's
    ModifyIndex, moved at every session renewal) is as old as the TTL (-1: key gone)."""
    last: dict[str, float] = {}

    def probe() -> int | None:
        try:
            response = web.get(f"{url}/v1/kv/{key}", timeout=5)
        except httpx.HTTPError:
            return None
        if response.status_code == 404:
            return -1
        index = response.json()[0]["ModifyIndex"]
        now = time.monotonic()
        if last.get("index") != index:
            last.update(index=index, at=now)
        return int(ttl - (now - last["at"]))

    return probe


@contextmanager
def store_pair(
    kind: str, workdir: Path, env: dict[str, str]
) -> Iterator[tuple[Callable[[str], Callable[[], int | None]], Gateway, Gateway]]:
    """A store and two gateways on it: the target and the peer whose list is watched.
    Yields a factory of the target's registration probe, the target and the peer."""
    from tests.gateway import Gateway
    from tests.servers.consul import start_consul
    from tests.servers.etcd import start_etcd

    server: EtcdServer | ConsulAgent
    if kind == "etcd":
        etcd = server = start_etcd(workdir / "etcd")

        def registration(key: str) -> Callable[[], int | None]:
            return etcd_lease_ttl(etcd.etcdctl, key)

    else:
        consul = server = start_consul(workdir / "consul")

        def registration(key: str) -> Callable[[], int | None]:
            return consul_heartbeat_left(consul.url, key, 10)

    gateways = []
    try:
        for name in ("target", "peer"):
            gateway = Gateway(
                workdir,
                args=["--store-type", kind, "--cluster", "hostile"],
                env={**server.env(), **env},
                node_id=name,
            )
            gateways.append(gateway.start())
        yield registration, gateways[0], gateways[1]
    finally:
        for gateway in gateways:
            gateway.stop()
        server.stop()


def watch_target(
    registration: Callable[[str], Callable[[], int | None]], target: Gateway, peer: Gateway
) -> Watch:
    def peer_ids() -> list[str]:
        return [item["id"] for item in peer.peers()]

    return Watch(
        target.url,
        target.process.pid,
        peers=peer_ids,
        node_id=target.node_id,
        lease_ttl=registration(f"sc/instances/hostile/{target.node_id}"),
    )


def big_headers(port: int, count: int, size: int) -> list[BigHeaderResult]:
    results: list[BigHeaderResult] = []
    threads = [
        threading.Thread(target=lambda: results.append(send_big_header(port, size)))
        for _ in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def request_flood(url: str, seconds: float, connections: int) -> dict[str, object]:
    """wrk hammering an endpoint that needs a token, without one (every answer a 401)."""
    output = subprocess.run(
        ["wrk", "-t", "1", "-c", str(connections), "-d", f"{int(seconds)}s", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(output.split("Requests/sec:")[1].split()[0])
    return {"connections": connections, "requests_per_s": rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", choices=("etcd", "consul"), default="etcd")
    parser.add_argument("--header-mib", type=int, default=100)
    parser.add_argument("--big", type=int, default=3, help="concurrent big-header requests")
    parser.add_argument("--half-open", type=int, default=1500)
    parser.add_argument("--hold", type=float, default=30.0, help="seconds to watch half-opens")
    parser.add_argument("--flood", type=float, default=0, help="seconds of a 401 request flood")
    parser.add_argument("--flood-connections", type=int, default=256)
    parser.add_argument("--watch", type=float, default=12.0, help="least seconds per phase")
    parser.add_argument("--header-timeout", default="", help="HEADER_TIMEOUT_SECONDS")
    parser.add_argument("--workdir", type=Path, help="keep the store's and gateways' logs here")
    args = parser.parse_args()
    raise_descriptor_limit(max(args.half_open, args.flood_connections) + 256)
    env = {"HEADER_TIMEOUT_SECONDS": args.header_timeout} if args.header_timeout else {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        store_pair(args.store, args.workdir or Path(tmp), env) as (registration, target, peer),
    ):

        def phase(name: str, attack: Callable[[], object]) -> None:
            started = time.monotonic()
            with watch_target(registration, target, peer) as figures:
                outcome = attack()
                time.sleep(max(0.0, args.watch - (time.monotonic() - started)))
            print(json.dumps({name: outcome, "watched": figures.summary()}), flush=True)

        phase("big_headers", lambda: _big_headers_outcome(target.port, args))
        phase("half_open", lambda: _half_open_outcome(target.port, args))
        if args.flood:
            url = f"{target.url}/v1/config/projects"
            phase("flood", lambda: request_flood(url, args.flood, args.flood_connections))


def _big_headers_outcome(port: int, args: argparse.Namespace) -> list[dict[str, object]]:
    results = big_headers(port, args.big, args.header_mib * MIB)
    return [
        {"sent_mib": round(r.sent / MIB, 2), "seconds": round(r.seconds, 2), "status": r.status}
        for r in results
    ]


def _half_open_outcome(port: int, args: argparse.Namespace) -> dict[str, object]:
    half_open = HalfOpenHeaders(port, args.half_open).start()
    try:
        half_open.wait_all_closed(args.hold)
    finally:
        half_open.close()
    closed = sorted(half_open.closed_after.values())
    return {
        "opened": len(half_open.opened_at),
        "connect_failures": half_open.connect_failures,
        "still_open_after_hold": half_open.open_count,
        "closed_after_s": [round(closed[0], 2), round(closed[-1], 2)] if closed else None,
    }


if __name__ == "__main__":
    main()
