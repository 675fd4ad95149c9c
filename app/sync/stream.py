"""The event stream of one instance: history, resume, subscribers, coalesced peers events.

Frames come encoded (:mod:`app.sync.frames`) from the applied state; this module keeps
the newest of them for ``Last-Event-ID`` resumes and hands every frame to the
:class:`~app.broadcast.Broadcaster`, whose subscribers are the open streams (see
docs/design.md §6).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from app.broadcast import Broadcaster, Sees, Subscription
from app.metrics import Metrics
from app.sync.frames import PING_FRAME, retry_frame
from app.sync.replay import Replayed, frames_after

#: At most one ``peers`` event per this many seconds for applied-revision updates: every
#: instance publishes its own after each write, and each such event goes to every
#: subscriber (at 10k streams that doubled a write's fan-out time; bench/fanout.py).
PEERS_COALESCE_SECONDS = 5.0


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """What the peers coalescing needs of time: the running event loop, or a test's."""

    def time(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], None], /) -> Timer: ...


class LoopClock:
    """Monotonic time (the event loop's own) and the running loop's timers."""

    def time(self) -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], None], /) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback)


class Frames(Protocol):
    """The current state's frames a subscriber may need first (the applied state)."""

    def snapshot_frame(self) -> bytes: ...

    def scoped_snapshot_frame(self, sees: Sees) -> bytes: ...

    def peers_frame(self) -> bytes: ...


class EventStream:
    """Who listens, what they missed, and when the peers go out."""

    def __init__(
        self,
        frames: Frames,
        metrics: Metrics,
        clock: Clock | None = None,
        *,
        history_size: int = 1000,
        queue_limit: int = 1024,
        retry_ms: int = 3000,
        peers_coalesce_seconds: float = PEERS_COALESCE_SECONDS,
    ) -> None:
        self.broadcaster = Broadcaster(queue_limit)
        self._frames = frames
        self._metrics = metrics
        self._clock = clock or LoopClock()
        self._retry_ms = retry_ms
        self._coalesce_seconds = peers_coalesce_seconds
        #: (revision, project id, frame) of the latest changes.
        self._history: deque[tuple[int, str, bytes]] = deque(maxlen=history_size)
        # The history holds every change after this revision.
        self._history_floor = 0
        self._peers_published_at: float | None = None
        self._peers_timer: Timer | None = None

    def start_at(self, revision: int) -> None:
        """The first listing: a resume from before it gets a snapshot."""
        self._history_floor = revision

    def change(self, revision: int, frame: bytes, project_id: str) -> None:
        """One change of ``project_id``, in revision order: kept for resumes and sent."""
        if len(self._history) == self._history.maxlen:
            self._history_floor = max(self._history_floor, self._history[0][0])
        self._history.append((revision, project_id, frame))
        self._publish(frame, revision, project_id)

    def peers_changed(self, joined_or_left: bool) -> None:
        """Joins and leaves go out at once; applied-revision updates (every instance
        publishes its own after a write) are coalesced to one event per window, which
        carries the peers as they are when it goes."""
        now = self._clock.time()
        last = self._peers_published_at
        since_last = self._coalesce_seconds if last is None else now - last
        if joined_or_left or since_last >= self._coalesce_seconds:
            self._publish_peers()
        elif self._peers_timer is None:
            self._peers_timer = self._clock.call_later(
                self._coalesce_seconds - since_last, self._publish_peers
            )

    def ping(self) -> None:
        """A comment frame to every subscriber, so proxies keep idle streams open."""
        self._publish(PING_FRAME, 0)

    # --- subscribers ------------------------------------------------------------------

    @property
    def floor(self) -> int:
        """The history holds every change after this revision."""
        return self._history_floor

    def subscribe(
        self,
        last_event_id: int | None,
        sees: Sees | None = None,
        replayed: Replayed | None = None,
    ) -> tuple[Subscription, list[bytes]]:
        """A new subscription and the frames that must come first; ``sees``: the only
        projects it gets (None: every project).

        No resume id: a ``snapshot``. A resume id in the history: every change after it,
        then the current peers. An older one: the same with the changes up to the floor
        from ``replayed`` (read from the store) first, if it covers them and they are not
        more than the history holds; otherwise a ``snapshot``. Runs without awaiting, so
        nothing can slip between the first frames and the live queue.
        """
        older: list[bytes] = []
        if last_event_id is None:
            return self._snapshot(sees)
        if last_event_id < self._history_floor:
            if not self._replays(last_event_id, replayed):
                self._metrics.sse_resumes.labels("snapshot").inc()
                return self._snapshot(sees)
            assert replayed is not None
            older = replayed.frames_after(last_event_id, sees)
            self._metrics.sse_resumes.labels("store").inc()
        else:
            self._metrics.sse_resumes.labels("history").inc()
        subscription = self.broadcaster.subscribe(skip_through=last_event_id, sees=sees)
        first = [
            retry_frame(self._retry_ms),
            *older,
            *frames_after(self._history, last_event_id, sees),
            self._frames.peers_frame(),
        ]
        self._metrics.sse_subscribers.set(len(self.broadcaster))
        return subscription, first

    def _replays(self, last_event_id: int, replayed: Replayed | None) -> bool:
        return (
            replayed is not None
            and replayed.covers(last_event_id, self._history_floor)
            and replayed.count_after(last_event_id) <= (self._history.maxlen or 0)
        )

    def _snapshot(self, sees: Sees | None) -> tuple[Subscription, list[bytes]]:
        subscription = self.broadcaster.subscribe(sees=sees)
        if sees is None:
            first = [self._frames.snapshot_frame()]
        else:
            first = [self._frames.scoped_snapshot_frame(sees)]
        self._metrics.sse_subscribers.set(len(self.broadcaster))
        return subscription, first

    def unsubscribe(self, subscription: Subscription) -> None:
        self.broadcaster.unsubscribe(subscription)
        self._metrics.sse_subscribers.set(len(self.broadcaster))

    def end(self, subscription: Subscription) -> None:
        """End one stream cleanly (its token expired or was revoked)."""
        subscription.close()
        self.unsubscribe(subscription)

    def drop_stalled(self, subscription: Subscription) -> None:
        """A send to this subscriber timed out: it is gone (counted once, however found)."""
        if not subscription.dropped:
            self._metrics.sse_dropped.inc()
        subscription.close()
        self.unsubscribe(subscription)

    # --- sending ----------------------------------------------------------------------

    def _publish_peers(self) -> None:
        if self._peers_timer is not None:
            self._peers_timer.cancel()
            self._peers_timer = None
        self._peers_published_at = self._clock.time()
        self._publish(self._frames.peers_frame(), 0)

    def _publish(self, frame: bytes, revision: int, project_id: str | None = None) -> None:
        dropped_before = self.broadcaster.dropped_total
        receivers = self.broadcaster.publish(frame, revision, project_id)
        self._metrics.sse_events_sent.inc(receivers)
        if self.broadcaster.dropped_total != dropped_before:
            self._metrics.sse_dropped.inc(self.broadcaster.dropped_total - dropped_before)
            self._metrics.sse_subscribers.set(len(self.broadcaster))
