"""Fan-out: time from a write to the LAST of N SSE subscribers receiving it.

    python -m bench.fanout [--subscribers 1000,5000,10000] [--writes 20] [--workers 4]

For each N: the gateway (one instance, local store, --dev) and, in the same run, the
minimal broadcaster (bench/baseline_broadcaster.py) get N subscribers held by client
processes; then ``--writes`` sequential writes, each sent once the previous one reached
everybody. Also the gateway's resident memory per subscriber.
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

from bench.common import print_table, raise_fd_limit, rss_bytes, summary_ms, write_result
from bench.servers import Server, baseline, gateway

PAYLOAD = 100  # bytes of module config per write


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
                    path,
                    str(share),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=Path(__file__).resolve().parents[1],
            )
            for share in shares
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
    server: Server, path: str, count: int, writes: int, workers: int, publish: Publish
) -> dict[str, object]:
    server.wait_ready()
    time.sleep(0.5)
    rss_before = rss_bytes(server.proc.pid)
    subscribers = Subscribers(server, path, count, workers)
    try:
        subscribers.wait_line("ready", timeout=300)
        time.sleep(1.0)
        rss_after = rss_bytes(server.proc.pid)
        latencies = []
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for number in range(1, writes + 1):
                sent = time.monotonic()
                event_id = publish(client, number)
                lines = subscribers.wait_line(f"got {event_id} ")
                last = max(float(line.split()[2]) for line in lines)
                latencies.append(last - sent)
    finally:
        subscribers.close()
    return {
        "subscribers": count,
        "last_delivery": summary_ms(latencies),
        "rss_per_subscriber_kib": round((rss_after - rss_before) / count / 1024, 2),
        "rss_mib": round(rss_after / 2**20, 1),
    }


def publish_gateway(client: httpx.Client, number: int) -> int:
    body = {"id": "fanout", "name": f"write {number}", "modules": {"blob": "x" * PAYLOAD}}
    response = client.put("/v1/config/projects/fanout", json=body)
    response.raise_for_status()
    return response.json()["revision"]


def publish_baseline(client: httpx.Client, number: int) -> int:
    client.post("/publish", params={"id": number, "size": PAYLOAD}).raise_for_status()
    return number


def run(counts: list[int], writes: int, workers: int) -> dict[str, object]:
    raise_fd_limit(max(counts) * 2 + 1024)
    rows = []
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
        work = Path(tmp)
        for count in counts:
            base_server = baseline(work)
            try:
                base = measure(base_server, "/events", count, writes, workers, publish_baseline)
            finally:
                base_server.stop()
            gw_server = gateway(
                work, "--dev", env={"LOG_LEVEL": "warning"}, node_id=f"fanout-{count}"
            )
            try:
                ours = measure(
                    gw_server, "/v1/config/events", count, writes, workers, publish_gateway
                )
            finally:
                gw_server.stop()
            ratio = ours["last_delivery"]["p50_ms"] / base["last_delivery"]["p50_ms"]
            results.append(
                {
                    "subscribers": count,
                    "gateway": ours,
                    "baseline": base,
                    "ratio_p50": round(ratio, 2),
                }
            )
            rows.append(
                [
                    count,
                    ours["last_delivery"]["p50_ms"],
                    ours["last_delivery"]["p99_ms"],
                    base["last_delivery"]["p50_ms"],
                    base["last_delivery"]["p99_ms"],
                    f"{ratio:.2f}",
                    ours["rss_per_subscriber_kib"],
                    base["rss_per_subscriber_kib"],
                ]
            )
    print_table(
        f"Fan-out: write -> last subscriber ({writes} writes each, ms)",
        [
            "subscribers",
            "gw p50",
            "gw p99",
            "base p50",
            "base p99",
            "ratio p50",
            "gw KiB/sub",
            "base KiB/sub",
        ],
        rows,
    )
    return {"writes": writes, "workers": workers, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", default="1000,5000,10000")
    parser.add_argument("--writes", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    counts = [int(part) for part in args.subscribers.split(",")]
    write_result("fanout", run(counts, args.writes, args.workers))


if __name__ == "__main__":
    main()
