"""Optional OpenTelemetry tracing (the ``[otel]`` extra): one server span per request, the
event stream included as one span for its whole life (never one per chunk sent), and a
client span per store call. Off unless the standard ``OTEL_*`` variables ask for it
(``OTEL_TRACES_EXPORTER``, ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); the exporter reads the rest of them itself
(docs/design.md §11, "Tracing").
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from app.logs import redact

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from app.stores.base import Store

SERVICE_NAME = "space-cloud"
#: Span attributes that can carry the query string (``?token=`` among others).
URL_ATTRIBUTES = ("http.target", "http.url", "url.query", "url.full")


class TracingUnavailable(Exception):
    """Tracing was asked for but the ``[otel]`` extra is not installed."""


def requested(env: Mapping[str, str]) -> bool:
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if exporter == "none":
        return False
    return bool(exporter or endpoint)


def provider_from_env(env: Mapping[str, str], node_id: str) -> TracerProvider:
    """A provider exporting as the variables say: ``console``, or OTLP over HTTP."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        raise TracingUnavailable(
            "OTEL_* variables ask for tracing, but the [otel] extra is not installed "
            "(pip install 'space-cloud-gateway[otel]')"
        ) from None
    exporter: Any = (
        ConsoleSpanExporter()
        if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "console"
        else OTLPSpanExporter()
    )
    resource = Resource.create(
        {
            "service.name": env.get("OTEL_SERVICE_NAME") or SERVICE_NAME,
            "service.instance.id": node_id,
        }
    )
    provider = TracerProvider(resource=resource)  # flushes itself at exit
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def instrument_app(app: FastAPI, provider: TracerProvider) -> None:
    """A server span per request; ASGI's per-message spans are left out, so a stream that
    sends for an hour is one span, not one per frame."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        exclude_spans=["receive", "send"],
        server_request_hook=_without_tokens,
    )


def _without_tokens(span: Span, scope: dict[str, Any]) -> None:
    """Tokens never go into a span, as they never go into a log line."""
    if not span.is_recording():
        return
    attributes = getattr(span, "attributes", None) or {}
    for name in URL_ATTRIBUTES:
        value = attributes.get(name)
        if isinstance(value, str):
            # A bare query string ("token=...") redacts as the query part of a URL.
            bare = "?" not in value and "=" in value
            span.set_attribute(name, redact(f"?{value}")[1:] if bare else redact(value))


class TracedStore:
    """The store with a client span around every call (not around the long-lived watches,
    which are async generators, not calls)."""

    def __init__(self, store: Store, tracer: Tracer) -> None:
        self._store = store
        self._tracer = tracer

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute
        from opentelemetry.trace import SpanKind

        kind = getattr(self._store, "kind", "store")

        @functools.wraps(attribute)
        async def traced(*args: Any, **kwargs: Any) -> Any:
            with self._tracer.start_as_current_span(
                f"store.{name}", kind=SpanKind.CLIENT, attributes={"db.system": kind}
            ):
                return await attribute(*args, **kwargs)

        return traced


def traced_store(store: Store, provider: TracerProvider) -> Store:
    return TracedStore(store, provider.get_tracer("space_cloud.store"))
