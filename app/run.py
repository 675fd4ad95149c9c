"""``space-cloud run``: Settings -> a start-up check of the store -> uvicorn.

Loaded only for ``run`` (app/cli.py): the client commands need none of pydantic,
FastAPI or uvicorn, and importing them was most of a client command's start.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import signal
import socket
import sys
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from app import tracing
from app.cli import env_names, fail
from app.logs import configure_logging
from app.server import ServerConfigError, serve
from app.settings import Settings, read_environment
from app.store_types import STORE_TYPES
from app.stores.base import StoreConfigError, StoreUnavailable
from app.stores.factory import build_store

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from app.sync import ChangeSource

log = logging.getLogger("space_cloud")


def describe(error: ValidationError, names: dict[str, str]) -> str:
    """One line for the first problem, naming the flag / variable and what is valid."""
    first = error.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    name = names.get(field, field.upper())
    given = first.get("input")
    message = first["msg"].removeprefix("Value error, ")
    if field == "store_type":
        valid = ", ".join(STORE_TYPES)
        return f"invalid {name} {given!r}: valid values are {valid} (alias none = local)"
    if first["type"] == "bool_parsing":
        return f"invalid {name} {given!r}: use true/false, 1/0, yes/no or on/off"
    if not field:
        return message
    return f"invalid {name} {given!r}: {message}" if given is not None else f"{name}: {message}"


def load_settings(overrides: dict[str, Any]) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as error:
        fail(describe(error, env_names()))


async def check_store(store: ChangeSource) -> None:
    """Open, check and close a throwaway store (or follower): bad credentials stop the
    start here."""
    try:
        await store.open()
        await store.check()
    finally:
        await store.close()


def run(overrides: dict[str, object]) -> None:
    settings = load_settings(overrides)
    if problem := settings.auth_problem():
        fail(problem)
    env = read_environment()
    configure_logging(settings.log_format, settings.log_level)
    check_port_free(settings.host, settings.port)
    tracer_provider = tracer_provider_from_env(settings.node_id)
    follows = settings.store_type == "follow"  # no store: another instance's stream
    try:
        if follows:
            from app.main import build_follower

            asyncio.run(check_store(build_follower(settings)))
        else:
            asyncio.run(check_store(build_store(settings, env)))
    except StoreConfigError as error:  # a bad ETCD_* / CONSUL_* variable among them
        fail(str(error))
    except StoreUnavailable as error:
        log.warning(
            "the %s store is not reachable yet (%s); retrying in the background",
            settings.store_type,
            error,
        )

    from app.main import create_app

    store = None if follows else build_store(settings, env)
    app = create_app(settings, store, tracer_provider)
    # Start-up objects live as long as the process: keep them out of GC scans. With
    # thousands of open streams the default thresholds make full collections often
    # enough to show in fan-out latency (bench/fanout.py: p99 at 10k streams halved).
    gc.freeze()
    gc.set_threshold(20_000, 20, 50)
    # uvicorn re-raises the signal that stopped it once it has shut down cleanly; these
    # handlers turn that into a plain exit instead of a death by signal.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(128 + signal.SIGINT))
    try:
        serve(app, settings)
    except ServerConfigError as error:
        fail(str(error))


def tracer_provider_from_env(node_id: str) -> TracerProvider | None:
    """Tracing when the OTEL_* variables ask for it (the [otel] extra), else None."""
    if not tracing.requested(os.environ):
        return None
    try:
        return tracing.provider_from_env(os.environ, node_id)
    except tracing.TracingUnavailable as error:
        fail(str(error))


def check_port_free(host: str, port: int) -> None:
    """A busy port stops the start here, in one line, before the store is touched."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                fail(f"port {port} is already in use on {host} (choose another with --port)")
            fail(f"cannot listen on {host}:{port}: {exc.strerror}")
