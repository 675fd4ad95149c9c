"""The applied token records (app/sync/tokens.py) and the loop that keeps them: untrusted
store values, replacement as a whole, resync after a broken watch (a fake token source:
the real stores' watches are in test_store_contract.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest

from app.access import MalformedToken, Role, TokenRefused
from app.access.token_records import TokenRecord
from app.metrics import Metrics
from app.stores.base import StoreUnavailable, WatchReset
from app.stores.local import LocalStore
from app.sync import AppliedTokens, ClusterState, InstanceInfo, Syncer, TokensNotSynced


def minted(role: str = "reader", projects: list[str] | None = None) -> tuple[TokenRecord, str]:
    return TokenRecord.mint("svc", role, projects or ["shop"])


def test_a_record_applied_authenticates_its_token_and_no_other() -> None:
    tokens = AppliedTokens()
    record, token = minted()
    _, other_token = minted()
    tokens.apply({record.id: record.to_json()})
    principal = tokens.authenticate(token)
    assert (principal.name, principal.role) == ("svc", Role.READER)
    assert principal.may_read("shop") and not principal.may_read("blog")
    with pytest.raises(TokenRefused, match="revoked or never minted"):
        tokens.authenticate(other_token)
    with pytest.raises(MalformedToken):
        tokens.authenticate("sct_nonsense")


def test_before_the_first_sync_a_token_waits_and_a_follower_refuses() -> None:
    _, token = minted()
    with pytest.raises(TokensNotSynced):
        AppliedTokens().authenticate(token)
    with pytest.raises(TokenRefused, match="follows another one"):
        AppliedTokens(held=False).authenticate(token)


def test_a_revocation_is_a_map_without_the_record() -> None:
    tokens = AppliedTokens()
    record, token = minted()
    tokens.apply({record.id: record.to_json()})
    tokens.apply({})
    with pytest.raises(TokenRefused):
        tokens.authenticate(token)
    assert tokens.records() == []


def test_damaged_or_misplaced_records_are_ignored_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tokens = AppliedTokens()
    good, good_token = minted()
    misplaced, misplaced_token = minted()
    raw = {
        good.id: good.to_json(),
        "0000000000000000": misplaced.to_json(),  # a record copied under another id
        "1111111111111111": b"not json",
        "2222222222222222": b'{"id": "2222222222222222", "role": "root"}',
    }
    with caplog.at_level(logging.WARNING, "space_cloud.sync"):
        tokens.apply(raw)
        tokens.apply(dict(raw))  # the same map again: nothing new to say
    assert [record.id for record in tokens.records()] == [good.id]
    assert tokens.authenticate(good_token).name == "svc"
    with pytest.raises(TokenRefused):
        tokens.authenticate(misplaced_token)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3, warnings
    assert all(good.secret_hash not in warning for warning in warnings)


async def test_wait_until_wakes_on_a_change_or_times_out() -> None:
    tokens = AppliedTokens()
    record, _ = minted()
    assert not await tokens.wait_until(lambda: tokens.get(record.id) is not None, 0.05)
    asyncio.get_running_loop().call_later(0.01, tokens.apply, {record.id: record.to_json()})
    assert await tokens.wait_until(lambda: tokens.get(record.id) is not None, 5)


class BreakingTokenSource(LocalStore):
    """A local store whose token watch breaks (reset, then unavailable) before it
    works: the loop must watch again and apply the full map each time."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.failures: list[Exception] = [WatchReset("compacted"), StoreUnavailable("down")]
        self.watches = 0

    async def watch_tokens(self) -> AsyncGenerator[dict[str, bytes], None]:
        self.watches += 1
        yield await self.list_tokens()
        if self.failures:
            raise self.failures.pop(0)
        async for records in super().watch_tokens():
            yield records


async def test_the_loop_watches_again_after_a_broken_watch(tmp_path: Path) -> None:
    store = BreakingTokenSource(tmp_path / "c.yaml")
    await store.open()
    metrics = Metrics()
    state = ClusterState("n1", metrics)
    tokens = AppliedTokens()
    instance = InstanceInfo("n1", "127.0.0.1:1", "test", "now")
    syncer = Syncer(store, state, instance, metrics, token_source=store, tokens=tokens)
    record, token = minted()
    syncer.start()
    try:
        await store.put_token(record.id, record.to_json())
        assert await tokens.wait_until(lambda: tokens.get(record.id) is not None, 10)
        assert tokens.authenticate(token).name == "svc"
        await store.delete_token(record.id)
        assert await tokens.wait_until(lambda: tokens.get(record.id) is None, 10)
        assert store.watches == 3
    finally:
        await syncer.stop()
        await store.close()
