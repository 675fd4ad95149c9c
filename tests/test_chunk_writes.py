"""Chunks written straight to the socket: only when uvicorn's ``send`` would do the same."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from app.broadcast import Broadcaster
from app.chunk_writes import SCOPE_KEY, ChunkWriter, encode_chunk
from app.http_limits import ConnectionLimits, LimitedHttpToolsProtocol
from tests.eventually import eventually_async

LIMITS = ConnectionLimits(
    max_header_bytes=65536, header_timeout=10, body_timeout=30, max_connections=10, overflow=5
)


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 4122) if name in ("sockname", "peername") else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def test_a_chunk_is_framed_as_uvicorn_frames_it() -> None:
    assert encode_chunk(b"event: x\ndata: 1\n\n") == b"12\r\nevent: x\ndata: 1\n\n\r\n"


async def test_the_writer_writes_only_while_the_response_streams_unpaused() -> None:
    seen: list[bool] = []
    streaming = asyncio.Event()
    finish = asyncio.Event()
    protocol: LimitedHttpToolsProtocol

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        write: ChunkWriter = scope[SCOPE_KEY]
        seen.append(write(encode_chunk(b"early")))  # the response has not started
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        seen.append(write(encode_chunk(b"direct")))
        protocol.pause_writing()  # the socket's buffer is full
        seen.append(write(encode_chunk(b"paused")))
        protocol.resume_writing()
        streaming.set()
        await finish.wait()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        seen.append(write(encode_chunk(b"late")))  # the response is complete

    config = uvicorn.Config(app, log_level="error")
    config.load()
    protocol = LimitedHttpToolsProtocol(
        config=config, server_state=ServerState(), app_state={}, limits=LIMITS
    )
    transport = Transport()
    protocol.connection_made(transport)
    protocol.data_received(b"GET /v1/config/events HTTP/1.1\r\nHost: t\r\n\r\n")
    await asyncio.wait_for(streaming.wait(), 5)
    finish.set()
    await eventually_async(lambda: protocol.cycle.response_complete, 5, "the response's end")
    assert seen == [False, True, False, False]
    body = transport.written.partition(b"\r\n\r\n")[2]
    assert body == b"5\r\nfirst\r\n6\r\ndirect\r\n0\r\n\r\n"
    protocol.connection_lost(None)


class _Cycle:
    """A response in its body, as the writer reads it; one condition at a time changes."""

    def __init__(self) -> None:
        self.flow = type("Flow", (), {"write_paused": False})()
        self.transport = Transport()
        self.disconnected = False
        self.response_started = True
        self.response_complete = False
        self.chunked_encoding: bool | None = True


async def test_publish_uses_the_writer_and_falls_back_to_send_when_it_declines() -> None:
    cycle = _Cycle()
    sent: list[bytes] = []

    async def send(message: Any) -> None:
        sent.append(message["body"])

    hub = Broadcaster(queue_limit=10)
    subscription = hub.subscribe()
    subscription.attach(send, send_timeout=5, write_chunk=ChunkWriter(cycle))  # type: ignore[arg-type]
    hub.publish(b"one", 1)
    cycle.chunked_encoding = False  # e.g. a response with a length: only send knows
    hub.publish(b"two", 2)
    assert cycle.transport.written == b"3\r\none\r\n"
    assert sent == [b"two"]
