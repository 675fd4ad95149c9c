"""Reads per second of the gateway under three HTTP protocols, in one run.

    python -m bench.protocol_reads [--seconds 10] [--connections 64] [--rounds 2] [--warmup 2]

The same app (local store, 100 projects, token on) is served in turn by uvicorn's
default httptools protocol, by app.http_limits.LimitedHttpToolsProtocol (what
``space-cloud run`` uses) and by h11 with its incomplete-event limit at MAX_HEADER_BYTES
(the alternative issue 14 names); wrk (one thread, 64 connections) reads ``/healthz`` and
``GET /v1/config/projects/{id}`` from each. Each figure is (requests/s, the server's CPU
microseconds per request); rounds alternate the servers so drift in the machine's load
shows up as spread rather than as a difference.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]

PASSWORD = "reads-pass"
SECRET = "reads-secret-0123456789-0123456789-abcdef"
PROTOCOLS = ("httptools", "limited", "h11")
PROJECTS = 100

LUA = """
local n = 0
wrk.headers["Authorization"] = "Bearer %(token)s"
request = function()
  n = n + 1
  return wrk.format("GET", string.format("/v1/config/projects/p%%03d", n %% %(count)d))
end
"""


def serve(protocol: str, port: int, config: Path) -> None:
    import uvicorn

    from app.http_limits import LimitedHttpToolsProtocol
    from app.main import create_app
    from app.server import connection_limits, raise_descriptor_limit
    from app.settings import Settings

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        host="127.0.0.1",
        port=port,
        config=config,
        admin_pass=PASSWORD,
        admin_secret=SECRET,
        log_level="warning",
    )
    limits = connection_limits(settings, raise_descriptor_limit())
    http: object = protocol
    if protocol == "limited":
        http = functools.partial(LimitedHttpToolsProtocol, limits=limits)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=port,
            http=http,  # type: ignore[arg-type]
            log_level="warning",
            h11_max_incomplete_event_size=settings.max_header_bytes,
        )
    )
    server.run()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(protocol: str, config: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.protocol_reads", "serve", protocol, str(port), str(config)],
        cwd=config.parent,
        env={**os.environ, "PYTHONPATH": path},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.terminate()
    raise SystemExit(f"the {protocol} server did not get ready")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(15)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(
    url: str, seconds: int, connections: int, pid: int, script: Path | None = None
) -> tuple[float, float]:
    """Requests per second, and the server's CPU microseconds per request: the second
    holds still while other work on the machine moves the first."""
    args = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s"]
    if script is not None:
        args += ["-s", str(script)]
    cpu = cpu_seconds(pid)
    output = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pid) - cpu
    if "Non-2xx" in output:
        raise SystemExit(f"wrk saw errors:\n{output}")
    requests = int(output.split(" requests in ")[0].split()[-1])
    rate = float(output.split("Requests/sec:")[1].split()[0])
    return rate, round(cpu / requests * 1e6, 1)


def measure(
    seconds: int, connections: int, rounds: int, warmup: int = 2
) -> dict[str, dict[str, list[tuple[float, float]]]]:
    results: dict[str, dict[str, list[tuple[float, float]]]] = {
        protocol: {"healthz": [], "project": []} for protocol in PROTOCOLS
    }
    with tempfile.TemporaryDirectory(prefix="protocol-reads-") as tmp:
        config = Path(tmp) / "config.yaml"
        script = Path(tmp) / "reads.lua"
        for number in range(rounds):
            order = PROTOCOLS if number % 2 == 0 else PROTOCOLS[::-1]
            for protocol in order:
                process, url = start(protocol, config)
                try:
                    token = login_and_fill(url)
                    script.write_text(LUA % {"token": token, "count": PROJECTS})
                    pid = process.pid
                    if warmup:
                        wrk(f"{url}/healthz", warmup, connections, pid)
                    healthz = wrk(f"{url}/healthz", seconds, connections, pid)
                    if warmup:
                        wrk(url, warmup, connections, pid, script)
                    project = wrk(url, seconds, connections, pid, script)
                    results[protocol]["healthz"].append(healthz)
                    results[protocol]["project"].append(project)
                finally:
                    stop(process)
                print(protocol, {k: v[-1] for k, v in results[protocol].items()}, flush=True)
    return results


def login_and_fill(url: str) -> str:
    token = httpx.post(f"{url}/v1/config/login", json={"user": "admin", "pass": PASSWORD}).json()
    headers = {"Authorization": f"Bearer {token['token']}"}
    with httpx.Client(base_url=url, headers=headers) as client:
        if client.get("/v1/config/projects/p000").status_code == 404:
            for number in range(PROJECTS):
                document = {"id": f"p{number:03d}", "name": "reads", "modules": {"db": {}}}
                client.put(f"/v1/config/projects/p{number:03d}", json=document).raise_for_status()
    return token["token"]


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2, help="seconds of wrk first; 0: none")
    args = parser.parse_args()
    results = measure(args.seconds, args.connections, args.rounds, args.warmup)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
