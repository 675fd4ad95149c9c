"""The sync layer against an in-memory store: the applied state (``app.sync.state``), its
event stream (``app.sync.stream``, with a fake clock) and the loop (``app.sync.loop``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable

import orjson
import pytest

from app.backoff import Backoff
from app.broadcast import Subscription
from app.metrics import Metrics
from app.stores.base import (
    ProjectChange,
    ProjectListing,
    StoredProject,
    StoreUnavailable,
    WatchReset,
)
from app.sync import ClusterState, InstanceInfo, Syncer
from app.sync.frames import PING_FRAME
from app.sync.stream import PEERS_COALESCE_SECONDS
from tests.eventually import eventually_async

# --- helpers ----------------------------------------------------------------------------


def project(project_id: str, revision: int, **extra: object) -> StoredProject:
    value = orjson.dumps({"id": project_id, "name": f"{project_id}@{revision}", **extra})
    return StoredProject(project_id, value, revision)


def listing(revision: int, *projects: StoredProject) -> ProjectListing:
    return ProjectListing({p.id: p for p in projects}, revision)


def put(project_id: str, revision: int) -> ProjectChange:
    return ProjectChange("put", project_id, revision, project(project_id, revision).value)


def delete(project_id: str, revision: int) -> ProjectChange:
    return ProjectChange("delete", project_id, revision)


def parse(chunk: bytes) -> list[dict]:
    """SSE bytes -> ``[{"event", "id", "retry", "data"}]``; a bare ``retry:`` block too."""
    events = []
    for block in chunk.decode().split("\n\n"):
        if not block:
            continue
        event: dict = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            if name == "data":
                event["data"] = json.loads(value)
            elif name in ("id", "retry"):
                event[name] = int(value)
            else:
                event[name] = value
        events.append(event)
    return events


def summary(events: list[dict]) -> list[tuple[str, int | None, str | None]]:
    """``(event, id, project id)`` of each project event."""
    out = []
    for event in events:
        if event.get("event") == "project.put":
            out.append(("put", event["id"], event["data"]["project"]["id"]))
        elif event.get("event") == "project.delete":
            out.append(("delete", event["id"], event["data"]["id"]))
    return out


def queued(subscription: Subscription) -> list[dict]:
    """What is waiting in a subscription's queue, without waiting for more."""
    frames = list(subscription._frames)
    subscription._frames.clear()
    return parse(b"".join(frame for _, frame in frames))


class FakeTimer:
    def __init__(self, due: float, callback: Callable[[], None]) -> None:
        self.due = due
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Time that moves only when the test says so; timers fire as it passes them."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.timers: list[FakeTimer] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None], /) -> FakeTimer:
        timer = FakeTimer(self.now + delay, callback)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = sorted((t for t in self.timers if t.due <= self.now), key=lambda t: t.due)
        self.timers = [t for t in self.timers if t.due > self.now]
        for timer in due:
            if not timer.cancelled:
                timer.callback()

    @property
    def pending(self) -> list[FakeTimer]:
        return [timer for timer in self.timers if not timer.cancelled]


def new_state(clock: FakeClock | None = None, **options: int) -> ClusterState:
    return ClusterState("self-node", Metrics(), clock=clock, **options)


def synced_state(
    revision: int = 0,
    *projects: StoredProject,
    clock: FakeClock | None = None,
    **options: int,
) -> ClusterState:
    state = new_state(clock, **options)
    state.apply_listing(listing(revision, *projects))
    return state


# --- listings ---------------------------------------------------------------------------


def test_first_listing_sets_state_without_events() -> None:
    state = new_state()
    early, _ = state.subscribe(None)
    assert not state.synced.is_set()
    emitted = state.apply_listing(listing(3, project("a", 1), project("b", 3)))
    assert emitted == 0
    assert state.synced.is_set()
    assert state.revision == 3
    assert set(state.projects) == {"a", "b"}
    assert queued(early) == []
    # Nothing to replay after the listing's revision.
    _, first = state.subscribe(3)
    assert summary(parse(b"".join(first))) == []


def test_later_listing_emits_exactly_the_difference_in_revision_order() -> None:
    state = synced_state(4, project("a", 1), project("b", 2), project("c", 3), project("e", 4))
    sub, _ = state.subscribe(None)
    emitted = state.apply_listing(
        listing(8, project("a", 1), project("b", 7), project("d", 5), project("e", 4))
    )
    assert emitted == 3
    assert summary(queued(sub)) == [("put", 5, "d"), ("put", 7, "b"), ("delete", 8, "c")]
    assert {pid: p.revision for pid, p in state.projects.items()} == {
        "a": 1,
        "b": 7,
        "d": 5,
        "e": 4,
    }
    assert state.revision == 8


def test_identical_listing_emits_nothing() -> None:
    state = synced_state(2, project("a", 1), project("b", 2))
    sub, _ = state.subscribe(None)
    assert state.apply_listing(listing(2, project("a", 1), project("b", 2))) == 0
    assert queued(sub) == []


def test_listing_put_event_carries_the_new_value() -> None:
    state = synced_state(1, project("a", 1))
    sub, _ = state.subscribe(None)
    state.apply_listing(listing(2, project("a", 2, modules={"db": {"enabled": True}})))
    [event] = queued(sub)
    assert event["event"] == "project.put"
    assert event["data"] == {
        "revision": 2,
        "project": {"id": "a", "name": "a@2", "modules": {"db": {"enabled": True}}},
    }


# --- changes ----------------------------------------------------------------------------


def test_apply_changes_emits_puts_and_deletes() -> None:
    state = synced_state(1, project("a", 1))
    sub, _ = state.subscribe(None)
    state.apply_changes([put("b", 2), delete("a", 3), put("b", 4)])
    assert summary(queued(sub)) == [("put", 2, "b"), ("delete", 3, "a"), ("put", 4, "b")]
    assert set(state.projects) == {"b"}
    assert state.projects["b"].revision == 4
    assert state.revision == 4


def test_apply_changes_ignores_a_change_already_applied() -> None:
    state = synced_state(0)
    sub, _ = state.subscribe(None)
    state.apply_changes([put("a", 1), put("a", 2)])
    state.apply_changes([put("a", 2)])  # the same change again
    state.apply_changes([put("a", 1)])  # an older one
    state.apply_changes([delete("zzz", 3)])  # nothing to delete
    assert summary(queued(sub)) == [("put", 1, "a"), ("put", 2, "a")]
    assert state.projects["a"].revision == 2
    assert state.revision == 2


def test_delete_event_data() -> None:
    state = synced_state(1, project("a", 1))
    sub, _ = state.subscribe(None)
    state.apply_changes([delete("a", 2)])
    [event] = queued(sub)
    assert event == {"event": "project.delete", "id": 2, "data": {"revision": 2, "id": "a"}}


# --- history and resume -----------------------------------------------------------------


def test_resume_replays_exactly_the_events_after_n() -> None:
    state = synced_state(0)
    state.apply_changes([put("a", 1), put("b", 2), delete("a", 3), put("c", 4), put("b", 5)])
    sub, first = state.subscribe(2)
    events = parse(b"".join(first))
    assert events[0] == {"retry": 3000}
    assert summary(events) == [("delete", 3, "a"), ("put", 4, "c"), ("put", 5, "b")]
    assert events[-1]["event"] == "peers"
    assert "snapshot" not in [event.get("event") for event in events]
    # Live events follow without a gap or a repeat.
    state.apply_changes([put("d", 6)])
    assert summary(queued(sub)) == [("put", 6, "d")]


def test_resume_at_the_current_revision_replays_nothing() -> None:
    state = synced_state(0)
    state.apply_changes([put("a", 1), put("b", 2)])
    _, first = state.subscribe(2)
    assert summary(parse(b"".join(first))) == []


def test_resume_older_than_the_history_gets_a_snapshot() -> None:
    state = synced_state(0, history_size=3)
    state.apply_changes([put(f"p{n}", n) for n in range(1, 7)])  # history keeps 4, 5, 6
    _, first = state.subscribe(2)
    [snapshot] = parse(b"".join(first))
    assert snapshot["event"] == "snapshot"
    assert snapshot["id"] == 6
    assert snapshot["data"]["revision"] == 6
    assert [p["id"] for p in snapshot["data"]["projects"]] == [f"p{n}" for n in range(1, 7)]
    # The oldest id the history still continues from.
    _, first = state.subscribe(3)
    assert summary(parse(b"".join(first))) == [("put", 4, "p4"), ("put", 5, "p5"), ("put", 6, "p6")]


def test_resume_from_before_the_first_listing_gets_a_snapshot() -> None:
    state = synced_state(10, project("a", 10))
    _, first = state.subscribe(9)
    assert [event["event"] for event in parse(b"".join(first))] == ["snapshot"]


def test_no_resume_id_gets_a_snapshot() -> None:
    state = synced_state(2, project("a", 2))
    _, first = state.subscribe(None)
    [snapshot] = parse(b"".join(first))
    assert snapshot["event"] == "snapshot"
    assert snapshot["id"] == 2
    assert snapshot["retry"] == 3000
    assert snapshot["data"]["peers"] == []


def test_resume_from_an_id_ahead_of_this_instance() -> None:
    state = synced_state(0)
    state.apply_changes([put("a", 1), put("b", 2)])
    sub, first = state.subscribe(5)  # the client saw revision 5 on a faster instance
    assert summary(parse(b"".join(first))) == []
    state.apply_changes([put("c", 3), put("d", 4), put("e", 5), put("f", 6)])
    assert summary(queued(sub)) == [("put", 6, "f")]


# --- waiting for a revision -------------------------------------------------------------


async def test_wait_for_an_applied_revision_is_immediate() -> None:
    state = synced_state(5)
    assert await asyncio.wait_for(state.wait_for(5, 10), 0.5) is True
    assert await asyncio.wait_for(state.wait_for(1, 10), 0.5) is True


async def test_wait_for_resolves_when_the_revision_is_applied() -> None:
    state = synced_state(1)
    waiters = [asyncio.create_task(state.wait_for(n, 5)) for n in (3, 2, 4)]

    async def finished() -> list[bool]:
        await asyncio.wait(waiters, timeout=0.05)
        return [waiter.done() for waiter in waiters]

    assert await finished() == [False, False, False]
    state.apply_changes([put("a", 2)])
    assert await finished() == [False, True, False]
    state.apply_changes([put("a", 3)])
    assert await finished() == [True, True, False]
    state.apply_listing(listing(9, project("a", 3)))  # a listing advances too
    assert await asyncio.wait_for(asyncio.gather(*waiters), 1) == [True, True, True]


async def test_wait_for_times_out() -> None:
    state = synced_state(1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await state.wait_for(2, 0.05) is False
    assert loop.time() - started < 1
    # A later change does not trip over the abandoned waiter.
    state.apply_changes([put("a", 2)])
    assert state.revision == 2


# --- peers ------------------------------------------------------------------------------


def record(node_id: str, applied: int = 0, addr: str = "10.0.0.1:4122") -> bytes:
    return orjson.dumps(
        {
            "id": node_id,
            "addr": addr,
            "version": "1.0",
            "startedAt": "2024-01-01T00:00:00Z",
            "appliedRevision": applied,
        }
    )


def test_set_peers_publishes_only_when_the_list_changes() -> None:
    window = PEERS_COALESCE_SECONDS
    clock = FakeClock()
    state = synced_state(0, clock=clock)
    sub, _ = state.subscribe(None)
    state.set_peers({"self-node": record("self-node"), "other": record("other", 3)})
    [event] = queued(sub)  # a join goes out at once
    assert event["event"] == "peers"
    assert "id" not in event
    assert event["data"]["peers"] == [
        {
            "id": "other",
            "addr": "10.0.0.1:4122",
            "version": "1.0",
            "startedAt": "2024-01-01T00:00:00Z",
            "appliedRevision": 3,
            "self": False,
        },
        {
            "id": "self-node",
            "addr": "10.0.0.1:4122",
            "version": "1.0",
            "startedAt": "2024-01-01T00:00:00Z",
            "appliedRevision": 0,
            "self": True,
        },
    ]
    # The same instances in another order: no event.
    state.set_peers({"other": record("other", 3), "self-node": record("self-node")})
    assert queued(sub) == []
    # Applied revisions moving right after: one event, with the latest, after the window.
    clock.advance(1)
    state.set_peers({"other": record("other", 4), "self-node": record("self-node")})
    state.set_peers({"other": record("other", 5), "self-node": record("self-node", 5)})
    assert queued(sub) == []
    [timer] = clock.pending
    assert timer.due == clock.now - 1 + window  # a window after the join's event
    clock.advance(window - 1 - 0.001)
    assert queued(sub) == []
    clock.advance(0.001)
    [event] = queued(sub)
    assert [p["appliedRevision"] for p in event["data"]["peers"]] == [5, 5]
    assert clock.pending == []
    # Once a window has passed since that event, a revision update goes out at once.
    clock.advance(window)
    state.set_peers({"other": record("other", 6), "self-node": record("self-node", 5)})
    [event] = queued(sub)
    assert [p["appliedRevision"] for p in event["data"]["peers"]] == [6, 5]
    # A peer left: an event at once, replacing a pending revision update.
    state.set_peers({"other": record("other", 7), "self-node": record("self-node", 5)})
    assert len(clock.pending) == 1
    state.set_peers({"self-node": record("self-node", 5)})
    [event] = queued(sub)
    assert [p["id"] for p in event["data"]["peers"]] == ["self-node"]
    assert clock.pending == []
    clock.advance(window * 2)
    assert queued(sub) == []
    assert [p["id"] for p in state.peers] == ["self-node"]


def test_an_address_change_is_a_join_and_goes_out_at_once() -> None:
    clock = FakeClock()
    state = synced_state(0, clock=clock)
    sub, _ = state.subscribe(None)
    state.set_peers({"other": record("other", addr="10.0.0.1:1")})
    queued(sub)
    state.set_peers({"other": record("other", addr="10.0.0.2:1")})
    [event] = queued(sub)
    assert event["data"]["peers"][0]["addr"] == "10.0.0.2:1"
    assert clock.pending == []


def test_set_peers_skips_unreadable_records() -> None:
    state = synced_state(0)
    state.set_peers(
        {
            "self-node": record("self-node"),
            "broken": b"{not json",
            "a-list": b"[1, 2]",
            "bad-revision": b'{"id": "bad-revision", "appliedRevision": "many"}',
        }
    )
    assert [peer["id"] for peer in state.peers] == ["self-node"]


def test_peers_reach_resumes_and_snapshots() -> None:
    state = synced_state(0)
    state.set_peers({"self-node": record("self-node", addr="[::1]:1")})
    _, first = state.subscribe(0)
    assert parse(b"".join(first))[-1]["data"]["peers"][0]["addr"] == "[::1]:1"
    _, first = state.subscribe(None)
    assert parse(b"".join(first))[0]["data"]["peers"][0]["addr"] == "[::1]:1"


def test_ping_reaches_every_subscriber() -> None:
    state = synced_state(3)
    fresh, _ = state.subscribe(None)
    ahead, _ = state.subscribe(10)  # skips revisions <= 10, never a ping
    state.ping()
    for subscription in (fresh, ahead):
        assert [frame for _, frame in subscription._frames] == [PING_FRAME]
    assert PING_FRAME.startswith(b":") and PING_FRAME.endswith(b"\n\n")  # an SSE comment


# --- cached bodies ----------------------------------------------------------------------


def test_list_body_and_snapshot_reflect_changes() -> None:
    state = synced_state(1, project("a", 1))
    assert json.loads(state.list_body()) == {
        "projects": [{"id": "a", "name": "a@1"}],
        "revision": 1,
    }
    [snapshot] = parse(state.snapshot_frame())
    assert snapshot["id"] == 1
    assert snapshot["data"]["projects"] == [{"id": "a", "name": "a@1"}]

    state.apply_changes([put("b", 2), delete("a", 3)])
    assert json.loads(state.list_body()) == {
        "projects": [{"id": "b", "name": "b@2"}],
        "revision": 3,
    }
    [snapshot] = parse(state.snapshot_frame())
    assert snapshot["event"] == "snapshot"
    assert snapshot["id"] == 3
    assert snapshot["data"] == {
        "revision": 3,
        "projects": [{"id": "b", "name": "b@2"}],
        "revisions": {"b": 2},
        "peers": [],
    }

    state.set_peers({"self-node": record("self-node")})
    [snapshot] = parse(state.snapshot_frame())
    assert [peer["id"] for peer in snapshot["data"]["peers"]] == ["self-node"]

    state.apply_listing(listing(5, project("b", 2), project("c", 5)))
    assert [p["id"] for p in json.loads(state.list_body())["projects"]] == ["b", "c"]
    assert parse(state.snapshot_frame())[0]["id"] == 5


def test_list_body_revision_follows_a_listing_without_project_changes() -> None:
    """A resync whose listing has a higher revision but the same projects (the store
    revision also moves for instance keys) must not leave the cached list and snapshot
    at the old revision: ``?waitRevision=R`` then a list would report less than R."""
    state = synced_state(2, project("a", 1), project("b", 2))
    assert json.loads(state.list_body())["revision"] == 2
    assert parse(state.snapshot_frame())[0]["id"] == 2
    state.apply_listing(listing(7, project("a", 1), project("b", 2)))
    assert state.revision == 7
    assert json.loads(state.list_body())["revision"] == state.revision
    assert parse(state.snapshot_frame())[0]["id"] == state.revision


def test_resync_events_can_each_be_resumed_from() -> None:
    """After a resync whose listing revision is also a put's revision, a client that
    received any prefix of the emitted events and resumes with the last id it saw (SSE
    semantics) must end up with the store's projects: no event may be missed."""
    state = synced_state(2, project("a", 1), project("b", 2))
    sub, _ = state.subscribe(None)
    # Meanwhile in the store: 'a' deleted at 3, then 'b' replaced at 4 (the last change).
    state.apply_listing(listing(4, project("b", 4)))
    events = queued(sub)
    assert sorted((kind, pid) for kind, _, pid in summary(events)) == [
        ("delete", "a"),
        ("put", "b"),
    ]
    for received in range(len(events) + 1):
        client = {"a": 1, "b": 2}  # what the client had: the snapshot at 2
        last_id = 2
        for event in events[:received]:
            _apply_to_client(client, event)
            last_id = event.get("id", last_id)
        _, first = state.subscribe(last_id)
        for event in parse(b"".join(first)):
            _apply_to_client(client, event)
        assert client == {"b": 4}, f"resumed at id {last_id} after {received} event(s)"


def _apply_to_client(client: dict[str, int], event: dict) -> None:
    if event.get("event") == "snapshot":
        client.clear()
        client.update({p["id"]: int(p["name"].split("@")[1]) for p in event["data"]["projects"]})
    elif event.get("event") == "project.put":
        client[event["data"]["project"]["id"]] = event["data"]["revision"]
    elif event.get("event") == "project.delete":
        client.pop(event["data"]["id"], None)


# --- the sync loop ----------------------------------------------------------------------


class FakeStore:
    """An in-memory store: the test changes it behind the watch's back, and feeds the
    watches items (a batch of changes, or an exception to raise)."""

    kind = "fake"
    value_limit = 1 << 20

    def __init__(self) -> None:
        self.projects: dict[str, StoredProject] = {}
        self.revision = 0
        self.available = True
        self.list_calls = 0
        self.watch_since: list[int] = []
        self.project_feed: asyncio.Queue[list[ProjectChange] | Exception] = asyncio.Queue()
        self.instance_feed: asyncio.Queue[dict[str, bytes] | Exception] = asyncio.Queue()
        self.register_failures = 0
        self.register_calls = 0
        self.registered: tuple[str, bytes] | None = None
        self.updates: list[bytes] = []
        self.deregistered = False

    # changes made "by someone else", not seen by the current watch
    def put_silently(self, project_id: str) -> ProjectChange:
        self.revision += 1
        stored = project(project_id, self.revision)
        self.projects[project_id] = stored
        return ProjectChange("put", project_id, self.revision, stored.value)

    def delete_silently(self, project_id: str) -> ProjectChange:
        self.revision += 1
        del self.projects[project_id]
        return ProjectChange("delete", project_id, self.revision)

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def check(self) -> None: ...

    async def current_revision(self) -> int | None:
        return self.revision

    async def list_projects(self) -> ProjectListing:
        self.list_calls += 1
        if not self.available:
            raise StoreUnavailable("connection refused")
        return ProjectListing(dict(self.projects), self.revision)

    async def changes_between(self, after: int, through: int) -> list[ProjectChange] | None:
        return None

    async def watch_projects(self, since: ProjectListing) -> AsyncIterator[list[ProjectChange]]:
        self.watch_since.append(since.revision)
        while True:
            item = await self.project_feed.get()
            if isinstance(item, Exception):
                raise item
            yield item

    async def register(self, node_id: str, value: bytes) -> None:
        self.register_calls += 1
        if self.register_failures:
            self.register_failures -= 1
            raise StoreUnavailable("no lease")
        self.registered = (node_id, value)
        await self.instance_feed.put({node_id: value})

    async def update_registration(self, value: bytes) -> None:
        self.updates.append(value)

    async def deregister(self) -> None:
        self.deregistered = True

    async def watch_instances(self) -> AsyncIterator[dict[str, bytes]]:
        while True:
            item = await self.instance_feed.get()
            if isinstance(item, Exception):
                raise item
            yield item


#: Between two checks of an in-process condition: cheap to test, and the loop under test
#: gets the time between them.
TICK = 0.005


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    async def sleep(self: Backoff) -> None:
        self.attempt += 1
        await asyncio.sleep(0.005)

    monkeypatch.setattr(Backoff, "sleep", sleep)


@contextlib.asynccontextmanager
async def running(
    store: FakeStore, *, registers: bool = True
) -> AsyncIterator[tuple[ClusterState, Syncer]]:
    """A Syncer over ``store``, which is also its registrar unless ``registers`` is False
    (a follower: a change source that is no member of the cluster)."""
    metrics = Metrics()
    state = ClusterState("self-node", metrics)
    info = InstanceInfo("self-node", "127.0.0.1:4122", "test", "2024-01-01T00:00:00Z")
    syncer = Syncer(
        store, state, info, metrics, registrar=store if registers else None, publish_seconds=0.01
    )
    syncer.start()
    try:
        yield state, syncer
    finally:
        await syncer.stop()


async def test_syncer_first_sync_then_watch() -> None:
    store = FakeStore()
    store.put_silently("a")
    async with running(store) as (state, _):
        await asyncio.wait_for(state.synced.wait(), 2)
        assert state.store_error is None
        assert set(state.projects) == {"a"}
        sub, _ = state.subscribe(state.revision)
        await store.project_feed.put([store.put_silently("b")])
        await eventually_async(lambda: state.revision == 2, 3, "state.revision == 2", TICK)
        assert summary(queued(sub)) == [("put", 2, "b")]
        assert store.watch_since == [1]


async def test_a_watch_reset_relists_without_reporting_a_store_error() -> None:
    """The store answers: readiness does not flap while the watch starts again."""
    store = FakeStore()
    store.put_silently("a")
    async with running(store) as (state, _):
        await asyncio.wait_for(state.synced.wait(), 2)
        reported: list[str | None] = []
        set_store_error = state.set_store_error

        def spy(error: str | None) -> None:
            reported.append(error)
            set_store_error(error)

        state.set_store_error = spy  # type: ignore[method-assign]
        store.put_silently("b")
        await store.project_feed.put(WatchReset("hidden behind the gateway's writes"))
        await eventually_async(lambda: "b" in state.projects, 3, "b applied", TICK)
        assert all(error is None for error in reported)


@pytest.mark.parametrize("failure", [WatchReset("compacted"), StoreUnavailable("reset by peer")])
async def test_syncer_relists_after_a_watch_error_and_emits_the_difference(
    failure: Exception,
) -> None:
    store = FakeStore()
    for name in ("a", "b", "c"):
        store.put_silently(name)
    async with running(store) as (state, _):
        await asyncio.wait_for(state.synced.wait(), 2)
        sub, _ = state.subscribe(None)
        queued(sub)  # drop anything queued so far
        # Changes the dead watch never delivered.
        store.delete_silently("a")  # 4
        store.put_silently("b")  # 5
        store.put_silently("d")  # 6
        store.available = False
        await store.project_feed.put(failure)

        await eventually_async(
            lambda: store.list_calls >= 4, 3, "store.list_calls >= 4", TICK
        )  # retried while failing
        assert state.store_error is not None
        # A sentence for /readyz, without the exception's class name.
        assert "StoreUnavailable" not in state.store_error
        assert state.store_error == "connection refused"
        assert state.revision == 3  # keeps serving what it applied
        assert set(state.projects) == {"a", "b", "c"}

        store.available = True
        await eventually_async(
            lambda: state.store_error is None, 3, "state.store_error is None", TICK
        )
        assert summary(queued(sub)) == [("delete", 4, "a"), ("put", 5, "b"), ("put", 6, "d")]
        assert {pid: p.revision for pid, p in state.projects.items()} == {"b": 5, "c": 3, "d": 6}
        assert state.revision == 6
        assert store.watch_since == [3, 6]

        # And it carries on watching.
        await store.project_feed.put([store.put_silently("e")])
        await eventually_async(lambda: state.revision == 7, 3, "state.revision == 7", TICK)
        assert summary(queued(sub)) == [("put", 7, "e")]


async def test_syncer_store_error_is_named_while_the_first_list_fails() -> None:
    store = FakeStore()
    store.available = False
    async with running(store) as (state, _):
        await eventually_async(lambda: store.list_calls >= 2, 3, "store.list_calls >= 2", TICK)
        assert not state.synced.is_set()
        assert state.store_error is not None
        store.available = True
        await asyncio.wait_for(state.synced.wait(), 2)
        assert state.store_error is None


async def test_syncer_retries_registration_until_it_succeeds() -> None:
    store = FakeStore()
    store.register_failures = 3
    async with running(store) as (state, _):
        await eventually_async(
            lambda: store.registered is not None, 3, "store.registered is not None", TICK
        )
        assert store.register_calls == 4
        node_id, value = store.registered  # type: ignore[misc]
        assert node_id == "self-node"
        assert orjson.loads(value) == {
            "id": "self-node",
            "addr": "127.0.0.1:4122",
            "version": "test",
            "startedAt": "2024-01-01T00:00:00Z",
            "appliedRevision": 0,
        }
        # The registration feeds the peer list.
        await eventually_async(lambda: len(state.peers) == 1, 3, "len(state.peers) == 1", TICK)
        assert state.peers[0]["self"] is True
    assert store.deregistered is True  # stop() removes the instance key


async def test_syncer_publishes_its_applied_revision() -> None:
    store = FakeStore()
    async with running(store) as (state, _):
        await eventually_async(
            lambda: store.registered is not None and state.synced.is_set(),
            3,
            "store.registered is not None and state.synced.is_set()",
            TICK,
        )
        await store.project_feed.put([store.put_silently("a")])
        await eventually_async(lambda: bool(store.updates), 3, "bool(store.updates)", TICK)
        assert orjson.loads(store.updates[-1])["appliedRevision"] == 1


async def test_syncer_stop_without_registration_does_not_deregister() -> None:
    store = FakeStore()
    store.register_failures = 10**6
    async with running(store):
        await eventually_async(
            lambda: store.register_calls >= 2, 3, "store.register_calls >= 2", TICK
        )
    assert store.deregistered is False


async def test_syncer_clears_the_store_error_once_the_instance_watch_recovers() -> None:
    """The instances watch sets ``store_error`` when it fails (readyz answers 503); once
    it works again, and the projects watch never failed, the instance is ready again."""
    store = FakeStore()
    async with running(store) as (state, _):
        await eventually_async(
            lambda: state.synced.is_set() and len(state.peers) == 1,
            3,
            "state.synced.is_set() and len(state.peers) == 1",
            TICK,
        )
        assert state.store_error is None
        await store.instance_feed.put(StoreUnavailable("instances watch broke"))
        await eventually_async(
            lambda: state.store_error is not None, 3, "state.store_error is not None", TICK
        )
        assert state.store_error is not None and "instances watch broke" in state.store_error
        # The instances watch works again and delivers a changed peer list.
        await store.instance_feed.put({"self-node": record("self-node", 0), "x": record("x")})
        await eventually_async(lambda: len(state.peers) == 2, 3, "len(state.peers) == 2", TICK)
        await eventually_async(
            lambda: state.store_error is None, 1, "state.store_error is None", TICK
        )


async def test_a_source_that_is_no_registrar_is_synced_and_never_registered() -> None:
    store = FakeStore()
    store.put_silently("a")
    async with running(store, registers=False) as (state, _):
        await asyncio.wait_for(state.synced.wait(), 2)
        await store.instance_feed.put({"upstream-a": record("upstream-a", 1)})
        await eventually_async(
            lambda: [p["id"] for p in state.peers] == ["upstream-a"],
            3,
            "[p['id'] for p in state.peers] == ['upstream-a']",
            TICK,
        )
        assert state.peers[0]["self"] is False
        await store.project_feed.put([store.put_silently("b")])
        await eventually_async(lambda: state.revision == 2, 3, "state.revision == 2", TICK)
    assert store.register_calls == 0
    assert store.updates == []
    assert store.deregistered is False


# --- scoped streams -------------------------------------------------------------------


def test_a_scoped_snapshot_holds_only_its_projects_at_the_clusters_revision() -> None:
    from app.access import ProjectScope, StreamScope

    state = synced_state(5, project("shop", 2), project("shop-eu", 4), project("blog", 5))
    sees = StreamScope(ProjectScope.parse(["shop*"]))
    _, first = state.subscribe(None, sees)
    [snapshot] = parse(b"".join(first))
    assert snapshot["event"] == "snapshot" and snapshot["id"] == 5
    assert [p["id"] for p in snapshot["data"]["projects"]] == ["shop", "shop-eu"]
    assert snapshot["data"]["revisions"] == {"shop": 2, "shop-eu": 4}
    assert snapshot["data"]["revision"] == 5
    # Narrowed further by ?projects=.
    narrowed = StreamScope(ProjectScope.parse(["shop*"]), frozenset({"shop-eu", "blog"}))
    [snapshot] = parse(b"".join(state.subscribe(None, narrowed)[1]))
    assert snapshot["data"]["revisions"] == {"shop-eu": 4}
    # The unscoped snapshot is untouched, and a change rebuilds the scoped one.
    assert len(parse(state.snapshot_frame())[0]["data"]["projects"]) == 3
    state.apply_changes([delete("shop", 6)])
    [snapshot] = parse(b"".join(state.subscribe(None, sees)[1]))
    assert snapshot["data"]["revisions"] == {"shop-eu": 4} and snapshot["id"] == 6


def test_a_scoped_stream_gets_its_projects_changes_and_resumes_with_only_them() -> None:
    from app.access import ProjectScope, StreamScope

    state = synced_state(0)
    sees = StreamScope(ProjectScope.parse(["shop"]))
    live, _ = state.subscribe(None, sees)
    everyone, _ = state.subscribe(None)
    state.apply_changes([put("shop", 1), put("blog", 2), put("shop", 3), delete("shop", 4)])
    state.apply_changes([delete("blog", 5)])
    expected = [("put", 1, "shop"), ("put", 3, "shop"), ("delete", 4, "shop")]
    assert summary(queued(live)) == expected
    assert len(summary(queued(everyone))) == 5
    # A resume replays only its projects, from any point, and misses none of them.
    for last_event_id in range(6):
        _, first = state.subscribe(last_event_id, sees)
        replayed = summary(parse(b"".join(first)))
        assert replayed == [event for event in expected if event[1] > last_event_id]
