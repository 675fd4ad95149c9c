"""uvicorn's httptools protocol with the limits a hostile client meets (docs/design.md §10).

- A request head (request line and headers) over ``max_header_bytes`` is refused with 431
  and the connection closed. The parser is fed at most that many head bytes: httptools
  grows a header value by concatenation, so an unbounded head costs quadratic time with
  the event loop blocked (one 100 MiB header: 17 s, bench/protocol_head_parse.py) and lets
  the process grow by its size.
- A head that is not complete ``header_timeout`` seconds after its first byte (or after
  the connection opened) is answered 408 and closed; a connection that sent nothing is
  closed silently. Idle keep-alive connections stay uvicorn's (``timeout_keep_alive``).
- A body not complete ``body_timeout`` seconds after its head is answered 408 (or, once
  the app answered, the connection closed); an answer sent before the body was all in
  (a 401, a 413) says ``connection: close`` and closes the connection.
- Beyond ``max_connections`` open connections a new one is still read, with a one-second
  head timeout, but answered 503 unless it asks for a probe path (``/healthz``,
  ``/readyz``); beyond ``max_connections + overflow`` it is closed at once, unread.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from app.chunk_writes import SCOPE_KEY, ChunkWriter

#: Paths still served on a connection beyond the cap: orchestrators' probes.
PROBE_PATHS = frozenset({b"/healthz", b"/readyz"})

#: Head timeout of a connection over the cap: a probe sends its request at once.
OVER_CAP_HEADER_TIMEOUT = 1.0

RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int
    header_timeout: float
    body_timeout: float
    max_connections: int
    #: Connections past the cap that are still read (to answer 503 or a probe).
    overflow: int


def _error_bytes(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


async def over_capacity(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """The ASGI app a connection beyond ``max_connections`` gets for a non-probe path."""
    body = _error_bytes("the instance is at its connection limit; retry shortly")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """One connection, as uvicorn's httptools protocol, within :class:`ConnectionLimits`."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._reading_head = True
        self._head_bytes = 0
        self._head_started: float | None = None  # loop time of the head's first byte
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_timeout = limits.header_timeout
        self._reading_body = False
        self._body_timer: asyncio.TimerHandle | None = None
        self._keep_alive_after_body = True
        self._over_cap = False

    # --- connection ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        open_connections = len(self.connections)
        if open_connections > self._limits.max_connections + self._limits.overflow:
            transport.close()
            return
        if open_connections > self._limits.max_connections:
            self._over_cap = True
            self._head_timeout = min(self._head_timeout, OVER_CAP_HEADER_TIMEOUT)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if self._reading_head:
            self._receive_head(data)
        else:
            super().data_received(data)
        if self._reading_body and self._body_timer is None and not self.transport.is_closing():
            self._await_body()

    def _await_body(self) -> None:
        """The body spans reads: it gets a deadline, and an answer sent before it is all in
        says ``connection: close`` and closes (else trickling the rest would hold the
        connection, each byte resetting the keep-alive timer; and a client may not reuse a
        connection whose request it has not finished)."""
        self._body_timer = self.loop.call_later(self._limits.body_timeout, self._body_timed_out)
        self._keep_alive_after_body = self.cycle.keep_alive
        self.cycle.keep_alive = False

    def _receive_head(self, data: bytes) -> None:
        if self._head_started is None:
            self._head_started = self.loop.time()
        room = self._limits.max_header_bytes - self._head_bytes
        if len(data) > room:
            self._receive_oversized_head(data, room)
            return
        self._head_bytes += len(data)
        super().data_received(data)
        # Only a head that spans reads gets a timer (``_head_started`` is cleared when the
        # head completes), so a request whose head comes in one read schedules nothing.
        unfinished = self._head_started is not None and self._head_timer is None
        if unfinished and not self.transport.is_closing():
            self._arm_head_timer()

    def _receive_oversized_head(self, data: bytes, room: int) -> None:
        """Only what the limit allows reaches the parser; the rest only if the head ended."""
        self._head_bytes += room
        super().data_received(data[:room])
        if self.transport.is_closing():
            return  # the parser refused it (400)
        if self._reading_head:
            limit = self._limits.max_header_bytes
            self._refuse(431, f"the request headers exceed the limit of {limit} bytes")
            return
        self.data_received(data[room:])

    # --- parser callbacks ---------------------------------------------------------

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._reading_body = True
        self._head_started = None
        self._cancel_head_timer()
        if not self._over_cap or self.url.partition(b"?")[0] in PROBE_PATHS:
            super().on_headers_complete()
            # The app's task starts later: it finds the writer in its scope.
            self.scope[SCOPE_KEY] = ChunkWriter(self.cycle)  # type: ignore[literal-required]
            return
        app, self.app = self.app, over_capacity
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # The next bytes start the next request's head; its clock starts with them.
        self._reading_head = True
        self._head_bytes = 0
        self._reading_body = False
        if self._body_timer is not None:  # the body spanned reads, and is now all in
            self._cancel_body_timer()
            if not self.cycle.response_started:
                self.cycle.keep_alive = self._keep_alive_after_body

    def shutdown(self) -> None:
        self._keep_alive_after_body = False  # a body still coming must not restore it
        super().shutdown()

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "the request is not valid HTTP/1.1")

    # --- the head timer -------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        now = self.loop.time()
        if self._head_started is None:
            self._head_started = now
        delay = max(0.0, self._head_started + self._head_timeout - now)
        self._head_timer = self.loop.call_later(delay, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._reading_head or self.transport.is_closing():
            return
        if self._head_bytes:
            self._refuse(408, "the request headers did not arrive in time")
        else:
            self.transport.close()

    # --- the body timer -------------------------------------------------------------

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if not self._reading_body or self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or cycle.response_started:
            self.transport.close()
            return
        # The app waiting for the body sees a disconnect, and its answer goes nowhere.
        cycle.disconnected = True
        cycle.message_event.set()
        self._refuse(408, "the request body did not arrive in time")

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` with ``{"error": message}`` and close the connection."""
        body = _error_bytes(message)
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join([*head, body]))
        self.transport.close()
