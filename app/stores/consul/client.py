"""A small async Consul HTTP client on aiohttp that honours every ``CONSUL_*`` variable.

python-consul2 and py-consul cannot send basic auth or check a TLS server name, so the
gateway speaks Consul's HTTP API itself, configured by a :class:`ConsulConfig`:

* ``CONSUL_HTTP_ADDR`` / ``CONSUL_HTTP_SSL``: the base URL, or a unix socket
  (``unix:///path``) that aiohttp's connector connects to instead of TCP;
* ``CONSUL_HTTP_TOKEN`` / ``CONSUL_HTTP_TOKEN_FILE``: the ``X-Consul-Token`` header;
* ``CONSUL_HTTP_AUTH``: HTTP basic auth;
* ``CONSUL_CACERT`` or ``CONSUL_CAPATH``, ``CONSUL_CLIENT_CERT``, ``CONSUL_CLIENT_KEY``:
  an SSL context;
* ``CONSUL_TLS_SERVER_NAME``: sent as SNI (aiohttp's ``server_hostname``) and, because
  the context checks host names against the SNI name, the name the server's certificate
  must carry;
* ``CONSUL_HTTP_SSL_VERIFY=false``: no certificate or host name check at all.

aiohttp rather than httpx: a watch sends two requests per write on every instance, and a
request costs the client ~0.25 ms of CPU on aiohttp against ~1.0-1.4 ms on httpx (a
one-key read from a local agent, the 2-core build machine).

Errors come out as the store errors of :mod:`app.stores.base`: unreachable, timed out or
5xx is :class:`StoreUnavailable`; an ACL denial, a TLS failure or basic auth refused is
:class:`StoreConfigError` with one sentence that names the variable to look at.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from app.stores.base import StoreConfigError, StoreError, StoreUnavailable
from app.stores.consul.config import ConsulConfig
from app.stores.consul.tls import ssl_context

# Consul adds up to wait/16 of jitter to a blocking query's wait.
_WAIT_JITTER = 1 / 16
#: A blocking query that came back without a change waits at least this long before
#: the next one, so a misbehaving server cannot make a watch spin.
MIN_QUERY_INTERVAL = 0.1
#: Blocking queries answer every change of a watch, small answers at every write: gzip
#: cost Consul ~1 ms of CPU per write and the gateway's p50 ~0.6-0.9 ms (three gateways,
#: bench.propagation's measurement, interleaved runs), for ~4 KB a change saved.
_UNCOMPRESSED = {"Accept-Encoding": "identity"}


@dataclass(frozen=True, slots=True)
class ConsulResponse:
    status: int
    index: int  # X-Consul-Index, 0 when absent
    content: bytes

    def json(self) -> Any:
        return orjson.loads(self.content) if self.content else None


def kv_path(key: str) -> str:
    return "/v1/kv/" + quote(key, safe="/")


def entry_value(entry: Mapping[str, Any]) -> bytes:
    """The value of a KV entry as Consul lists it (base64, or null when empty)."""
    return base64.b64decode(entry["Value"]) if entry.get("Value") else b""


def txn_value(value: bytes) -> str:
    """``value`` as a transaction's KV op carries it (base64)."""
    return base64.b64encode(value).decode()


def child_name(key: str, prefix: str) -> str | None:
    """The name of a key directly under ``prefix``; None for the prefix or deeper keys."""
    name = key.removeprefix(prefix)
    return name if name and "/" not in name and key.startswith(prefix) else None


@dataclass(frozen=True, slots=True)
class SentRequest:
    """A request as :attr:`ConsulClient.observers` see it."""

    method: str
    path: str
    params: Mapping[str, str | int]


class ConsulClient:
    """One connection pool to one Consul agent; create it inside the loop that uses it."""

    def __init__(
        self, config: ConsulConfig, timeout: float = 5.0, watch_wait: float = 10.0
    ) -> None:
        self.config = config
        self.timeout = timeout
        self.watch_wait = watch_wait
        self.location = config.location
        #: Called with every request before it is sent (tests count what a watch asks).
        self.observers: list[Callable[[SentRequest], None]] = []
        self._server_name = config.tls_server_name
        connector: aiohttp.BaseConnector
        if config.unix_socket:
            connector = aiohttp.UnixConnector(path=config.unix_socket)
        else:
            tls = ssl_context(config) if config.scheme == "https" else None
            connector = aiohttp.TCPConnector(ssl=tls if tls is not None else True)
        headers = {"X-Consul-Token": config.token} if config.token else {}
        if config.auth:
            credentials = base64.b64encode(":".join(config.auth).encode()).decode()
            headers["Authorization"] = f"Basic {credentials}"
        self._http = aiohttp.ClientSession(
            base_url=config.base_url,
            connector=connector,
            headers=headers,
            # Only the CONSUL_* variables decide where and how to connect.
            trust_env=False,
            json_serialize=lambda value: orjson.dumps(value).decode(),
        )

    async def aclose(self) -> None:
        await self._http.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str | int] | None = None,
        content: bytes | None = None,
        json: Any = None,
        wait: float | None = None,
        expect: tuple[int, ...] = (200,),
    ) -> ConsulResponse:
        """One request; ``expect`` lists the statuses the caller handles itself.

        ``wait`` makes it a blocking query: ``wait`` is sent to Consul and the read
        timeout is stretched past it (plus Consul's jitter) so only a dead server times out.
        """
        params = dict(params or {})
        read = self.timeout
        headers = {}
        if wait is not None:
            params["wait"] = f"{max(1, round(wait))}s"
            read = wait * (1 + _WAIT_JITTER) + self.timeout
            headers = _UNCOMPRESSED
        if json is not None:
            content = orjson.dumps(json)
        for observe in self.observers:
            observe(SentRequest(method, path, params))
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_read=read)
        try:
            async with self._http.request(
                method,
                path,
                params=params,
                data=content,
                headers=headers,
                timeout=timeout,
                server_hostname=self._server_name,
            ) as response:
                body = await response.read()
        except TimeoutError as exc:
            raise StoreUnavailable(
                f"Consul at {self.location} did not answer {method} {path} in time"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise self._transport_error(exc) from exc
        if response.status not in expect:
            raise self._status_error(method, path, response.status, response.reason, body)
        index = response.headers.get("X-Consul-Index", "0")
        return ConsulResponse(response.status, int(index) if index.isdigit() else 0, body)

    async def list_prefix(
        self, prefix: str, index: int | None = None, wait: float | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """Every entry under ``prefix`` and the prefix's index (at least 1); blocking
        until the index passes ``index`` (at most ``wait`` s) when one is given."""
        params: dict[str, str | int] = {"recurse": ""}
        if index is not None:
            params["index"] = index
            wait = wait or self.watch_wait
        response = await self.request(
            "GET", kv_path(prefix), params=params, wait=wait, expect=(200, 404)
        )
        entries = response.json() if response.status == 200 else []
        return entries or [], max(1, response.index)

    def _transport_error(self, exc: Exception) -> StoreError:
        tls = _ssl_cause(exc)
        if isinstance(tls, ssl.SSLCertVerificationError):
            return StoreConfigError(
                f"TLS verification of Consul at {self.location} failed "
                f"({(tls.verify_message or str(tls)).rstrip('.')}); "
                "check CONSUL_CACERT and CONSUL_TLS_SERVER_NAME"
            )
        if tls is not None:
            return StoreConfigError(
                f"the TLS handshake with Consul at {self.location} failed "
                f"({tls.reason or tls}); check CONSUL_HTTP_ADDR / CONSUL_HTTP_SSL and "
                "CONSUL_CLIENT_CERT / CONSUL_CLIENT_KEY"
            )
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return StoreUnavailable(f"cannot reach Consul at {self.location} ({detail})")

    def acl_error(self, detail: str, where: str) -> StoreConfigError:
        if self.config.token:
            return StoreConfigError(
                f"Consul refused the ACL token ({detail}) for {where}; "
                f"check {self.config.token_variable} and its policy"
            )
        return StoreConfigError(
            f"Consul denied {where} without an ACL token ({detail}); set CONSUL_HTTP_TOKEN"
        )

    def _status_error(
        self, method: str, path: str, status: int, reason: str | None, body: bytes
    ) -> StoreError:
        text = " ".join(body.decode(errors="replace").split())[:200] or reason or ""
        where = f"{method} {path.removeprefix('/v1/kv/')}"
        if status == 403:
            return self.acl_error(f"{status} {text}", where)
        if status in (401, 407):
            return StoreConfigError(
                f"Consul at {self.location} refused the credentials ({status} {text}); "
                "check CONSUL_HTTP_AUTH"
            )
        if status == 400 and "HTTPS" in text:
            return StoreConfigError(
                f"Consul at {self.location} speaks https ({text}); "
                "use https:// in CONSUL_HTTP_ADDR or set CONSUL_HTTP_SSL=true"
            )
        if status >= 500:
            return StoreUnavailable(f"Consul answered {where} with {status} {text}")
        return StoreError(f"Consul answered {where} with {status} {text}")


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind a transport error, unless it is only a dropped connection."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, aiohttp.ClientConnectorCertificateError):
            current = current.certificate_error  # the ssl module's own, with its message
            continue
        if isinstance(current, aiohttp.ClientConnectorError):
            current = current.os_error
            continue
        if isinstance(current, ssl.SSLError) and not isinstance(
            current, ssl.SSLEOFError | ssl.SSLZeroReturnError
        ):
            return current
        current = current.__cause__ or current.__context__
    return None


async def pace(started: float) -> None:
    """Wait out the rest of :data:`MIN_QUERY_INTERVAL` since ``started`` (loop time)."""
    elapsed = asyncio.get_running_loop().time() - started
    if elapsed < MIN_QUERY_INTERVAL:
        await asyncio.sleep(MIN_QUERY_INTERVAL - elapsed)


#: The store's current client (it exists only while the store is open).
ClientSource = Callable[[], ConsulClient]
