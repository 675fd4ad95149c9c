"""SSE frames and the fan-out to subscribers."""

from __future__ import annotations

import asyncio

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


async def test_frames_arrive_in_order_and_batched() -> None:
    hub = Broadcaster(queue_limit=10)
    sub = hub.subscribe()
    for n in (1, 2, 3):
        assert hub.publish(frame(n), n) == 1
    # Everything queued comes as one chunk, in order.
    assert await sub.next_frames() == frame(1) + frame(2) + frame(3)
    hub.publish(frame(4), 4)
    assert await sub.next_frames() == frame(4)


async def test_next_frames_waits_for_a_publish() -> None:
    hub = Broadcaster(queue_limit=10)
    sub = hub.subscribe()
    waiting = asyncio.create_task(sub.next_frames())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    hub.publish(frame(7), 7)
    assert await asyncio.wait_for(waiting, 1) == frame(7)


async def test_every_subscriber_gets_the_same_bytes() -> None:
    hub = Broadcaster(queue_limit=10)
    first, second = hub.subscribe(), hub.subscribe()
    data = frame(1)
    assert hub.publish(data, 1) == 2
    one, two = await first.next_frames(), await second.next_frames()
    assert one == two == data
    assert one is data  # encoded once, shared


async def test_full_subscriber_is_dropped_without_affecting_others() -> None:
    hub = Broadcaster(queue_limit=2)
    stuck, reader = hub.subscribe(), hub.subscribe()
    received = []
    for n in range(1, 6):
        hub.publish(frame(n), n)
        received.append(await reader.next_frames())
    assert received == [frame(n) for n in range(1, 6)]
    assert stuck.dropped is True
    assert reader.dropped is False
    assert len(hub) == 1
    assert hub.dropped_total == 1
    # The dropped stream ends rather than delivering a gap.
    assert await stuck.next_frames() is None


async def test_drop_happens_exactly_when_the_queue_overflows() -> None:
    hub = Broadcaster(queue_limit=3)
    sub = hub.subscribe()
    assert hub.publish(frame(1), 1) == 1
    assert hub.publish(frame(2), 2) == 1
    assert hub.publish(frame(3), 3) == 1
    assert not sub.dropped
    assert hub.publish(frame(4), 4) == 0
    assert sub.dropped


async def test_dropped_subscriber_wakes_a_waiting_reader() -> None:
    hub = Broadcaster(queue_limit=1)
    sub = hub.subscribe()
    hub.publish(frame(1), 1)
    assert await sub.next_frames() == frame(1)
    waiting = asyncio.create_task(sub.next_frames())
    await asyncio.sleep(0)
    hub.publish(frame(2), 2)  # fills the queue; the reader has not run yet
    hub.publish(frame(3), 3)  # overflows it
    assert await asyncio.wait_for(waiting, 1) is None


async def test_skip_through() -> None:
    hub = Broadcaster(queue_limit=10)
    sub = hub.subscribe(skip_through=5)
    peers = encode_frame("peers", b'{"peers":[]}')
    for n in (4, 5):
        hub.publish(frame(n), n)
    hub.publish(peers, 0)  # revision-less frames are never skipped
    hub.publish(frame(6), 6)
    assert await sub.next_frames() == peers + frame(6)


def test_skipped_frames_do_not_count_against_the_queue() -> None:
    sub = Subscription(limit=1, skip_through=10)
    for n in range(1, 11):
        assert sub.offer(n, frame(n)) is True
    assert sub.offer(11, frame(11)) is True
    assert not sub.dropped


async def test_close_ends_the_stream() -> None:
    hub = Broadcaster(queue_limit=10)
    sub = hub.subscribe()
    waiting = asyncio.create_task(sub.next_frames())
    await asyncio.sleep(0)
    sub.close()
    assert await asyncio.wait_for(waiting, 1) is None
    # Queued frames are discarded and nothing more is accepted.
    assert sub.offer(1, frame(1)) is False
    assert await sub.next_frames() is None


async def test_close_discards_queued_frames() -> None:
    sub = Subscription(limit=10)
    sub.offer(1, frame(1))
    sub.close()
    assert await sub.next_frames() is None


async def test_publish_removes_closed_subscribers() -> None:
    hub = Broadcaster(queue_limit=10)
    closed, live = hub.subscribe(), hub.subscribe()
    closed.close()
    assert hub.publish(frame(1), 1) == 1
    assert len(hub) == 1
    assert await live.next_frames() == frame(1)


def test_unsubscribe() -> None:
    hub = Broadcaster(queue_limit=10)
    sub = hub.subscribe()
    hub.unsubscribe(sub)
    hub.unsubscribe(sub)  # twice is harmless
    assert len(hub) == 0
    assert hub.publish(frame(1), 1) == 0
