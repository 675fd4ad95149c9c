"""Reads: GET /v1/config/projects/{id} per second with 1 000 projects in the store.

    python -m bench.reads [--projects 1000] [--seconds 10] [--connections 64] [--rounds 3]
                          [--before CHECKOUT]

The load comes from wrk (another process, Debian's ``wrk``) cycling over every project
id, with a token (auth on, as in production). In the same run, a bare FastAPI endpoint
serving the same bytes without auth (bench/bare_app.py) gives the ceiling. Both servers
are up together and measured in turn, ``--rounds`` times each; the median run counts.
``--before`` adds a gateway running another checkout's code over a copy of the store file.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from bench.common import print_table, write_result
from bench.servers import ADMIN_PASS, ADMIN_SECRET, Server, free_port, gateway

LUA = """
local ids = {}
for i = 0, %(count)d - 1 do ids[#ids + 1] = string.format("p%%04d", i) end
local n = 0
wrk.headers["Authorization"] = "Bearer %(token)s"
request = function()
  n = n + 1
  return wrk.format("GET", "/v1/config/projects/" .. ids[(n %% #ids) + 1])
end
"""


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (make bench does it)")
    return found


def run_wrk(url: str, script: Path, seconds: int, connections: int) -> dict[str, float]:
    output = subprocess.run(
        [
            wrk_binary(),
            "-t",
            "1",
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if found is None:
        raise RuntimeError(f"wrk printed no Requests/sec:\n{output}")
    rate = float(found.group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", output)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", output)
    return {
        "requests_per_s": rate,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "p50_ms": _ms(p50),
        "p99_ms": _ms(p99),
    }


def _ms(match: re.Match[str] | None) -> float:
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return round(value / 1000 if unit == "us" else value * 1000 if unit == "s" else value, 3)


def project(number: int) -> dict[str, object]:
    return {
        "id": f"p{number:04d}",
        "name": f"Project {number}",
        "secret": "s",
        "modules": {
            "db": {"postgres": {"enabled": True, "conn": "postgres://db:5432/x"}},
            "auth": {"email": {"enabled": True}},
        },
    }


def _median_run(runs: list[dict[str, float]]) -> dict[str, Any]:
    """The run with the median rate (its latencies with it), and every rate."""
    ordered = sorted(runs, key=lambda run: run["requests_per_s"])
    return {**ordered[len(ordered) // 2], "rates": [run["requests_per_s"] for run in runs]}


def _load(server: Server, count: int) -> tuple[str, bytes]:
    """``count`` projects written through ``server``; its admin token and one project's body."""
    token = httpx.post(
        f"{server.url}/v1/config/login", json={"user": "admin", "pass": ADMIN_PASS}
    ).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        for number in range(count):
            client.put(
                f"/v1/config/projects/p{number:04d}", json=project(number)
            ).raise_for_status()
        return token, client.get("/v1/config/projects/p0000").content


def _bare(work: Path, body: bytes) -> Server:
    (work / "body.json").write_bytes(body)
    port = free_port()
    command = [sys.executable, "-m", "bench.bare_app", str(port), str(work / "body.json")]
    return Server(command, port, work / "bare.log", ready_path="/healthz")


def _before(work: Path, env: dict[str, str], source: Path) -> Server:
    """A gateway running ``source``'s code over a copy of the loaded store file (a local
    store file takes one process)."""
    folder = work / "before"
    folder.mkdir()
    shutil.copyfile(work / "config.yaml", folder / "config.yaml")
    return gateway(folder, env=env, node_id="before", source=source)


def _row(name: str, result: dict[str, Any]) -> list[object]:
    rates = " ".join(f"{rate:.0f}" for rate in result["rates"])
    return [
        name,
        result["requests_per_s"],
        result["p50_ms"],
        result["p99_ms"],
        result["non_2xx"],
        rates,
    ]


def run(
    count: int, seconds: int, connections: int, rounds: int, before: Path | None = None
) -> dict[str, object]:
    """Every server up at once; ``rounds`` wrk runs on each, interleaved, medians kept.

    With ``before`` (another checkout), a gateway running that checkout's ``app`` over
    a copy of the loaded store is measured in the same rounds: a before/after in one run.
    """
    with tempfile.TemporaryDirectory(prefix="bench-reads-") as tmp:
        work = Path(tmp)
        env = {"ADMIN_PASS": ADMIN_PASS, "ADMIN_SECRET": ADMIN_SECRET, "LOG_LEVEL": "warning"}
        servers: dict[str, Server] = {"gateway": gateway(work, env=env, node_id="reads")}
        try:
            servers["gateway"].wait_ready()
            token, body = _load(servers["gateway"], count)
            servers["bare_fastapi"] = _bare(work, body)
            if before is not None:
                servers["before"] = _before(work, env, before)
            for server in servers.values():
                server.wait_ready()
            script = work / "reads.lua"
            script.write_text(LUA % {"count": count, "token": token})
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
            for server in servers.values():
                run_wrk(server.url, script, 2, connections)  # warm-up
            for _ in range(rounds):
                for name, server in servers.items():
                    runs[name].append(run_wrk(server.url, script, seconds, connections))
        finally:
            for server in servers.values():
                server.stop()
    medians = {name: _median_run(series) for name, series in runs.items()}
    ceiling = medians["bare_fastapi"]["requests_per_s"]
    ratios = {name: medians[name]["requests_per_s"] / ceiling for name in medians}
    labels = {
        "gateway": "gateway (auth on)",
        "before": f"gateway from {before} (auth on)",
        "bare_fastapi": "bare FastAPI",
    }
    print_table(
        f"Reads: GET one project of {count}, {connections} connections, {seconds}s (wrk), "
        f"median of {rounds} interleaved runs",
        ["server", "req/s", "p50 ms", "p99 ms", "non-2xx", "every run (req/s)"],
        [_row(labels[name], result) for name, result in medians.items()]
        + [
            [f"ratio, {labels[name]}", f"{ratios[name]:.2f}", "", "", "", ""]
            for name in medians
            if name != "bare_fastapi"
        ],
    )
    result: dict[str, object] = {
        "projects": count,
        "seconds": seconds,
        "connections": connections,
        "rounds": rounds,
        **medians,
        "ratio": round(ratios["gateway"], 3),
    }
    if before is not None:
        result["ratio_before"] = round(ratios["before"], 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--before",
        type=Path,
        help="another checkout (its top folder): its gateway is measured in the same rounds",
    )
    args = parser.parse_args()
    result = run(args.projects, args.seconds, args.connections, args.rounds, args.before)
    write_result("reads", result)


if __name__ == "__main__":
    main()
