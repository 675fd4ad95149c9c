"""``create_app(settings)``: the FastAPI app, its lifespan and routers."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__
from app.api import dashboard, docs, events, health, login, peers, projects
from app.api.errors import install_error_handlers
from app.auth import TokenIssuer
from app.metrics import Metrics
from app.settings import Settings
from app.stores.base import Store
from app.stores.factory import build_store
from app.sync import ClusterState, InstanceInfo, Syncer, utc_now_iso

log = logging.getLogger("space_cloud")

DESCRIPTION = """\
A config gateway whose instances form one cluster. Project configs live in a store
(a local YAML file, etcd or Consul); every instance serves the same configs and pushes
every change as Server-Sent Events. Log in at `POST /v1/config/login` and send
`Authorization: Bearer <token>`.
"""


def create_app(settings: Settings, store: Store | None = None) -> FastAPI:
    store = store or build_store(settings)
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
    syncer = Syncer(store, state, instance, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.dev:
            log.warning("DEV MODE: authentication is OFF; never expose this instance")
        await store.open()
        # Start-up objects live as long as the process: keep them out of GC scans. With
        # thousands of open streams the default thresholds make full collections often
        # enough to show in fan-out latency (bench/fanout.py: p99 at 10k streams halved).
        gc.freeze()
        gc.set_threshold(20_000, 20, 50)
        syncer.start()
        pinger = asyncio.create_task(events.ping_subscribers(state, settings.sse_ping_seconds))
        log.info(
            "node %s serving cluster %r from the %s store, listening on %s:%d, advertised as %s",
            settings.node_id,
            settings.cluster_id,
            store.kind,
            settings.host,
            settings.port,
            settings.advertise_addr,
        )
        try:
            yield
        finally:
            pinger.cancel()
            await syncer.stop()
            await store.close()

    app = FastAPI(
        title="space-cloud gateway",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # app/api/docs.py serves Swagger UI without a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.metrics = metrics
    app.state.cluster = state
    app.state.tokens = TokenIssuer(
        settings.admin_user,
        settings.admin_pass,
        settings.admin_secret,
        settings.token_ttl_seconds,
    )
    install_error_handlers(app)
    # The hot read routes first: routing tries routers in this order.
    for module in (projects, peers, events, login, health, dashboard, docs):
        app.include_router(module.router)
    return app
