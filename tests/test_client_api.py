"""The client's requests for endpoints other issues build (history, rollback, tokens:
docs/design.md §8/§9), and the watch's resume, checked with ``httpx.MockTransport``."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from app import cli
from app.client.api import ApiError, GatewayClient
from app.client.commands import run_command
from app.client.watch import Watch

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport that records every request and answers with ``answer``."""

    def __init__(self, answer: Handler) -> None:
        self.requests: list[httpx.Request] = []
        self._answer = answer
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self._answer(request)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def run(
    argv: list[str], answer: Handler, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str, Recorder]:
    recorder = Recorder(answer)
    args = cli.build_parser().parse_args([*argv, "--addr", "gw:4122", "--token", "tok"])
    code = run_command(args, transport=recorder.transport)
    out, err = capsys.readouterr()
    return code, out, err, recorder


def body(request: httpx.Request) -> object:
    return json.loads(request.content)


def test_history_lists_versions(capsys: pytest.CaptureFixture[str]) -> None:
    versions = {"versions": [{"revision": 9, "op": "put", "at": "t", "by": "admin", "node": "n"}]}
    code, out, _, recorder = run(
        ["history", "shop", "--limit", "5", "--before", "12"],
        lambda _: httpx.Response(200, json=versions),
        capsys,
    )
    assert code == 0
    assert json.loads(out) == versions
    request = recorder.last
    assert request.method == "GET"
    assert request.url == "http://gw:4122/v1/config/projects/shop/history?limit=5&before=12"
    assert request.headers["Authorization"] == "Bearer tok"


def test_history_of_one_revision_prints_that_document(capsys: pytest.CaptureFixture[str]) -> None:
    document = {"id": "shop", "name": "old", "modules": {}}
    code, out, _, recorder = run(
        ["history", "shop", "7"], lambda _: httpx.Response(200, json=document), capsys
    )
    assert code == 0 and json.loads(out) == document
    assert recorder.last.url.path == "/v1/config/projects/shop/history/7"


def test_rollback_posts_the_revision_with_if_match(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _, recorder = run(
        ["rollback", "shop", "7", "--if-match", "12"],
        lambda _: httpx.Response(200, json={"project": "shop", "revision": 13}),
        capsys,
    )
    assert code == 0 and json.loads(out) == {"project": "shop", "revision": 13}
    request = recorder.last
    assert (request.method, request.url.path) == ("POST", "/v1/config/projects/shop/rollback")
    assert body(request) == {"revision": 7}
    assert request.headers["If-Match"] == '"12"'


def test_rollback_to_an_unknown_version_prints_the_api_sentence(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err, _ = run(
        ["rollback", "shop", "3"],
        lambda _: httpx.Response(404, json={"error": "shop has no version at revision 3"}),
        capsys,
    )
    assert code == 1 and out == ""
    assert err == "space-cloud: error: shop has no version at revision 3\n"


def test_tokens_create(capsys: pytest.CaptureFixture[str]) -> None:
    created = {"id": "t1", "name": "ci", "role": "writer", "projects": ["shop-*"], "token": "s"}
    code, out, _, recorder = run(
        [
            "tokens",
            "create",
            "--name",
            "ci",
            "--role",
            "writer",
            "--project",
            "shop-*",
            "--project",
            "blog",
            "--ttl",
            "3600",
        ],
        lambda _: httpx.Response(201, json=created),
        capsys,
    )
    assert code == 0 and json.loads(out) == created
    request = recorder.last
    assert (request.method, request.url.path) == ("POST", "/v1/config/tokens")
    assert body(request) == {
        "name": "ci",
        "role": "writer",
        "projects": ["shop-*", "blog"],
        "ttlSeconds": 3600,
    }


def test_tokens_create_without_ttl_sends_none(capsys: pytest.CaptureFixture[str]) -> None:
    _, _, _, recorder = run(
        ["tokens", "create", "--name", "r", "--role", "reader", "--project", "*"],
        lambda _: httpx.Response(201, json={"id": "t2"}),
        capsys,
    )
    assert body(recorder.last) == {"name": "r", "role": "reader", "projects": ["*"]}


def test_tokens_list_and_revoke(capsys: pytest.CaptureFixture[str]) -> None:
    listing = {"tokens": [{"id": "t1", "name": "ci", "role": "writer", "projects": ["*"]}]}
    code, out, _, recorder = run(
        ["tokens", "list"], lambda _: httpx.Response(200, json=listing), capsys
    )
    assert code == 0 and json.loads(out) == listing
    assert (recorder.last.method, recorder.last.url.path) == ("GET", "/v1/config/tokens")

    code, out, _, recorder = run(["tokens", "revoke", "t1"], lambda _: httpx.Response(204), capsys)
    assert code == 0 and out == ""
    assert (recorder.last.method, recorder.last.url.path) == ("DELETE", "/v1/config/tokens/t1")


def test_a_forbidden_scope_is_the_api_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err, _ = run(
        ["tokens", "list"],
        lambda _: httpx.Response(403, json={"error": "this token may not manage tokens"}),
        capsys,
    )
    assert code == 1 and err == "space-cloud: error: this token may not manage tokens\n"


def test_an_answer_without_the_error_body_still_gives_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err, _ = run(["list"], lambda _: httpx.Response(502, text="<html>"), capsys)
    assert code == 1
    assert err == "space-cloud: error: GET /v1/config/projects answered HTTP 502 Bad Gateway\n"


# --- watch: the resume header, the project filter ------------------------------------------


def sse(*frames: str) -> httpx.Response:
    return httpx.Response(
        200, headers={"Content-Type": "text/event-stream"}, content="".join(frames).encode()
    )


def frame(event: str, data: dict, event_id: int | None = None) -> str:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"data: {json.dumps(data)}")
    return "\n".join(lines) + "\n\n"


def test_watch_resumes_with_the_last_event_id_and_narrows_to_its_projects() -> None:
    streams = [
        sse(
            frame("snapshot", {"revision": 3, "projects": [{"id": "a"}, {"id": "b"}]}, 3),
            frame("project.put", {"revision": 4, "project": {"id": "b"}}, 4),
            frame("project.put", {"revision": 5, "project": {"id": "a"}}, 5),
        ),
        httpx.Response(503, json={"error": "this instance has not finished its first sync"}),
        sse(
            ": ping\n\n",
            frame("project.delete", {"revision": 6, "id": "b"}, 6),
            frame("project.delete", {"revision": 7, "id": "a"}, 7),
            frame("peers", {"peers": []}),
        ),
    ]
    recorder = Recorder(lambda _: streams.pop(0))
    breaks: list[str] = []
    client = GatewayClient("gw:4122", "tok", transport=recorder.transport)
    watch = Watch(client, frozenset({"a"}), on_break=breaks.append)
    lines = watch.lines()
    printed = [json.loads(next(lines)) for _ in range(4)]
    assert printed == [
        {"event": "snapshot", "id": 3, "data": {"revision": 3, "projects": [{"id": "a"}]}},
        {"event": "project.put", "id": 5, "data": {"revision": 5, "project": {"id": "a"}}},
        {"event": "project.delete", "id": 7, "data": {"revision": 7, "id": "a"}},
        {"event": "peers", "data": {"peers": []}},
    ]
    first, refused, resumed = recorder.requests
    assert "Last-Event-ID" not in first.headers
    assert first.url.params["projects"] == "a"
    assert refused.headers["Last-Event-ID"] == "5"
    assert resumed.headers["Last-Event-ID"] == "5"
    assert resumed.headers["Authorization"] == "Bearer tok"
    assert breaks == [
        "the gateway ended the stream",
        "this instance has not finished its first sync",
    ]


def test_watch_stops_on_an_error_that_waiting_cannot_fix() -> None:
    recorder = Recorder(lambda _: httpx.Response(401, json={"error": "the token has expired"}))
    client = GatewayClient("gw:4122", "tok", transport=recorder.transport)
    with pytest.raises(ApiError, match="expired"):
        next(Watch(client).lines())


def test_watch_logs_in_again_when_its_token_is_refused() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/config/login":
            assert json.loads(request.content) == {"user": "admin", "pass": "pw"}
            return httpx.Response(200, json={"token": "fresh", "expiresAt": 0})
        if request.headers["Authorization"] != "Bearer fresh":
            return httpx.Response(401, json={"error": "the token has expired"})
        return sse(frame("project.put", {"revision": 9, "project": {"id": "a"}}, 9))

    recorder = Recorder(answer)
    client = GatewayClient("gw:4122", "stale", transport=recorder.transport)
    breaks: list[str] = []
    watch = Watch(
        client,
        last_event_id=8,
        on_break=breaks.append,
        log_in_again=lambda: client.login("admin", "pw"),
    )
    assert json.loads(next(watch.lines()))["id"] == 9
    refused, login, resumed = recorder.requests
    assert refused.headers["Authorization"] == "Bearer stale"
    assert login.url.path == "/v1/config/login"
    assert resumed.headers["Authorization"] == "Bearer fresh"
    assert resumed.headers["Last-Event-ID"] == "8"
    assert breaks == ["the token has expired; logged in again"]


def test_watch_gives_up_when_a_fresh_token_is_refused_too() -> None:
    recorder = Recorder(
        lambda request: (
            httpx.Response(200, json={"token": "fresh"})
            if request.url.path == "/v1/config/login"
            else httpx.Response(401, json={"error": "the token was revoked"})
        )
    )
    client = GatewayClient("gw:4122", "stale", transport=recorder.transport)
    watch = Watch(client, log_in_again=lambda: client.login("admin", "pw"))
    with pytest.raises(ApiError, match="revoked"):
        next(watch.lines())
    assert [r.url.path for r in recorder.requests] == [
        "/v1/config/events",
        "/v1/config/login",
        "/v1/config/events",
    ]
