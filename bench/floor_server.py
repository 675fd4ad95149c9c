"""The floor of fan-out: a bare asyncio server, no framework, one write per socket.

``GET /events`` answers the SSE headers and a first frame and keeps the socket;
``POST /publish?id=N&size=B`` encodes one frame (as one HTTP chunk, the same bytes on
the wire as the gateway's) and writes it to every open socket in a single loop;
``GET /healthz`` answers ``ok``. Nothing else: what a frame costs below any framework.

    python -m bench.floor_server PORT
"""

from __future__ import annotations

import asyncio
import sys
from urllib.parse import parse_qs, urlsplit

HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
)
FIRST = b"event: hello\nid: 0\ndata: {}\n\n"
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"

streams: set[asyncio.Transport] = set()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def publish(target: str) -> None:
    query = parse_qs(urlsplit(target).query)
    event_id, size = int(query["id"][0]), int(query.get("size", ["100"])[0])
    frame = chunk(b'event: project.put\nid: %d\ndata: {"p":"%s"}\n\n' % (event_id, b"x" * size))
    for transport in streams:
        transport.write(frame)


class Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            if target.startswith("/events"):
                self.transport.write(HEAD + chunk(FIRST))
                streams.add(self.transport)
            elif method == "POST" and target.startswith("/publish"):
                publish(target)
                self.transport.write(NO_CONTENT)
            else:
                self.transport.write(OK)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            streams.discard(self.transport)


async def main(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Connection, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(int(sys.argv[1])))
