"""Real ``space-cloud run`` processes for end-to-end tests, and an SSE reader."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests import web
from tests.environ import clean_environ
from tests.eventually import eventually
from tests.servers.process import ROOT, ChildProcess, free_port

#: Query parameter values the API takes (``waitRevision=5``...).
Param = str | int

ADMIN_PASS = "test-pass"
ADMIN_SECRET = "test-secret-0123456789-0123456789-abcdef"


def space_cloud_command() -> list[str]:
    """The installed console script, or ``python -m app`` beside the interpreter."""
    script = Path(sys.executable).with_name("space-cloud")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "app"]


class Gateway:
    """One ``space-cloud run`` process on a free loopback port."""

    def __init__(
        self,
        workdir: Path,
        *,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        node_id: str | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.node_id = node_id or f"node-{self.port}"
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.args = [
            "run",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--id",
            self.node_id,
            "--advertise-addr",
            f"127.0.0.1:{self.port}",
            *(args or []),
        ]
        self.env = {
            **clean_environ(),
            "ADMIN_PASS": ADMIN_PASS,
            "ADMIN_SECRET": ADMIN_SECRET,
            "LOG_LEVEL": "info",
            **(env or {}),
        }
        self.process = ChildProcess(
            [*space_cloud_command(), *self.args],
            workdir / f"{self.node_id}.log",
            env=self.env,
            cwd=workdir,
        )
        self._token: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True, timeout: float = 30.0) -> Gateway:
        self.process.start()
        if wait_ready:
            try:
                self.wait_ready(timeout)
            except BaseException:
                self.stop()  # never leave a process behind for a failed start
                raise
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if not self.process.running:
                raise RuntimeError(f"{self.node_id} exited:\n{self.process.log()}")
            try:
                return web.get(f"{self.url}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        eventually(ready, timeout, f"{self.node_id} to be ready")

    def stop(self) -> int | None:
        return self.process.stop()

    def kill(self) -> None:
        self.process.kill()

    # --- HTTP -----------------------------------------------------------------------

    def token(self) -> str:
        if self._token is None:
            response = web.post(
                f"{self.url}/v1/config/login",
                json={"user": "admin", "pass": ADMIN_PASS},
                timeout=5,
            )
            response.raise_for_status()
            self._token = response.json()["token"]
        return self._token

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}", **extra}

    def client(self, timeout: float = 15.0) -> httpx.Client:
        return web.client(base_url=self.url, headers=self.headers(), timeout=timeout)

    def put(self, project: str, body: dict | None = None, **headers: str) -> httpx.Response:
        document = {"id": project, "name": project, "modules": {}} if body is None else body
        sent = {name.replace("_", "-"): value for name, value in headers.items()}
        with self.client() as client:
            return client.put(f"/v1/config/projects/{project}", json=document, headers=sent)

    def get(self, path: str, **params: Param) -> httpx.Response:
        with self.client() as client:
            return client.get(path, params=params)

    def peers(self, **params: Param) -> list[dict]:
        return self.get("/v1/config/peers", **params).json()["peers"]

    def events(
        self,
        last_event_id: int | None = None,
        query_token: bool = False,
        read_timeout: float = 20.0,
        *,
        token: str | None = None,
        projects: str | None = None,
    ) -> SSEStream:
        """``token``: another than the admin's; ``projects``: the ``?projects=`` filter."""
        return SSEStream(self, last_event_id, query_token, read_timeout, token, projects)


@dataclass
class Event:
    event: str
    data: dict
    id: int | None = None
    raw: list[str] = field(default_factory=list)


class SSEStream:
    """A blocking reader of ``/v1/config/events``; events queue in the socket meanwhile."""

    def __init__(
        self,
        gateway: Gateway,
        last_event_id: int | None = None,
        query_token: bool = False,
        read_timeout: float = 20.0,
        token: str | None = None,
        projects: str | None = None,
    ) -> None:
        headers = {"Accept": "text/event-stream"}
        params = {} if projects is None else {"projects": projects}
        token = token or gateway.token()
        if query_token:
            params["token"] = token
        else:
            headers["Authorization"] = f"Bearer {token}"
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self._client = web.client(timeout=httpx.Timeout(5.0, read=read_timeout))
        self._context = self._client.stream(
            "GET", f"{gateway.url}/v1/config/events", headers=headers, params=params
        )
        self.response = self._context.__enter__()
        self.response.raise_for_status()
        self._lines = self.response.iter_lines()
        self.retry: int | None = None

    def __enter__(self) -> SSEStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._context.__exit__(None, None, None)
        finally:
            self._client.close()

    def next(self) -> Event:
        """The next event (comments and retry-only frames are skipped)."""
        fields: dict[str, str] = {}
        raw: list[str] = []
        for line in self._lines:
            if line == "":
                if "data" in fields:
                    event_id = int(fields["id"]) if "id" in fields else None
                    return Event(
                        fields.get("event", "message"), json.loads(fields["data"]), event_id, raw
                    )
                fields, raw = {}, []
                continue
            raw.append(line)
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "retry":
                self.retry = int(value)
            else:
                fields[name] = value
        raise EOFError("the event stream ended")

    def next_of(self, *kinds: str) -> Event:
        """The next event of one of ``kinds``, skipping the others."""
        while True:
            event = self.next()
            if event.event in kinds:
                return event

    def take(self, count: int, *kinds: str) -> list[Event]:
        return [self.next_of(*kinds) for _ in range(count)]

    def iter(self) -> Iterator[Event]:
        while True:
            yield self.next()


__all__ = ["ADMIN_PASS", "ROOT", "Event", "Gateway", "SSEStream"]
