"""The follower: another instance's event stream as the sync loop's change source.

``space-cloud run --store-type follow --upstream http://A:4122 [--upstream http://B:4122]``
reads ``GET /v1/config/events`` of an instance of a cluster. The connection loop here
feeds a :class:`~app.follow.state.FollowState`; the sync loop takes from it through the
:class:`~app.sync.source.ChangeSource` methods (see docs/design.md §8):

* the upstream's ``snapshot`` is the listing, its ``project.put`` / ``project.delete``
  events the watch, each with the event id (the cluster-wide store revision) as its
  revision, so the follower's own SSE clients can resume on any instance and back;
* when the stream breaks it reconnects with ``Last-Event-ID``, trying the upstreams
  round-robin with back-off, so nothing is missed and nothing comes twice;
* while no upstream answers, the watch raises ``StoreUnavailable`` (``/readyz`` answers
  503) and the configs applied last keep being served;
* the peers are the upstream cluster's live instances; a follower registers nowhere and
  takes no writes (it is no store: the API answers 405).

Only one sync loop consumes a follower: what it has taken is the follower's own record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable

import httpx

from app.backoff import Backoff
from app.follow import upstream
from app.follow.sse import parse_events
from app.follow.state import PENDING_LIMIT, FollowState
from app.stores.base import ProjectChange, ProjectListing, StoreConfigError, StoreUnavailable

log = logging.getLogger("space_cloud.follow")

#: A connection that stayed up this long earns an immediate reconnection when it breaks.
STABLE_SECONDS = 1.0

#: Who the follower is to its upstream: a bearer token per connection (None: none sent).
TokenSource = Callable[[], str | None]


class Follower:
    """A read-only change source fed by the event stream of one of ``upstreams``."""

    kind = "follow"

    def __init__(
        self,
        upstreams: Iterable[str],
        token: TokenSource = lambda: None,
        *,
        timeout: float = 5.0,
        read_timeout: float = 45.0,
        token_hint: str = "",
        pending_limit: int = PENDING_LIMIT,
    ) -> None:
        self.upstreams = [url.rstrip("/") for url in upstreams]
        if not self.upstreams:
            raise StoreConfigError("--store-type follow needs at least one --upstream")
        self._token = token
        self._token_hint = token_hint
        self._timeout = timeout
        self._read_timeout = read_timeout
        self._state = FollowState(pending_limit)
        self._changed = asyncio.Condition()
        self._upstream = self.upstreams[0]
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def upstream(self) -> str:
        """The upstream followed now (or tried last)."""
        return self._upstream

    # --- life cycle ---------------------------------------------------------------

    async def open(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout), follow_redirects=False, trust_env=False
            )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def check(self) -> None:
        """One authenticated request to the first upstream that answers."""
        await self.open()
        assert self._client is not None
        failures = []
        for url in self.upstreams:
            try:
                await upstream.check(self._client, url, self._headers())
                return
            except upstream.UpstreamRefused as exc:
                raise StoreConfigError(self._refused(url, exc.detail)) from None
            except upstream.NotAGateway as exc:
                raise StoreConfigError(str(exc)) from None
            except upstream.UpstreamError as exc:
                failures.append(f"{url}: {exc}")
            except httpx.HTTPError as exc:
                failures.append(f"{url}: {upstream.describe(exc)}")
        raise StoreUnavailable(f"no upstream answers ({'; '.join(failures)})")

    async def current_revision(self) -> int | None:
        """Unknown: the upstream's stream tells what it applied, not its store's revision."""
        return None

    # --- the change source ------------------------------------------------------------

    async def list_projects(self) -> ProjectListing:
        """What the sync loop has applied, or the upstream's state after a reset."""
        self._ensure_following()
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self._state.ready), self._timeout
                )
            except TimeoutError:
                error = self._state.error or f"no snapshot from {self._upstream} yet"
                raise StoreUnavailable(error) from None
            return self._state.take_listing()

    async def watch_projects(self, since: ProjectListing) -> AsyncIterator[list[ProjectChange]]:
        """The changes after the last listing taken (``since``: one consumer only)."""
        self._ensure_following()
        while True:
            async with self._changed:
                while not (batch := self._state.take_changes()):
                    await self._changed.wait()
            yield batch

    async def changes_between(self, after: int, through: int) -> list[ProjectChange] | None:
        """None: a follower holds no history beyond its own memory."""
        return None

    async def watch_instances(self) -> AsyncIterator[dict[str, bytes]]:
        """The upstream's live instances, from its snapshot and ``peers`` events."""
        self._ensure_following()
        seen = 0
        while True:
            async with self._changed:
                while self._state.peers_version == seen:
                    await self._changed.wait()
                seen = self._state.peers_version
                peers = dict(self._state.peers or {})
            yield peers

    # --- the connection loop ------------------------------------------------------------

    def _ensure_following(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._follow(), name="follow-upstream")

    async def _follow(self) -> None:
        await self.open()
        backoff = Backoff()
        index = 0
        last_cause = None
        while True:
            url = self.upstreams[index]
            index = (index + 1) % len(self.upstreams)
            self._upstream = url
            started = time.monotonic()
            cause = await self._follow_one(url)
            async with self._changed:
                was_live = self._state.lost(f"cannot follow {url}: {cause}")
                self._changed.notify_all()
            if was_live:
                log.warning(
                    "lost the upstream %s (%s); resuming after revision %d on %s",
                    url,
                    cause,
                    self._state.revision,
                    self.upstreams[index],
                )
                if time.monotonic() - started >= STABLE_SECONDS:
                    backoff.reset()
            elif cause != last_cause:
                log.warning("cannot follow %s: %s", url, cause)
            last_cause = cause
            await backoff.sleep()

    async def _follow_one(self, url: str) -> str:
        """Follow ``url`` until its stream ends; why it ended."""
        assert self._client is not None
        last_event_id = self._state.connecting()
        try:
            async with upstream.open_stream(
                self._client,
                url,
                self._headers(),
                last_event_id,
                timeout=self._timeout,
                read_timeout=self._read_timeout,
            ) as lines:
                async for event in parse_events(lines):
                    async with self._changed:
                        how = self._state.receive(event)
                        self._changed.notify_all()
                    if how is not None:
                        log.info("following %s, %s", url, how)
        except upstream.UpstreamRefused as exc:
            return self._refused(url, exc.detail)
        except upstream.UpstreamError as exc:
            return str(exc)
        except (httpx.HTTPError, TimeoutError) as exc:
            return upstream.describe(exc)
        except (ValueError, KeyError, TypeError) as exc:  # unreadable event data
            return f"an unreadable event ({upstream.describe(exc)})"
        except Exception as exc:
            log.exception("following %s failed", url)
            return upstream.describe(exc)
        return "it ended the event stream"

    def _headers(self) -> dict[str, str]:
        token = self._token()
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _refused(self, url: str, detail: str) -> str:
        if self._token() is None:
            return (
                f"the upstream requires a token: set UPSTREAM_TOKEN, or ADMIN_SECRET to "
                f"the cluster's secret ({url}{detail})"
            )
        hint = f"; {self._token_hint}" if self._token_hint else ""
        return f"the upstream refused the token ({url}{detail}){hint}"
