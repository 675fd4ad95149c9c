"""The sync loop with the value gate, the cache file and the store-revision question,
over the in-memory store of tests.test_sync (a fake store for sync logic only)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from app.metrics import Metrics
from app.stores.base import ProjectChange, StoredProject, StoreUnavailable
from app.sync import ClusterState, InstanceInfo, Syncer
from app.sync.cache import CacheFile
from app.sync.store_revision import StoreRevision
from tests.eventually import eventually_async
from tests.test_sync import TICK, FakeStore, fast_backoff, queued, summary

__all__ = ["fast_backoff"]  # the autouse fixture, imported to apply here too


@contextlib.asynccontextmanager
async def running(
    store: FakeStore, cache: CacheFile | None = None
) -> AsyncIterator[tuple[ClusterState, Syncer]]:
    metrics = Metrics()
    state = ClusterState("self-node", metrics)
    info = InstanceInfo("self-node", "127.0.0.1:4122", "test", "2024-01-01T00:00:00Z")
    syncer = Syncer(store, state, info, metrics, registrar=store, value_limit=1024, cache=cache)
    syncer.start()
    try:
        yield state, syncer
    finally:
        await syncer.stop()


def raw_put(store: FakeStore, key: str, value: bytes) -> ProjectChange:
    store.revision += 1
    store.projects[key] = StoredProject(key, value, store.revision)
    return ProjectChange("put", key, store.revision, value)


async def test_bad_values_are_never_applied_and_a_served_project_turned_bad_is_deleted() -> None:
    store = FakeStore()
    raw_put(store, "shop", b'{\n "id": "shop"\n}')
    raw_put(store, "UPPER", b"{}")
    async with running(store) as (state, syncer):
        await asyncio.wait_for(state.synced.wait(), 2)
        assert {k: p.value for k, p in state.projects.items()} == {"shop": b'{"id":"shop"}'}
        assert set(syncer.intake.skipped) == {"UPPER"}
        sub, _ = state.subscribe(state.revision)
        await store.project_feed.put([raw_put(store, "shop", b"[]"), raw_put(store, "a/b", b"{}")])
        await eventually_async(
            lambda: state.revision == 4, 3, "state.revision == 4", TICK
        )  # the batch's last, though not served
        assert summary(queued(sub)) == [("delete", 3, "shop")]
        assert state.projects == {}
        assert state.list_body() == b'{"projects":[],"revision":4}'
        await store.project_feed.put([raw_put(store, "shop", b'{"name": "back"}')])
        await eventually_async(lambda: state.revision == 5, 3, "state.revision == 5", TICK)
        assert orjson.loads(state.projects["shop"].value) == {"id": "shop", "name": "back"}
        assert set(syncer.intake.skipped) == {"UPPER", "a/b"}


async def test_the_cache_is_served_while_the_store_is_down_then_the_difference_emitted(
    tmp_path: Path,
) -> None:
    cache = CacheFile(tmp_path / "cache.json", "prod", "fake")
    cached = [StoredProject("a", b'{"id":"a"}', 1), StoredProject("b", b'{"id":"b"}', 2)]
    cache.write(cache.encode([*cached, StoredProject("BAD", b"{}", 2)], 2))
    store = FakeStore()
    store.available = False
    async with running(store, cache) as (state, syncer):
        await asyncio.wait_for(state.synced.wait(), 2)
        assert {k: p.revision for k, p in state.projects.items()} == {"a": 1, "b": 2}
        assert state.revision == 2 and set(syncer.intake.skipped) == {"BAD"}
        assert state.store_error and "serving the cache file" in state.store_error
        sub, _ = state.subscribe(2)

        store.projects = {p.id: p for p in cached}
        store.revision = 2
        store.delete_silently("a")  # 3
        store.put_silently("c")  # 4
        store.available = True
        await eventually_async(
            lambda: state.store_error is None, 3, "state.store_error is None", TICK
        )
        assert summary(queued(sub)) == [("delete", 3, "a"), ("put", 4, "c")]
        await eventually_async(
            lambda: cache.read().revision == 4, 3, "cache.read().revision == 4", TICK
        )  # within the write delay
        assert set(cache.read().projects) == {"b", "c"}


async def test_without_a_usable_cache_file_it_waits_for_the_store(tmp_path: Path) -> None:
    store = FakeStore()
    store.available = False
    async with running(store, CacheFile(tmp_path / "absent.json", "prod", "fake")) as (state, _):
        await eventually_async(lambda: store.list_calls >= 2, 3, "store.list_calls >= 2", TICK)
        assert not state.synced.is_set()
        assert state.store_error and "cache" not in state.store_error


# --- the store's revision ------------------------------------------------------------------


class Answers:
    """``current_revision`` answers, each released by the test."""

    def __init__(self) -> None:
        self.asked = 0
        self.pending: list[asyncio.Future[int]] = []

    async def current_revision(self) -> int:
        self.asked += 1
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        return await future


async def test_requests_share_questions_and_the_answer_is_remembered() -> None:
    answers = Answers()
    revision = StoreRevision(answers, timeout=1)  # type: ignore[arg-type]
    calls = [asyncio.create_task(revision.beyond(r)) for r in (5, 50, 500, 5000)]
    await eventually_async(lambda: answers.asked == 1, 3, "answers.asked == 1", TICK)
    answers.pending[0].set_result(40)
    # The first asked; the others came while its question was on its way, so one more
    # question, asked after them all, must confirm before they are refused.
    await eventually_async(lambda: answers.asked == 2, 3, "answers.asked == 2", TICK)
    answers.pending[1].set_result(40)
    assert await asyncio.gather(*calls) == [None, 40, 40, 40]
    assert answers.asked == 2
    assert await revision.beyond(30) is None and answers.asked == 2  # known: no question


async def test_an_answer_older_than_the_request_never_refuses_it() -> None:
    """A question already on its way may predate the write: ask again before a 400."""
    answers = Answers()
    revision = StoreRevision(answers, timeout=1)  # type: ignore[arg-type]
    early = asyncio.create_task(revision.beyond(100))
    await eventually_async(lambda: answers.asked == 1, 3, "answers.asked == 1", TICK)
    late = asyncio.create_task(revision.beyond(41))  # written at 41 after the question
    await asyncio.sleep(0)
    answers.pending[0].set_result(40)
    await eventually_async(lambda: answers.asked == 2, 3, "answers.asked == 2", TICK)
    answers.pending[1].set_result(41)
    assert await early == 40
    assert await late is None


async def test_a_store_that_cannot_answer_refuses_nothing() -> None:
    class Down:
        async def current_revision(self) -> int:
            raise StoreUnavailable("refused")

    assert await StoreRevision(Down(), timeout=1).beyond(10**9) is None  # type: ignore[arg-type]


async def test_a_store_behind_the_cache_file_is_said_in_one_error_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = CacheFile(tmp_path / "cache.json", "prod", "fake")
    cache.write(cache.encode([StoredProject("a", b'{"id":"a"}', 9)], 9))
    store = FakeStore()
    store.available = False
    async with running(store, cache) as (state, _):
        await asyncio.wait_for(state.synced.wait(), 2)
        store.put_silently("b")  # a store at revision 1, behind the file's 9
        store.available = True
        await eventually_async(
            lambda: state.store_error is None, 3, "state.store_error is None", TICK
        )
    assert any("behind the cache file's 9" in r.getMessage() for r in caplog.records)
