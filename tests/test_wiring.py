"""How the app is put together: read-only as a capability, layers that import downward,
and process-wide tuning left to the process (not to every app a test builds)."""

from __future__ import annotations

import ast
import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.follow import Follower
from app.main import create_app
from app.settings import Settings
from app.stores.local import LocalStore

APP = Path(__file__).resolve().parent.parent / "app"
PASSWORD = "wiring-pass"
SECRET = "wiring-secret-0123456789-0123456789-abcdef"


#: tests/conftest.py: no gateway variable, no .env from the repository.
pytestmark = pytest.mark.usefixtures("clean_env")


def settings(**overrides: object) -> Settings:
    options: dict = {"admin_pass": PASSWORD, "admin_secret": SECRET, "node_id": "n1"}
    return Settings(_env_file=None, **options | overrides)


@pytest.fixture
def follower_client() -> Iterator[TestClient]:
    """An app following an address where nothing listens (the lifespan runs)."""
    app = create_app(settings(store_type="follow", upstream=["http://127.0.0.1:9"]))
    with TestClient(app) as client:
        yield client


def test_a_follower_app_has_no_store_and_refuses_writes_with_405(
    follower_client: TestClient,
) -> None:
    app = follower_client.app
    assert app.state.store is None  # type: ignore[attr-defined]
    assert isinstance(app.state.source, Follower)  # type: ignore[attr-defined]
    token = follower_client.post(
        "/v1/config/login", json={"user": "admin", "pass": PASSWORD}
    ).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    body = {"id": "p", "name": "p", "modules": {}}
    answers = [
        follower_client.put("/v1/config/projects/p", json=body, headers=auth),
        follower_client.post("/v1/config/projects", json=body, headers=auth),
        follower_client.delete("/v1/config/projects/p", headers=auth),
    ]
    for response in answers:
        assert response.status_code == 405
        assert response.headers["Allow"] == "GET"
        assert response.json() == {
            "error": "this instance follows http://127.0.0.1:9 and is read-only: write there"
        }
    assert follower_client.get("/v1/config/env").json()["storeType"] == "follow"
    assert follower_client.get("/readyz").status_code == 503  # no upstream answers


def test_an_app_on_a_store_is_writable(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "c.yaml")
    app = create_app(settings(), store)
    assert app.state.store is store and app.state.source is store


def test_building_and_running_an_app_does_not_freeze_the_collector(tmp_path: Path) -> None:
    frozen = gc.get_freeze_count()
    threshold = gc.get_threshold()
    with TestClient(create_app(settings(), LocalStore(tmp_path / "c.yaml"))) as client:
        assert client.get("/healthz").status_code == 200
    assert gc.get_freeze_count() == frozen
    assert gc.get_threshold() == threshold


def _imports(package: str) -> dict[str, set[str]]:
    """``module file -> the app.* modules it imports`` for every module of ``package``."""
    found: dict[str, set[str]] = {}
    for path in sorted((APP / package).glob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[f"{package}/{path.name}"] = {name for name in names if name.startswith("app")}
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("sync", ("app.api", "app.main", "app.cli", "app.auth", "app.settings", "app.follow")),
        ("follow", ("app.api", "app.main", "app.cli", "app.auth", "app.settings")),
        ("stores", ("app.sync", "app.follow", "app.api", "app.main", "app.auth")),
    ],
)
def test_layers_import_downward(package: str, forbidden: tuple[str, ...]) -> None:
    for module, imported in _imports(package).items():
        upward = {name for name in imported if name.startswith(forbidden)}
        assert not upward, f"{module} imports {sorted(upward)}"


def test_no_module_of_the_sync_layer_is_over_450_lines() -> None:
    for package in ("sync", "follow"):
        for path in (APP / package).glob("*.py"):
            assert len(path.read_text().splitlines()) <= 450, path
