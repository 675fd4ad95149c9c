"""Fan-out of pre-encoded SSE frames to every subscriber of this instance.

A frame is encoded once and the same ``bytes`` (in one shared ASGI message) goes to
everyone. Publishing writes it to each open stream at once: it drives the stream's ASGI
``send`` coroutine by hand, and a send that completes without suspending is a plain
socket write, with no task woken per subscriber (docs/design.md §6). Where the server
hands the stream a chunk writer (:mod:`app.chunk_writes`), the frame is framed as an HTTP
chunk once for everyone and written to each socket with no ``send`` call at all.

A send that would suspend means the server's flow control paused that stream (its socket
buffer is full). From then on its frames wait in a bounded backlog while one task
finishes the paused send and flushes the backlog, within ``send_timeout`` per send. A
subscriber whose backlog overflows or whose send times out is dropped (its connection is
closed; the client resumes with ``Last-Event-ID``), so a stuck reader can never hold up
the others or the watch.

A scoped subscriber (a token for some projects, or ``?projects=``) carries what it
``sees``: a hashable test of a project id. Scoped subscribers are grouped by that test, so
a project frame costs one test per distinct scope, not per subscriber, and the unscoped
subscribers are written to exactly as before (docs/design.md §6).
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import Callable, Generator, Hashable
from typing import Any, Protocol

from starlette.types import Message, Send

from app.chunk_writes import encode_chunk

log = logging.getLogger("space_cloud.events")

#: An SSE comment: ignored by clients, it keeps proxies from closing an idle stream.
PING_FRAME = b": ping\n\n"

_END_OF_STREAM: Message = {"type": "http.response.body", "body": b"", "more_body": False}


class Sees(Hashable, Protocol):
    """Whether a scoped subscriber sees the frames of project ``project_id``."""

    def __call__(self, project_id: str, /) -> bool: ...


def encode_frame(
    event: str, data: bytes, event_id: int | None = None, retry_ms: int | None = None
) -> bytes:
    """One SSE frame. ``data`` is a single line of JSON (orjson escapes newlines)."""
    head = b"event: " + event.encode() + b"\n"
    if event_id is not None:
        head += b"id: %d\n" % event_id
    if retry_ms is not None:
        head += b"retry: %d\n" % retry_ms
    return head + b"data: " + data + b"\n\n"


def body_message(chunk: bytes) -> Message:
    return {"type": "http.response.body", "body": chunk, "more_body": True}


@types.coroutine
def _resume(coro: Generator[Any, Any, None], waiting: Any) -> Generator[Any, Any, None]:
    """Finish, inside a task, a send coroutine that :meth:`Subscription._write` started
    by hand and that suspended on ``waiting`` (what it yielded to the event loop)."""
    while True:
        try:
            value = yield waiting
        except BaseException as exc:  # cancellation (the send timeout) goes in too
            try:
                waiting = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                waiting = coro.send(value)
            except StopIteration:
                return


class Subscription:
    """One SSE client: written to directly while its socket keeps up."""

    __slots__ = (
        "_abort",
        "_flusher",
        "_frames",
        "_limit",
        "_on_stalled",
        "_send",
        "_send_timeout",
        "_write_chunk",
        "client",
        "dropped",
        "sees",
        "skip_through",
    )

    def __init__(self, limit: int, skip_through: int = 0, sees: Sees | None = None) -> None:
        #: Frames not yet written: before :meth:`attach`, or while flow control pauses
        #: the stream. Never longer than ``limit``.
        self._frames: list[tuple[int, bytes]] = []  # a list: 56 bytes empty, a deque 600
        self._limit = limit
        self._send: Send | None = None
        self._write_chunk: Callable[[bytes], bool] | None = None
        self._send_timeout = 0.0
        self._flusher: asyncio.Task[None] | None = None
        self._abort: Callable[[], None] = _nothing
        self._on_stalled: Callable[[], None] | None = None
        self.client = "?"
        self.dropped = False
        #: Frames of revision <= this were already seen by the client (a resume from an
        #: instance that is ahead of this one); they are not sent again.
        self.skip_through = skip_through
        #: The projects whose frames it gets; None: every project.
        self.sees = sees

    def attach(
        self,
        send: Send,
        *,
        send_timeout: float,
        abort: Callable[[], None] = lambda: None,
        on_stalled: Callable[[], None] | None = None,
        client: str = "?",
        write_chunk: Callable[[bytes], bool] | None = None,
    ) -> None:
        """Start writing to ``send`` (the response has started): what queued meanwhile
        goes first. ``abort`` closes the connection without ending the response (a
        dropped subscriber); ``on_stalled`` is told when a send timed out;
        ``write_chunk`` writes an encoded chunk without ``send`` when nothing must
        happen first, and says whether it did (:class:`app.chunk_writes.ChunkWriter`)."""
        self._send = send
        self._write_chunk = write_chunk
        self._send_timeout = send_timeout
        self._abort = abort
        self._on_stalled = on_stalled
        self.client = client
        if self._frames and not self.dropped:
            self._write(body_message(self._take_backlog()))

    def offer(
        self,
        revision: int,
        frame: bytes,
        message: Message | None = None,
        chunk: bytes | None = None,
    ) -> bool:
        """Write or queue a frame; False (and dropped) when the subscriber is too far
        behind. ``message`` is ``frame`` as an ASGI body message and ``chunk`` as an
        encoded HTTP chunk, each made once for everyone."""
        if self.dropped:
            return False
        if revision and revision <= self.skip_through:
            return True
        if self._send is None or self._flusher is not None:
            if len(self._frames) >= self._limit:
                self._drop(f"it fell {self._limit} frames behind")
                return False
            self._frames.append((revision, frame))
            return True
        if self._write_chunk is not None and self._write_chunk(chunk or encode_chunk(frame)):
            return True
        self._write(message or body_message(frame))
        return not self.dropped

    def close(self) -> None:
        """End the stream (server shutdown, its token ended): the response completes if
        the socket takes it at once, else the connection is closed. Queued frames are
        discarded."""
        if self.dropped:
            return
        self.dropped = True
        self._frames.clear()
        self._cancel_flusher()
        if self._send is None:
            return
        if not self._try_send(_END_OF_STREAM):
            self._abort()

    def release(self) -> None:
        """The stream is over (the client left): nothing more is written."""
        self.dropped = True
        self._frames.clear()
        self._cancel_flusher()

    # --- writing ------------------------------------------------------------------------

    def _write(self, message: Message) -> None:
        assert self._send is not None
        coro = self._send(message).__await__()
        try:
            waiting = coro.send(None)
        except StopIteration:
            return
        except Exception as exc:
            self._drop(f"its send failed ({exc!r})")
            return
        # Flow control paused this stream: the rest of its writes go through a task.
        self._flusher = asyncio.get_running_loop().create_task(self._flush(coro, waiting))

    def _try_send(self, message: Message) -> bool:
        """Send without waiting; False when the send would have had to wait."""
        assert self._send is not None
        coro = self._send(message).__await__()
        try:
            coro.send(None)
        except StopIteration:
            return True
        except Exception:
            return False
        coro.close()
        return False

    async def _flush(self, paused: Generator[Any, Any, None], waiting: Any) -> None:
        assert self._send is not None
        try:
            async with asyncio.timeout(self._send_timeout):
                await _resume(paused, waiting)
            while self._frames:
                async with asyncio.timeout(self._send_timeout):
                    await self._send(body_message(self._take_backlog()))
        except TimeoutError:
            self._flusher = None
            if self._on_stalled is None:
                self._drop("it stopped reading")
            else:  # it counts the drop, then closes (and so aborts) the stream
                log.info("dropped subscriber %s: it stopped reading", self.client)
                self._on_stalled()
        except Exception as exc:
            self._flusher = None
            self._drop(f"its send failed ({exc!r})")
        else:
            self._flusher = None

    def _take_backlog(self) -> bytes:
        frames = self._frames
        self._frames = []
        if len(frames) == 1:
            return frames[0][1]
        return b"".join(frame for _, frame in frames)

    def _drop(self, why: str) -> None:
        if self.dropped:
            return
        self.dropped = True
        self._frames.clear()
        self._cancel_flusher()
        log.info("dropped subscriber %s: %s", self.client, why)
        self._abort()

    def _cancel_flusher(self) -> None:
        flusher, self._flusher = self._flusher, None
        if flusher is not None and flusher is not asyncio.current_task():
            flusher.cancel()


def _nothing() -> None:
    pass


class Broadcaster:
    """The set of live subscriptions of this instance."""

    def __init__(self, queue_limit: int) -> None:
        self.queue_limit = queue_limit
        #: Subscribers of every project.
        self._subscriptions: set[Subscription] = set()
        #: Scoped subscribers, by what they see.
        self._scoped: dict[Sees, set[Subscription]] = {}
        self._scoped_count = 0
        self.dropped_total = 0

    def __len__(self) -> int:
        return len(self._subscriptions) + self._scoped_count

    def subscribe(self, skip_through: int = 0, sees: Sees | None = None) -> Subscription:
        subscription = Subscription(self.queue_limit, skip_through, sees)
        if sees is None:
            self._subscriptions.add(subscription)
        else:
            self._scoped.setdefault(sees, set()).add(subscription)
            self._scoped_count += 1
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription.sees is None:
            self._subscriptions.discard(subscription)
            return
        group = self._scoped.get(subscription.sees)
        if group is None or subscription not in group:
            return
        group.remove(subscription)
        self._scoped_count -= 1
        if not group:
            del self._scoped[subscription.sees]

    def publish(self, frame: bytes, revision: int = 0, project_id: str | None = None) -> int:
        """Write ``frame`` to everyone who sees it (a frame of no project, such as
        ``peers``, goes to all); returns how many subscribers received it."""
        message = body_message(frame)
        chunk = encode_chunk(frame)
        dropped = [
            sub for sub in self._subscriptions if not sub.offer(revision, frame, message, chunk)
        ]
        offered = len(self._subscriptions)
        if self._scoped:
            for sees, group in self._scoped.items():
                if project_id is None or sees(project_id):
                    offered += len(group)
                    dropped += [
                        sub for sub in group if not sub.offer(revision, frame, message, chunk)
                    ]
        for subscription in dropped:
            self.unsubscribe(subscription)
        self.dropped_total += len(dropped)
        return offered - len(dropped)

    def close_all(self) -> None:
        """End every stream (server shutdown)."""
        for subscription in list(self._subscriptions):
            subscription.close()
        for group in list(self._scoped.values()):
            for subscription in list(group):
                subscription.close()
        self._subscriptions.clear()
        self._scoped.clear()
        self._scoped_count = 0
