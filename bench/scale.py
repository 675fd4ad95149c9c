"""Scale: start-up to /readyz with many projects, and joining a running cluster.

    python -m bench.scale [--store etcd,consul] [--projects 10000]

The store is filled directly (no gateway involved), then: the time from starting a
gateway process to its ``/readyz`` answering 200 with every project served, and, with
two instances running, the time from starting a third to it being in both others'
peer lists.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import random
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from bench.common import print_table, write_result
from bench.servers import Server, gateway, gateway_env
from bench.stores import start_store

CLUSTER = "scale"


def project(number: int, padding: int = 0) -> bytes:
    """A project like a real one; ``padding`` characters more (random, so that the store's
    gzip does not shrink them away) make it that much larger."""
    return orjson.dumps(
        {
            "id": f"p{number:05d}",
            "notes": base64.b64encode(random.Random(number).randbytes(padding * 3 // 4)).decode(),
            "name": f"Project {number}",
            "secret": "s",
            "modules": {
                "db": {"postgres": {"enabled": True, "conn": "postgres://db:5432/x"}},
                "auth": {"email": {"enabled": True}},
            },
        }
    )


async def fill_etcd(endpoint: str, count: int, padding: int = 0) -> None:
    import aetcd

    host, _, port = endpoint.rpartition(":")
    client = aetcd.Client(host=host, port=int(port))
    await client.connect()
    try:
        semaphore = asyncio.Semaphore(64)

        async def put(number: int) -> None:
            async with semaphore:
                await client.put(
                    f"sc/projects/{CLUSTER}/p{number:05d}".encode(), project(number, padding)
                )

        await asyncio.gather(*(put(number) for number in range(count)))
    finally:
        await client.close()


def fill_consul(addr: str, count: int, padding: int = 0) -> None:
    with httpx.Client(base_url=f"http://{addr}", timeout=60) as client:
        for start in range(0, count, 64):
            operations = [
                {
                    "KV": {
                        "Verb": "set",
                        "Key": f"sc/projects/{CLUSTER}/p{number:05d}",
                        "Value": base64.b64encode(project(number, padding)).decode(),
                    }
                }
                for number in range(start, min(count, start + 64))
            ]
            client.put("/v1/txn", json=operations).raise_for_status()


def measure(kind: str, count: int, work: Path) -> dict[str, object]:
    store = start_store(kind, work)
    if kind == "etcd":
        asyncio.run(fill_etcd(store.endpoints, count))
    else:
        fill_consul(store.addr, count)
    env = gateway_env(store)
    servers: list[Server] = []
    try:

        def start(name: str) -> Server:
            server = gateway(
                work,
                "--store-type",
                kind,
                "--cluster",
                CLUSTER,
                "--dev",
                env=env,
                node_id=f"{kind}-{name}",
            )
            servers.append(server)
            return server

        first = start("a")
        startup = first.wait_ready(120)
        served = len(httpx.get(f"{first.url}/v1/config/projects", timeout=30).json()["projects"])
        assert served == count, f"{served} of {count} projects served"
        start("b").wait_ready(120)

        started = time.monotonic()
        third = start("c")
        joined = _wait_joined([servers[0], servers[1]], third, started)
    finally:
        for server in servers:
            server.stop()
        store.stop()
    return {
        "store": kind,
        "projects": count,
        "startup_to_ready_s": round(startup, 3),
        "join_to_all_peer_lists_s": round(joined, 3),
    }


def _wait_joined(others: list[Server], newcomer: Server, started: float) -> float:
    node = f"{newcomer.url.rpartition(':')[2]}"
    with httpx.Client(timeout=5) as client:
        while time.monotonic() - started < 120:
            seen = 0
            for server in others:
                try:
                    peers = client.get(f"{server.url}/v1/config/peers").json()["peers"]
                except httpx.HTTPError:
                    continue
                seen += any(peer["addr"].endswith(f":{node}") for peer in peers)
            if seen == len(others):
                return time.monotonic() - started
            time.sleep(0.01)
    raise TimeoutError("the new instance never showed up in every peer list")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", default="etcd,consul")
    parser.add_argument("--projects", type=int, default=10_000)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for kind in args.store.split(","):
            results.append(measure(kind, args.projects, Path(tmp)))
    print_table(
        f"Scale: {args.projects} projects in the store",
        ["store", "process start -> /readyz (s)", "start -> in every peer list (s)"],
        [[r["store"], r["startup_to_ready_s"], r["join_to_all_peer_lists_s"]] for r in results],
    )
    write_result("scale", {"projects": args.projects, "results": results})


if __name__ == "__main__":
    main()
