"""What a failed etcd call means: try another member, retry, or give up with a reason.

gRPC reports every failure as a status code plus free text; the text is what tells a
member that could not be reached from a request that may have been applied, or an
expired token from a denied permission. ``classify`` turns one failed attempt into an
outcome for the failover loop, or raises the store error to report.
"""

from __future__ import annotations

import re

import grpc
from aetcd import rpc

from app.stores.base import StoreConfigError, StoreError, StoreUnavailable, WatchReset

# How an attempt failed: never sent (next member), refused unapplied by etcd (next
# member, then wait and retry), or maybe applied (retry only what may be applied twice).
UNREACHABLE, TRANSIENT, AMBIGUOUS = "unreachable", "transient", "ambiguous"
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

# gRPC's "failed to connect to all addresses; last error: UNKNOWN: ipv4:1.2.3.4:2379: "
_CONNECT_PREFIX = re.compile(
    r"^failed to connect to all addresses; last error: [A-Z_]+: (?:ipv[46]:)?\S+?:\d+: "
)


class LeaseNotFound(StoreError):
    """etcd no longer knows the lease (it expired or was revoked)."""


class RequestTooLarge(StoreError):
    """etcd refused the request for its size."""


class Compacted(StoreError):
    """A read at a revision etcd has compacted away."""


class TokenExpired(StoreError):
    """The auth token is no longer valid: authenticate again and retry once."""


class AuthNotEnabled(StoreError):
    """A user is configured but etcd has authentication off."""


def details(error: grpc.aio.AioRpcError) -> str:
    text = (error.details() or error.code().name).strip()
    return _CONNECT_PREFIX.sub("", text).removesuffix(": OK")


def _matches(error: grpc.aio.AioRpcError, needles: tuple[str, ...]) -> bool:
    text = (error.details() or "").lower()
    return any(needle in text for needle in needles)


def classify(
    error: grpc.aio.AioRpcError, address: str, user: str | None, authenticating: bool
) -> str:
    """How an attempt on ``address`` failed; raises for errors another attempt cannot fix."""
    code = error.code()
    if _matches(error, _TLS):
        raise StoreConfigError(
            f"TLS handshake with etcd at {address} failed (check ETCD_CACERT, "
            f"ETCD_CLIENT_CERT and ETCD_CLIENT_KEY): {details(error)}"
        )
    if code == grpc.StatusCode.UNAVAILABLE and _matches(error, _NOT_SENT):
        return UNREACHABLE
    if _matches(error, _REJECTED_UNAPPLIED):
        return TRANSIENT
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return AMBIGUOUS
    if _matches(error, _TOKEN_EXPIRED) and not authenticating:
        raise TokenExpired(details(error))
    raise _answer_error(error, address, user, authenticating)


def _answer_error(
    error: grpc.aio.AioRpcError, address: str, user: str | None, authenticating: bool
) -> StoreError:
    code, text = error.code(), details(error)
    if "authentication is not enabled" in text and authenticating:
        return AuthNotEnabled(text)
    if "authentication failed" in text or (
        authenticating and code == grpc.StatusCode.INVALID_ARGUMENT
    ):
        reason = text.removeprefix("etcdserver: ").replace("authentication failed, ", "")
        return StoreConfigError(f"etcd authentication failed for user {user!r}: {reason}")
    if code == grpc.StatusCode.PERMISSION_DENIED or "permission denied" in text:
        return denied(user, text)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return StoreConfigError(f"etcd rejected the credentials: {text}")
    if "lease not found" in text:
        return LeaseNotFound(text)
    if _matches(error, _TOO_LARGE):
        return RequestTooLarge(text)
    if "required revision has been compacted" in text:
        return Compacted(text)
    return StoreUnavailable(f"etcd at {address} failed: {text}")


def denied(user: str | None, text: str) -> StoreConfigError:
    who = f"user {user!r}" if user else "this client"
    return StoreConfigError(f"etcd denied {who} access to the gateway's keys: {text}")


def refused_for_auth(response: rpc.WatchResponse) -> bool:
    # etcd checks a watch's token when it creates it, and answers with a cancellation.
    reason = response.cancel_reason.lower()
    return response.canceled and any(
        needle in reason for needle in (*_TOKEN_EXPIRED, "permission denied")
    )


def check_watch_response(response: rpc.WatchResponse, address: str) -> None:
    if response.compact_revision:
        raise WatchReset(f"etcd compacted its history up to revision {response.compact_revision}")
    if response.canceled:
        reason = response.cancel_reason or "no reason given"
        raise StoreUnavailable(f"etcd at {address} cancelled the watch: {reason}")
