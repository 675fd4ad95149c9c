"""Settings: precedence, validation, the auth check, and the etcd / Consul variables."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import ConsulSettings, EtcdSettings, Settings, split_host_port


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No setting leaks in from the caller's environment or a ``.env`` in the repo."""
    for name in list(os.environ):
        if name.upper().startswith(("ETCD_", "CONSUL_")) or name.lower() in Settings.model_fields:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


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


# --- etcd -------------------------------------------------------------------------------


def test_etcd_defaults() -> None:
    etcd = EtcdSettings()
    assert etcd.endpoint_list == [("127.0.0.1", 2379)]
    assert etcd.tls is False
    assert etcd.user is None
    assert etcd.password is None


def test_etcd_endpoint_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCD_ENDPOINTS", " a.example:2379 , 10.0.0.2:2380,, [::1]:2381 ")
    etcd = EtcdSettings()
    assert etcd.endpoint_list == [("a.example", 2379), ("10.0.0.2", 2380), ("::1", 2381)]
    assert etcd.tls is False


def test_etcd_endpoint_schemes_are_stripped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCD_ENDPOINTS", "http://a:2379,https://b:2379")
    etcd = EtcdSettings()
    assert etcd.endpoint_list == [("a", 2379), ("b", 2379)]
    assert etcd.tls is True  # an https:// endpoint implies TLS


@pytest.mark.parametrize("endpoints", ["a:2379,b", "a", "http://a", "", " , ", "a:99999"])
def test_etcd_bad_endpoints_fail(monkeypatch: pytest.MonkeyPatch, endpoints: str) -> None:
    monkeypatch.setenv("ETCD_ENDPOINTS", endpoints)
    with pytest.raises(ValidationError) as caught:
        EtcdSettings()
    assert caught.value.errors()[0]["loc"] == ("endpoints",)


def test_etcd_cacert_must_exist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ETCD_CACERT", str(tmp_path / "missing.pem"))
    with pytest.raises(ValidationError) as caught:
        EtcdSettings()
    assert caught.value.errors()[0]["loc"] == ("cacert",)
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    monkeypatch.setenv("ETCD_CACERT", str(ca))
    etcd = EtcdSettings()
    assert etcd.cacert == ca
    assert etcd.tls is True  # a CA implies TLS


def test_etcd_explicit_ssl_overrides_implied_tls(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    monkeypatch.setenv("ETCD_CACERT", str(ca))
    monkeypatch.setenv("ETCD_HTTP_SSL", "false")
    assert EtcdSettings().tls is False
    monkeypatch.delenv("ETCD_CACERT")
    monkeypatch.setenv("ETCD_HTTP_SSL", "true")
    assert EtcdSettings().tls is True
    monkeypatch.setenv("ETCD_HTTP_SSL", "")  # blank means unset
    assert EtcdSettings().http_ssl is None


def test_etcd_client_cert_and_key_go_together(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("c")
    key.write_text("k")
    monkeypatch.setenv("ETCD_CLIENT_CERT", str(cert))
    with pytest.raises(ValidationError, match="ETCD_CLIENT_KEY"):
        EtcdSettings()
    monkeypatch.setenv("ETCD_CLIENT_KEY", str(key))
    etcd = EtcdSettings()
    assert (etcd.client_cert, etcd.client_key) == (cert, key)
    assert etcd.tls is True
    monkeypatch.delenv("ETCD_CLIENT_CERT")
    with pytest.raises(ValidationError, match="ETCD_CLIENT_CERT"):
        EtcdSettings()


def test_etcd_user_and_password_go_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCD_USER", "root")
    with pytest.raises(ValidationError, match="ETCD_PASSWORD"):
        EtcdSettings()
    monkeypatch.setenv("ETCD_PASSWORD", "pw")
    etcd = EtcdSettings()
    assert (etcd.user, etcd.password) == ("root", "pw")
    monkeypatch.delenv("ETCD_USER")
    with pytest.raises(ValidationError, match="ETCD_USER"):
        EtcdSettings()


def test_etcd_bad_bool_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCD_HTTP_SSL", "maybe")
    with pytest.raises(ValidationError) as caught:
        EtcdSettings()
    assert caught.value.errors()[0]["type"] == "bool_parsing"


def test_etcd_reads_dotenv(clean_env: Path) -> None:
    write_dotenv(clean_env, ETCD_ENDPOINTS="from-dotenv:2379")
    assert EtcdSettings().endpoint_list == [("from-dotenv", 2379)]


# --- Consul -----------------------------------------------------------------------------


def test_consul_defaults() -> None:
    consul = ConsulSettings()
    assert consul.base_url == "http://127.0.0.1:8500"
    assert consul.verify is True
    assert consul.http_token is None


@pytest.mark.parametrize(
    ("addr", "ssl", "url"),
    [
        ("consul.local:8500", None, "http://consul.local:8500"),
        ("consul.local:8501", "true", "https://consul.local:8501"),
        ("https://consul.local:8501", None, "https://consul.local:8501"),
        ("https://consul.local:8501/", None, "https://consul.local:8501"),
        ("http://consul.local:8500", "true", "http://consul.local:8500"),  # explicit scheme wins
        ("consul.local:8500", "false", "http://consul.local:8500"),
    ],
)
def test_consul_base_url(
    monkeypatch: pytest.MonkeyPatch, addr: str, ssl: str | None, url: str
) -> None:
    monkeypatch.setenv("CONSUL_HTTP_ADDR", addr)
    if ssl is not None:
        monkeypatch.setenv("CONSUL_HTTP_SSL", ssl)
    assert ConsulSettings().base_url == url


@pytest.mark.parametrize("addr", ["consul.local", "ftp://consul.local:21", "consul.local:0"])
def test_consul_bad_addr_fails(monkeypatch: pytest.MonkeyPatch, addr: str) -> None:
    monkeypatch.setenv("CONSUL_HTTP_ADDR", addr)
    with pytest.raises(ValidationError) as caught:
        ConsulSettings()
    assert caught.value.errors()[0]["loc"] == ("http_addr",)


@pytest.mark.parametrize(("text", "verify"), [("false", False), ("0", False), ("true", True)])
def test_consul_verify(monkeypatch: pytest.MonkeyPatch, text: str, verify: bool) -> None:
    monkeypatch.setenv("CONSUL_HTTP_SSL_VERIFY", text)
    assert ConsulSettings().verify is verify


@pytest.mark.parametrize("name", ["CONSUL_HTTP_SSL", "CONSUL_HTTP_SSL_VERIFY"])
def test_consul_bad_bool_fails(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "maybe")
    with pytest.raises(ValidationError) as caught:
        ConsulSettings()
    assert caught.value.errors()[0]["type"] == "bool_parsing"


def test_consul_auth_must_be_user_colon_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSUL_HTTP_AUTH", "justauser")
    with pytest.raises(ValidationError) as caught:
        ConsulSettings()
    assert caught.value.errors()[0]["loc"] == ("http_auth",)
    monkeypatch.setenv("CONSUL_HTTP_AUTH", "user:pa:ss")
    assert ConsulSettings().http_auth == "user:pa:ss"


def test_consul_cert_file_must_exist_and_pair(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CONSUL_CACERT", str(tmp_path / "missing.pem"))
    with pytest.raises(ValidationError) as caught:
        ConsulSettings()
    assert caught.value.errors()[0]["loc"] == ("cacert",)
    monkeypatch.delenv("CONSUL_CACERT")
    cert = tmp_path / "c.pem"
    cert.write_text("c")
    monkeypatch.setenv("CONSUL_CLIENT_CERT", str(cert))
    with pytest.raises(ValidationError, match="CONSUL_CLIENT_KEY"):
        ConsulSettings()


def test_consul_token_and_server_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "acl-token")
    monkeypatch.setenv("CONSUL_TLS_SERVER_NAME", "consul.internal")
    consul = ConsulSettings()
    assert consul.http_token == "acl-token"
    assert consul.tls_server_name == "consul.internal"
