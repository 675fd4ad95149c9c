"""Settings: precedence, validation and the auth check (the stores' own variables:
test_store_config.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import Settings, split_host_port

#: tests/conftest.py: no gateway variable, no .env from the repository.
pytestmark = pytest.mark.usefixtures("clean_env")


def write_dotenv(folder: Path, **values: str) -> None:
    (folder / ".env").write_text("".join(f"{key}={value}\n" for key, value in values.items()))


# --- precedence -------------------------------------------------------------------------


def test_defaults(clean_env: Path) -> None:
    settings = Settings()
    assert settings.store_type == "local"
    assert settings.port == 4122
    assert settings.host == "0.0.0.0"
    assert settings.cluster_id == "default-cluster"
    assert settings.config == Path("config.yaml")
    assert settings.admin_user == "admin"
    assert settings.admin_pass is None
    assert settings.admin_secret is None
    assert settings.dev is False
    assert settings.node_id.startswith("auto-")
    assert Settings().node_id != settings.node_id  # random per instance


def test_dotenv_beats_defaults(clean_env: Path) -> None:
    write_dotenv(clean_env, PORT="1111", CLUSTER_ID="from-dotenv", ADMIN_USER="dotenv-user")
    settings = Settings()
    assert settings.port == 1111
    assert settings.cluster_id == "from-dotenv"
    assert settings.admin_user == "dotenv-user"


def test_environment_beats_dotenv(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_dotenv(clean_env, PORT="1111", CLUSTER_ID="from-dotenv")
    monkeypatch.setenv("PORT", "2222")
    settings = Settings()
    assert settings.port == 2222
    assert settings.cluster_id == "from-dotenv"


def test_flags_beat_environment_and_dotenv(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_dotenv(clean_env, PORT="1111", NODE_ID="dotenv-node", CLUSTER_ID="from-dotenv")
    monkeypatch.setenv("PORT", "2222")
    monkeypatch.setenv("NODE_ID", "env-node")
    settings = Settings(port=3333, node_id="flag-node")
    assert settings.port == 3333
    assert settings.node_id == "flag-node"
    assert settings.cluster_id == "from-dotenv"


def test_dotenv_is_read_from_the_current_directory(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    write_dotenv(clean_env, CLUSTER_ID="here")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    monkeypatch.chdir(elsewhere)
    assert Settings().cluster_id == "default-cluster"
    monkeypatch.chdir(clean_env)
    assert Settings().cluster_id == "here"


@pytest.mark.parametrize("text", ["true", "1", "yes", "on", "TRUE"])
def test_dev_from_environment(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("DEV", text)
    assert Settings().dev is True


# --- store type -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("none", "local"),
        ("NONE", "local"),
        ("local", "local"),
        ("etcd", "etcd"),
        (" Consul ", "consul"),
    ],
)
def test_store_type_values(given: str, expected: str) -> None:
    assert Settings(store_type=given).store_type == expected


def test_store_type_none_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORE_TYPE", "none")
    settings = Settings()
    assert settings.store_type == "local"
    assert settings.distributed is False


def test_unknown_store_type_fails() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(store_type="redis")
    assert caught.value.errors()[0]["loc"] == ("store_type",)


# --- advertise address ------------------------------------------------------------------


@pytest.mark.parametrize(
    "addr", ["gw.example.com:4122", "10.0.0.7:80", "[::1]:4122", "[fe80::1]:1", "host:65535"]
)
def test_valid_advertise_addr(addr: str) -> None:
    assert Settings(advertise_addr=addr).advertise_addr == addr


@pytest.mark.parametrize(
    "addr",
    [
        "gw.example.com",  # no port
        "gw.example.com:",  # empty port
        ":4122",  # no host
        "host:0",
        "host:65536",
        "host:http",
        "bad_host:80",  # underscore
        "-bad:80",
        "a..b:80",
        "::1:4122",  # IPv6 without brackets
        "[not-v6]:80",
    ],
)
def test_malformed_advertise_addr_fails(addr: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(advertise_addr=addr)
    assert caught.value.errors()[0]["loc"] == ("advertise_addr",)


def test_split_host_port_unwraps_ipv6() -> None:
    assert split_host_port("[::1]:80") == ("::1", 80)
    assert split_host_port("example.org:443") == ("example.org", 443)


def test_default_advertise_addr_is_hostname_and_port() -> None:
    assert Settings(port=5123).advertise_addr == f"{socket.gethostname()}:5123"
    assert Settings().advertise_addr == f"{socket.gethostname()}:4122"


def test_port_bounds() -> None:
    for port in (0, 65536):
        with pytest.raises(ValidationError):
            Settings(port=port)


# --- the auth check ---------------------------------------------------------------------


def test_no_password_is_a_problem() -> None:
    problem = Settings().auth_problem()
    assert problem is not None
    assert "ADMIN_PASS" in problem
    assert "--dev" in problem


def test_dev_needs_no_password() -> None:
    assert Settings(dev=True).auth_problem() is None
    assert Settings(dev=True, store_type="etcd").auth_problem() is None


def test_local_with_password_is_fine() -> None:
    assert Settings(admin_pass="pw").auth_problem() is None


@pytest.mark.parametrize("store_type", ["etcd", "consul"])
def test_distributed_needs_a_secret(store_type: str) -> None:
    problem = Settings(store_type=store_type, admin_pass="pw").auth_problem()
    assert problem is not None
    assert "ADMIN_SECRET" in problem
    secret = "s" * 32
    assert (
        Settings(store_type=store_type, admin_pass="pw", admin_secret=secret).auth_problem() is None
    )
