"""A worker process holding many raw SSE connections; reports when every one got an event.

    python -m bench.sse_clients HOST PORT PATH COUNT [SOURCE_IP]

Prints ``ready`` once every connection has its first event (the snapshot), then for each
later event id ``got <id> <time the last connection received it> <time the first did>``
(monotonic), and runs until its stdin closes. With SOURCE_IP, connections start from that
loopback address (each address has its own ~28 000 ephemeral ports). Kept minimal
(asyncio protocols on uvloop) so that the clients cost as little CPU as possible beside
the server under test.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time

_ID = re.compile(rb"(?:^|\n)id: (\d+)\n")


class _Subscriber(asyncio.Protocol):
    def __init__(self, board: _Board) -> None:
        self.board = board
        self.buffer = b""
        self.first = True

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.buffer += data
        *frames, self.buffer = self.buffer.split(b"\n\n")
        for frame in frames:
            match = _ID.search(b"\n" + frame + b"\n")
            if match is None:
                continue
            if self.first:
                self.first = False
                self.board.connected()
            else:
                self.board.received(int(match.group(1)), now)

    def connection_lost(self, exc: Exception | None) -> None:
        self.board.lost += 1


class _Board:
    def __init__(self, count: int) -> None:
        self.count = count
        self.ready = 0
        self.lost = 0
        self.seen: dict[int, list[float]] = {}

    def connected(self) -> None:
        self.ready += 1
        if self.ready == self.count:
            print("ready", flush=True)

    def received(self, event_id: int, now: float) -> None:
        entry = self.seen.setdefault(event_id, [0, 0.0, now])
        entry[0] += 1
        entry[1] = max(entry[1], now)
        if entry[0] == self.count:
            print(f"got {event_id} {entry[1]:.6f} {entry[2]:.6f}", flush=True)


async def main(host: str, port: int, path: str, count: int, source: str | None) -> None:
    loop = asyncio.get_running_loop()
    board = _Board(count)
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    for _ in range(count):
        for attempt in range(50):
            try:
                transport, _ = await loop.create_connection(
                    lambda: _Subscriber(board),
                    host,
                    port,
                    local_addr=(source, 0) if source else None,
                )
                break
            except OSError:
                await asyncio.sleep(0.05 * (attempt + 1))
        else:
            raise SystemExit("could not connect")
        transport.write(request)
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    print(f"lost {board.lost}", flush=True)


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    source_ip = sys.argv[5] if len(sys.argv) > 5 else None
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), source_ip))
