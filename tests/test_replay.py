"""Resumes from before the in-memory history, replayed from the change source
(``app.sync.replay``, ``ClusterState.open_stream``) over a fake source with a change log.

The real etcd's side is in test_store_etcd.py, whole gateways in
test_restart_replay.py."""

from __future__ import annotations

import asyncio

import orjson

from app.metrics import Metrics
from app.stores.base import ETCD_VALUE_LIMIT, ProjectChange, StoreUnavailable
from app.sync import ClusterState
from app.sync.intake import Intake
from app.sync.replay import StoreReplay
from tests.test_sync import delete, listing, parse, project, put, queued, summary

LIMIT = ETCD_VALUE_LIMIT


class LogSource:
    """Every change ever made, replayed on demand; reads wait for ``gate`` when set."""

    def __init__(self, log: list[ProjectChange]) -> None:
        self.log = log
        self.reads: list[tuple[int, int]] = []
        self.gate: asyncio.Event | None = None
        self.compacted = False
        self.error: Exception | None = None

    async def changes_between(self, after: int, through: int) -> list[ProjectChange] | None:
        self.reads.append((after, through))
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        if self.compacted:
            return None
        return [change for change in self.log if after < change.revision <= through]


def restarted(
    source: LogSource, floor: int, history_size: int = 100, timeout: float = 5.0
) -> ClusterState:
    """An instance that started at ``floor`` with the log applied up to it."""
    state = ClusterState("self-node", Metrics(), history_size=history_size)
    applied = ClusterState("old", Metrics())
    applied.apply_listing(listing(0))
    applied.apply_changes(
        Intake(LIMIT, Metrics()).changes(c for c in source.log if c.revision <= floor)
    )
    state.apply_listing(listing(floor, *applied.projects.values()))
    state.replay = StoreReplay(source, LIMIT, state.metrics, timeout=timeout)
    return state


def live_frames(log: list[ProjectChange], after: int, upto: int) -> bytes:
    """The project frames a stream open since ``after`` got through ``upto``: the live path
    (intake, then the applied state) of an instance that never restarted."""
    state = ClusterState("live", Metrics())
    intake = Intake(LIMIT, Metrics())
    state.apply_listing(intake.listing(listing(0)))
    state.apply_changes(intake.changes(c for c in log if c.revision <= after))
    subscription, _ = state.subscribe(None)
    state.apply_changes(intake.changes(c for c in log if after < c.revision <= upto))
    frames = b"".join(frame for _, frame in subscription._frames)
    return frames


def resumed(first: list[bytes]) -> bytes:
    """The project frames among a resume's first frames."""
    return b"".join(f for f in first if f.startswith((b"event: project.",)))


def resumes(state: ClusterState) -> dict[str, float]:
    [metric] = state.metrics.sse_resumes.collect()
    samples = metric.samples
    return {s.labels["served"]: s.value for s in samples if s.name.endswith("_total")}


LOG = [
    put("a", 2),
    put("b", 3),
    put("a", 4),  # an intermediate value of a
    delete("b", 6),
    put("c", 7),
    put("a", 9),
]


async def test_a_resume_from_before_the_restart_gets_the_missed_changes_not_a_snapshot() -> None:
    source = LogSource([*LOG, put("c", 12), delete("a", 13)])
    state = restarted(source, floor=10)
    state.apply_changes([put("c", 12), delete("a", 13)])  # live after the restart
    subscription, first = await state.open_stream(3)
    events = parse(b"".join(first))
    assert "snapshot" not in [event.get("event") for event in events]
    assert events[0] == {"retry": 3000}
    assert summary(events) == [
        ("put", 4, "a"),
        ("delete", 6, "b"),
        ("put", 7, "c"),
        ("put", 9, "a"),
        ("put", 12, "c"),
        ("delete", 13, "a"),
    ]
    assert events[-1]["event"] == "peers"
    assert resumed(first) == live_frames(source.log, 3, 13)  # byte for byte
    assert source.reads == [(3, 10)]
    # Live frames follow without a gap or a repeat.
    state.apply_changes([put("d", 14)])
    assert summary(queued(subscription)) == [("put", 14, "d")]
    assert resumes(state) == {"store": 1}


async def test_a_scoped_stream_gets_only_its_projects() -> None:
    source = LogSource([*LOG, put("c", 12), put("a", 13)])
    state = restarted(source, floor=10)
    state.apply_changes([put("c", 12), put("a", 13)])
    _, first = await state.open_stream(1, frozenset({"a"}).__contains__)
    assert summary(parse(b"".join(first))) == [
        ("put", 2, "a"),
        ("put", 4, "a"),
        ("put", 9, "a"),
        ("put", 13, "a"),
    ]


async def test_values_pass_the_same_check_as_the_live_path() -> None:
    log = [
        put("x", 2),
        put("y", 3),
        ProjectChange("put", "x", 4, b"not json"),  # served x: becomes its delete
        ProjectChange("put", "x", 5, b"[1]"),  # x no longer served: nothing
        ProjectChange("put", "Bad/Key", 6, b"{}"),  # never a project: nothing
        ProjectChange("put", "z", 7, b'{"name": "no id",\n "n": 1}'),  # served compact
        put("x", 8),
        put("w", 9),
    ]
    source = LogSource(log)
    state = restarted(source, floor=9)
    _, first = await state.open_stream(3)
    assert resumed(first) == live_frames(log, 3, 9)
    assert summary(parse(resumed(first))) == [
        ("delete", 4, "x"),
        ("put", 7, "z"),
        ("put", 8, "x"),
        ("put", 9, "w"),
    ]
    assert b'{"id":"z","name":"no id","n":1}' in resumed(first)


async def test_a_range_the_store_no_longer_holds_gets_a_snapshot() -> None:
    source = LogSource(LOG)
    source.compacted = True
    state = restarted(source, floor=10)
    _, first = await state.open_stream(3)
    [snapshot] = parse(b"".join(first))
    assert snapshot["event"] == "snapshot" and snapshot["id"] == 10
    # An older id cannot be replayed either: the store is not asked again.
    _, first = await state.open_stream(2)
    assert parse(b"".join(first))[0]["event"] == "snapshot"
    assert source.reads == [(3, 10)]
    assert resumes(state) == {"snapshot": 2}


async def test_a_store_that_fails_or_does_not_answer_gets_a_snapshot() -> None:
    source = LogSource(LOG)
    source.error = StoreUnavailable("connection refused")
    state = restarted(source, floor=10)
    _, first = await state.open_stream(3)
    assert parse(b"".join(first))[0]["event"] == "snapshot"
    # A failure is not remembered: the next resume asks again, and is answered.
    source.error = None
    _, first = await state.open_stream(3)
    assert summary(parse(b"".join(first)))[0] == ("put", 4, "a")

    silent = LogSource(LOG)
    silent.gate = asyncio.Event()  # never set
    state = restarted(silent, floor=10, timeout=0.05)
    _, first = await state.open_stream(3)
    assert parse(b"".join(first))[0]["event"] == "snapshot"


async def test_more_changes_than_the_history_holds_get_a_snapshot() -> None:
    log = [put("a", revision) for revision in range(1, 21)]
    state = restarted(LogSource(log), floor=20, history_size=5)
    _, first = await state.open_stream(14)  # 6 changes
    assert parse(b"".join(first))[0]["event"] == "snapshot"
    _, first = await state.open_stream(15)  # 5 changes, from the range already read
    assert [event[1] for event in summary(parse(b"".join(first)))] == [16, 17, 18, 19, 20]


async def test_concurrent_resumes_share_one_read_of_the_store() -> None:
    source = LogSource(LOG)
    source.gate = asyncio.Event()
    state = restarted(source, floor=10)
    waiting = [asyncio.create_task(state.open_stream(after)) for after in (3, 3, 4, 6, 9) * 20]
    await asyncio.sleep(0)
    source.gate.set()
    opened = await asyncio.gather(*waiting)
    assert source.reads == [(3, 10)]
    assert summary(parse(b"".join(opened[3][1]))) == [("put", 7, "c"), ("put", 9, "a")]
    # What was read serves later resumes it covers; an older one reads again.
    await state.open_stream(5)
    assert source.reads == [(3, 10)]
    _, first = await state.open_stream(1)
    assert source.reads == [(3, 10), (1, 10)]
    assert summary(parse(b"".join(first)))[0] == ("put", 2, "a")
    assert resumes(state) == {"store": 102}


async def test_a_client_that_leaves_does_not_cancel_the_shared_read() -> None:
    source = LogSource(LOG)
    source.gate = asyncio.Event()
    state = restarted(source, floor=10)
    leaving = asyncio.create_task(state.open_stream(3))
    staying = asyncio.create_task(state.open_stream(3))
    await asyncio.sleep(0)
    leaving.cancel()
    source.gate.set()
    _, first = await staying
    assert summary(parse(b"".join(first)))[0] == ("put", 4, "a")


async def test_the_history_moving_on_during_the_read_reads_again() -> None:
    later = [put("d", 11), put("d", 12), put("d", 13), put("d", 14)]
    source = LogSource([*LOG, *later])
    source.gate = asyncio.Event()
    state = restarted(source, floor=10, history_size=3)
    resuming = asyncio.create_task(state.open_stream(6))
    await asyncio.sleep(0)
    state.apply_changes(later)  # the history drops 11: its floor is 11 now
    source.gate.set()
    _, first = await resuming
    assert source.reads == [(6, 10), (6, 11)]
    assert resumed(first) == live_frames(source.log, 6, 14)


async def test_without_a_replay_source_an_old_resume_gets_a_snapshot() -> None:
    state = ClusterState("self-node", Metrics())
    state.apply_listing(listing(10, project("a", 9)))
    _, first = await state.open_stream(3)
    assert parse(b"".join(first))[0]["event"] == "snapshot"
    # From the history, or new: as before.
    _, first = await state.open_stream(10)
    assert summary(parse(b"".join(first))) == []
    _, first = await state.open_stream(None)
    assert orjson.loads(first[0].split(b"data: ")[1])["revision"] == 10
    assert resumes(state) == {"snapshot": 1, "history": 1}
