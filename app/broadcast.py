"""Fan-out of pre-encoded SSE frames to every subscriber of this instance.

A frame is encoded once and the same ``bytes`` object is queued for everyone. Each
subscriber has a bounded queue: publishing never waits, and a subscriber whose queue is
full is dropped (its stream ends; the client resumes with ``Last-Event-ID``) so a stuck
reader can never hold up the others or the watch.
"""

from __future__ import annotations

import asyncio
from collections import deque

#: An SSE comment: ignored by clients, it keeps proxies from closing an idle stream.
PING_FRAME = b": ping\n\n"


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


class Subscription:
    """One SSE client's queue of frames."""

    __slots__ = ("_frames", "_limit", "_wakeup", "dropped", "skip_through")

    def __init__(self, limit: int, skip_through: int = 0) -> None:
        self._frames: deque[tuple[int, bytes]] = deque()
        self._limit = limit
        self._wakeup = asyncio.Event()
        self.dropped = False
        #: Frames of revision <= this were already seen by the client (a resume from an
        #: instance that is ahead of this one); they are not sent again.
        self.skip_through = skip_through

    def offer(self, revision: int, frame: bytes) -> bool:
        """Queue a frame; False (and dropped) when the subscriber is too far behind."""
        if self.dropped:
            return False
        if revision and revision <= self.skip_through:
            return True
        if len(self._frames) >= self._limit:
            self.dropped = True
            self._frames.clear()
        else:
            self._frames.append((revision, frame))
        self._wakeup.set()
        return not self.dropped

    def close(self) -> None:
        """End the stream gracefully (server shutdown): :meth:`next_frames` returns None."""
        self.dropped = True
        self._frames.clear()
        self._wakeup.set()

    async def next_frames(self) -> bytes | None:
        """Everything queued, as one chunk; None once the subscription was dropped."""
        while not self._frames and not self.dropped:
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.dropped:
            return None
        frames = self._frames
        self._frames = deque()
        if len(frames) == 1:
            return frames[0][1]
        return b"".join(frame for _, frame in frames)


class Broadcaster:
    """The set of live subscriptions of this instance."""

    def __init__(self, queue_limit: int) -> None:
        self.queue_limit = queue_limit
        self._subscriptions: set[Subscription] = set()
        self.dropped_total = 0

    def __len__(self) -> int:
        return len(self._subscriptions)

    def subscribe(self, skip_through: int = 0) -> Subscription:
        subscription = Subscription(self.queue_limit, skip_through)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def publish(self, frame: bytes, revision: int = 0) -> int:
        """Queue ``frame`` for everyone; returns how many subscribers received it."""
        dropped = [sub for sub in self._subscriptions if not sub.offer(revision, frame)]
        for subscription in dropped:
            self._subscriptions.discard(subscription)
        self.dropped_total += len(dropped)
        return len(self._subscriptions)
