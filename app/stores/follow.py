"""The ``follow`` store: mirror another instance's event stream, hold no store credentials.

``space-cloud run --store-type follow --upstream http://A:4122 [--upstream http://B:4122]``
reads ``GET /v1/config/events`` of an instance of a cluster and gives the sync loop
(``app.sync``) what it expects of a store:

* the upstream's ``snapshot`` is the listing; its ``project.put`` / ``project.delete``
  events are the watch, each with the event id, the cluster-wide store revision, as its
  revision, so the follower's own SSE clients can resume on any instance and back;
* when the stream breaks the follower reconnects with ``Last-Event-ID`` = the last
  revision it applied, trying the ``--upstream`` addresses round-robin with back-off, so
  nothing is missed and nothing comes twice;
* a fresh ``snapshot`` after a reconnect (the id was older than the upstream's history)
  ends the watch with :class:`WatchReset`: the sync loop lists again and emits exactly
  the difference, as it does after an etcd compaction;
* while no upstream answers, the watch raises :class:`StoreUnavailable` (``/readyz``
  answers 503) and the configs applied last keep being served;
* the peers are the upstream cluster's live instances from its ``peers`` events; the
  follower does not register itself anywhere.

Writes never reach this store: on a follower the API answers 405 before asking it.

Only one sync loop consumes a store. After the watch ended with :class:`StoreUnavailable`
the next :meth:`FollowStore.list_projects` answers exactly what that watch had yielded
(not the newer upstream state), so the changes replayed on reconnection still reach the
sync loop as events, with their own revisions, instead of being folded into a listing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from app.backoff import Backoff
from app.stores.base import (
    ETCD_VALUE_LIMIT,
    ProjectChange,
    ProjectListing,
    PutResult,
    StoreConfigError,
    StoredProject,
    StoreUnavailable,
    WatchReset,
)

if TYPE_CHECKING:
    from app.settings import Settings

log = logging.getLogger("space_cloud.follow")

EVENTS_PATH = "/v1/config/events"
#: The cheap authenticated request of :meth:`FollowStore.check`.
CHECK_PATH = "/v1/config/peers"
#: Changes kept for a watch that has not caught up yet (one sync loop reads them at once).
CHANGE_LOG_SIZE = 10_000
#: A connection that stayed up this long earns an immediate reconnection when it breaks.
STABLE_SECONDS = 1.0

TokenSource = Callable[[], str | None]


@dataclass(frozen=True, slots=True)
class FollowListing(ProjectListing):
    """A listing, which upstream snapshot (``epoch``) it descends from, and the change
    log position (``seq``) it is complete through."""

    epoch: int = 0
    seq: int = 0


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str
    data: str
    id: str | None = None


async def parse_events(lines: AsyncIterator[str]) -> AsyncIterator[SSEEvent]:
    """Server-Sent Events from a stream's lines (comments and ``retry:`` skipped)."""
    event, data, event_id = "message", [], None
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


class UpstreamError(Exception):
    """The upstream answered something a follower cannot use."""


class UpstreamRefused(UpstreamError):
    """The upstream refused the token (401/403)."""


class FollowStore:
    """A read-only store fed by the event stream of one of ``upstreams``."""

    kind = "follow"
    value_limit = ETCD_VALUE_LIMIT  # never written through; the API answers 405 first

    def __init__(
        self,
        upstreams: Iterable[str],
        token: TokenSource = lambda: None,
        *,
        timeout: float = 5.0,
        read_timeout: float = 45.0,
        token_hint: str = "",
    ) -> None:
        self.upstreams = [url.rstrip("/") for url in upstreams]
        if not self.upstreams:
            raise StoreConfigError("--store-type follow needs at least one --upstream")
        self._token = token
        self._token_hint = token_hint
        self._timeout = timeout
        self._read_timeout = read_timeout
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self._upstream = self.upstreams[0]
        # What the upstream stream has said, as of ``_revision`` (the Last-Event-ID).
        self._mirror: dict[str, StoredProject] = {}
        self._revision = 0
        self._epoch = 0  # +1 on every snapshot that changed something; 0 = none yet
        # Changes numbered by ``seq``: an upstream resync may give two changes one id.
        self._log: deque[tuple[int, ProjectChange]] = deque(maxlen=CHANGE_LOG_SIZE)
        self._seq = 0  # the number of the last change logged
        self._log_floor = 0  # the log holds every change of this epoch after this seq
        self._peers: dict[str, bytes] | None = None
        self._live = False  # the current connection has delivered its first event
        self._error: str | None = None  # why the last connection attempt failed
        self._resumed_after: int | None = None  # the Last-Event-ID of this connection
        # What the watch has yielded: the state the sync loop has applied.
        self._view: dict[str, StoredProject] = {}
        self._view_revision = 0
        self._view_epoch = -1
        self._view_seq = 0

    @property
    def upstream(self) -> str:
        """The upstream followed now (or tried last)."""
        return self._upstream

    # --- life cycle ---------------------------------------------------------------

    async def open(self) -> None:
        if self._client is None:
            self._client = self._new_client()

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
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
                response = await self._client.get(f"{url}{CHECK_PATH}", headers=self._headers())
            except httpx.HTTPError as exc:
                failures.append(f"{url}: {_describe(exc)}")
                continue
            if response.status_code in (401, 403):
                raise StoreConfigError(self._refused(url, response))
            if response.status_code == 404:
                raise StoreConfigError(
                    f"{url} is not a space-cloud gateway (GET {CHECK_PATH} answered 404)"
                )
            if response.is_success or response.status_code == 503:  # 503: not synced yet
                return
            failures.append(f"{url}: HTTP {response.status_code}")
        raise StoreUnavailable(f"no upstream answers ({'; '.join(failures)})")

    # --- projects -------------------------------------------------------------------

    async def list_projects(self) -> FollowListing:
        """The projects of the last snapshot and the changes since, once connected."""
        self._ensure_following()
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self._live and self._epoch > 0),
                    self._timeout,
                )
            except TimeoutError:
                raise StoreUnavailable(
                    self._error or f"no snapshot from {self._upstream} yet"
                ) from None
            if self._view_epoch != self._epoch or self._view_seq < self._log_floor:
                # A new snapshot: the sync loop turns it into the difference.
                self._view = dict(self._mirror)
                self._view_revision = self._revision
                self._view_epoch = self._epoch
                self._view_seq = self._seq
            return FollowListing(
                dict(self._view), self._view_revision, self._view_epoch, self._view_seq
            )

    async def put_project(
        self, project_id: str, value: bytes, expected_revision: int | None = None
    ) -> PutResult:
        raise StoreConfigError(f"this instance follows {self._upstream} and is read-only")

    async def delete_project(self, project_id: str, expected_revision: int | None = None) -> int:
        raise StoreConfigError(f"this instance follows {self._upstream} and is read-only")

    async def watch_projects(self, since: ProjectListing) -> AsyncIterator[list[ProjectChange]]:
        self._ensure_following()
        if isinstance(since, FollowListing):
            epoch, after = since.epoch, since.seq
        else:
            epoch = self._epoch
            after = max(
                (seq for seq, change in self._log if change.revision <= since.revision),
                default=self._log_floor,
            )
        while True:
            async with self._changed:
                await self._changed.wait_for(
                    lambda after=after: (
                        self._epoch != epoch or self._seq > after or self._error is not None
                    )
                )
                if self._epoch != epoch:
                    raise WatchReset(f"{self._upstream} sent a fresh snapshot")
                if self._seq <= after:
                    raise StoreUnavailable(self._error)
                if after < self._log_floor:
                    raise WatchReset("the watch fell behind the follower's change log")
                batch = [change for seq, change in self._log if seq > after]
                for change in batch:
                    if change.kind == "put":
                        assert change.value is not None
                        self._view[change.id] = StoredProject(
                            change.id, change.value, change.revision
                        )
                    else:
                        self._view.pop(change.id, None)
                self._view_revision = batch[-1].revision
                self._view_seq = after = self._seq
            yield batch

    # --- instances: the upstream's, never this one ------------------------------------

    async def register(self, node_id: str, record: bytes) -> None:
        """A follower is not a member of the upstream cluster."""

    async def update_registration(self, record: bytes) -> None:
        pass

    async def deregister(self) -> None:
        pass

    async def watch_instances(self) -> AsyncIterator[dict[str, bytes]]:
        """The upstream's live instances, from its snapshot and ``peers`` events."""
        self._ensure_following()
        seen: dict[str, bytes] | None = None
        while True:
            async with self._changed:
                await self._changed.wait_for(
                    lambda seen=seen: self._peers is not None and self._peers is not seen
                )
                seen = self._peers
            assert seen is not None
            yield dict(seen)

    # --- following --------------------------------------------------------------------

    def _ensure_following(self) -> None:
        if self._task is None or self._task.done():
            if self._client is None:
                self._client = self._new_client()
            self._task = asyncio.create_task(self._follow(), name="follow-upstream")

    async def _follow(self) -> None:
        backoff = Backoff()
        index = 0
        last_cause = None
        while True:
            url = self.upstreams[index]
            index = (index + 1) % len(self.upstreams)
            self._upstream = url
            started = time.monotonic()
            try:
                await self._stream(url)
                cause = "it ended the event stream"
            except UpstreamError as exc:
                cause = str(exc)
            except (httpx.HTTPError, TimeoutError) as exc:
                cause = _describe(exc)
            except (ValueError, KeyError, TypeError) as exc:  # unreadable event data
                cause = f"an unreadable event ({_describe(exc)})"
            except Exception as exc:
                log.exception("following %s failed", url)
                cause = _describe(exc)
            was_live = self._live
            await self.lost(f"cannot follow {url}: {cause}")
            if was_live:
                log.warning(
                    "lost the upstream %s (%s); resuming after revision %d on %s",
                    url,
                    cause,
                    self._revision,
                    self.upstreams[index],
                )
                if time.monotonic() - started >= STABLE_SECONDS:
                    backoff.reset()
            elif cause != last_cause:
                log.warning("cannot follow %s: %s", url, cause)
            last_cause = cause
            await backoff.sleep()

    async def _stream(self, url: str) -> None:
        assert self._client is not None
        headers = self._headers()
        headers["Accept"] = "text/event-stream"
        self._resumed_after = self._revision if self._epoch else None
        if self._resumed_after is not None:
            headers["Last-Event-ID"] = str(self._resumed_after)
        timeout = httpx.Timeout(self._timeout, read=self._read_timeout)
        request = self._client.stream(
            "GET", f"{url}{EVENTS_PATH}", headers=headers, timeout=timeout
        )
        async with contextlib.AsyncExitStack() as stack:
            # The answer's head must come within the store timeout; only the stream
            # itself may stay silent up to the read timeout (the upstream pings).
            try:
                response = await asyncio.wait_for(stack.enter_async_context(request), self._timeout)
            except TimeoutError:
                raise UpstreamError(f"no answer within {self._timeout:g}s") from None
            if response.status_code != 200:
                await asyncio.wait_for(response.aread(), self._timeout)
                if response.status_code in (401, 403):
                    raise UpstreamRefused(self._refused(url, response))
                raise UpstreamError(
                    f"GET {EVENTS_PATH} answered HTTP {response.status_code}{_error_text(response)}"
                )
            content_type = response.headers.get("content-type", "")
            if not content_type.startswith("text/event-stream"):
                raise UpstreamError(f"GET {EVENTS_PATH} is not an event stream ({content_type})")
            async for event in parse_events(response.aiter_lines()):
                await self.receive(event)

    def _headers(self) -> dict[str, str]:
        token = self._token()
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _refused(self, url: str, response: httpx.Response) -> str:
        if self._token() is None:
            return (
                f"the upstream requires a token: set UPSTREAM_TOKEN, or ADMIN_SECRET to "
                f"the cluster's secret ({url}{_error_text(response, ': ')})"
            )
        hint = f"; {self._token_hint}" if self._token_hint else ""
        return f"the upstream refused the token ({url}{_error_text(response, ': ')}){hint}"

    # --- events -> state ---------------------------------------------------------------

    async def receive(self, event: SSEEvent) -> None:
        """Take one event of the current connection; the first one makes it live."""
        async with self._changed:
            self.apply_event(event)
            if not self._live:
                self._live = True
                self._error = None
                if event.event == "snapshot" or self._resumed_after is None:
                    how = f"from a snapshot at revision {self._revision}"
                else:
                    how = f"resuming after revision {self._resumed_after}"
                log.info("following %s, %s", self._upstream, how)
            self._changed.notify_all()

    async def lost(self, error: str) -> None:
        """The connection ended. A live one may resume elsewhere at once; an attempt that
        never got an event means no upstream answers: watches raise StoreUnavailable."""
        async with self._changed:
            if not self._live:
                self._error = error
            self._live = False
            self._changed.notify_all()

    def apply_event(self, event: SSEEvent) -> None:
        """Apply one upstream event to the mirror, the change log and the peers
        (with the condition held)."""
        """Apply one upstream event to the mirror, the change log and the peers."""
        if event.event == "snapshot":
            self._on_snapshot(orjson.loads(event.data))
        elif event.event == "project.put":
            data = orjson.loads(event.data)
            document = data["project"]
            self._on_change(
                ProjectChange(
                    "put", str(document["id"]), int(data["revision"]), orjson.dumps(document)
                )
            )
        elif event.event == "project.delete":
            data = orjson.loads(event.data)
            self._on_change(ProjectChange("delete", str(data["id"]), int(data["revision"])))
        elif event.event == "peers":
            self._set_peers(orjson.loads(event.data)["peers"])

    def _on_snapshot(self, data: dict[str, Any]) -> None:
        revision = int(data["revision"])
        # Per-project revisions (the ETags); an upstream that does not send them gets the
        # snapshot's revision for what is new, and keeps what is unchanged.
        revisions = data.get("revisions") or {}
        projects: dict[str, StoredProject] = {}
        for document in data["projects"]:
            project_id = str(document["id"])
            value = orjson.dumps(document)
            project_revision = revisions.get(project_id)
            if project_revision is None:
                known = self._mirror.get(project_id)
                same = known is not None and known.value == value
                project_revision = known.revision if same and known else revision
            projects[project_id] = StoredProject(project_id, value, int(project_revision))
        self._set_peers(data.get("peers") or [])
        unchanged = self._epoch > 0 and projects == self._mirror
        self._revision = max(self._revision, revision) if unchanged else revision
        if unchanged:
            return  # nothing to resync: the watch goes on
        self._mirror = projects
        self._epoch += 1
        self._log.clear()
        self._log_floor = self._seq

    def _on_change(self, change: ProjectChange) -> None:
        # Events come in revision order; an upstream resync may give a put and a delete
        # the same revision, so only an older revision, or what is already there, is a
        # replay of something applied before.
        if change.revision < self._revision:
            return
        known = self._mirror.get(change.id)
        if change.kind == "put":
            assert change.value is not None
            if known is not None and known.revision >= change.revision:
                return
            self._mirror[change.id] = StoredProject(change.id, change.value, change.revision)
        elif known is None:
            self._revision = change.revision
            return
        else:
            del self._mirror[change.id]
        self._revision = change.revision
        if len(self._log) == self._log.maxlen:
            self._log_floor = self._log[0][0]
        self._seq += 1
        self._log.append((self._seq, change))

    def _set_peers(self, peers: list[dict[str, Any]]) -> None:
        records = {
            str(peer["id"]): orjson.dumps({k: v for k, v in peer.items() if k != "self"})
            for peer in peers
        }
        if records != self._peers:
            self._peers = records


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _error_text(response: httpx.Response, prefix: str = " ") -> str:
    """The upstream's ``{"error": ...}`` sentence, if it sent one."""
    try:
        message = response.json().get("error")
    except (ValueError, AttributeError, httpx.ResponseNotRead):
        return ""
    return f"{prefix}{message}" if isinstance(message, str) else ""


#: Lifetime of a token a follower signs for itself: only the connection checks it.
MINTED_TOKEN_TTL_SECONDS = 3600


def upstream_token_source(settings: Settings) -> tuple[TokenSource, str]:
    """How a follower authenticates to its upstream, and a hint for when it is refused.

    ``UPSTREAM_TOKEN`` when given; otherwise, with ``ADMIN_SECRET`` (the cluster's shared
    secret), a fresh short-lived token signed for every connection, so the follower never
    runs on an expired token; otherwise none (an upstream started with ``--dev``).
    """
    if settings.upstream_token:
        token = settings.upstream_token
        return (lambda: token), "UPSTREAM_TOKEN may have expired or come from another cluster"
    if settings.admin_secret:
        from app.auth import TokenIssuer

        issuer = TokenIssuer(
            settings.admin_user,
            settings.admin_pass,
            settings.admin_secret,
            MINTED_TOKEN_TTL_SECONDS,
            cluster_id=settings.cluster_id,
        )
        return (
            lambda: issuer.issue(settings.admin_user)[0],
            "ADMIN_SECRET, ADMIN_PASS and CLUSTER_ID must be the upstream cluster's",
        )
    return (lambda: None), ""
