"""OpenTelemetry tracing (the ``[otel]`` extra) in process: a server span per request,
the event stream one span however many frames it sends, store calls as child spans, and
no token in any span."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from app import tracing
from app.main import create_app
from app.run import tracer_provider_from_env
from app.settings import Settings
from app.stores.local import LocalStore
from tests.environ import clear_gateway_environ

PASSWORD = "test-pass"
SECRET = "test-secret-0123456789-0123456789-abcdef"


@pytest.fixture
def spans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient, InMemorySpanExporter]]:
    clear_gateway_environ(monkeypatch)
    monkeypatch.chdir(tmp_path)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = Settings(
        admin_pass=PASSWORD, admin_secret=SECRET, node_id="n1", advertise_addr="127.0.0.1:4122"
    )
    app = create_app(settings, LocalStore(tmp_path / "c.yaml"), tracer_provider=provider)
    with TestClient(app) as client:
        yield client, exporter
    provider.shutdown()


def server_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]


def login(client: TestClient) -> str:
    response = client.post("/v1/config/login", json={"user": "admin", "pass": PASSWORD})
    return response.json()["token"]


def test_a_write_is_a_server_span_with_its_store_call_inside(spans) -> None:
    client, exporter = spans
    token = login(client)
    exporter.clear()
    response = client.put(
        "/v1/config/projects/shop",
        json={"id": "shop", "name": "Shop", "modules": {}},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201
    (server,) = server_spans(exporter)
    assert server.name == "PUT /v1/config/projects/{project}"
    store_calls = [s for s in exporter.get_finished_spans() if s.name == "store.put_project"]
    assert len(store_calls) == 1
    (call,) = store_calls
    assert call.kind == SpanKind.CLIENT and call.attributes["db.system"] == "local"
    assert call.parent is not None and call.parent.span_id == server.context.span_id


def test_the_event_stream_is_one_span_without_tokens(spans) -> None:
    client, exporter = spans
    token = login(client)
    headers = {"Authorization": f"Bearer {token}"}
    for name in ("a", "b", "c"):
        client.put(f"/v1/config/projects/{name}", json={"id": name, "modules": {}}, headers=headers)
    exporter.clear()
    # Resume from the start: a replay of three frames and the peers, several sends.
    with client.stream(
        "GET", f"/v1/config/events?%74oken={token}", headers={"Last-Event-ID": "0"}
    ) as stream:
        assert stream.status_code == 200
        seen = b""
        for chunk in stream.iter_bytes():
            seen += chunk
            if seen.count(b"event: project.put") == 3:
                break
    finished = exporter.get_finished_spans()
    streams = [s for s in finished if s.name.startswith("GET /v1/config/events")]
    assert len(streams) == 1, [s.name for s in finished]
    assert not [s for s in finished if "http send" in s.name], [s.name for s in finished]
    for span in finished:
        for value in (span.attributes or {}).values():
            assert token not in str(value), span.name


def test_tracing_is_off_unless_the_variables_ask(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not tracing.requested({})
    assert not tracing.requested({"OTEL_TRACES_EXPORTER": "none"})
    assert tracing.requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.requested({"OTEL_TRACES_EXPORTER": "console"})
    clear_gateway_environ(monkeypatch)
    assert tracer_provider_from_env("n1") is None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    provider = tracer_provider_from_env("n1")
    assert provider is not None
    assert provider.resource.attributes["service.instance.id"] == "n1"
    provider.shutdown()


def test_asking_without_the_extra_stops_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def without_sdk(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("opentelemetry.sdk"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_sdk)
    with pytest.raises(tracing.TracingUnavailable, match=r"\[otel\]"):
        tracing.provider_from_env({"OTEL_TRACES_EXPORTER": "console"}, "n1")
