"""The stores' own config objects: ``ETCD_*`` and ``CONSUL_*`` read from an environment
mapping, the settings layer's ``.env`` under the process environment, and the factory
that joins them (the layers import downward: no store module reads the settings)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from app.settings import Settings, read_environment
from app.stores.base import ETCD_VALUE_LIMIT, StoreVariableError
from app.stores.consul import CONSUL_VARIABLES, ConsulConfig, ConsulStore
from app.stores.etcd import ETCD_VARIABLES, EtcdConfig, EtcdStore
from app.stores.factory import build_store
from app.stores.local import LocalStore

APP = Path(__file__).resolve().parents[1] / "app"


def refused(config: type[EtcdConfig | ConsulConfig], env: dict[str, str]) -> StoreVariableError:
    with pytest.raises(StoreVariableError) as caught:
        config.from_env(env)
    assert "\n" not in str(caught.value)
    return caught.value


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    paths = {}
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text(name)
        paths[name] = str(tmp_path / name)
    return paths


# --- etcd -------------------------------------------------------------------------------


def test_etcd_defaults() -> None:
    assert EtcdConfig.from_env({}) == EtcdConfig()
    assert EtcdConfig().endpoints == (("127.0.0.1", 2379),)
    assert (EtcdConfig().tls, EtcdConfig().user, EtcdConfig().password) == (False, None, None)


def test_etcd_endpoint_list() -> None:
    config = EtcdConfig.from_env(
        {"ETCD_ENDPOINTS": " a.example:2379 , 10.0.0.2:2380,, [::1]:2381 "}
    )
    assert config.endpoints == (("a.example", 2379), ("10.0.0.2", 2380), ("::1", 2381))
    assert config.tls is False


def test_etcd_endpoint_schemes_are_stripped_and_https_implies_tls() -> None:
    config = EtcdConfig.from_env({"ETCD_ENDPOINTS": "http://a:2379,https://b:2379"})
    assert config.endpoints == (("a", 2379), ("b", 2379))
    assert config.tls is True


@pytest.mark.parametrize(
    ("endpoints", "named"),
    [
        ("a:2379,b", "'b' is not host:port"),
        ("a", "'a' is not host:port"),
        ("http://a", "'a' is not host:port"),
        ("", "list at least one host:port"),
        (" , ", "list at least one host:port"),
        ("a:99999", "no valid port"),
        ("::1:2379", "[addr]:port"),
        ("bad_host:2379", "invalid host name"),
    ],
)
def test_etcd_bad_endpoints_name_the_variable(endpoints: str, named: str) -> None:
    error = refused(EtcdConfig, {"ETCD_ENDPOINTS": endpoints})
    assert error.variable == "ETCD_ENDPOINTS"
    assert str(error).startswith(f"invalid ETCD_ENDPOINTS {endpoints!r}: ")
    assert named in str(error)


def test_etcd_cacert_must_exist_and_implies_tls(files: dict[str, str]) -> None:
    error = refused(EtcdConfig, {"ETCD_CACERT": "/nonexistent/ca.pem"})
    assert (error.variable, str(error)) == (
        "ETCD_CACERT",
        "invalid ETCD_CACERT '/nonexistent/ca.pem': no such file",
    )
    config = EtcdConfig.from_env({"ETCD_CACERT": files["ca.pem"]})
    assert (config.cacert, config.tls) == (Path(files["ca.pem"]), True)


def test_etcd_explicit_ssl_overrides_implied_tls(files: dict[str, str]) -> None:
    ca = {"ETCD_CACERT": files["ca.pem"]}
    assert EtcdConfig.from_env({**ca, "ETCD_HTTP_SSL": "false"}).tls is False
    assert EtcdConfig.from_env({"ETCD_HTTP_SSL": "true"}).tls is True
    assert EtcdConfig.from_env({**ca, "ETCD_HTTP_SSL": " "}).tls is True  # blank: unset


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ({"ETCD_CLIENT_CERT": "cert.pem"}, "ETCD_CLIENT_KEY"),
        ({"ETCD_CLIENT_KEY": "key.pem"}, "ETCD_CLIENT_CERT"),
        ({"ETCD_USER": "root"}, "ETCD_PASSWORD"),
        ({"ETCD_PASSWORD": "pw"}, "ETCD_USER"),
    ],
)
def test_etcd_pairs_go_together(files: dict[str, str], given: dict[str, str], missing: str) -> None:
    env = {name: files.get(value, value) for name, value in given.items()}
    error = refused(EtcdConfig, env)
    assert error.variable == missing
    assert f"{next(iter(given))} and {missing} go together" in str(error)


def test_etcd_credentials_and_client_certificate(files: dict[str, str]) -> None:
    config = EtcdConfig.from_env(
        {
            "ETCD_USER": "root",
            "ETCD_PASSWORD": "pw",
            "ETCD_CLIENT_CERT": files["cert.pem"],
            "ETCD_CLIENT_KEY": files["key.pem"],
        }
    )
    assert (config.user, config.password, config.tls) == ("root", "pw", True)
    assert (config.client_cert, config.client_key) == (
        Path(files["cert.pem"]),
        Path(files["key.pem"]),
    )
    assert "pw" not in repr(config)


def test_etcd_bad_bool() -> None:
    error = refused(EtcdConfig, {"ETCD_HTTP_SSL": "maybe"})
    assert str(error) == "invalid ETCD_HTTP_SSL 'maybe': use true/false, 1/0, yes/no or on/off"


# --- Consul -----------------------------------------------------------------------------


def test_consul_defaults() -> None:
    config = ConsulConfig.from_env({})
    assert config == ConsulConfig()
    assert (config.base_url, config.location) == ("http://127.0.0.1:8500",) * 2
    assert (config.verify, config.token, config.unix_socket) == (True, None, None)


@pytest.mark.parametrize(
    ("addr", "ssl", "url"),
    [
        ("consul.local:8500", None, "http://consul.local:8500"),
        ("consul.local:8501", "true", "https://consul.local:8501"),
        ("https://consul.local:8501", None, "https://consul.local:8501"),
        ("https://consul.local:8501/", None, "https://consul.local:8501"),
        ("http://consul.local:8500", "true", "http://consul.local:8500"),  # explicit scheme wins
        ("consul.local:8500", "false", "http://consul.local:8500"),
        ("[::1]:8500", None, "http://[::1]:8500"),
    ],
)
def test_consul_base_url(addr: str, ssl: str | None, url: str) -> None:
    env = {"CONSUL_HTTP_ADDR": addr} | ({"CONSUL_HTTP_SSL": ssl} if ssl is not None else {})
    assert ConsulConfig.from_env(env).base_url == url


@pytest.mark.parametrize(
    ("ssl", "url"), [(None, "http://localhost"), ("true", "https://localhost")]
)
def test_consul_unix_socket_address(ssl: str | None, url: str) -> None:
    env = {"CONSUL_HTTP_ADDR": "unix:///run/consul/http.sock"}
    config = ConsulConfig.from_env(env | ({"CONSUL_HTTP_SSL": ssl} if ssl else {}))
    assert config.unix_socket == "/run/consul/http.sock"
    assert config.base_url == url  # the Host header; the socket is the connection
    assert config.location == "unix:///run/consul/http.sock"


@pytest.mark.parametrize(
    "addr", ["consul.local", "ftp://consul.local:21", "consul.local:0", "unix://", ""]
)
def test_consul_bad_addr_names_the_variable(addr: str) -> None:
    error = refused(ConsulConfig, {"CONSUL_HTTP_ADDR": addr})
    assert error.variable == "CONSUL_HTTP_ADDR"
    assert str(error).startswith(f"invalid CONSUL_HTTP_ADDR {addr!r}: ")


@pytest.mark.parametrize(
    ("text", "verify"), [("false", False), ("0", False), ("true", True), ("", True)]
)
def test_consul_verify(text: str, verify: bool) -> None:
    assert ConsulConfig.from_env({"CONSUL_HTTP_SSL_VERIFY": text}).verify is verify


@pytest.mark.parametrize("name", ["CONSUL_HTTP_SSL", "CONSUL_HTTP_SSL_VERIFY"])
def test_consul_bad_bool(name: str) -> None:
    error = refused(ConsulConfig, {name: "sometimes"})
    assert str(error) == f"invalid {name} 'sometimes': use true/false, 1/0, yes/no or on/off"


def test_consul_auth_is_user_colon_password_and_never_echoed() -> None:
    assert ConsulConfig.from_env({"CONSUL_HTTP_AUTH": "user:pa:ss"}).auth == ("user", "pa:ss")
    error = refused(ConsulConfig, {"CONSUL_HTTP_AUTH": "hunter2"})
    assert error.variable == "CONSUL_HTTP_AUTH"
    assert "hunter2" not in str(error)
    assert "pa:ss" not in repr(ConsulConfig.from_env({"CONSUL_HTTP_AUTH": "user:pa:ss"}))


def test_consul_tls_files(files: dict[str, str], tmp_path: Path) -> None:
    assert refused(ConsulConfig, {"CONSUL_CACERT": "/nope.pem"}).variable == "CONSUL_CACERT"
    error = refused(ConsulConfig, {"CONSUL_CLIENT_CERT": files["cert.pem"]})
    assert error.variable == "CONSUL_CLIENT_KEY"
    assert refused(ConsulConfig, {"CONSUL_CAPATH": files["ca.pem"]}).variable == "CONSUL_CAPATH"
    config = ConsulConfig.from_env(
        {
            "CONSUL_CAPATH": str(tmp_path),
            "CONSUL_CLIENT_CERT": files["cert.pem"],
            "CONSUL_CLIENT_KEY": files["key.pem"],
            "CONSUL_TLS_SERVER_NAME": "consul.internal",
        }
    )
    assert (config.capath, config.tls_server_name) == (tmp_path, "consul.internal")


def test_consul_token() -> None:
    config = ConsulConfig.from_env({"CONSUL_HTTP_TOKEN": " acl-token\n"})
    assert (config.token, config.token_variable) == ("acl-token", "CONSUL_HTTP_TOKEN")
    assert "acl-token" not in repr(config)
    error = refused(ConsulConfig, {"CONSUL_HTTP_TOKEN": "acl\r\nX-Injected: 1"})
    assert error.variable == "CONSUL_HTTP_TOKEN"
    assert "acl" not in str(error).removeprefix("CONSUL_HTTP_TOKEN")


def test_consul_token_file_wins_over_the_token(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("  from-file\n")
    env = {"CONSUL_HTTP_TOKEN": "from-env", "CONSUL_HTTP_TOKEN_FILE": str(token_file)}
    config = ConsulConfig.from_env(env)
    assert (config.token, config.token_variable) == ("from-file", "CONSUL_HTTP_TOKEN_FILE")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "No such file"),
        (b"\n", "holds no token"),
        (b"two\ttokens", "holds no token"),
        (b"\xff\xfe", "not UTF-8"),
        (b"x" * 70_000, "too large"),
    ],
)
def test_consul_bad_token_file(tmp_path: Path, content: bytes | None, problem: str) -> None:
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_bytes(content)
    error = refused(ConsulConfig, {"CONSUL_HTTP_TOKEN_FILE": str(token_file)})
    assert error.variable == "CONSUL_HTTP_TOKEN_FILE"
    assert problem in str(error)


def test_every_variable_is_listed() -> None:
    """The variable lists are what deploy files and environment cleaners go by."""
    sources = (APP / "stores/etcd/config.py", APP / "stores/consul/config.py")
    read = {
        node.value
        for source in sources
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"(ETCD|CONSUL)_[A-Z_]+", node.value)
    }
    assert read == set(ETCD_VARIABLES) | set(CONSUL_VARIABLES)


# --- the environment and the factory ----------------------------------------------------


def test_the_environment_is_read_over_dotenv(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_env / ".env").write_text(
        "CONSUL_HTTP_ADDR=from-dotenv:8500\nCONSUL_HTTP_TOKEN=dotenv-token\nNO_VALUE\n"
    )
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "env-token")
    env = read_environment()
    assert (env["CONSUL_HTTP_ADDR"], env["CONSUL_HTTP_TOKEN"]) == ("from-dotenv:8500", "env-token")
    assert "NO_VALUE" not in env
    assert read_environment(None).get("CONSUL_HTTP_ADDR") is None


def test_the_factory_configures_each_store_from_the_environment(
    clean_env: Path, files: dict[str, str]
) -> None:
    etcd = build_store(
        Settings(_env_file=None, store_type="etcd", cluster_id="c1", store_timeout_seconds=2),
        {"ETCD_ENDPOINTS": "e1:2379,e2:2379", "ETCD_CACERT": files["ca.pem"]},
    )
    assert isinstance(etcd, EtcdStore)
    assert etcd.config == EtcdConfig(
        endpoints=(("e1", 2379), ("e2", 2379)), tls=True, cacert=Path(files["ca.pem"])
    )
    consul = build_store(
        Settings(_env_file=None, store_type="consul", cluster_id="c1", instance_ttl_seconds=12),
        {"CONSUL_HTTP_ADDR": "unix:///run/consul.sock"},
    )
    assert isinstance(consul, ConsulStore)
    assert (consul.config.unix_socket, consul.cluster_id, consul.instance_ttl) == (
        "/run/consul.sock",
        "c1",
        12,
    )
    local = build_store(Settings(_env_file=None, config=clean_env / "c.yaml"), {})
    assert isinstance(local, LocalStore)
    assert (local.path, local.value_limit) == (clean_env / "c.yaml", ETCD_VALUE_LIMIT)
    limited = build_store(Settings(_env_file=None, local_value_limit=4096), {})
    assert limited.value_limit == 4096


def test_the_factory_reads_dotenv_by_default(clean_env: Path) -> None:
    (clean_env / ".env").write_text("CONSUL_HTTP_ADDR=https://from-dotenv:8501\n")
    store = build_store(Settings(_env_file=None, store_type="consul"))
    assert isinstance(store, ConsulStore)
    assert store.config.base_url == "https://from-dotenv:8501"


def test_a_bad_variable_stops_the_factory(clean_env: Path) -> None:
    with pytest.raises(StoreVariableError, match="invalid ETCD_HTTP_SSL 'maybe'"):
        build_store(Settings(_env_file=None, store_type="etcd"), {"ETCD_HTTP_SSL": "maybe"})


def test_store_modules_import_no_settings_auth_or_api() -> None:
    """Stores take their config objects; only the factory maps settings to them."""
    forbidden = ("app.settings", "app.auth", "app.api", "app.main", "app.cli", "app.sync")
    modules = [
        APP / "stores/base.py",
        APP / "stores/local.py",
        APP / "stores/variables.py",
        *(APP / "stores/etcd").glob("*.py"),
        *(APP / "stores/consul").glob("*.py"),
    ]
    for module in modules:
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(forbidden), f"{module} imports {node.module}"
    settings = ast.parse((APP / "settings.py").read_text())
    imported = {n.module for n in ast.walk(settings) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if m and m.startswith("app.stores")}
