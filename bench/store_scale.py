"""Many projects: does a change still reach another instance in milliseconds?

    python -m bench.store_scale [--store consul,etcd] [--projects 100,10000] [--writes 200]
                                [--source DIR]

For each store, and each project count in the same run: a fresh store filled directly
with that many projects of about 2 KiB, two gateways A and B on it, then

* propagation: ``--writes`` sequential PUTs on A -> the event on B's stream (p50/p99),
  beside the raw store put -> watch in the same run (the limit);
* bytes B received from the store per change (the kernel's count on B's connections to
  the store) over the writes, divided by the writes;
* idle: B's CPU time and bytes received over ``--idle`` seconds with no writes, its RSS.

``--source DIR`` runs the gateways from another checkout (a before/after comparison).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench.common import (
    cpu_seconds,
    print_table,
    rss_bytes,
    summary_ms,
    tcp_bytes_received,
    write_result,
)
from bench.propagation import gateway_latencies, raw_consul_latencies, raw_etcd_latencies
from bench.scale import fill_consul, fill_etcd
from bench.servers import Server, gateway, gateway_env
from bench.stores import StoreServer, start_store

#: bench.scale's projects carry this much padding, so each is about 2 KiB.
PROJECT_PADDING = 1800


def fill(store: StoreServer, count: int) -> None:
    if store.kind == "etcd":
        asyncio.run(fill_etcd(store.endpoints, count, PROJECT_PADDING))
    else:
        fill_consul(store.addr, count, PROJECT_PADDING)


def raw_latencies(store: StoreServer, writes: int) -> list[float]:
    if store.kind == "etcd":
        return asyncio.run(raw_etcd_latencies(store.endpoints, writes))
    return asyncio.run(raw_consul_latencies(store.addr, writes))


def measure(
    kind: str, count: int, writes: int, idle: float, work: Path, source: Path | None
) -> dict[str, object]:
    work = work / f"{kind}-{count}"
    store = start_store(kind, work)
    servers: list[Server] = []
    try:
        fill(store, count)
        env = gateway_env(store)
        for name in "ab":
            node = f"{kind}-{count}-{name}"
            servers.append(
                gateway(
                    work,
                    "--store-type",
                    kind,
                    "--cluster",
                    "scale",
                    env=env,
                    node_id=node,
                    source=source,
                )
            )
        for server in servers:
            server.wait_ready(120)
        a, b = servers

        def received() -> int:
            return tcp_bytes_received(b.proc.pid, store.port)

        time.sleep(1.0)  # both past their first listing and registration
        idle_cpu, idle_received = cpu_seconds(b.proc.pid), received()
        time.sleep(idle)
        idle_cpu = cpu_seconds(b.proc.pid) - idle_cpu
        idle_received = received() - idle_received
        rss = rss_bytes(b.proc.pid)
        received_before = received()
        ours = asyncio.run(gateway_latencies(a, b, writes))
        received_per_change = (received() - received_before) / (writes + 10)
        raw = raw_latencies(store, writes)
    finally:
        for server in servers:
            server.stop()
        store.stop()
    return {
        "store": kind,
        "projects": count,
        "gateway": summary_ms(ours),
        "raw": summary_ms(raw),
        "received_bytes_per_change": round(received_per_change),
        "idle_cpu_percent": round(100 * idle_cpu / idle, 2),
        "idle_received_bytes_per_s": round(idle_received / idle),
        "rss_mib": round(rss / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", default="consul,etcd")
    parser.add_argument("--projects", default="100,10000")
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle measured")
    parser.add_argument("--source", type=Path, help="run the gateways from this checkout")
    args = parser.parse_args()
    counts = [int(count) for count in args.projects.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-store-scale-") as tmp:
        for kind in args.store.split(","):
            for count in counts:
                results.append(measure(kind, count, args.writes, args.idle, Path(tmp), args.source))
    rows = [
        [
            r["store"],
            r["projects"],
            r["gateway"]["p50_ms"],  # type: ignore[index]
            r["gateway"]["p99_ms"],  # type: ignore[index]
            r["raw"]["p99_ms"],  # type: ignore[index]
            r["received_bytes_per_change"],
            r["idle_cpu_percent"],
            r["idle_received_bytes_per_s"],
            r["rss_mib"],
        ]
        for r in results
    ]
    print_table(
        f"Many projects of ~2 KiB: PUT on A -> event on B's stream, {args.writes} writes"
        + (f" (gateways from {args.source})" if args.source else ""),
        [
            "store",
            "projects",
            "gw p50 ms",
            "gw p99 ms",
            "raw p99 ms",
            "B recv/change B",
            "B idle CPU %",
            "B idle recv B/s",
            "B RSS MiB",
        ],
        rows,
    )
    name = "store_scale" if args.source is None else "store_scale_source"
    write_result(name, {"writes": args.writes, "idle_s": args.idle, "results": results})


if __name__ == "__main__":
    main()
