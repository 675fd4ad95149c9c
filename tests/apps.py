"""Apps in this process for the API tests: ``create_app`` under TestClient, lifespan
running, ready when returned, each closed when the test ends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from app.stores.base import Store
from tests.eventually import eventually

PASSWORD = "test-pass"
SECRET = "test-secret-0123456789-0123456789-abcdef"

Start = Callable[..., TestClient]


def app_settings(**overrides: object) -> Settings:
    """The settings of a test app: the admin's password and secret, a fixed node id
    and address, and ``overrides``; no ``.env`` read."""
    options: dict = {
        "admin_pass": PASSWORD,
        "admin_secret": SECRET,
        "node_id": "node-1",
        "advertise_addr": "127.0.0.1:4122",
        **overrides,
    }
    return Settings(_env_file=None, **options)


@contextmanager
def app_starter(
    store_for: Callable[[Settings], Store],
    defaults: dict[str, object] | None = None,
    prepare: Callable[[FastAPI], None] | None = None,
) -> Iterator[Start]:
    """``start(**overrides)``: an app on ``store_for(settings)`` (``prepare`` may add
    routes), with ``defaults`` then ``overrides`` as settings."""
    clients: list[TestClient] = []

    def start(**overrides: object) -> TestClient:
        settings = app_settings(**{**(defaults or {}), **overrides})
        app = create_app(settings, store_for(settings))
        if prepare is not None:
            prepare(app)
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        eventually(lambda: client.get("/readyz").status_code == 200, 5, "the app to be ready", 0.01)
        return client

    try:
        yield start
    finally:
        for client in reversed(clients):
            client.__exit__(None, None, None)
