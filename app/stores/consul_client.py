"""A small async Consul HTTP client on httpx that honours every ``CONSUL_*`` variable.

python-consul2 and py-consul cannot send basic auth or check a TLS server name, so the
gateway speaks Consul's HTTP API itself:

* ``CONSUL_HTTP_ADDR`` / ``CONSUL_HTTP_SSL``: the base URL (``ConsulSettings.base_url``);
* ``CONSUL_HTTP_TOKEN``: the ``X-Consul-Token`` header on every request;
* ``CONSUL_HTTP_AUTH``: HTTP basic auth;
* ``CONSUL_CACERT``, ``CONSUL_CLIENT_CERT``, ``CONSUL_CLIENT_KEY``: an SSL context;
* ``CONSUL_TLS_SERVER_NAME``: sent as SNI (httpcore's ``sni_hostname`` extension) and,
  because the context checks host names against the SNI name, the name the server's
  certificate must carry;
* ``CONSUL_HTTP_SSL_VERIFY=false``: no certificate or host name check at all.

Errors come out as the store errors of :mod:`app.stores.base`: unreachable, timed out or
5xx is :class:`StoreUnavailable`; an ACL denial, a TLS failure or basic auth refused is
:class:`StoreConfigError` with one sentence that names the variable to look at.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from app.settings import ConsulSettings
from app.stores.base import StoreConfigError, StoreError, StoreUnavailable

# Consul adds up to wait/16 of jitter to a blocking query's wait.
_WAIT_JITTER = 1 / 16


@dataclass(frozen=True, slots=True)
class ConsulResponse:
    status: int
    index: int  # X-Consul-Index, 0 when absent
    content: bytes

    def json(self) -> Any:
        return orjson.loads(self.content) if self.content else None


def ssl_context(settings: ConsulSettings) -> ssl.SSLContext:
    """The context every https connection uses; raises StoreConfigError for bad files."""
    if settings.verify:
        context = _load(ssl.create_default_context, "CONSUL_CACERT", cafile=settings.cacert)
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.client_cert is not None:
        _load(
            context.load_cert_chain,
            "CONSUL_CLIENT_CERT / CONSUL_CLIENT_KEY",
            settings.client_cert,
            settings.client_key,
        )
    return context


def _load(function: Any, variable: str, *args: Any, **kwargs: Any) -> Any:
    try:
        return function(*args, **kwargs)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise StoreConfigError(f"{variable}: cannot load the certificate ({exc})") from exc


def kv_path(key: str) -> str:
    return "/v1/kv/" + quote(key, safe="/")


class ConsulClient:
    """One connection pool to one Consul agent; create it inside the loop that uses it."""

    def __init__(self, settings: ConsulSettings, timeout: float = 5.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self.base_url = settings.base_url
        self._extensions = (
            {"sni_hostname": settings.tls_server_name} if settings.tls_server_name else {}
        )
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=_headers(settings),
            auth=_basic_auth(settings),
            verify=ssl_context(settings) if settings.scheme == "https" else True,
            timeout=httpx.Timeout(timeout),
            # Only the CONSUL_* variables decide where and how to connect.
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

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
        timeout = httpx.Timeout(self.timeout)
        if wait is not None:
            params["wait"] = f"{max(1, round(wait))}s"
            timeout = httpx.Timeout(self.timeout, read=wait * (1 + _WAIT_JITTER) + self.timeout)
        if json is not None:
            content = orjson.dumps(json)
        try:
            response = await self._http.request(
                method,
                path,
                params=params,
                content=content,
                timeout=timeout,
                extensions=self._extensions,
            )
        except httpx.TimeoutException as exc:
            raise StoreUnavailable(
                f"Consul at {self.base_url} did not answer {method} {path} in time"
            ) from exc
        except (httpx.TransportError, OSError) as exc:
            # httpcore passes TLS alerts that arrive after the handshake (a client
            # certificate the server rejects) through as bare ssl.SSLError.
            raise self._transport_error(exc) from exc
        if response.status_code not in expect:
            raise self._status_error(method, path, response)
        index = response.headers.get("X-Consul-Index", "0")
        return ConsulResponse(
            response.status_code, int(index) if index.isdigit() else 0, response.content
        )

    def _transport_error(self, exc: Exception) -> StoreError:
        tls = _ssl_cause(exc)
        if isinstance(tls, ssl.SSLCertVerificationError):
            return StoreConfigError(
                f"TLS verification of Consul at {self.base_url} failed "
                f"({(tls.verify_message or str(tls)).rstrip('.')}); "
                "check CONSUL_CACERT and CONSUL_TLS_SERVER_NAME"
            )
        if tls is not None:
            return StoreConfigError(
                f"the TLS handshake with Consul at {self.base_url} failed "
                f"({tls.reason or tls}); check CONSUL_HTTP_ADDR / CONSUL_HTTP_SSL and "
                "CONSUL_CLIENT_CERT / CONSUL_CLIENT_KEY"
            )
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return StoreUnavailable(f"cannot reach Consul at {self.base_url} ({detail})")

    def acl_error(self, detail: str, where: str) -> StoreConfigError:
        if self.settings.http_token:
            return StoreConfigError(
                f"Consul refused the ACL token ({detail}) for {where}; "
                "check CONSUL_HTTP_TOKEN and its policy"
            )
        return StoreConfigError(
            f"Consul denied {where} without an ACL token ({detail}); set CONSUL_HTTP_TOKEN"
        )

    def _status_error(self, method: str, path: str, response: httpx.Response) -> StoreError:
        status = response.status_code
        text = " ".join(response.text.split())[:200] or response.reason_phrase
        where = f"{method} {path.removeprefix('/v1/kv/')}"
        if status == 403:
            return self.acl_error(f"{status} {text}", where)
        if status in (401, 407):
            return StoreConfigError(
                f"Consul at {self.base_url} refused the credentials ({status} {text}); "
                "check CONSUL_HTTP_AUTH"
            )
        if status == 400 and "HTTPS" in text:
            return StoreConfigError(
                f"Consul at {self.base_url} speaks https ({text}); "
                "use https:// in CONSUL_HTTP_ADDR or set CONSUL_HTTP_SSL=true"
            )
        if status >= 500:
            return StoreUnavailable(f"Consul answered {where} with {status} {text}")
        return StoreError(f"Consul answered {where} with {status} {text}")


def _headers(settings: ConsulSettings) -> dict[str, str]:
    return {"X-Consul-Token": settings.http_token} if settings.http_token else {}


def _basic_auth(settings: ConsulSettings) -> httpx.BasicAuth | None:
    if not settings.http_auth:
        return None
    user, _, password = settings.http_auth.partition(":")
    return httpx.BasicAuth(user, password)


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind a transport error, unless it is only a dropped connection."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError) and not isinstance(
            current, ssl.SSLEOFError | ssl.SSLZeroReturnError
        ):
            return current
        current = current.__cause__ or current.__context__
    return None
