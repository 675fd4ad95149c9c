"""The event stream's ASGI response: a subscription written to by the publisher itself.

Once the first frames are out, the stream hands its ``send`` to its
:class:`~app.broadcast.Subscription` and its own task only waits for the client to leave:
every later frame is written by :meth:`~app.broadcast.Broadcaster.publish`, with no task
woken per subscriber (docs/design.md, "Fan-out"; bench/fanout.py). sse-starlette's
response ran a task group per stream and woke it for every frame: 54 µs of CPU and
45 KiB per stream against 10 µs and 1.5 KiB for a bare socket write (issue 13 figures).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.broadcast import Subscription, body_message

log = logging.getLogger("space_cloud.events")

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]

_INCOMPLETE = "ASGI callable returned without completing response."


class _ExpectedAborts(logging.Filter):
    """uvicorn reports every response that ends without its last chunk at ERROR; a
    dropped subscriber ends that way on purpose, and is logged once at INFO instead.
    Each abort announces itself just before uvicorn logs it, so only those are hidden."""

    def __init__(self) -> None:
        super().__init__()
        self.pending = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if self.pending and record.msg == _INCOMPLETE:
            self.pending -= 1
            return False
        return True


_expected_aborts = _ExpectedAborts()


def _expect_abort() -> None:
    server_log = logging.getLogger("uvicorn.error")
    if _expected_aborts not in server_log.filters:
        server_log.addFilter(_expected_aborts)
    _expected_aborts.pending += 1


class EventStream(Response):
    """``text/event-stream``: ``first`` (snapshot or replay), then what is published.

    An HTTP/1.0 client (or a HEAD request) gets ``first`` as one complete response with
    a ``Content-Length``: HTTP/1.0 has no chunked encoding and uvicorn's default parser
    would chunk an open-ended body. An SSE client reconnects after ``retry`` with its
    ``Last-Event-ID`` and so still sees every change.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        subscription: Subscription,
        first: bytes,
        *,
        send_timeout: float,
        on_stalled: Callable[[], None],
        on_end: Callable[[], None],
    ) -> None:
        # Response's own __init__ would render a body; this one is written as it goes.
        self.background: BackgroundTask | None = None
        self.status_code = 200
        self.subscription = subscription
        self.first = first
        self.send_timeout = send_timeout
        self.on_stalled = on_stalled
        self.on_end = on_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if scope.get("http_version") == "1.0" or scope.get("method") == "HEAD":
                await self._whole(send)
            else:
                await self._stream(scope, receive, send)
        finally:
            self.subscription.release()
            self.on_end()

    async def _whole(self, send: Send) -> None:
        self.subscription.release()
        length = str(len(self.first)).encode()
        headers = [*HEADERS, (b"content-length", length), (b"connection", b"close")]
        async with asyncio.timeout(self.send_timeout):
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": self.first})

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = "%s:%s" % (scope.get("client") or ("?", 0))
        task = asyncio.current_task()
        assert task is not None
        aborted = False

        def abort() -> None:
            nonlocal aborted
            if not aborted:
                aborted = True
                task.cancel()

        try:
            async with asyncio.timeout(self.send_timeout):
                await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
                if self.first:
                    await send(body_message(self.first))
        except TimeoutError:
            log.info("dropped subscriber %s: it did not read its first frames", client)
            self.on_stalled()
            _expect_abort()
            return
        self.subscription.attach(
            send,
            send_timeout=self.send_timeout,
            abort=abort,
            on_stalled=self.on_stalled,
            client=client,
        )
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except asyncio.CancelledError:
            if not aborted:
                raise
            task.uncancel()
            _expect_abort()
