"""The HTTP side of following: one upstream's event stream, and the start-up check."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx

from app.follow.sse import sse_lines

EVENTS_PATH = "/v1/config/events"
#: The cheap authenticated request of the start-up check.
CHECK_PATH = "/v1/config/peers"


class UpstreamError(Exception):
    """The upstream answered something a follower cannot use."""


class UpstreamRefused(UpstreamError):
    """The upstream refused the token (401/403); ``detail`` is its sentence, if any."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"the upstream refused the token{detail}")
        self.detail = detail


class NotAGateway(UpstreamError):
    """The address answers HTTP, but not as a space-cloud gateway."""


async def check(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> None:
    """One authenticated request; returns if ``url`` is a gateway that takes the token."""
    response = await client.get(f"{url}{CHECK_PATH}", headers=headers)
    if response.status_code in (401, 403):
        raise UpstreamRefused(error_text(response, ": "))
    if response.status_code == 404:
        raise NotAGateway(f"{url} is not a space-cloud gateway (GET {CHECK_PATH} answered 404)")
    if not (response.is_success or response.status_code == 503):  # 503: not synced yet
        raise UpstreamError(f"HTTP {response.status_code}")


@contextlib.asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    last_event_id: int | None,
    *,
    timeout: float,
    read_timeout: float,
) -> AsyncIterator[AsyncIterator[str]]:
    """The lines of ``url``'s event stream, resumed after ``last_event_id`` if given.

    The answer's head must come within ``timeout``; only the stream itself may stay
    silent up to ``read_timeout`` (the upstream pings).
    """
    headers = {**headers, "Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    request = client.stream(
        "GET",
        f"{url}{EVENTS_PATH}",
        headers=headers,
        timeout=httpx.Timeout(timeout, read=read_timeout),
    )
    async with contextlib.AsyncExitStack() as stack:
        try:
            response = await asyncio.wait_for(stack.enter_async_context(request), timeout)
        except TimeoutError:
            raise UpstreamError(f"no answer within {timeout:g}s") from None
        if response.status_code != 200:
            await asyncio.wait_for(response.aread(), timeout)
            if response.status_code in (401, 403):
                raise UpstreamRefused(error_text(response, ": "))
            raise UpstreamError(
                f"GET {EVENTS_PATH} answered HTTP {response.status_code}{error_text(response)}"
            )
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith("text/event-stream"):
            raise UpstreamError(f"GET {EVENTS_PATH} is not an event stream ({content_type})")
        yield sse_lines(response.aiter_bytes())


def describe(exc: BaseException) -> str:
    """The failure in words for logs and ``/readyz``, never an exception's class name."""
    if text := str(exc):
        return text
    if isinstance(exc, httpx.TimeoutException):
        return "no answer in time"
    if isinstance(exc, httpx.ConnectError):
        return "cannot connect"
    return "the connection failed"


def error_text(response: httpx.Response, prefix: str = " ") -> str:
    """The upstream's ``{"error": ...}`` sentence, if it sent one."""
    try:
        message = response.json().get("error")
    except (ValueError, AttributeError, httpx.ResponseNotRead):
        return ""
    return f"{prefix}{message}" if isinstance(message, str) else ""
