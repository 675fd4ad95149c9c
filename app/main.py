"""``create_app(settings)``: the FastAPI app, its lifespan and routers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from app import __version__, tracing
from app.access.limiter import LoginLimiter
from app.api import dashboard, docs, events, health, history, login, peers, projects, tokens
from app.api.cors import install_cors
from app.api.errors import install_error_handlers
from app.api.event_stream import StreamingApp
from app.auth import TokenIssuer
from app.follow import Follower, TokenSource
from app.metrics import Metrics
from app.settings import Settings
from app.stores.base import ETCD_VALUE_LIMIT, Store
from app.stores.factory import build_store
from app.sync import (
    AppliedTokens,
    ChangeSource,
    ClusterState,
    InstanceInfo,
    Syncer,
    utc_now_iso,
)
from app.sync.cache import CacheFile
from app.sync.store_revision import StoreRevision

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("space_cloud")

DESCRIPTION = """\
A config gateway whose instances form one cluster. Project configs live in a store
(a local YAML file, etcd or Consul); every instance serves the same configs and pushes
every change as Server-Sent Events. Log in at `POST /v1/config/login` and send
`Authorization: Bearer <token>`.
"""


#: Lifetime of a token a follower signs for itself: only the connection checks it.
MINTED_TOKEN_TTL_SECONDS = 3600


def upstream_token(settings: Settings) -> tuple[TokenSource, str]:
    """How a follower authenticates to its upstream, and a hint for when it is refused.

    ``UPSTREAM_TOKEN`` when given; otherwise, with ``ADMIN_SECRET`` (the cluster's shared
    secret), a fresh short-lived token signed for every connection, so the follower never
    runs on an expired token; otherwise none (an upstream started with ``--dev``).
    """
    if settings.upstream_token:
        token = settings.upstream_token
        return (lambda: token), "UPSTREAM_TOKEN may have expired or come from another cluster"
    if settings.admin_secret:
        user = settings.admin_user
        issuer = TokenIssuer(
            user,
            settings.admin_pass,
            settings.admin_secret,
            MINTED_TOKEN_TTL_SECONDS,
            cluster_id=settings.cluster_id,
        )
        return (
            (lambda: issuer.issue(user)[0]),
            "ADMIN_SECRET, ADMIN_PASS and CLUSTER_ID must be the upstream cluster's",
        )
    return (lambda: None), ""


def build_follower(settings: Settings) -> Follower:
    """The change source of ``--store-type follow``: the ``--upstream`` event streams."""
    token, hint = upstream_token(settings)
    return Follower(
        settings.upstream,
        token,
        timeout=settings.store_timeout_seconds,
        read_timeout=settings.upstream_read_timeout_seconds,
        token_hint=hint,
    )


def build_cache_file(settings: Settings) -> CacheFile | None:
    if settings.cache_file is None:
        return None
    return CacheFile(settings.cache_file, settings.cluster_id, settings.store_type)


def create_app(
    settings: Settings, store: Store | None = None, tracer_provider: TracerProvider | None = None
) -> FastAPI:
    """The app over ``store`` (built from the settings when not given), or, for
    ``--store-type follow``, over another instance's stream, read-only (no store).
    With ``tracer_provider`` (the ``[otel]`` extra), requests and store calls are traced."""
    source: ChangeSource
    if settings.store_type == "follow":
        source, store = build_follower(settings), None
    else:
        source = store = store or build_store(settings)
        if tracer_provider is not None:
            source = store = tracing.traced_store(store, tracer_provider)
    metrics = Metrics()
    state = ClusterState(
        settings.node_id,
        metrics,
        history_size=settings.history_size,
        queue_limit=settings.sse_queue_size,
        retry_ms=settings.sse_retry_ms,
    )
    instance = InstanceInfo(
        node_id=settings.node_id,
        addr=settings.advertise_addr,
        version=__version__,
        started_at=utc_now_iso(),
    )
    applied_tokens = AppliedTokens(held=store is not None)
    syncer = Syncer(
        source,
        state,
        instance,
        metrics,
        registrar=store,
        token_source=store,
        tokens=applied_tokens,
        # A follower's upstream checked its values against its own store's limit.
        value_limit=ETCD_VALUE_LIMIT if store is None else store.value_limit,
        cache=build_cache_file(settings),
        replay_timeout=settings.store_timeout_seconds,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.dev:
            log.warning("DEV MODE: authentication is OFF; never expose this instance")
        await source.open()
        syncer.start()
        pinger = asyncio.create_task(events.keep_streams(state, settings.sse_ping_seconds))
        log.info(
            "node %s serving cluster %r from the %s store, listening on %s:%d, advertised as %s",
            settings.node_id,
            settings.cluster_id,
            source.kind,
            settings.host,
            settings.port,
            settings.advertise_addr,
        )
        try:
            yield
        finally:
            pinger.cancel()
            await syncer.stop()
            await source.close()

    app = StreamingApp(
        title="space-cloud gateway",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # app/api/docs.py serves Swagger UI without a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    #: None on a read-only instance (a follower): the API answers writes with 405.
    app.state.store = store
    app.state.source = source
    app.state.metrics = metrics
    if store is not None:
        metrics.count_versions(store.version_counts)
    app.state.cluster = state
    app.state.intake = syncer.intake
    app.state.store_revision = StoreRevision(source, settings.store_timeout_seconds)
    app.state.tokens = TokenIssuer(
        settings.admin_user,
        settings.admin_pass,
        settings.admin_secret,
        settings.token_ttl_seconds,
        cluster_id=settings.cluster_id,
    )
    #: The minted tokens' records every request is checked against (docs/design.md §9).
    app.state.minted_tokens = applied_tokens
    app.state.login_limiter = LoginLimiter(
        max_failures=settings.login_max_failures,
        window_seconds=settings.login_window_seconds,
        max_block_seconds=settings.login_max_block_seconds,
    )
    install_cors(app, settings.cors_origins)
    install_error_handlers(app)
    # The hot read routes first: routing tries routes in this order.
    projects.install(app)
    for module in (peers, events, login, tokens, health, history, dashboard, docs):
        app.include_router(module.router)
    if tracer_provider is not None:
        tracing.instrument_app(app, tracer_provider)
    return app
