"""The event stream's ASGI response: a subscription written to by the publisher itself.

Once the first frames are out, the stream hands its ``send`` to its
:class:`~app.broadcast.Subscription` and its own task only waits for the client to leave:
every later frame is written by :meth:`~app.broadcast.Broadcaster.publish`, with no task
woken per subscriber (docs/design.md §6). sse-starlette's response, which this
replaces, ran a task group per stream and woke it for every frame: at 5 000 streams
(bench/fanout.py) 48 µs of server CPU per delivered frame and 44 KiB per stream, where a
bare asyncio server writing to each socket spends 6.5 µs and 1.4 KiB; this one, 10.8 µs
and 11 KiB.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI
from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.api.stream_lifetime import TokenLifetime
from app.broadcast import Subscription, body_message
from app.chunk_writes import SCOPE_KEY as CHUNK_WRITER
from app.sync import ClusterState

log = logging.getLogger("space_cloud.events")

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]

_INCOMPLETE = "ASGI callable returned without completing response."

#: Scope keys: the server's own ``send``, and a stream its app is to follow (see below).
SERVER_SEND = "space_cloud.server_send"
FOLLOWED_STREAM = "space_cloud.followed_stream"

#: What an ASGI server puts in an HTTP scope (the ASGI spec's HTTP connection scope).
_ASGI_HTTP_SCOPE_KEYS = frozenset(
    (
        "type",
        "asgi",
        "http_version",
        "method",
        "scheme",
        "path",
        "raw_path",
        "query_string",
        "root_path",
        "headers",
        "client",
        "server",
        "state",
        "extensions",
    )
)


class StreamingApp(FastAPI):
    """FastAPI, with event streams followed from the top of the request's task.

    The server's own ``send`` goes into the scope: a stream's frames go straight to it
    rather than through the middleware's wrappers (they only watch for the start of the
    response, which goes through them). Once a stream has started, its response returns
    and leaves itself in the scope, and this call waits for the client to leave: the
    routing, dependency and middleware frames of the request are freed instead of being
    held for the stream's lifetime (bench/fanout.py, 5 000 streams: 24 -> 11 KiB each).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[SERVER_SEND] = send
        try:
            await super().__call__(scope, receive, send)
        except asyncio.CancelledError:
            stream = scope.get(FOLLOWED_STREAM)
            if stream is None or not stream.aborted:
                raise
            stream.aborted_now()  # dropped before its request's frames had unwound
            return
        stream = scope.get(FOLLOWED_STREAM)
        if stream is not None:
            # What routing left in the scope (FastAPI's closed exit stacks among it) would
            # otherwise live as long as the stream: the server's own keys are enough.
            for key in scope.keys() - _ASGI_HTTP_SCOPE_KEYS:
                del scope[key]
            await stream.follow(receive)


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

    With a ``lifetime``, the stream ends cleanly when its token does.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        subscription: Subscription,
        first: bytes,
        *,
        state: ClusterState,
        send_timeout: float,
        lifetime: TokenLifetime | None = None,
    ) -> None:
        # Response's own __init__ would render a body; this one is written as it goes.
        self.background: BackgroundTask | None = None
        self.status_code = 200
        self.subscription = subscription
        self.first = first
        self.send_timeout = send_timeout
        self.state = state
        self.lifetime = lifetime
        self._client = "?"
        self._task: asyncio.Task | None = None
        self.aborted = False
        self._ended = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("http_version") == "1.0" or scope.get("method") == "HEAD":
            try:
                await self._whole(send)
            finally:
                self._end()
            return
        try:
            started = await self._start(scope, send)
        except BaseException:
            self._end()
            raise
        if not started:
            self._end()
        elif SERVER_SEND in scope:
            scope[FOLLOWED_STREAM] = self  # StreamingApp follows it from the top
        else:
            await self.follow(receive)

    async def follow(self, receive: Receive) -> None:
        """Wait until the client leaves or the stream ends (:meth:`Subscription.close`
        completes the response; a dropped subscriber cancels this wait)."""
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except asyncio.CancelledError:
            if not self.aborted:
                raise
            self.aborted_now()
        finally:
            self._end()

    def aborted_now(self) -> None:
        """This task was cancelled by :meth:`_abort`: the connection is to be closed."""
        task = asyncio.current_task()
        assert task is not None
        task.uncancel()
        _expect_abort()
        self._end()

    async def _whole(self, send: Send) -> None:
        self.subscription.release()
        length = str(len(self.first)).encode()
        headers = [*HEADERS, (b"content-length", length), (b"connection", b"close")]
        async with asyncio.timeout(self.send_timeout):
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": self.first})

    async def _start(self, scope: Scope, send: Send) -> bool:
        """Headers and first frames, then the subscription takes over; False (and the
        subscriber dropped) when they could not be sent within the send timeout."""
        client = self._client = "%s:%s" % (scope.get("client") or ("?", 0))
        try:
            async with asyncio.timeout(self.send_timeout):
                await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
                if self.first:
                    await send(body_message(self.first))
        except TimeoutError:
            log.info("dropped subscriber %s: it did not read its first frames", client)
            self.state.drop_stalled(self.subscription)
            _expect_abort()
            return False
        self.first = b""
        self._task = asyncio.current_task()
        self.subscription.attach(
            scope.get(SERVER_SEND, send),
            send_timeout=self.send_timeout,
            abort=self._abort,
            on_stalled=self._stalled,
            client=client,
            write_chunk=scope.get(CHUNK_WRITER),
        )
        if self.lifetime is not None:
            self.lifetime.bind(self._token_ended)
        return True

    def _token_ended(self, why: str) -> None:
        if self._ended or self.subscription.dropped:
            return
        assert self.lifetime is not None
        log.info(
            "ended the stream of %s (%s): its token %s",
            self._client,
            self.lifetime.principal.name,
            why,
        )
        self.state.end(self.subscription)

    def _abort(self) -> None:
        if not self.aborted and self._task is not None:
            self.aborted = True
            self._task.cancel()

    def _stalled(self) -> None:
        self.state.drop_stalled(self.subscription)

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            if self.lifetime is not None:
                self.lifetime.release()
            self.subscription.release()
            self.state.unsubscribe(self.subscription)
