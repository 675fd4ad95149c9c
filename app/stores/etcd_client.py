"""A small etcd v3 client over aetcd's generated gRPC stubs (``aetcd.rpc``).

``aetcd.Client`` opens one insecure channel to one ``host:port``, authenticates once and
never again, and has no channel keepalive; this client closes those gaps:

* one channel per ``ETCD_ENDPOINTS`` member, TLS when configured, each verified against
  its own host name (members' certificates rarely name each other);
* calls go to the member that last answered and fail over to the next one (gRPC's own
  retry policy cannot: it retries within one channel); a conditional write that may have
  been applied is never resent, as a resend would turn its success into a conflict;
* a token that expired (``invalid auth token``) is renewed and the call retried once;
* HTTP/2 keepalive plus a ping timeout, so a frozen member breaks open streams within
  ~11 s instead of never;
* every call carries a deadline; failures surface as ``StoreUnavailable`` (retry later)
  or ``StoreConfigError`` (bad credentials, TLS, permissions).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
from aetcd import rpc
from aetcd.utils import prefix_range_end

from app.settings import EtcdSettings
from app.stores.base import StoreConfigError, StoreError, StoreUnavailable, WatchReset

log = logging.getLogger(__name__)

T = TypeVar("T")
Metadata = tuple[tuple[str, str], ...]
# invoke(member, seconds left, metadata): one attempt of a call on one member
Invoke = Callable[["Member", float, Metadata], Awaitable[T]]

CHANNEL_OPTIONS: list[tuple[str, int]] = [
    # etcd answers pings more often than every 5 s (--grpc-keepalive-min-time) with
    # GOAWAY, and pings without a call count as abuse, hence 6 s and calls only.
    ("grpc.keepalive_time_ms", 6000),
    ("grpc.keepalive_timeout_ms", 5000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.ping_timeout_ms", 5000),
    # A member that comes back is used again within ~2 s, not after minutes of back-off.
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.max_receive_message_length", -1),
]

# Watches are cancelled by the member when it loses its leader instead of going quiet.
REQUIRE_LEADER: Metadata = (("hasleader", "true"),)

# How an attempt failed: never sent (next member), refused unapplied by etcd (next
# member, then wait and retry), or maybe applied (retry only what may be applied twice).
_UNREACHABLE, _TRANSIENT, _AMBIGUOUS = "unreachable", "transient", "ambiguous"
_NOT_SENT = ("failed to connect to all addresses", "dns resolution failed", "errors resolving")
_REJECTED_UNAPPLIED = (
    "etcdserver: no leader",
    "etcdserver: not capable",
    "etcdserver: too many requests",
)
# "user name is empty": the call went out without a token although auth is on.
_TOKEN_EXPIRED = ("invalid auth token", "revision of auth store is old", "user name is empty")
# "handshake read failed": the server hung up on our ClientHello (it does not serve TLS).
_TLS = ("handshake failed", "handshake read failed", "ssl_error", "tsi_", "certificate")
_TOO_LARGE = ("request is too large", "message larger than max")


class LeaseNotFound(StoreError):
    """etcd no longer knows the lease (it expired or was revoked)."""


class RequestTooLarge(StoreError):
    """etcd refused the request for its size."""


@dataclass
class Member:
    """One configured endpoint and its own channel."""

    address: str
    channel: grpc.aio.Channel
    kv: rpc.KVStub
    watch: rpc.WatchStub
    lease: rpc.LeaseStub
    auth: rpc.AuthStub

    @classmethod
    def open(cls, host: str, port: int, credentials: grpc.ChannelCredentials | None) -> Member:
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if credentials is None:
            channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        else:
            channel = grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
        return cls(
            target,
            channel,
            rpc.KVStub(channel),
            rpc.WatchStub(channel),
            rpc.LeaseStub(channel),
            rpc.AuthStub(channel),
        )


# gRPC's "failed to connect to all addresses; last error: UNKNOWN: ipv4:1.2.3.4:2379: "
_CONNECT_PREFIX = re.compile(
    r"^failed to connect to all addresses; last error: [A-Z_]+: (?:ipv[46]:)?\S+?:\d+: "
)


def _details(error: grpc.aio.AioRpcError) -> str:
    details = (error.details() or error.code().name).strip()
    return _CONNECT_PREFIX.sub("", details).removesuffix(": OK")


def _matches(error: grpc.aio.AioRpcError, needles: tuple[str, ...]) -> bool:
    details = (error.details() or "").lower()
    return any(needle in details for needle in needles)


class EtcdClient:
    """Unary calls and watches against an etcd cluster, with failover and re-auth."""

    def __init__(self, settings: EtcdSettings, timeout: float) -> None:
        self.settings = settings
        self.timeout = timeout
        self._members: list[Member] = []
        self._preferred = 0
        self._token: str | None = None
        self._auth_disabled = False
        self._auth_lock = asyncio.Lock()
        # With other members to try, one that hangs (its leader just died) gets only part
        # of the time, so the call can still succeed elsewhere once a leader is elected.
        members = len(settings.endpoint_list)
        self._attempt_limit = timeout if members == 1 else max(timeout / 3, 0.5)

    # --- connection ---------------------------------------------------------------

    async def connect(self) -> None:
        """Open a channel per member and, with a user, authenticate."""
        if self._members:
            return
        credentials = self._credentials()
        self._members = [
            Member.open(host, port, credentials) for host, port in self.settings.endpoint_list
        ]
        if self.settings.user is not None:
            try:
                await self._authenticate()
            except StoreUnavailable as error:
                log.warning("cannot authenticate to etcd yet: %s", error)

    async def close(self) -> None:
        members, self._members = self._members, []
        self._token = None
        for member in members:
            await member.channel.close()

    @property
    def active_endpoint(self) -> str | None:
        """The member calls go to first: the one that answered last."""
        return self._members[self._preferred].address if self._members else None

    def _credentials(self) -> grpc.ChannelCredentials | None:
        settings = self.settings
        if not settings.tls:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=_read(settings.cacert, "ETCD_CACERT"),
            private_key=_read(settings.client_key, "ETCD_CLIENT_KEY"),
            certificate_chain=_read(settings.client_cert, "ETCD_CLIENT_CERT"),
        )

    @property
    def _metadata(self) -> Metadata:
        return (("token", self._token),) if self._token else ()

    async def _authenticate(self, stale_token: str | None = None) -> None:
        async with self._auth_lock:
            if self._token is not None and self._token != stale_token:
                return  # another task already renewed it
            request = rpc.AuthenticateRequest(
                name=self.settings.user or "", password=self.settings.password or ""
            )

            async def invoke(member: Member, budget: float, _: Metadata) -> str:
                response = await member.auth.Authenticate(request, timeout=budget)
                return response.token

            try:
                self._token = await self._call(invoke, authenticating=True)
                log.debug("authenticated to etcd as %r", self.settings.user)
            except _AuthNotEnabled:
                log.warning("ETCD_USER is set but etcd has authentication disabled")
                self._token = None
                self._auth_disabled = True

    # --- calls --------------------------------------------------------------------

    async def call(self, invoke: Invoke[T], *, idempotent: bool = True) -> T:
        """Run ``invoke(member, timeout, metadata)`` with failover, deadline and re-auth.

        ``idempotent=False``: never resend once the request may have reached etcd.
        """
        if not self._members:
            raise StoreUnavailable("the etcd client is not connected")
        if self.settings.user is not None and self._token is None and not self._auth_disabled:
            await self._authenticate()
        token = self._token
        try:
            return await self._call(invoke, idempotent=idempotent)
        except _TokenExpired:
            if self.settings.user is None:
                raise StoreConfigError(
                    "etcd requires authentication: set ETCD_USER and ETCD_PASSWORD"
                ) from None
            await self._authenticate(stale_token=token)
        try:
            return await self._call(invoke, idempotent=idempotent)
        except _TokenExpired as error:
            raise StoreConfigError(f"etcd rejected the new auth token: {error}") from None

    async def _call(
        self, invoke: Invoke[T], *, idempotent: bool = True, authenticating: bool = False
    ) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        backoff = 0.05
        last_error = "no etcd member answered"
        members = self._members  # close() may empty the list meanwhile
        while True:
            worth_waiting = False
            for index in self._rotation(len(members)):
                member = members[index]
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise StoreUnavailable(
                        f"etcd did not answer within {self.timeout:g}s: {last_error}"
                    )
                try:
                    budget = min(remaining, self._attempt_limit)
                    result = await invoke(member, budget, self._metadata)
                except grpc.aio.AioRpcError as error:
                    last_error = f"{member.address}: {_details(error)}"
                    outcome = self._classify(error, member, authenticating)
                else:
                    self._preferred = index
                    return result
                if outcome == _AMBIGUOUS:
                    self._avoid(member.address)
                    if not idempotent:
                        raise StoreUnavailable(
                            f"etcd failed mid-request, the write may or may not have been "
                            f"applied: {last_error}"
                        )
                worth_waiting = worth_waiting or outcome != _UNREACHABLE
            if not worth_waiting or loop.time() + backoff >= deadline:
                raise StoreUnavailable(f"etcd is unavailable: {last_error}")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 0.5)

    def _rotation(self, count: int) -> list[int]:
        return [(self._preferred + step) % count for step in range(count)]

    def _classify(self, error: grpc.aio.AioRpcError, member: Member, authenticating: bool) -> str:
        """How an attempt failed; raises for errors another attempt cannot fix."""
        code = error.code()
        if _matches(error, _TLS):
            raise StoreConfigError(
                f"TLS handshake with etcd at {member.address} failed (check ETCD_CACERT, "
                f"ETCD_CLIENT_CERT and ETCD_CLIENT_KEY): {_details(error)}"
            )
        if code == grpc.StatusCode.UNAVAILABLE and _matches(error, _NOT_SENT):
            return _UNREACHABLE
        if _matches(error, _REJECTED_UNAPPLIED):
            return _TRANSIENT
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return _AMBIGUOUS
        if _matches(error, _TOKEN_EXPIRED) and not authenticating:
            raise _TokenExpired(_details(error))
        raise self._answer_error(error, member, authenticating)

    def _answer_error(
        self, error: grpc.aio.AioRpcError, member: Member, authenticating: bool
    ) -> StoreError:
        code, details = error.code(), _details(error)
        user = self.settings.user
        if "authentication is not enabled" in details and authenticating:
            return _AuthNotEnabled(details)
        if "authentication failed" in details or (
            authenticating and code == grpc.StatusCode.INVALID_ARGUMENT
        ):
            reason = details.removeprefix("etcdserver: ").replace("authentication failed, ", "")
            return StoreConfigError(f"etcd authentication failed for user {user!r}: {reason}")
        if code == grpc.StatusCode.PERMISSION_DENIED or "permission denied" in details:
            return self._denied(details)
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return StoreConfigError(f"etcd rejected the credentials: {details}")
        if "lease not found" in details:
            return LeaseNotFound(details)
        if _matches(error, _TOO_LARGE):
            return RequestTooLarge(details)
        return StoreUnavailable(f"etcd at {member.address} failed: {details}")

    def _denied(self, details: str) -> StoreConfigError:
        user = self.settings.user
        who = f"user {user!r}" if user else "this client"
        return StoreConfigError(f"etcd denied {who} access to the gateway's keys: {details}")

    # --- the calls the store makes ------------------------------------------------

    async def range(
        self, key: bytes, range_end: bytes = b"", *, limit: int = 0, keys_only: bool = False
    ) -> rpc.RangeResponse:
        request = rpc.RangeRequest(key=key, range_end=range_end, limit=limit, keys_only=keys_only)

        async def invoke(member: Member, budget: float, metadata: Metadata) -> rpc.RangeResponse:
            return await member.kv.Range(request, timeout=budget, metadata=metadata)

        return await self.call(invoke)

    async def txn(self, request: rpc.TxnRequest, *, idempotent: bool) -> rpc.TxnResponse:
        async def invoke(member: Member, budget: float, metadata: Metadata) -> rpc.TxnResponse:
            return await member.kv.Txn(request, timeout=budget, metadata=metadata)

        return await self.call(invoke, idempotent=idempotent)

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> rpc.PutResponse:
        request = rpc.PutRequest(key=key, value=value, lease=lease)

        async def invoke(member: Member, budget: float, metadata: Metadata) -> rpc.PutResponse:
            return await member.kv.Put(request, timeout=budget, metadata=metadata)

        return await self.call(invoke)

    async def lease_grant(self, ttl: int) -> int:
        async def invoke(member: Member, budget: float, metadata: Metadata) -> int:
            response = await member.lease.LeaseGrant(
                rpc.LeaseGrantRequest(TTL=ttl), timeout=budget, metadata=metadata
            )
            return response.ID

        return await self.call(invoke)

    async def lease_keepalive(self, lease_id: int) -> int:
        """Renew the lease once; returns its new TTL (0: etcd no longer knows it)."""

        async def invoke(member: Member, budget: float, metadata: Metadata) -> int:
            stream = member.lease.LeaseKeepAlive(timeout=budget, metadata=metadata)
            try:
                await stream.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
                await stream.done_writing()
                response = await stream.read()
            finally:
                stream.cancel()
            if response is grpc.aio.EOF:
                raise StoreUnavailable(f"etcd at {member.address} ended the lease keepalive")
            return response.TTL

        return await self.call(invoke)

    async def lease_revoke(self, lease_id: int) -> None:
        async def invoke(member: Member, budget: float, metadata: Metadata) -> None:
            await member.lease.LeaseRevoke(
                rpc.LeaseRevokeRequest(ID=lease_id), timeout=budget, metadata=metadata
            )

        with contextlib.suppress(LeaseNotFound):
            await self.call(invoke)

    # --- watches ------------------------------------------------------------------

    async def watch_prefix(
        self, prefix: bytes, start_revision: int
    ) -> AsyncIterator[rpc.WatchResponse]:
        """Yield every watch response with events for ``prefix`` from ``start_revision``.

        Raises ``WatchReset`` when etcd no longer has that revision and
        ``StoreUnavailable`` when the stream breaks; never ends otherwise.
        """
        request = rpc.WatchRequest(
            create_request=rpc.WatchCreateRequest(
                key=prefix,
                range_end=prefix_range_end(prefix),
                start_revision=start_revision,
            )
        )
        stream, address = await self._open_watch(request)
        try:
            while True:
                response = await self._next(stream, address)
                if response.events:
                    yield response
        finally:
            stream.cancel()

    async def _open_watch(self, request: rpc.WatchRequest) -> tuple[grpc.aio.StreamStreamCall, str]:
        async def invoke(
            member: Member, budget: float, metadata: Metadata
        ) -> tuple[grpc.aio.StreamStreamCall, str, rpc.WatchResponse]:
            stream = member.watch.Watch(metadata=metadata + REQUIRE_LEADER)
            try:
                await stream.write(request)
                first = await asyncio.wait_for(stream.read(), budget)
            except TimeoutError:
                stream.cancel()
                raise grpc.aio.AioRpcError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.aio.Metadata(),
                    grpc.aio.Metadata(),
                    "the watch was not created in time",
                ) from None
            except BaseException:
                stream.cancel()
                raise
            return stream, member.address, first

        for attempt in range(2):
            token = self._token
            stream, address, first = await self.call(invoke)
            if first is grpc.aio.EOF:
                raise StoreUnavailable(f"etcd at {address} closed the watch stream")
            if not _refused_for_auth(first):
                break
            stream.cancel()
            if attempt or self.settings.user is None:
                raise self._denied(first.cancel_reason.rpartition("desc = ")[2])
            await self._authenticate(stale_token=token)
        _check_watch_response(first, address)
        return stream, address

    async def _next(self, stream: grpc.aio.StreamStreamCall, address: str) -> rpc.WatchResponse:
        try:
            response = await stream.read()
        except grpc.aio.AioRpcError as error:
            self._avoid(address)
            raise StoreUnavailable(
                f"the watch on etcd at {address} broke: {_details(error)}"
            ) from None
        if response is grpc.aio.EOF:
            raise StoreUnavailable(f"etcd at {address} ended the watch stream")
        _check_watch_response(response, address)
        return response

    def _avoid(self, address: str) -> None:
        """Send the next call to another member than the one that just failed."""
        for index, member in enumerate(self._members):
            if member.address == address and index == self._preferred:
                self._preferred = (index + 1) % len(self._members)


class _TokenExpired(StoreError):
    pass


class _AuthNotEnabled(StoreError):
    pass


def _refused_for_auth(response: rpc.WatchResponse) -> bool:
    # etcd checks a watch's token when it creates it, and answers with a cancellation.
    reason = response.cancel_reason.lower()
    return response.canceled and any(
        needle in reason for needle in (*_TOKEN_EXPIRED, "permission denied")
    )


def _check_watch_response(response: rpc.WatchResponse, address: str) -> None:
    if response.compact_revision:
        raise WatchReset(f"etcd compacted its history up to revision {response.compact_revision}")
    if response.canceled:
        reason = response.cancel_reason or "no reason given"
        raise StoreUnavailable(f"etcd at {address} cancelled the watch: {reason}")


def _read(path: Path | None, variable: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as error:
        raise StoreConfigError(f"cannot read {variable} {str(path)!r}: {error.strerror}") from None
