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
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TypeVar

import grpc
from aetcd import rpc
from aetcd.utils import prefix_range_end

from app.stores.base import StoreConfigError, StoreUnavailable
from app.stores.etcd.channel import Member, channel_credentials
from app.stores.etcd.config import EtcdConfig
from app.stores.etcd.errors import (
    AMBIGUOUS,
    UNREACHABLE,
    AuthNotEnabled,
    LeaseNotFound,
    TokenExpired,
    check_watch_response,
    classify,
    denied,
    details,
    refused_for_auth,
)

log = logging.getLogger("space_cloud.stores.etcd")

T = TypeVar("T")
Metadata = tuple[tuple[str, str], ...]
# invoke(member, seconds left, metadata): one attempt of a call on one member
Invoke = Callable[["Member", float, Metadata], Awaitable[T]]

# Watches are cancelled by the member when it loses its leader instead of going quiet.
REQUIRE_LEADER: Metadata = (("hasleader", "true"),)


class EtcdClient:
    """Unary calls and watches against an etcd cluster, with failover and re-auth."""

    def __init__(self, config: EtcdConfig, timeout: float) -> None:
        self.config = config
        self.timeout = timeout
        self._members: list[Member] = []
        self._preferred = 0
        self._token: str | None = None
        self._auth_disabled = False
        self._auth_lock = asyncio.Lock()
        # With other members to try, one that hangs (its leader just died) gets only part
        # of the time, so the call can still succeed elsewhere once a leader is elected.
        members = len(config.endpoints)
        self._attempt_limit = timeout if members == 1 else max(timeout / 3, 0.5)

    # --- connection ---------------------------------------------------------------

    async def connect(self) -> None:
        """Open a channel per member and, with a user, authenticate."""
        if self._members:
            return
        credentials = channel_credentials(self.config)
        self._members = [
            Member.open(host, port, credentials) for host, port in self.config.endpoints
        ]
        if self.config.user is not None:
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

    @property
    def _metadata(self) -> Metadata:
        return (("token", self._token),) if self._token else ()

    async def _authenticate(self, stale_token: str | None = None) -> None:
        async with self._auth_lock:
            if self._token is not None and self._token != stale_token:
                return  # another task already renewed it
            request = rpc.AuthenticateRequest(
                name=self.config.user or "", password=self.config.password or ""
            )

            async def invoke(member: Member, budget: float, _: Metadata) -> str:
                response = await member.auth.Authenticate(request, timeout=budget)
                return response.token

            try:
                self._token = await self._call(invoke, authenticating=True)
                log.debug("authenticated to etcd as %r", self.config.user)
            except AuthNotEnabled:
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
        if self.config.user is not None and self._token is None and not self._auth_disabled:
            await self._authenticate()
        token = self._token
        try:
            return await self._call(invoke, idempotent=idempotent)
        except TokenExpired:
            if self.config.user is None:
                raise StoreConfigError(
                    "etcd requires authentication: set ETCD_USER and ETCD_PASSWORD"
                ) from None
            await self._authenticate(stale_token=token)
        try:
            return await self._call(invoke, idempotent=idempotent)
        except TokenExpired as error:
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
                    last_error = f"{member.address}: {details(error)}"
                    outcome = classify(error, member.address, self.config.user, authenticating)
                else:
                    self._preferred = index
                    return result
                if outcome == AMBIGUOUS:
                    self._avoid(member.address)
                    if not idempotent:
                        raise StoreUnavailable(
                            f"etcd failed mid-request, the write may or may not have been "
                            f"applied: {last_error}"
                        )
                worth_waiting = worth_waiting or outcome != UNREACHABLE
            if not worth_waiting or loop.time() + backoff >= deadline:
                raise StoreUnavailable(f"etcd is unavailable: {last_error}")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 0.5)

    def _rotation(self, count: int) -> list[int]:
        return [(self._preferred + step) % count for step in range(count)]

    # --- the calls the store makes ------------------------------------------------

    async def range(
        self, key: bytes, range_end: bytes = b"", *, limit: int = 0, keys_only: bool = False
    ) -> rpc.RangeResponse:
        request = rpc.RangeRequest(key=key, range_end=range_end, limit=limit, keys_only=keys_only)

        async def invoke(member: Member, budget: float, metadata: Metadata) -> rpc.RangeResponse:
            return await member.kv.Range(request, timeout=budget, metadata=metadata)

        return await self.call(invoke)

    async def range_request(self, request: rpc.RangeRequest) -> rpc.RangeResponse:
        """A range with every option etcd has (sorting, revision filters)."""

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
    ) -> AsyncGenerator[rpc.WatchResponse, None]:
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
            if not refused_for_auth(first):
                break
            stream.cancel()
            if attempt or self.config.user is None:
                raise denied(self.config.user, first.cancel_reason.rpartition("desc = ")[2])
            await self._authenticate(stale_token=token)
        check_watch_response(first, address)
        return stream, address

    async def _next(self, stream: grpc.aio.StreamStreamCall, address: str) -> rpc.WatchResponse:
        try:
            response = await stream.read()
        except grpc.aio.AioRpcError as error:
            self._avoid(address)
            raise StoreUnavailable(
                f"the watch on etcd at {address} broke: {details(error)}"
            ) from None
        if response is grpc.aio.EOF:
            raise StoreUnavailable(f"etcd at {address} ended the watch stream")
        check_watch_response(response, address)
        return response

    def _avoid(self, address: str) -> None:
        """Send the next call to another member than the one that just failed."""
        for index, member in enumerate(self._members):
            if member.address == address and index == self._preferred:
                self._preferred = (index + 1) % len(self._members)
