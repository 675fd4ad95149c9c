"""Await a condition instead of sleeping: the one polling helper of the tests.

``eventually(check, timeout, what)`` calls ``check`` until it returns something truthy
and returns that; ``await eventually_async(check, timeout, what)`` does the same inside
an event loop, where ``check`` may also be a coroutine function. Past ``timeout`` seconds
both raise ``NeverHappened`` naming what was awaited and the last value seen. A ``check``
that raises ends the wait at once (raise inside it to give up early, e.g. when the
process being waited on has exited).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

#: Seconds between two checks: short against the waits of a test, long against a check.
INTERVAL = 0.05


class NeverHappened(AssertionError, TimeoutError):
    """A test failure (an assertion) that is also a timeout, for callers that catch those."""


class _Deadline:
    def __init__(self, timeout: float, what: str) -> None:
        self.timeout = timeout
        self.what = what
        self.at = time.monotonic() + timeout

    def passed(self) -> bool:
        return time.monotonic() >= self.at

    def error(self, last: object) -> NeverHappened:
        return NeverHappened(
            f"timed out after {self.timeout:g}s waiting for {self.what} (last: {last!r})"
        )


def eventually(check: Callable[[], T], timeout: float, what: str, interval: float = INTERVAL) -> T:
    """Poll ``check`` until it returns a truthy value; return that value."""
    deadline = _Deadline(timeout, what)
    while True:
        last = check()
        if last:
            return last
        if deadline.passed():
            raise deadline.error(last)
        time.sleep(interval)


@overload
async def eventually_async(
    check: Callable[[], Awaitable[T]], timeout: float, what: str, interval: float = INTERVAL
) -> T: ...


@overload
async def eventually_async(
    check: Callable[[], T], timeout: float, what: str, interval: float = INTERVAL
) -> T: ...


async def eventually_async(
    check: Callable[[], Any], timeout: float, what: str, interval: float = INTERVAL
) -> Any:
    """``eventually`` for async tests: ``check`` may be sync or a coroutine function."""
    deadline = _Deadline(timeout, what)
    while True:
        result = check()
        last = await result if inspect.isawaitable(result) else result
        if last:
            return last
        if deadline.passed():
            raise deadline.error(last)
        await asyncio.sleep(interval)
