"""SSE frames and the fan-out to subscribers (a fake ``send`` with uvicorn's flow control)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from starlette.types import Message

from app.broadcast import Broadcaster, Subscription, encode_frame


def test_encode_frame_minimal() -> None:
    assert encode_frame("peers", b'{"peers":[]}') == b'event: peers\ndata: {"peers":[]}\n\n'


def test_encode_frame_with_id_and_retry() -> None:
    frame = encode_frame("snapshot", b"{}", event_id=42, retry_ms=3000)
    assert frame == b"event: snapshot\nid: 42\nretry: 3000\ndata: {}\n\n"


def test_encode_frame_id_zero_is_kept() -> None:
    assert encode_frame("x", b"1", event_id=0) == b"event: x\nid: 0\ndata: 1\n\n"


def frame(n: int) -> bytes:
    return encode_frame("project.put", b'{"revision":%d}' % n, n)


class Stream:
    """One client connection as the server's ``send`` sees it: writes complete at once
    unless the socket is paused (its buffer full), as uvicorn's ``send`` does."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.ended = False
        self.aborted = 0
        self.stalled = 0
        self.sends = 0
        self._writable = asyncio.Event()
        self._writable.set()
        self._changed = asyncio.Event()

    async def send(self, message: Message) -> None:
        self.sends += 1
        if not self._writable.is_set():
            await self._writable.wait()
        assert not self.ended, "a body after the end of the response"
        if message["body"]:
            self.chunks.append(message["body"])
        self.ended = not message.get("more_body", False)
        self._changed.set()

    def attach(self, subscription: Subscription, send_timeout: float = 5.0) -> Subscription:
        subscription.attach(
            self.send,
            send_timeout=send_timeout,
            abort=self._abort,
            on_stalled=self._stall,
            client="test",
        )
        return subscription

    def pause(self) -> None:
        self._writable.clear()

    def resume(self) -> None:
        self._writable.set()

    async def received(self, count: int) -> list[bytes]:
        """Wait until ``count`` chunks arrived (a paused stream is flushed by a task)."""
        while len(self.chunks) < count:
            self._changed.clear()
            await asyncio.wait_for(self._changed.wait(), 1)
        return self.chunks

    def _abort(self) -> None:
        self.aborted += 1

    def _stall(self) -> None:
        self.stalled += 1


async def test_publish_writes_to_every_open_stream_at_once() -> None:
    hub = Broadcaster(queue_limit=10)
    one, two = Stream(), Stream()
    one.attach(hub.subscribe())
    two.attach(hub.subscribe())
    data = frame(1)
    assert hub.publish(data, 1) == 2
    # No task ran in between: the publish itself wrote both, the same bytes object.
    assert one.chunks == two.chunks == [data]
    assert one.chunks[0] is data
    for n in (2, 3):
        hub.publish(frame(n), n)
    assert one.chunks == [frame(1), frame(2), frame(3)]


async def test_frames_published_before_the_stream_started_come_first_as_one_chunk() -> None:
    hub = Broadcaster(queue_limit=10)
    sub = hub.subscribe()
    for n in (1, 2, 3):
        assert hub.publish(frame(n), n) == 1
    stream = Stream()
    stream.attach(sub)
    hub.publish(frame(4), 4)
    assert stream.chunks == [frame(1) + frame(2) + frame(3), frame(4)]


async def test_a_paused_stream_gets_its_backlog_in_order_once_it_drains() -> None:
    hub = Broadcaster(queue_limit=10)
    slow, fast = Stream(), Stream()
    slow.attach(hub.subscribe())
    fast.attach(hub.subscribe())
    slow.pause()
    for n in (1, 2, 3, 4):
        assert hub.publish(frame(n), n) == 2
    assert fast.chunks == [frame(n) for n in (1, 2, 3, 4)]  # never held up
    assert slow.chunks == []
    slow.resume()
    # The send that paused completes, then what queued behind it comes as one chunk.
    assert await slow.received(2) == [frame(1), frame(2) + frame(3) + frame(4)]
    hub.publish(frame(5), 5)  # drained: written directly again
    assert slow.chunks[-1] == frame(5)
    assert slow.aborted == 0 and slow.stalled == 0


async def test_full_backlog_drops_exactly_when_it_overflows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = Broadcaster(queue_limit=3)
    stuck, reader = Stream(), Stream()
    stuck_sub = stuck.attach(hub.subscribe())
    reader.attach(hub.subscribe())
    stuck.pause()
    with caplog.at_level(logging.INFO, "space_cloud.events"):
        # The first frame is the paused send itself; three more fill the backlog.
        for n in range(1, 5):
            assert hub.publish(frame(n), n) == 2
        assert not stuck_sub.dropped
        assert hub.publish(frame(5), 5) == 1
    assert stuck_sub.dropped and stuck.aborted == 1
    assert len(hub) == 1 and hub.dropped_total == 1
    assert reader.chunks == [frame(n) for n in range(1, 6)]
    drops = [r for r in caplog.records if "dropped subscriber" in r.getMessage()]
    assert len(drops) == 1 and drops[0].levelno == logging.INFO
    # Resuming the dead socket delivers nothing more: the stream is gone, not gapped.
    stuck.resume()
    await asyncio.sleep(0)
    assert stuck.chunks == []


async def test_a_send_that_never_completes_times_out_and_is_dropped_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = Broadcaster(queue_limit=100)
    stuck = Stream()
    sub = stuck.attach(hub.subscribe(), send_timeout=0.05)
    stuck.pause()
    with caplog.at_level(logging.INFO, "space_cloud.events"):
        hub.publish(frame(1), 1)
        flusher = sub._flusher
        assert flusher is not None
        await asyncio.wait_for(flusher, 1)
    assert stuck.stalled == 1  # the owner counts it and closes the stream
    drops = [r for r in caplog.records if "dropped subscriber" in r.getMessage()]
    assert [r.levelno for r in drops] == [logging.INFO]


async def test_skip_through() -> None:
    hub = Broadcaster(queue_limit=10)
    stream = Stream()
    stream.attach(hub.subscribe(skip_through=5))
    peers = encode_frame("peers", b'{"peers":[]}')
    for n in (4, 5):
        hub.publish(frame(n), n)
    hub.publish(peers, 0)  # revision-less frames are never skipped
    hub.publish(frame(6), 6)
    assert stream.chunks == [peers, frame(6)]


def test_skipped_frames_do_not_count_against_the_queue() -> None:
    sub = Subscription(limit=1, skip_through=10)
    for n in range(1, 11):
        assert sub.offer(n, frame(n)) is True
    assert sub.offer(11, frame(11)) is True
    assert not sub.dropped


async def test_close_ends_the_response() -> None:
    hub = Broadcaster(queue_limit=10)
    stream = Stream()
    sub = stream.attach(hub.subscribe())
    hub.publish(frame(1), 1)
    sub.close()
    assert stream.ended and stream.aborted == 0
    assert sub.offer(2, frame(2)) is False
    assert stream.chunks == [frame(1)]


async def test_close_of_a_paused_stream_closes_its_connection() -> None:
    hub = Broadcaster(queue_limit=10)
    stream = Stream()
    sub = stream.attach(hub.subscribe())
    stream.pause()
    hub.publish(frame(1), 1)
    hub.publish(frame(2), 2)
    sub.close()
    assert stream.aborted == 1 and not stream.ended
    stream.resume()
    await asyncio.sleep(0)
    assert stream.chunks == []  # the cancelled flush wrote nothing more


async def test_close_all_ends_every_stream() -> None:
    hub = Broadcaster(queue_limit=10)
    streams = [Stream() for _ in range(3)]
    for stream in streams:
        stream.attach(hub.subscribe())
    hub.close_all()
    assert all(stream.ended for stream in streams)
    assert len(hub) == 0


async def test_publish_removes_closed_subscribers() -> None:
    hub = Broadcaster(queue_limit=10)
    closed, live = Stream(), Stream()
    closed.attach(hub.subscribe()).close()
    live.attach(hub.subscribe())
    assert hub.publish(frame(1), 1) == 1
    assert len(hub) == 1
    assert live.chunks == [frame(1)]


async def test_a_failing_send_drops_only_that_subscriber() -> None:
    hub = Broadcaster(queue_limit=10)

    async def broken(message: Message) -> None:
        raise RuntimeError("the response already completed")

    sub = hub.subscribe()
    sub.attach(broken, send_timeout=1)
    live = Stream()
    live.attach(hub.subscribe())
    assert hub.publish(frame(1), 1) == 1
    assert sub.dropped and live.chunks == [frame(1)]


def test_unsubscribe() -> None:
    hub = Broadcaster(queue_limit=10)
    sub = hub.subscribe()
    hub.unsubscribe(sub)
    hub.unsubscribe(sub)  # twice is harmless
    assert len(hub) == 0
    assert hub.publish(frame(1), 1) == 0
