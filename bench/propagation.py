"""Propagation: time from a write on instance A to its event on instance C's SSE stream.

    python -m bench.propagation [--store etcd,consul] [--writes 500]

Three gateways share one store; a client is subscribed to C's ``/v1/config/events``;
``--writes`` sequential PUTs go to A. In the same run, the limit: as many raw store
writes with a raw watch, no gateway involved (etcd: aetcd put -> watch event; Consul: KV
put -> blocking query return). Prints p50/p95/p99 of both and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import print_table, summary_ms, write_result
from bench.servers import ADMIN_PASS, Server, gateway, gateway_env
from bench.stores import start_store

CLUSTER = "bench"


async def gateway_latencies(a: Server, c: Server, writes: int) -> list[float]:
    async with httpx.AsyncClient(base_url=a.url, timeout=30) as writer:
        token = (
            await writer.post("/v1/config/login", json={"user": "admin", "pass": ADMIN_PASS})
        ).json()["token"]
        writer.headers["Authorization"] = f"Bearer {token}"
        arrivals: dict[int, float] = {}
        got = asyncio.Event()
        reader = asyncio.create_task(_read_sse(c, token, arrivals, got))
        await asyncio.sleep(0.5)
        latencies = []
        for number in range(writes + 10):
            got.clear()
            sent = time.monotonic()
            body = {"id": "propagation", "name": str(number), "modules": {}}
            (await writer.put("/v1/config/projects/propagation", json=body)).raise_for_status()
            while number not in arrivals:
                await asyncio.wait_for(got.wait(), 10)
                got.clear()
            if number >= 10:  # the first ten warm both paths up
                latencies.append(arrivals[number] - sent)
        reader.cancel()
        return latencies


async def _read_sse(
    server: Server, token: str, arrivals: dict[int, float], got: asyncio.Event
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        f"GET /v1/config/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    buffer = b""
    while chunk := await reader.read(65536):
        now = time.monotonic()
        buffer += chunk
        *frames, buffer = buffer.split(b"\n\n")
        for frame in frames:
            if b"event: project.put" not in frame:
                continue
            data = frame[frame.index(b"data: ") + 6 :]
            name = json.loads(data.split(b"\n")[0])["project"]["name"]
            arrivals[int(name)] = now
            got.set()


async def raw_etcd_latencies(endpoint: str, writes: int) -> list[float]:
    import aetcd

    host, _, port = endpoint.rpartition(":")
    client = aetcd.Client(host=host, port=int(port))
    await client.connect()
    try:
        arrivals: dict[bytes, float] = {}
        got = asyncio.Event()
        watch = await client.watch_prefix(b"raw-bench/")

        async def read() -> None:
            async for event in watch:
                arrivals[event.kv.value] = time.monotonic()
                got.set()

        task = asyncio.create_task(read())
        latencies = []
        for number in range(writes + 10):
            value = str(number).encode()
            got.clear()
            sent = time.monotonic()
            await client.put(b"raw-bench/key", value)
            while value not in arrivals:
                await asyncio.wait_for(got.wait(), 10)
                got.clear()
            if number >= 10:
                latencies.append(arrivals[value] - sent)
        await watch.cancel()
        task.cancel()
        return latencies
    finally:
        await client.close()


async def raw_consul_latencies(addr: str, writes: int) -> list[float]:
    async with httpx.AsyncClient(base_url=f"http://{addr}", timeout=30) as client:
        arrivals: dict[str, float] = {}
        got = asyncio.Event()

        async def read() -> None:
            index = 1
            while True:
                response = await client.get(
                    "/v1/kv/raw-bench/", params={"recurse": "", "index": index, "wait": "10s"}
                )
                now = time.monotonic()
                index = max(1, int(response.headers["X-Consul-Index"]))
                if response.status_code == 200:
                    for entry in response.json():
                        arrivals.setdefault(str(entry["ModifyIndex"]), now)
                    got.set()

        task = asyncio.create_task(read())
        await asyncio.sleep(0.3)
        latencies = []
        for number in range(writes + 10):
            got.clear()
            sent = time.monotonic()
            result = await client.put(
                "/v1/txn",
                json=[
                    {
                        "KV": {
                            "Verb": "set",
                            "Key": "raw-bench/key",
                            "Value": _b64(str(number).encode()),
                        }
                    }
                ],
            )
            index = str(result.json()["Results"][0]["KV"]["ModifyIndex"])
            while index not in arrivals:
                await asyncio.wait_for(got.wait(), 10)
                got.clear()
            if number >= 10:
                latencies.append(arrivals[index] - sent)
        task.cancel()
        return latencies


def _b64(value: bytes) -> str:
    import base64

    return base64.b64encode(value).decode()


def measure(kind: str, writes: int, work: Path) -> dict[str, object]:
    store = start_store(kind, work)
    servers: list[Server] = []
    try:
        env = gateway_env(store)
        servers = [
            gateway(
                work, "--store-type", kind, "--cluster", CLUSTER, env=env, node_id=f"{kind}-{name}"
            )
            for name in "abc"
        ]
        for server in servers:
            server.wait_ready()
        ours = asyncio.run(gateway_latencies(servers[0], servers[2], writes))
        if kind == "etcd":
            raw = asyncio.run(raw_etcd_latencies(store.endpoints, writes))
        else:
            raw = asyncio.run(raw_consul_latencies(store.addr, writes))
    finally:
        for server in servers:
            server.stop()
        store.stop()
    return {"store": kind, "gateway": summary_ms(ours), "raw": summary_ms(raw)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", default="etcd,consul")
    parser.add_argument("--writes", type=int, default=500)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-propagation-") as tmp:
        for kind in args.store.split(","):
            results.append(measure(kind, args.writes, Path(tmp)))
    rows = []
    for result in results:
        ours, raw = result["gateway"], result["raw"]
        rows.append(
            [
                result["store"],
                ours["p50_ms"],
                ours["p95_ms"],
                ours["p99_ms"],
                raw["p50_ms"],
                raw["p95_ms"],
                raw["p99_ms"],
                f"{ours['p99_ms'] - raw['p99_ms']:+.2f}",
                f"{ours['p99_ms'] / raw['p99_ms']:.2f}",
            ]
        )
    print_table(
        f"Propagation: PUT on A -> event on C's stream, {args.writes} sequential writes (ms)",
        [
            "store",
            "gw p50",
            "gw p95",
            "gw p99",
            "raw p50",
            "raw p95",
            "raw p99",
            "p99 diff",
            "p99 ratio",
        ],
        rows,
    )
    write_result("propagation", {"writes": args.writes, "results": results})


if __name__ == "__main__":
    main()
