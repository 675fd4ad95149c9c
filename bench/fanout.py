"""Fan-out: what one published frame costs the server, for N open SSE streams.

    python -m bench.fanout [--subscribers 1000,5000,10000] [--writes 20] [--workers 4]
                           [--series floor,baseline,gateway,gateway-scoped,gateway-scoped-each]

For each N, three servers in the same run, each held open by the same client processes
(bench/sse_clients.py, ``--workers`` of them): the floor (bench/floor_server.py, a bare
asyncio server writing one pre-encoded frame to every socket), the minimal sse-starlette
broadcaster (bench/baseline_broadcaster.py) and the gateway (one instance, local store,
--dev). Then ``--writes`` sequential writes, each sent once the previous one reached
everybody. Per server:

- server CPU per delivered frame: the server process's CPU time from "all streams open"
  to "last event received", divided by writes x subscribers;
- write -> last subscriber: from sending the write to the last stream receiving it (for
  the gateway that includes its durable store write), and first -> last subscriber;
- RSS per open stream: resident memory with the streams open, less before, over N.

The scoped series are the same gateway with every stream filtered by ``?projects=``
(docs/design.md §6): ``gateway-scoped`` gives all of them one scope (one test per frame),
``gateway-scoped-each`` gives each its own (one test per subscriber and frame, the worst
case). Their cost is reported against the unscoped gateway of the same run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.common import (
    cpu_seconds,
    print_table,
    raise_fd_limit,
    rss_bytes,
    summary_ms,
    write_result,
)
from bench.servers import ROOT, Server, baseline, floor, gateway

PAYLOAD = 100  # bytes of module config per write
SERIES = ("floor", "baseline", "gateway", "gateway-scoped", "gateway-scoped-each")
DEFAULT_SERIES = ("floor", "baseline", "gateway")
#: Quiet before measuring: the connections' set-up work done, the collector settled.
SETTLE_SECONDS = 1.0
#: The event stream each gateway series subscribes to; every scope includes the project
#: written, so every stream receives every write.
GATEWAY_PATHS = {
    "gateway": "/v1/config/events",
    "gateway-scoped": "/v1/config/events?projects=fanout,other",
    "gateway-scoped-each": "/v1/config/events?projects=fanout,w{worker}-{n}",
}


class Subscribers:
    """``count`` SSE connections spread over ``workers`` client processes."""

    def __init__(self, server: Server, path: str, count: int, workers: int) -> None:
        shares = [count // workers + (1 if i < count % workers else 0) for i in range(workers)]
        self.procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.sse_clients",
                    "127.0.0.1",
                    str(server.port),
                    path.replace("{worker}", str(index)),
                    str(share),
                    f"127.0.0.{2 + index}",  # past ~28 000 connections per source address
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            for index, share in enumerate(shares)
            if share
        ]

    def wait_line(self, prefix: str, timeout: float = 120.0) -> list[str]:
        """The next line starting with ``prefix`` from every worker."""
        lines = []
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            assert proc.stdout is not None
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"workers did not say {prefix!r} in {timeout}s")
                line = proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"a client worker exited (waiting for {prefix!r})")
                if line.startswith(prefix):
                    lines.append(line.strip())
                    break
        return lines

    def close(self) -> None:
        for proc in self.procs:
            if proc.stdin:
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


Publish = Callable[[httpx.Client, int], int]


def measure(
    server: Server,
    path: str,
    count: int,
    writes: int,
    workers: int,
    publish: Publish,
    settle: float = SETTLE_SECONDS,
) -> dict[str, object]:
    server.wait_ready()
    time.sleep(settle / 2)
    rss_before = rss_bytes(server.proc.pid)
    subscribers = Subscribers(server, path, count, workers)
    try:
        subscribers.wait_line("ready", timeout=600)
        time.sleep(settle)
        rss_after = rss_bytes(server.proc.pid)
        latencies, spreads = [], []
        with httpx.Client(base_url=server.url, timeout=60) as client:
            cpu_before = cpu_seconds(server.proc.pid)
            for number in range(1, writes + 1):
                sent = time.monotonic()
                event_id = publish(client, number)
                lines = subscribers.wait_line(f"got {event_id} ")
                last = max(float(line.split()[2]) for line in lines)
                first = min(float(line.split()[3]) for line in lines)
                latencies.append(last - sent)
                spreads.append(last - first)
            cpu = cpu_seconds(server.proc.pid) - cpu_before
    finally:
        subscribers.close()
    return {
        "subscribers": count,
        "last_delivery": summary_ms(latencies),
        "first_to_last": summary_ms(spreads),
        "cpu_us_per_frame": round(cpu / (writes * count) * 1e6, 2),
        "rss_per_subscriber_kib": round((rss_after - rss_before) / count / 1024, 2),
        "rss_mib": round(rss_after / 2**20, 1),
    }


def publish_gateway(client: httpx.Client, number: int) -> int:
    body = {"id": "fanout", "name": f"write {number}", "modules": {"blob": "x" * PAYLOAD}}
    response = client.put("/v1/config/projects/fanout", json=body)
    response.raise_for_status()
    return response.json()["revision"]


def publish_bare(client: httpx.Client, number: int) -> int:
    client.post("/publish", params={"id": number, "size": PAYLOAD}).raise_for_status()
    return number


def measure_one(
    series: str,
    work: Path,
    count: int,
    writes: int,
    workers: int,
    source: Path | None,
    settle: float = SETTLE_SECONDS,
) -> dict:
    if series in GATEWAY_PATHS:
        # No ping inside the measured window: it would be one more frame per stream.
        env = {"LOG_LEVEL": "warning", "SSE_PING_SECONDS": "3600"}
        node_id = f"fanout-{series}-{count}"
        server = gateway(work, "--dev", env=env, node_id=node_id, source=source)
        path, publish = GATEWAY_PATHS[series], publish_gateway
    else:
        server = floor(work) if series == "floor" else baseline(work)
        path, publish = "/events", publish_bare
    try:
        return measure(server, path, count, writes, workers, publish, settle)
    finally:
        server.stop()


def run(
    counts: list[int],
    writes: int,
    workers: int,
    series: list[str],
    source: Path | None = None,
    settle: float = SETTLE_SECONDS,
) -> dict[str, object]:
    needed = max(counts) + 1024  # the server holds one descriptor per stream
    limit = raise_fd_limit(needed)
    if limit < needed:
        raise SystemExit(
            f"the open-file limit here is {limit} and cannot be raised (ulimit -Hn): a server "
            f"holding {max(counts)} streams needs {needed}"
        )
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
        for count in counts:
            result: dict[str, object] = {"subscribers": count}
            for name in series:
                result[name] = measure_one(name, Path(tmp), count, writes, workers, source, settle)
            if "floor" in result and "gateway" in result:
                floor_, ours = result["floor"], result["gateway"]
                result["gateway_vs_floor"] = {
                    "cpu": _ratio(ours["cpu_us_per_frame"], floor_["cpu_us_per_frame"]),
                    "p50": _ratio(
                        ours["last_delivery"]["p50_ms"], floor_["last_delivery"]["p50_ms"]
                    ),
                    "spread_p50": _ratio(
                        ours["first_to_last"]["p50_ms"], floor_["first_to_last"]["p50_ms"]
                    ),
                }
            for name in ("gateway-scoped", "gateway-scoped-each"):
                if name in result and "gateway" in result:
                    unscoped, scoped = result["gateway"], result[name]
                    result[f"{name}_vs_gateway"] = {
                        "cpu": _ratio(scoped["cpu_us_per_frame"], unscoped["cpu_us_per_frame"]),
                        "p50": _ratio(
                            scoped["last_delivery"]["p50_ms"], unscoped["last_delivery"]["p50_ms"]
                        ),
                    }
            results.append(result)
    rows = [
        [
            result["subscribers"],
            name,
            result[name]["cpu_us_per_frame"],
            result[name]["last_delivery"]["p50_ms"],
            result[name]["last_delivery"]["p99_ms"],
            result[name]["first_to_last"]["p50_ms"],
            result[name]["rss_per_subscriber_kib"],
        ]
        for result in results
        for name in series
    ]
    print_table(
        f"Fan-out ({writes} writes each): server CPU per frame, write -> last subscriber",
        ["subscribers", "server", "CPU µs/frame", "p50 ms", "p99 ms", "spread p50", "KiB/stream"],
        rows,
    )
    return {"writes": writes, "workers": workers, "results": results}


def _ratio(ours: float, floor_: float) -> float | None:
    """None when the floor measured zero (a tiny run: CPU time comes in 10 ms ticks)."""
    return round(ours / floor_, 2) if floor_ else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", default="1000,5000,10000")
    parser.add_argument("--writes", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--series",
        default=",".join(DEFAULT_SERIES),
        help=f"which servers to measure, of {', '.join(SERIES)}",
    )
    parser.add_argument(
        "--gateway-source", type=Path, help="run the gateway from another checkout's app/"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=SETTLE_SECONDS,
        help="seconds of quiet once the streams are open, before measuring (half of it once "
        "the server is ready); 0 for a run that only checks the benchmark works",
    )
    args = parser.parse_args()
    counts = [int(part) for part in args.subscribers.split(",")]
    series = [name for name in args.series.split(",") if name]
    unknown = set(series) - set(SERIES)
    if unknown:
        parser.error(f"unknown series {', '.join(sorted(unknown))}: use {', '.join(SERIES)}")
    result = run(counts, args.writes, args.workers, series, args.gateway_source, args.settle)
    write_result("fanout", result)


if __name__ == "__main__":
    main()
