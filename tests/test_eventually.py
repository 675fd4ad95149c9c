"""The polling helper: the value once truthy, a clear failure after the timeout."""

from __future__ import annotations

import itertools

import pytest

from tests.eventually import NeverHappened, eventually, eventually_async


def test_returns_the_first_truthy_value() -> None:
    counter = itertools.count()
    assert eventually(lambda: next(counter) >= 3 and "done", 5, "the third call") == "done"


def test_times_out_naming_what_and_the_last_value() -> None:
    with pytest.raises(NeverHappened, match=r"after 0.1s waiting for nothing \(last: 0\)"):
        eventually(lambda: 0, 0.1, "nothing", interval=0.01)


def test_a_timeout_is_both_a_test_failure_and_a_timeout() -> None:
    assert issubclass(NeverHappened, AssertionError) and issubclass(NeverHappened, TimeoutError)


def test_a_check_that_raises_ends_the_wait_at_once() -> None:
    def gone() -> bool:
        raise RuntimeError("the process exited")

    with pytest.raises(RuntimeError, match="exited"):
        eventually(gone, 60, "a process that exited")


async def test_async_takes_plain_and_coroutine_checks() -> None:
    counter = itertools.count()

    async def ready() -> int | None:
        value = next(counter)
        return value if value >= 2 else None

    assert await eventually_async(ready, 5, "the third call") == 2
    assert await eventually_async(lambda: [1], 5, "a list") == [1]
    with pytest.raises(NeverHappened, match="never"):
        await eventually_async(lambda: None, 0.05, "never", interval=0.01)
