"""Test tiers: every test that needs etcd, Consul, a browser, wrk or root is marked so.

``make check`` runs the rest (``-m "not (etcd or consul or browser or wrk or root or fuzz)"``).
Marks come from the fixtures a test uses, so a new test lands in its tier by itself:

- a fixture with ``etcd`` or ``consul`` among the words of its name (``etcd_server``,
  ``consul_factory``, ``secure_consul``...), directly or through other fixtures;
- a parametrised fixture whose parameter is ``"etcd"`` or ``"consul"`` (a suite run over
  every store, which asks for the server with ``request.getfixturevalue``);
- ``browser`` (the Playwright browser, tests/test_dashboard.py).

Tests that need wrk or root say so with ``@pytest.mark.wrk`` / ``@pytest.mark.root``; the
schema fuzzer (tests/test_openapi_fuzz.py, tens of seconds of CPU) with
``@pytest.mark.fuzz``. ``make test`` runs them all.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.environ import clear_gateway_environ
from tests.servers.process import ChildProcess

pytest_plugins = ["tests.servers.etcd", "tests.servers.consul"]

STORES = ("etcd", "consul")
FIXTURE_MARKS = {"browser": "browser"}


def _marks_of_fixture(name: str) -> set[str]:
    words = set(name.split("_"))
    return {store for store in STORES if store in words} | (
        {FIXTURE_MARKS[name]} if name in FIXTURE_MARKS else set()
    )


def _marks_of_parameters(item: pytest.Item) -> set[str]:
    """Stores named by the parameter of a parametrised fixture (not a plain argument)."""
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return set()
    definitions = item._fixtureinfo.name2fixturedefs  # type: ignore[attr-defined]
    return {
        value
        for name, value in callspec.params.items()
        if value in STORES and any(d.params is not None for d in definitions.get(name, ()))
    }


def tier_marks(item: pytest.Item) -> set[str]:
    fixtures = getattr(item, "fixturenames", ())
    from_fixtures = {mark for name in fixtures for mark in _marks_of_fixture(name)}
    return from_fixtures | _marks_of_parameters(item)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for mark in sorted(tier_marks(item)):
            item.add_marker(mark)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No gateway variable from the caller's environment, and the test's own folder as
    the working directory (no ``.env`` from the repository); answers that folder."""
    clear_gateway_environ(monkeypatch)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session", autouse=True)
def _no_process_outlives_the_run() -> Iterator[None]:
    """Whatever a test started and did not stop (a fixture's server, a forgotten gateway)
    is stopped by its PID when the session ends."""
    yield
    for process in list(ChildProcess.started):
        process.stop(timeout=5)
