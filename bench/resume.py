"""Resumes after a restart: what thousands of reconnecting clients cost, replay or snapshot.

    python -m bench.resume [--projects 1000] [--clients 2000] [--missed 20]

One gateway on a fresh etcd holds ``--projects`` projects of ~1 KiB; a client's last
event id is taken, ``--missed`` more writes follow, and the gateway is killed (SIGKILL)
and started again. Then ``--clients`` connections resume at once with that
``Last-Event-ID`` (replayed from etcd's history), and as many again without one (a
snapshot each: what every resume got before). Prints, for each: the bytes each client
received before its first live frame, the wall time until every client had them, the
gateway's CPU seconds, and how often the store was read for the replay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import cpu_seconds, print_table, raise_fd_limit, write_result
from bench.servers import ADMIN_PASS, Server, gateway, gateway_env
from bench.stores import start_store

CLUSTER = "bench"
#: The end of a resumed stream's first frames (after the replay) or of a snapshot.
_FIRST_END = (b"event: peers\n", b"event: snapshot\n")


def _start(workdir: Path, store_env: dict[str, str]) -> Server:
    server = gateway(
        workdir, "--store-type", "etcd", "--cluster", CLUSTER, env=store_env, node_id="a"
    )
    server.wait_ready()
    return server


def _login(server: Server) -> str:
    response = httpx.post(
        f"{server.url}/v1/config/login", json={"user": "admin", "pass": ADMIN_PASS}, timeout=10
    )
    return response.json()["token"]


def _write(server: Server, token: str, project: str, filler: str) -> int:
    document = {"id": project, "name": project, "modules": {"notes": filler}}
    response = httpx.put(
        f"{server.url}/v1/config/projects/{project}",
        json=document,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    response.raise_for_status()
    return response.json()["revision"]


async def _first_frames(port: int, token: str, last_event_id: int | None) -> int:
    """Bytes received up to the end of the first frames (replay + peers, or snapshot)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    resume = "" if last_event_id is None else f"Last-Event-ID: {last_event_id}\r\n"
    writer.write(
        f"GET /v1/config/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"{resume}\r\n".encode()
    )
    received = b""
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                raise RuntimeError(f"the stream ended after {len(received)} bytes")
            received += chunk
            ends = [received.find(marker) for marker in _FIRST_END]
            start = max(ends)
            if start >= 0 and received.find(b"\n\n", start) >= 0:
                return len(received)
    finally:
        writer.close()


async def _resume_all(port: int, token: str, clients: int, last_event_id: int | None) -> dict:
    started = time.monotonic()
    sizes = await asyncio.gather(
        *(_first_frames(port, token, last_event_id) for _ in range(clients))
    )
    return {
        "seconds": round(time.monotonic() - started, 3),
        "bytes_per_client": round(sum(sizes) / len(sizes)),
        "bytes_total": sum(sizes),
    }


def _metric(server: Server, name: str) -> dict[str, float]:
    values = {}
    for line in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name):
            key, value = line.rsplit(" ", 1)
            values[key] = float(value)
    return values


def run(projects: int, clients: int, missed: int) -> dict:
    raise_fd_limit(4 * clients + 1024)
    with tempfile.TemporaryDirectory(prefix="bench-resume-") as tmp:
        workdir = Path(tmp)
        store = start_store("etcd", workdir / "etcd")
        try:
            store_env = gateway_env(store)
            server = _start(workdir, store_env)
            token = _login(server)
            filler = "x" * 900
            last_seen = 0
            for number in range(projects):
                last_seen = _write(server, token, f"p{number}", filler)
            for number in range(missed):
                _write(server, token, f"p{number}", filler + str(number))
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait()
            server = _start(workdir, store_env)
            token = _login(server)
            results = {}
            for label, resume_id in (("replay", last_seen), ("snapshot", None)):
                cpu_before = cpu_seconds(server.proc.pid)
                result = asyncio.run(_resume_all(server.port, token, clients, resume_id))
                result["cpu_seconds"] = round(cpu_seconds(server.proc.pid) - cpu_before, 2)
                results[label] = result
            results["metrics"] = {
                **_metric(server, "sc_sse_resumes_total"),
                **_metric(server, "sc_sse_replay_reads_total"),
            }
            server.stop()
        finally:
            store.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--missed", type=int, default=20)
    options = parser.parse_args()
    results = run(options.projects, options.clients, options.missed)
    rows = [
        [label, r["bytes_per_client"], r["bytes_total"], r["seconds"], r["cpu_seconds"]]
        for label, r in results.items()
        if label != "metrics"
    ]
    print_table(
        f"{options.clients} resumes after a restart, {options.projects} projects, "
        f"{options.missed} missed changes",
        ["first frames", "bytes/client", "bytes total", "wall s", "gateway CPU s"],
        rows,
    )
    print(json.dumps(results["metrics"], indent=1))
    write_result("resume", {"options": vars(options), **results})


if __name__ == "__main__":
    main()
