"""Event-loop time spent parsing one huge request head, with and without the limit.

    python -m bench.protocol_head_parse [--mib 40]

Feeds ``GET`` with one header value of ``--mib`` MiB, in 256 KiB reads (uvloop's read
size), straight into uvicorn's httptools protocol and into
app.http_limits.LimitedHttpToolsProtocol, and prints the longest single
``data_received`` call and their sum: the time the event loop could do nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.http_limits import ConnectionLimits, LimitedHttpToolsProtocol

READ = 256 * 1024


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closing = False
        self.written = b""

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 4122) if name in ("peername", "sockname") else default

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written += data

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing


async def _app(scope: object, receive: object, send: object) -> None:
    return None


def parse_cost(protocol: HttpToolsProtocol, mib: int) -> tuple[float, float, bytes]:
    transport = _Transport()
    protocol.connection_made(transport)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: ")
    chunk = b"a" * READ
    longest = total = 0.0
    for _ in range(mib * (1 << 20) // READ):
        start = time.perf_counter()
        protocol.data_received(chunk)
        took = time.perf_counter() - start
        longest, total = max(longest, took), total + took
        if transport.is_closing():
            break
    return longest, total, transport.written.split(b"\r\n", 1)[0]


async def main(mib: int) -> None:
    config = uvicorn.Config(_app, log_level="error")
    config.load()
    limits = ConnectionLimits(65536, 10.0, 30.0, 100, 10)
    protocols = {
        "uvicorn httptools": HttpToolsProtocol(config, ServerState(), {}),
        "limited (64 KiB)": LimitedHttpToolsProtocol(config, ServerState(), {}, limits=limits),
    }
    for name, protocol in protocols.items():
        longest, total, answer = parse_cost(protocol, mib)
        print(
            f"{name}: {mib} MiB header, longest read {longest * 1000:.2f} ms, "
            f"all reads {total:.2f} s, answer {answer.decode() or '(none yet)'}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=40)
    asyncio.run(main(parser.parse_args().mib))
