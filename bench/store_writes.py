"""Write latency through the store object itself: sequential writes of one project.

    python -m bench.store_writes [--store consul] [--writes 1000] [--size 1024]

A fresh store (bench/stores.py); each write is one ``put_project`` of a ``--size``-byte
project, timed from the call to its answer. Prints p50/p95/p99. Run it from another
checkout (``PYTHONPATH=<checkout>``) to compare the transaction before and after a change.
Writes ``bench/results/store_writes.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import orjson

from app.stores.base import Store
from app.stores.consul import ConsulConfig, ConsulStore
from app.stores.etcd import EtcdConfig, EtcdStore
from bench.common import print_table, summary_ms, write_result
from bench.stores import StoreServer, start_store


def open_store(server: StoreServer) -> Store:
    if server.kind == "consul":
        return ConsulStore(ConsulConfig.from_env(server.env()), "bench")
    return EtcdStore(EtcdConfig.from_env(server.env()), "bench")


async def latencies(server: StoreServer, writes: int, size: int) -> list[float]:
    store = open_store(server)
    await store.open()
    try:
        padding = "x" * max(0, size - 30)
        timings = []
        for number in range(writes + 10):
            value = orjson.dumps({"id": "p", "n": number, "pad": padding})
            started = time.perf_counter()
            await store.put_project("p", value)
            if number >= 10:  # the first ten warm the connection up
                timings.append(time.perf_counter() - started)
        return timings
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", default="consul", choices=["consul", "etcd"])
    parser.add_argument("--writes", type=int, default=1000)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-store-writes-") as tmp:
        server = start_store(args.store, Path(tmp))
        try:
            result = summary_ms(asyncio.run(latencies(server, args.writes, args.size)))
        finally:
            server.stop()
    print_table(
        f"{args.writes} sequential writes of a {args.size}-byte project ({args.store}, ms)",
        ["p50", "p95", "p99", "max"],
        [[result["p50_ms"], result["p95_ms"], result["p99_ms"], result["max_ms"]]],
    )
    write_result("store_writes", {"store": args.store, "size": args.size, "writes": result})


if __name__ == "__main__":
    main()
