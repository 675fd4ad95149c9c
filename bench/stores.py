"""The stores the benchmarks run against: a fresh single-member etcd or a Consul dev agent,
on free loopback ports, each stopped through its own PID."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.servers import ROOT, ChildServer, free_port

START_TIMEOUT = 60.0

_FALLBACKS = {"etcd": Path("/usr/bin/etcd"), "consul": ROOT / ".stores/consul/usr/bin/consul"}


def binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    if _FALLBACKS[name].is_file():
        return str(_FALLBACKS[name])
    raise SystemExit(f"{name} is not installed: run scripts/install-stores.sh")


class StoreServer:
    """One store process and the variables a gateway needs to reach it."""

    def __init__(self, kind: str, process: ChildServer, port: int) -> None:
        self.kind = kind
        self.process = process
        self.port = port

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def endpoints(self) -> str:
        return self.addr

    def env(self) -> dict[str, str]:
        if self.kind == "etcd":
            return {"ETCD_ENDPOINTS": self.addr}
        return {"CONSUL_HTTP_ADDR": self.addr}

    def stop(self) -> None:
        self.process.stop()


def start_store(kind: str, workdir: Path) -> StoreServer:
    """A fresh etcd or Consul, ready to take writes."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    if kind == "etcd":
        peer = free_port()
        args = [
            binary("etcd"),
            "--data-dir",
            str(workdir / "etcd.data"),
            "--listen-client-urls",
            f"http://127.0.0.1:{port}",
            "--advertise-client-urls",
            f"http://127.0.0.1:{port}",
            "--listen-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-cluster",
            f"default=http://127.0.0.1:{peer}",
            "--log-level",
            "warn",
        ]
        ready = _etcd_ready
    else:
        ports = {name: free_port() for name in ("server", "serf_lan", "serf_wan")}
        config = workdir / "consul.hcl"
        config.write_text(
            f'node_name = "bench-{port}"\nbind_addr = "127.0.0.1"\nclient_addr = "127.0.0.1"\n'
            "disable_update_check = true\n"
            f"ports {{ http = {port}, https = -1, dns = -1, grpc = -1,"
            f" server = {ports['server']}, serf_lan = {ports['serf_lan']},"
            f" serf_wan = {ports['serf_wan']} }}\n"
        )
        args = [binary("consul"), "agent", "-dev", f"-config-file={config}"]
        ready = _consul_ready
    store = StoreServer(kind, ChildServer(args, workdir / f"{kind}.log"), port)
    try:
        _wait(lambda: ready(store), store.process)
    except BaseException:
        store.stop()
        raise
    return store


def _etcd_ready(store: StoreServer) -> bool:
    response = httpx.get(f"http://{store.addr}/health", timeout=1)
    return response.status_code == 200 and response.json().get("health") == "true"


def _consul_ready(store: StoreServer) -> bool:
    response = httpx.put(f"http://{store.addr}/v1/kv/bench-ready", content=b"1", timeout=1)
    return response.status_code == 200 and response.text.strip() == "true"


def _wait(ready: Callable[[], bool], process: ChildServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited:\n{process.log()[-2000:]}")
        try:
            if ready():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{process.args[0]} not ready in {START_TIMEOUT:g}s")
