"""What only the local YAML store does: its file, its lock, its change log.

The Store contract it shares with etcd and Consul is in test_store_contract.py.
"""

# The tests read and write small files in tmp_path directly, blocking or not.
# ruff: noqa: ASYNC240

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import yaml

from app.stores import atomic, local
from app.stores.base import (
    ProjectChange,
    ProjectListing,
    RevisionMismatch,
    StoreConfigError,
    ValueTooLarge,
    WatchReset,
)
from app.stores.local import LocalStore


def value(project_id: str, **extra: object) -> bytes:
    return orjson.dumps({"id": project_id, "name": project_id.upper(), **extra})


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "config.yaml"


@pytest.fixture
async def store(path: Path) -> AsyncIterator[LocalStore]:
    opened = LocalStore(path)
    await opened.open()
    yield opened
    await opened.close()


async def reopen(store: LocalStore) -> LocalStore:
    await store.close()
    again = LocalStore(store.path)
    await again.open()
    return again


def revisions(listing: ProjectListing) -> dict[str, int]:
    return {pid: p.revision for pid, p in listing.projects.items()}


# --- writes --------------------------------------------------------------------------------


async def test_empty_store(store: LocalStore, path: Path) -> None:
    listing = await store.list_projects()
    assert listing.revision == 0
    assert dict(listing.projects) == {}
    assert not path.exists()  # nothing written until the first change


async def test_failed_condition_writes_nothing(store: LocalStore, path: Path) -> None:
    await store.put_project("a", value("a"))
    before = path.read_bytes()
    with pytest.raises(RevisionMismatch):
        await store.put_project("a", value("a", name="x"), expected_revision=9)
    with pytest.raises(RevisionMismatch):
        await store.delete_project("a", expected_revision=9)
    assert path.read_bytes() == before
    assert (await store.list_projects()).revision == 1


async def test_the_value_limit_is_configurable(path: Path) -> None:
    store = LocalStore(path, value_limit=1024)
    await store.open()
    try:
        padding = 1024 - len(value("a", pad=""))
        exact = value("a", pad="x" * padding)
        assert len(exact) == 1024
        assert (await store.put_project("a", exact)).revision == 1
        with pytest.raises(ValueTooLarge) as caught:
            await store.put_project("a", value("a", pad="x" * (padding + 1)))
        assert (caught.value.size, caught.value.limit) == (1025, 1024)
        assert (await store.list_projects()).revision == 1
    finally:
        await store.close()


# --- the file ---------------------------------------------------------------------------


async def test_revision_counter_survives_a_reopen(store: LocalStore) -> None:
    await store.put_project("a", value("a"))  # 1
    await store.put_project("b", value("b"))  # 2
    await store.delete_project("a")  # 3
    store = await reopen(store)
    try:
        listing = await store.list_projects()
        assert listing.revision == 3
        assert revisions(listing) == {"b": 2}
        assert orjson.loads(listing.projects["b"].value) == {"id": "b", "name": "B"}
        assert (await store.put_project("c", value("c"))).revision == 4
        await store.delete_project("c")  # 5: a deletion moves the counter too
        store = await reopen(store)
        assert (await store.list_projects()).revision == 5
        with pytest.raises(RevisionMismatch):  # revisions are kept per project
            await store.put_project("b", value("b"), expected_revision=1)
        assert (await store.put_project("b", value("b"), expected_revision=2)).revision == 6
    finally:
        await store.close()


async def test_file_keeps_the_space_cloud_shape(store: LocalStore, path: Path) -> None:
    await store.put_project("todo", value("todo", secret="s", modules={"db": {"on": True}}))
    await store.put_project("blog", value("blog"))
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict)
    assert document["projects"] == [
        {"id": "todo", "name": "TODO", "secret": "s", "modules": {"db": {"on": True}}},
        {"id": "blog", "name": "BLOG"},
    ]
    assert document["revision"] == 2


async def test_no_temp_files_left_behind(store: LocalStore, path: Path) -> None:
    for n in range(5):
        await store.put_project(f"p{n}", value(f"p{n}"))
    await store.delete_project("p0")
    assert sorted(os.listdir(path.parent)) == ["config.yaml", "config.yaml.lock"]


async def test_failed_write_changes_nothing(
    store: LocalStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.put_project("a", value("a"))
    before = path.read_bytes()

    def broken_replace(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(OSError):
        await store.put_project("b", value("b"))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == ["config.yaml", "config.yaml.lock"]
    listing = await store.list_projects()
    assert (set(listing.projects), listing.revision) == ({"a"}, 1)
    assert (await store.put_project("b", value("b"))).revision == 2


async def test_project_added_by_hand_is_loaded(path: Path) -> None:
    path.write_text(
        "revision: 7\n"
        "projects:\n"
        "  - id: old\n"
        "    name: Old\n"
        "  - id: handmade\n"
        "    name: By hand\n"
        "    modules:\n"
        "      db: {enabled: true}\n"
        "revisions:\n"
        "  old: 4\n"
    )
    store = LocalStore(path)
    await store.open()
    try:
        listing = await store.list_projects()
        assert listing.revision == 7
        assert revisions(listing) == {"old": 4, "handmade": 7}
        assert orjson.loads(listing.projects["handmade"].value) == {
            "id": "handmade",
            "name": "By hand",
            "modules": {"db": {"enabled": True}},
        }
        assert (await store.put_project("handmade", value("handmade"), 7)).revision == 8
    finally:
        await store.close()


async def test_space_cloud_file_without_revisions_can_be_updated_conditionally(
    path: Path,
) -> None:
    """A plain Space Cloud ``config.yaml`` (``projects: [...]``, no revision of ours) is
    loaded; each project gets a real revision (> 0, since 0 means "absent"), so a write
    conditioned on the revision the gateway reports for it (its ETag) succeeds."""
    path.write_text("projects:\n  - id: todo\n    name: Todo\n    secret: s\n")
    store = LocalStore(path)
    await store.open()
    try:
        listing = await store.list_projects()
        current = listing.projects["todo"].revision
        assert current > 0
        result = await store.put_project("todo", value("todo"), expected_revision=current)
        assert result.revision > current
    finally:
        await store.close()


@pytest.mark.parametrize(
    "text",
    [
        "projects: [\n",  # not YAML
        "- a\n- b\n",  # not a mapping
        "projects: {id: a}\n",  # projects not a list
        "tokens: [a, b]\n",  # tokens not a mapping
        "tokens: {1: {id: x}}\n",  # a token id that is not a string
    ],
)
async def test_invalid_file_is_a_config_error(path: Path, text: str) -> None:
    path.write_text(text)
    store = LocalStore(path)
    with pytest.raises(StoreConfigError) as caught:
        await store.open()
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)  # one line for the command line
    # A failed open releases the lock.
    path.write_text("projects: []\n")
    await store.open()
    await store.close()


async def test_entries_without_a_string_id_go_up_under_their_position(path: Path) -> None:
    """A hand-edited entry the store cannot key does not stop the instance: it goes up
    under a key no project id can take, for the sync layer to skip and report, and a
    later write keeps it in the file as it was."""
    path.write_text("projects:\n  - id: ok\n  - name: no id\n  - id: 5\n  - just text\n")
    store = LocalStore(path)
    await store.open()
    listing = await store.list_projects()
    assert {key: p.value for key, p in listing.projects.items()} == {
        "ok": b'{"id":"ok"}',
        "projects[1]": b'{"name":"no id"}',
        "projects[2]": b'{"id":5}',
        "projects[3]": b'"just text"',
    }
    await store.put_project("new", b'{"id":"new"}')
    await store.close()
    document = yaml.safe_load(path.read_text())
    assert {"name": "no id"} in document["projects"] and "just text" in document["projects"]


async def test_bad_revision_in_the_file_is_a_config_error(path: Path) -> None:
    """A hand-edited file with a non-numeric revision is refused with a clear
    StoreConfigError (one line, exit 2 on the command line), not a ValueError."""
    path.write_text("revision: seven\nprojects: []\n")
    with pytest.raises(StoreConfigError):
        await LocalStore(path).open()


async def test_token_records_live_in_the_file_beside_projects(store: LocalStore) -> None:
    record = {"id": "0123456789abcdef", "name": "ci", "secretHash": "ab" * 32}
    await store.put_token("0123456789abcdef", orjson.dumps(record))
    await store.put_project("p", value("p"))  # a project write keeps the tokens
    document = yaml.safe_load(store.path.read_text())
    assert document["tokens"] == {"0123456789abcdef": record}
    assert [project["id"] for project in document["projects"]] == ["p"]
    again = await reopen(store)
    try:
        assert await again.list_tokens() == {"0123456789abcdef": orjson.dumps(record)}
        assert await again.delete_token("0123456789abcdef") is True
        assert "tokens" not in yaml.safe_load(store.path.read_text())
    finally:
        await again.close()


async def test_empty_file_is_an_empty_store(path: Path) -> None:
    path.write_text("")
    store = LocalStore(path)
    await store.open()
    try:
        assert (await store.list_projects()).revision == 0
    finally:
        await store.close()


async def test_second_store_on_the_same_file_is_refused(store: LocalStore, path: Path) -> None:
    await store.put_project("a", value("a"))
    second = LocalStore(path)
    with pytest.raises(StoreConfigError, match="in use"):
        await second.open()
    # The first keeps working.
    assert (await store.put_project("b", value("b"))).revision == 2
    await store.close()
    await second.open()
    try:
        assert revisions(await second.list_projects()) == {"a": 1, "b": 2}
    finally:
        await second.close()


async def test_lock_file_in_a_missing_folder(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "deeper" / "config.yaml")
    await store.open()
    try:
        assert (await store.put_project("a", value("a"))).revision == 1
    finally:
        await store.close()


# --- watches ----------------------------------------------------------------------------


async def collect(store: LocalStore, since: ProjectListing, count: int) -> list[ProjectChange]:
    changes: list[ProjectChange] = []
    async for batch in store.watch_projects(since):
        changes.extend(batch)
        if len(changes) >= count:
            break
    return changes


async def test_watch_from_an_older_listing_catches_up(store: LocalStore) -> None:
    since = await store.list_projects()
    for n in range(3):
        await store.put_project(f"p{n}", value(f"p{n}"))
    changes = await asyncio.wait_for(collect(store, since, 3), 2)
    assert [c.revision for c in changes] == [1, 2, 3]


async def test_watch_that_fell_behind_raises_watch_reset(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "CHANGE_LOG_SIZE", 3)
    store = LocalStore(path)
    await store.open()
    try:
        for n in range(5):
            await store.put_project(f"p{n}", value(f"p{n}"))  # log keeps 3, 4, 5
        with pytest.raises(WatchReset):
            await asyncio.wait_for(collect(store, ProjectListing({}, 1), 1), 2)
        # From revision 2 on, the log still holds everything.
        changes = await asyncio.wait_for(collect(store, ProjectListing({}, 2), 3), 2)
        assert [c.revision for c in changes] == [3, 4, 5]
    finally:
        await store.close()


async def test_watch_from_a_listing_before_a_reopen_raises_watch_reset(
    store: LocalStore,
) -> None:
    await store.put_project("a", value("a"))
    old = await store.list_projects()
    await store.put_project("b", value("b"))
    store = await reopen(store)
    try:
        await store.put_project("c", value("c"))
        with pytest.raises(WatchReset):
            await asyncio.wait_for(collect(store, old, 1), 2)
    finally:
        await store.close()


# --- versions ------------------------------------------------------------------------------


async def test_the_file_keeps_versions_and_refuses_a_broken_history(path: Path) -> None:
    store = LocalStore(path)
    await store.open()
    put = await store.put_project("a", value("a"))
    await store.close()
    document = yaml.safe_load(path.read_text())
    assert document["history"]["a"][0]["revision"] == put.revision
    assert orjson.loads(document["history"]["a"][0]["project"]) == orjson.loads(value("a"))

    for broken in ({"a": "x"}, {"a": [{"revision": "1", "op": "put"}]}, {"a": [{"op": "x"}]}):
        path.write_text(yaml.safe_dump({**document, "history": broken}))
        with pytest.raises(StoreConfigError, match="history"):
            await LocalStore(path).open()
