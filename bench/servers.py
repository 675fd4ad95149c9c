"""Server processes the benchmarks measure: gateways and the minimal broadcaster."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.gateway import ADMIN_PASS, ADMIN_SECRET, space_cloud_command
from tests.servers.process import free_port

ROOT = Path(__file__).resolve().parents[1]


class Server:
    """A server process on a free loopback port, logging to a file."""

    def __init__(
        self,
        args: list[str],
        port: int,
        log: Path,
        env: dict[str, str] | None = None,
        ready_path: str = "/readyz",
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ready_path = ready_path
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            cwd=log.parent,
        )

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds until the ready path answered 200."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=1).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
        raise TimeoutError(f"{self.url} not ready in {timeout}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def gateway(
    workdir: Path, *args: str, env: dict[str, str] | None = None, node_id: str = "bench"
) -> Server:
    port = free_port()
    command = [
        *space_cloud_command(),
        "run",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--id",
        node_id,
        "--advertise-addr",
        f"127.0.0.1:{port}",
        *args,
    ]
    return Server(command, port, workdir / f"{node_id}.log", env)


def baseline(workdir: Path) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "bench.baseline_broadcaster", str(port)]
    return Server(command, port, workdir / "baseline.log", ready_path="/healthz")


def start_store(kind: str, workdir: Path) -> Any:
    """A fresh etcd or Consul on free loopback ports (the tests' own server helpers)."""
    if kind == "etcd":
        from tests.servers.etcd import start_etcd

        return start_etcd(workdir / "etcd")
    from tests.servers.consul import start_consul

    return start_consul(workdir / "consul")


def gateway_env(store: Any) -> dict[str, str]:
    """What a benchmark gateway on ``store`` needs: its variables and the admin login."""
    return {
        **store.env(),
        "ADMIN_PASS": ADMIN_PASS,
        "ADMIN_SECRET": ADMIN_SECRET,
        "LOG_LEVEL": "warning",
    }
