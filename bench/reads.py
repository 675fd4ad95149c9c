"""Reads: GET /v1/config/projects/{id} per second with 1 000 projects in the store.

    python -m bench.reads [--projects 1000] [--seconds 10] [--connections 64] [--rounds 3]

The load comes from wrk (another process, Debian's ``wrk``) cycling over every project
id, with a token (auth on, as in production). In the same run, a bare FastAPI endpoint
serving the same bytes without auth (bench/bare_app.py) gives the ceiling. Both servers
are up together and measured in turn, ``--rounds`` times each; the median run counts.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

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
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
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


def _median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run with the median rate (its latencies with it), and every rate."""
    ordered = sorted(runs, key=lambda run: run["requests_per_s"])
    return {**ordered[len(ordered) // 2], "rates": [run["requests_per_s"] for run in runs]}


def run(count: int, seconds: int, connections: int, rounds: int) -> dict[str, object]:
    """Both servers up at once; ``rounds`` wrk runs on each, interleaved, medians kept."""
    with tempfile.TemporaryDirectory(prefix="bench-reads-") as tmp:
        work = Path(tmp)
        env = {"ADMIN_PASS": ADMIN_PASS, "ADMIN_SECRET": ADMIN_SECRET, "LOG_LEVEL": "warning"}
        server = gateway(work, env=env, node_id="reads")
        bare: Server | None = None
        try:
            server.wait_ready()
            token = httpx.post(
                f"{server.url}/v1/config/login", json={"user": "admin", "pass": ADMIN_PASS}
            ).json()["token"]
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
                for number in range(count):
                    client.put(
                        f"/v1/config/projects/p{number:04d}", json=project(number)
                    ).raise_for_status()
                body = client.get("/v1/config/projects/p0000").content
            (work / "body.json").write_bytes(body)
            port = free_port()
            bare = Server(
                [sys.executable, "-m", "bench.bare_app", str(port), str(work / "body.json")],
                port,
                work / "bare.log",
                ready_path="/healthz",
            )
            bare.wait_ready()
            script = work / "reads.lua"
            script.write_text(LUA % {"count": count, "token": token})
            ours_runs, bare_runs = [], []
            for url in (server.url, bare.url):
                run_wrk(url, script, 2, connections)  # warm-up
            for _ in range(rounds):
                ours_runs.append(run_wrk(server.url, script, seconds, connections))
                bare_runs.append(run_wrk(bare.url, script, seconds, connections))
        finally:
            server.stop()
            if bare is not None:
                bare.stop()
    ours, ceiling = _median_run(ours_runs), _median_run(bare_runs)
    ratio = ours["requests_per_s"] / ceiling["requests_per_s"]
    print_table(
        f"Reads: GET one project of {count}, {connections} connections, {seconds}s (wrk), "
        f"median of {rounds} interleaved runs",
        ["server", "req/s", "p50 ms", "p99 ms", "non-2xx", "every run (req/s)"],
        [
            [
                "gateway (auth on)",
                ours["requests_per_s"],
                ours["p50_ms"],
                ours["p99_ms"],
                ours["non_2xx"],
                " ".join(f"{rate:.0f}" for rate in ours["rates"]),
            ],
            [
                "bare FastAPI",
                ceiling["requests_per_s"],
                ceiling["p50_ms"],
                ceiling["p99_ms"],
                ceiling["non_2xx"],
                " ".join(f"{rate:.0f}" for rate in ceiling["rates"]),
            ],
            ["ratio", f"{ratio:.2f}", "", "", "", ""],
        ],
    )
    return {
        "projects": count,
        "seconds": seconds,
        "connections": connections,
        "rounds": rounds,
        "gateway": ours,
        "bare_fastapi": ceiling,
        "ratio": round(ratio, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    write_result("reads", run(args.projects, args.seconds, args.connections, args.rounds))


if __name__ == "__main__":
    main()
