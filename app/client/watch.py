"""``space-cloud watch``: every event as one JSON line, resuming by itself after a break.

After any break (the gateway restarted, the connection dropped, the instance was not
ready yet) the stream is opened again with ``Last-Event-ID`` set to the last revision
printed, so no change is missed and none is printed twice (docs/design.md §6).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from httpx_sse import ServerSentEvent, SSEError

from app.backoff import Backoff
from app.client.api import ApiError, ClientError, GatewayClient, Unreachable

log = logging.getLogger("space_cloud.client")

#: Statuses worth waiting out: not ready yet, store unavailable, a proxy between.
RETRIED_STATUSES = frozenset({502, 503, 504})
UNAUTHORIZED = 401


@dataclass
class Watch:
    client: GatewayClient
    projects: frozenset[str] = frozenset()
    last_event_id: int | None = None
    #: Called with each reason the stream broke, before waiting to reconnect.
    on_break: Callable[[str], None] = lambda reason: None
    #: A fresh token when the gateway refuses the current one (it expired, or was
    #: revoked); None: such a refusal ends the watch.
    log_in_again: Callable[[], str] | None = None

    def lines(self) -> Iterator[str]:
        """One JSON object per event, forever (until a non-retryable error)."""
        backoff = Backoff(base=0.2, cap=5.0)
        logged_in_again = False
        while True:
            try:
                with self.client.events(self.last_event_id, sorted(self.projects)) as source:
                    backoff.reset()
                    logged_in_again = False
                    yield from self._lines(source.iter_sse())
                reason = "the gateway ended the stream"
            except ApiError as exc:
                # Once per refusal: a fresh token refused as well is not worth a loop.
                log_in = None if logged_in_again else self.log_in_again
                if exc.status_code == UNAUTHORIZED and log_in is not None:
                    self.client.use_token(log_in())
                    logged_in_again = True
                    self.on_break(f"{exc}; logged in again")
                    continue
                if exc.status_code not in RETRIED_STATUSES:
                    raise
                reason = str(exc)
            except (Unreachable, SSEError) as exc:
                reason = str(exc)
            self.on_break(reason)
            time.sleep(backoff.next_delay())

    def _lines(self, events: Iterable[ServerSentEvent]) -> Iterator[str]:
        for event in events:
            try:
                data = json.loads(event.data) if event.data else None
            except ValueError:
                message = f"the gateway sent a {event.event!r} event that is not JSON"
                raise ClientError(message) from None
            # httpx-sse repeats the last id on events that carry none (as the SSE spec
            # says a browser does); only the revision events have one of their own.
            has_revision = isinstance(data, dict) and "revision" in data
            event_id = int(event.id) if event.id and has_revision else None
            data = self._narrow(event.event, data)
            if data is not None:
                line: dict[str, Any] = {"event": event.event}
                if event_id is not None:
                    line["id"] = event_id
                line["data"] = data
                yield json.dumps(line, separators=(",", ":"))
            if event_id is not None:
                self.last_event_id = event_id

    def _narrow(self, kind: str, data: Any) -> Any:
        """With ``--project``, only those projects' events (also if the server sent more)."""
        if not self.projects or not isinstance(data, dict):
            return data
        if kind == "snapshot":
            projects = data.get("projects") or []
            return {**data, "projects": [p for p in projects if p.get("id") in self.projects]}
        if kind == "project.put":
            return data if (data.get("project") or {}).get("id") in self.projects else None
        if kind == "project.delete":
            return data if data.get("id") in self.projects else None
        return data
