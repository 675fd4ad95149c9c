"""Per-request cost of the HTTP protocol alone, without sockets or the app's work.

    python -m bench.protocol_overhead [--requests 20000] [--repeats 7]

Feeds the same keep-alive ``GET`` (with a bearer token, as a project read has) to uvicorn's
httptools protocol and to app.http_limits.LimitedHttpToolsProtocol, over a fake transport,
with an app that answers at once; prints the best of ``--repeats`` runs (the least
disturbed by other work on the machine) in microseconds per request.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.http_limits import ConnectionLimits, LimitedHttpToolsProtocol

REQUEST = (
    b"GET /v1/config/projects/p001 HTTP/1.1\r\nHost: 127.0.0.1:4122\r\n"
    b"Authorization: Bearer " + b"t" * 180 + b"\r\nAccept: */*\r\n\r\n"
)


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 4122) if name in ("peername", "sockname") else default

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _app(scope: object, receive: object, send: object) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b"{}"})  # type: ignore[operator]


async def per_request(protocol: HttpToolsProtocol, requests: int) -> float:
    protocol.connection_made(_Transport())
    start = time.perf_counter()
    for _ in range(requests):
        protocol.data_received(REQUEST)
        await asyncio.sleep(0)  # the request's task runs and answers
        await asyncio.sleep(0)
    took = time.perf_counter() - start
    protocol.connection_lost(None)
    return took / requests * 1e6


async def main(requests: int, repeats: int) -> None:
    config = uvicorn.Config(_app, log_level="error")
    config.load()
    limits = ConnectionLimits(65536, 10.0, 30.0, 1000, 10)
    best = {"uvicorn httptools": float("inf"), "limited": float("inf")}
    for number in range(repeats):
        for name in list(best) if number % 2 == 0 else reversed(best):
            protocol = (
                HttpToolsProtocol(config, ServerState(), {})
                if name == "uvicorn httptools"
                else LimitedHttpToolsProtocol(config, ServerState(), {}, limits=limits)
            )
            best[name] = min(best[name], await per_request(protocol, requests))
    for name, micros in best.items():
        print(f"{name}: {micros:.2f} µs per request (best of {repeats} x {requests})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.requests, arguments.repeats))
