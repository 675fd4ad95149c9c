"""The HTTP server: uvicorn, built from the settings, with the connection limits applied.

``serve(app, settings)`` raises the descriptor limit, sizes the connection cap from it and
runs uvicorn with :class:`app.http_limits.LimitedHttpToolsProtocol` (docs/design.md §10).
"""

from __future__ import annotations

import functools
import logging
import resource
from typing import TYPE_CHECKING

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from app.http_limits import ConnectionLimits, LimitedHttpToolsProtocol
from app.settings import Settings

if TYPE_CHECKING:  # the app is built after the settings are checked (app.cli)
    from fastapi import FastAPI

log = logging.getLogger("space_cloud")

#: Descriptors kept for everything but client connections: the store's connections,
#: log files, the listening socket and the connections past the cap that are still read.
MIN_RESERVED_DESCRIPTORS = 128

#: Connections past the cap that are still read (503 or a probe), at most.
MAX_OVERFLOW = 256

#: Linux will not open more than this per process by default (fs.nr_open).
_NR_OPEN_DEFAULT = 1 << 20


class ServerConfigError(ValueError):
    """A server setting this process cannot honour (one line for the operator)."""


def raise_descriptor_limit() -> int:
    """Raise the soft descriptor limit to the hard limit; return the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _NR_OPEN_DEFAULT if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return target if soft == resource.RLIM_INFINITY else soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


def reserved_descriptors(descriptor_limit: int) -> int:
    return max(MIN_RESERVED_DESCRIPTORS, descriptor_limit // 10)


def connection_limits(settings: Settings, descriptor_limit: int) -> ConnectionLimits:
    """The limits for this process; ``MAX_CONNECTIONS`` must leave the reserve free."""
    reserve = reserved_descriptors(descriptor_limit)
    ceiling = descriptor_limit - reserve
    if ceiling < 1:
        raise ServerConfigError(
            f"the descriptor limit ({descriptor_limit}) is too low to serve; "
            f"raise it (ulimit -n) above {reserve}"
        )
    max_connections = settings.max_connections or ceiling
    if max_connections > ceiling:
        raise ServerConfigError(
            f"invalid MAX_CONNECTIONS {max_connections}: at most {ceiling} with a descriptor "
            f"limit of {descriptor_limit} ({reserve} are kept for the store and probes)"
        )
    return ConnectionLimits(
        max_header_bytes=settings.max_header_bytes,
        header_timeout=settings.header_timeout_seconds,
        body_timeout=settings.body_timeout_seconds,
        max_connections=max_connections,
        overflow=min(MAX_OVERFLOW, reserve // 2),
    )


def build_server(app: FastAPI, settings: Settings, limits: ConnectionLimits) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=functools.partial(LimitedHttpToolsProtocol, limits=limits),  # type: ignore[arg-type]
        log_level=settings.log_level,
        access_log=settings.access_log,
        log_config=None,  # app.logs.configure_logging (app.cli) covers uvicorn's loggers too
        # uvicorn hints an int but only hands it to call_later: fractions work.
        timeout_keep_alive=settings.keep_alive_timeout_seconds,  # type: ignore[arg-type]
        timeout_graceful_shutdown=5,
        server_header=False,
    )
    return uvicorn.Server(config)


def serve(app: FastAPI, settings: Settings) -> None:
    """Run until stopped; :class:`ServerConfigError` before anything is bound."""
    descriptors = raise_descriptor_limit()
    limits = connection_limits(settings, descriptors)
    log.info(
        "serving up to %d connections (descriptor limit %d), request heads up to %d bytes "
        "within %g s",
        limits.max_connections,
        descriptors,
        limits.max_header_bytes,
        limits.header_timeout,
    )
    server = build_server(app, settings, limits)
    server.run()
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)  # the port was taken or the lifespan failed
