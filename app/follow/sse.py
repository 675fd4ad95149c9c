"""Server-Sent Events from the lines of a stream (the subset a gateway's stream uses)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

_LINE_END = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str
    data: str
    id: str | None = None


async def parse_events(lines: AsyncIterator[str]) -> AsyncIterator[SSEEvent]:
    """The events of ``lines``; comments, ``retry:`` and events without data are skipped."""
    event, event_id = "message", None
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield SSEEvent(event, "\n".join(data), event_id)
            event, data, event_id = "message", [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value


async def sse_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """The lines of an event stream's bytes, split at CRLF, CR or LF only, as the SSE
    format says. Not httpx's ``aiter_lines``: it also splits at U+0085, U+2028 and the
    other ``str.splitlines`` breaks, which a project's JSON carries unescaped. Their UTF-8
    bytes hold no CR or LF, so splitting the bytes first is exact."""
    partial: list[bytes] = []
    after_cr = False  # the last chunk ended in CR: an LF first in this one ends no line
    async for chunk in chunks:
        if after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        after_cr = chunk.endswith(b"\r")
        *complete, rest = _LINE_END.split(chunk)
        for piece in complete:
            partial.append(piece)
            yield b"".join(partial).decode(errors="replace")
            partial = []
        partial.append(rest)
    if any(partial):
        yield b"".join(partial).decode(errors="replace")
