"""``GatewayClient``: the HTTP API of one gateway instance, over httpx (docs/design.md §11).

Every call answers the API's JSON or raises :class:`ApiError` carrying the API's own
one-sentence message, or :class:`Unreachable` when no answer came at all.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx
from httpx_sse import EventSource, connect_sse

DEFAULT_ADDR = "http://127.0.0.1:4122"
#: Seconds for one request; the event stream waits longer for data (the server pings
#: every 15 s, so 45 s of silence means the connection is gone).
REQUEST_TIMEOUT = 15.0
STREAM_READ_TIMEOUT = 45.0


class ClientError(Exception):
    """The root of everything the client raises."""


class ApiError(ClientError):
    """The gateway answered with an error status."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


class Unreachable(ClientError):
    """No HTTP answer: the address is wrong, the gateway down, or the connection broke."""


def base_url(addr: str) -> str:
    """``host:port`` or ``http(s)://host:port`` as a base URL."""
    addr = addr.strip().rstrip("/")
    return addr if "://" in addr else f"http://{addr}"


def revision_tag(revision: int) -> str:
    return f'"{revision}"'


class GatewayClient:
    """One gateway's API. Use as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        addr: str = DEFAULT_ADDR,
        token: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url(addr)
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def use_token(self, token: str) -> None:
        self._http.headers["Authorization"] = f"Bearer {token}"

    # --- auth and projects ----------------------------------------------------------

    def login(self, user: str, password: str) -> str:
        answer = self._call("POST", "/v1/config/login", json={"user": user, "pass": password})
        return str(answer["token"])

    def list_projects(self) -> dict[str, Any]:
        return self._call("GET", "/v1/config/projects")

    def get_project(self, project: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/config/projects/{project}")

    def put_project(self, project: str, body: bytes, if_match: int | None = None) -> dict:
        headers = {"Content-Type": "application/json", **_if_match(if_match)}
        return self._call("PUT", f"/v1/config/projects/{project}", content=body, headers=headers)

    def delete_project(self, project: str, if_match: int | None = None) -> dict[str, Any]:
        response = self._send("DELETE", f"/v1/config/projects/{project}", _if_match(if_match))
        revision = response.headers.get("X-Revision")
        return {"project": project, "revision": int(revision) if revision else None}

    def peers(self) -> dict[str, Any]:
        return self._call("GET", "/v1/config/peers")

    # --- versions (docs/design.md §11) ----------------------------------------------

    def history(
        self, project: str, limit: int | None = None, before: int | None = None
    ) -> dict[str, Any]:
        params = {name: value for name, value in (("limit", limit), ("before", before)) if value}
        return self._call("GET", f"/v1/config/projects/{project}/history", params=params)

    def version(self, project: str, revision: int) -> dict[str, Any]:
        return self._call("GET", f"/v1/config/projects/{project}/history/{revision}")

    def rollback(self, project: str, revision: int, if_match: int | None = None) -> dict:
        return self._call(
            "POST",
            f"/v1/config/projects/{project}/rollback",
            json={"revision": revision},
            headers=_if_match(if_match),
        )

    # --- tokens (docs/design.md §9, §11) ---------------------------------------------

    def create_token(
        self, name: str, role: str, projects: list[str], ttl_seconds: int | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "role": role, "projects": projects}
        if ttl_seconds is not None:
            body["ttlSeconds"] = ttl_seconds
        return self._call("POST", "/v1/config/tokens", json=body)

    def list_tokens(self) -> dict[str, Any]:
        return self._call("GET", "/v1/config/tokens")

    def revoke_token(self, token_id: str) -> None:
        self._send("DELETE", f"/v1/config/tokens/{token_id}")

    # --- the event stream ---------------------------------------------------------------

    @contextmanager
    def events(
        self, last_event_id: int | None = None, projects: list[str] | None = None
    ) -> Iterator[EventSource]:
        """The open event stream; raises :class:`ApiError` when it is refused."""
        headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
        params = {"projects": ",".join(projects)} if projects else {}
        timeout = httpx.Timeout(REQUEST_TIMEOUT, read=STREAM_READ_TIMEOUT)
        try:
            with connect_sse(
                self._http,
                "GET",
                "/v1/config/events",
                headers=headers,
                params=params,
                timeout=timeout,
            ) as source:
                if source.response.is_error:
                    source.response.read()
                    raise _api_error(source.response)
                yield source
        except httpx.HTTPError as exc:
            raise Unreachable(_describe(exc, self.base_url)) from None

    # --- plumbing -------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._request(method, path, **kwargs)
        try:
            answer = response.json()
        except ValueError:
            raise ClientError(f"{method} {path} answered something that is not JSON") from None
        if not isinstance(answer, dict):
            raise ClientError(f"{method} {path} answered JSON that is not an object")
        return answer

    def _send(
        self, method: str, path: str, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        return self._request(method, path, headers=headers)

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise Unreachable(_describe(exc, self.base_url)) from None
        if response.is_error:
            raise _api_error(response)
        return response


def _if_match(revision: int | None) -> dict[str, str]:
    return {} if revision is None else {"If-Match": revision_tag(revision)}


def _api_error(response: httpx.Response) -> ApiError:
    """The API's own sentence, or a plain one when the body is not ``{"error": ...}``."""
    message = None
    try:
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            message = body["error"]
    except ValueError:
        pass
    if message is None:
        message = f"{response.request.method} {response.request.url.path} answered HTTP " + (
            f"{response.status_code} {response.reason_phrase}".strip()
        )
    return ApiError(response.status_code, message)


def _describe(exc: httpx.HTTPError, url: str) -> str:
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect to {url}: {detail}"
    if isinstance(exc, httpx.TimeoutException):
        return f"{url} did not answer in time"
    return f"the connection to {url} failed: {detail}"
