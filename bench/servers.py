"""Server processes the benchmarks measure: gateways, the minimal broadcaster and the floor.

The benchmarks keep their own small helpers rather than the tests' (bench never imports
``tests``): a free port, a child process stopped through its PID, the admin login.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

import httpx

ROOT = Path(__file__).resolve().parents[1]

#: The admin login every benchmark gateway runs with.
ADMIN_PASS = "bench-pass"
ADMIN_SECRET = "bench-secret-0123456789-0123456789-abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def space_cloud_command() -> list[str]:
    """The installed console script, or ``python -m app`` beside the interpreter."""
    script = Path(sys.executable).with_name("space-cloud")
    return [str(script)] if script.exists() else [sys.executable, "-m", "app"]


class ChildServer:
    """A process this benchmark started, logging to a file; stopped through its PID."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log_path = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                cwd=log.parent,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


class Server(ChildServer):
    """An HTTP server process on a free loopback port."""

    def __init__(
        self,
        args: list[str],
        port: int,
        log: Path,
        env: dict[str, str] | None = None,
        ready_path: str = "/readyz",
    ) -> None:
        super().__init__(args, log, env)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ready_path = ready_path

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


def gateway(
    workdir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    node_id: str = "bench",
    source: Path | None = None,
) -> Server:
    """A gateway; ``source`` runs another checkout's ``app`` (a before/after comparison)."""
    port = free_port()
    if source is not None:
        env = {**(env or {}), "PYTHONPATH": str(source)}
    command = [
        *(space_cloud_command() if source is None else [sys.executable, "-m", "app"]),
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
    """The minimal sse-starlette broadcaster (bench/baseline_broadcaster.py)."""
    port = free_port()
    command = [sys.executable, "-m", "bench.baseline_broadcaster", str(port)]
    return Server(command, port, workdir / "baseline.log", ready_path="/healthz")


def floor(workdir: Path) -> Server:
    """The bare asyncio server: one write per socket (bench/floor_server.py)."""
    port = free_port()
    command = [sys.executable, "-m", "bench.floor_server", str(port)]
    return Server(command, port, workdir / "floor.log", ready_path="/healthz")


class _Store(Protocol):
    def env(self) -> dict[str, str]: ...


def gateway_env(store: _Store) -> dict[str, str]:
    """What a benchmark gateway on ``store`` needs: its variables and the admin login."""
    return {
        **store.env(),
        "ADMIN_PASS": ADMIN_PASS,
        "ADMIN_SECRET": ADMIN_SECRET,
        "LOG_LEVEL": "warning",
    }
