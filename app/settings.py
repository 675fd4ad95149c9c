"""Settings: command-line flags > environment variables > ``.env`` > defaults.

The flags are parsed in ``app.cli`` only and passed in as keyword arguments, which
pydantic-settings ranks above every other source.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import socket
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.stores.base import ETCD_VALUE_LIMIT

StoreType = Literal["local", "etcd", "consul", "follow"]
STORE_TYPES: tuple[str, ...] = ("local", "etcd", "consul", "follow")
STORE_TYPE_ALIASES = {"none": "local"}

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_CLUSTER_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def _settings_config(env_prefix: str = "") -> SettingsConfigDict:
    return SettingsConfigDict(
        env_prefix=env_prefix,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )


def split_host_port(value: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6); raise ValueError when malformed."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text:
        raise ValueError(f"{value!r} is not host:port")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{value!r} has no valid port (1-65535)")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{value!r} has an invalid IPv6 address") from None
        return host[1:-1], int(port_text)
    if ":" in host:
        raise ValueError(f"{value!r}: write an IPv6 address as [addr]:port")
    if not _HOSTNAME.match(host):
        raise ValueError(f"{value!r} has an invalid host name")
    return host, int(port_text)


def _store_type(value: object) -> object:
    if isinstance(value, str):
        lowered = value.strip().lower()
        return STORE_TYPE_ALIASES.get(lowered, lowered)
    return value


def _upstream_list(value: object) -> object:
    """``--upstream`` may repeat and each value (or ``UPSTREAM``) may be a comma list."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        return value
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


def _upstream_url(value: str) -> str:
    """``http(s)://host:port`` of another instance, normalised without a trailing ``/``."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError("write it as http://host:port or https://host:port")
    if parts.username is not None or parts.query or parts.fragment or parts.path not in ("", "/"):
        raise ValueError("give only scheme://host:port (no user, path or query)")
    split_host_port(parts.netloc)
    return f"{parts.scheme}://{parts.netloc}"


Upstreams = Annotated[
    list[Annotated[str, AfterValidator(_upstream_url)]],
    NoDecode,
    BeforeValidator(_upstream_list),
]


def _blank_as_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


def _random_node_id() -> str:
    return f"auto-{secrets.token_hex(4)}"


class Settings(BaseSettings):
    """Everything ``space-cloud run`` can be told (DESIGN §2)."""

    model_config = _settings_config()

    store_type: Annotated[StoreType, BeforeValidator(_store_type)] = "local"
    advertise_addr: str = ""
    port: int = Field(4122, ge=1, le=65535)
    host: str = "0.0.0.0"
    node_id: str = Field(default_factory=_random_node_id)
    cluster_id: str = "default-cluster"
    config: Path = Path("config.yaml")
    admin_user: str = "admin"
    admin_pass: str | None = None
    admin_secret: str | None = None
    dev: bool = False
    #: ``follow`` only: the instances whose event stream this one follows, in failover order.
    upstream: Upstreams = Field(default_factory=list)
    #: ``follow`` only: a bearer token for the upstream (else one is signed with the secret).
    upstream_token: str | None = None

    # Tuning; every one has an environment variable, none a flag.
    history_size: int = Field(1000, ge=1)
    token_ttl_seconds: int = Field(24 * 3600, ge=60)
    sse_ping_seconds: float = Field(15.0, gt=0)
    sse_retry_ms: int = Field(3000, ge=0)
    sse_send_timeout_seconds: float = Field(10.0, gt=0)
    sse_queue_size: int = Field(1024, ge=1)
    wait_revision_timeout_seconds: float = Field(10.0, gt=0)
    store_timeout_seconds: float = Field(5.0, gt=0)
    instance_ttl_seconds: int = Field(10, ge=2)
    local_value_limit: int = Field(ETCD_VALUE_LIMIT, ge=1024)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = False
    #: ``follow`` only: a silent upstream stream is given up after this (it pings every 15 s).
    upstream_read_timeout_seconds: float = Field(45.0, gt=0)
    # Limits on what a client may hold (docs/design.md, "Hostile clients").
    #: Largest request head (request line and headers); a bigger one is a 431.
    max_header_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    #: A request head not complete this long after its first byte is a 408, closed.
    header_timeout_seconds: float = Field(10.0, gt=0, le=3600)
    #: A request body not complete this long after its head is a 408, closed.
    body_timeout_seconds: float = Field(30.0, gt=0, le=3600)
    #: An idle keep-alive connection is closed after this.
    keep_alive_timeout_seconds: float = Field(5.0, gt=0, le=3600)
    #: Open client connections served; None: sized from the descriptor limit at start.
    max_connections: Annotated[int | None, BeforeValidator(_blank_as_none)] = Field(None, ge=1)

    @field_validator("advertise_addr")
    @classmethod
    def _check_advertise_addr(cls, value: str) -> str:
        if value:
            split_host_port(value)
        return value

    @field_validator("node_id")
    @classmethod
    def _check_node_id(cls, value: str) -> str:
        if not _NODE_ID.match(value):
            raise ValueError("use 1-63 letters, digits, '.', '_' or '-'")
        return value

    @field_validator("cluster_id")
    @classmethod
    def _check_cluster_id(cls, value: str) -> str:
        if not _CLUSTER_ID.match(value):
            raise ValueError("use 1-63 lower-case letters, digits, '_' or '-'")
        return value

    @model_validator(mode="after")
    def _fill_advertise_addr(self) -> Settings:
        if not self.advertise_addr:
            self.advertise_addr = f"{socket.gethostname()}:{self.port}"
        return self

    @model_validator(mode="after")
    def _check_upstream(self) -> Settings:
        if self.store_type == "follow" and not self.upstream:
            raise ValueError(
                "--store-type follow needs --upstream / UPSTREAM: the http://host:port "
                "of the instance to follow (repeat it or separate by commas for failover)"
            )
        if self.upstream and self.store_type != "follow":
            raise ValueError(
                "--upstream / UPSTREAM is only for --store-type follow "
                f"(the store type is {self.store_type})"
            )
        return self

    @property
    def distributed(self) -> bool:
        return self.store_type != "local"

    def auth_problem(self) -> str | None:
        """Why this configuration must not start, if it must not (secure by default)."""
        if self.dev:
            return None
        if not self.admin_pass:
            return (
                "no admin password: set ADMIN_PASS (or --admin-pass), "
                "or run with --dev for a development instance without auth"
            )
        if self.distributed and self.store_type != "follow" and not self.admin_secret:
            return (
                "no admin secret: set ADMIN_SECRET (or --admin-secret) to the same value "
                "on every instance of the cluster"
            )
        return None


def _env_bool_text(value: object) -> object:
    # pydantic accepts on/off/yes/no/1/0/true/false; blank means "unset".
    if isinstance(value, str) and not value.strip():
        return None
    return value


OptionalBool = Annotated[bool | None, BeforeValidator(_env_bool_text)]


def _existing_file(value: Path | None) -> Path | None:
    if value is not None and not value.is_file():
        raise ValueError(f"file {str(value)!r} does not exist")
    return value


ExistingFile = Annotated[Path | None, AfterValidator(_existing_file)]


class EtcdSettings(BaseSettings):
    """``ETCD_*`` connection variables (DESIGN §2)."""

    model_config = _settings_config("ETCD_")

    endpoints: str = "127.0.0.1:2379"
    user: str | None = None
    password: str | None = None
    http_ssl: OptionalBool = None
    cacert: ExistingFile = None
    client_cert: ExistingFile = None
    client_key: ExistingFile = None

    @field_validator("endpoints")
    @classmethod
    def _check_endpoints(cls, value: str) -> str:
        items = [item.strip() for item in value.split(",") if item.strip()]
        if not items:
            raise ValueError("list at least one host:port")
        for item in items:
            split_host_port(_strip_scheme(item))
        return ",".join(items)

    @model_validator(mode="after")
    def _check_pairs(self) -> EtcdSettings:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("ETCD_CLIENT_CERT and ETCD_CLIENT_KEY go together")
        if (self.user is None) != (self.password is None):
            raise ValueError("ETCD_USER and ETCD_PASSWORD go together")
        return self

    @property
    def endpoint_list(self) -> list[tuple[str, int]]:
        return [split_host_port(_strip_scheme(item)) for item in self.endpoints.split(",")]

    @property
    def tls(self) -> bool:
        """TLS when asked for, or implied by a CA / client certificate / https:// endpoint."""
        if self.http_ssl is not None:
            return self.http_ssl
        return bool(self.cacert or self.client_cert or "https://" in self.endpoints)


def _strip_scheme(value: str) -> str:
    for scheme in ("http://", "https://"):
        if value.startswith(scheme):
            return value[len(scheme) :]
    return value


class ConsulSettings(BaseSettings):
    """``CONSUL_*`` connection variables, as Consul's own CLI reads them (DESIGN §2)."""

    model_config = _settings_config("CONSUL_")

    http_addr: str = "127.0.0.1:8500"
    http_token: str | None = None
    http_auth: str | None = None
    http_ssl: OptionalBool = None
    cacert: ExistingFile = None
    client_cert: ExistingFile = None
    client_key: ExistingFile = None
    tls_server_name: str | None = None
    http_ssl_verify: OptionalBool = None

    @field_validator("http_addr")
    @classmethod
    def _check_addr(cls, value: str) -> str:
        scheme, _, rest = value.rpartition("://")
        if scheme not in ("", "http", "https"):
            raise ValueError(f"scheme {scheme!r} is neither http nor https")
        split_host_port(rest.rstrip("/"))
        return value

    @field_validator("http_auth")
    @classmethod
    def _check_auth(cls, value: str | None) -> str | None:
        if value is not None and ":" not in value:
            raise ValueError("write it as user:password")
        return value

    @model_validator(mode="after")
    def _check_pairs(self) -> ConsulSettings:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY go together")
        return self

    @property
    def scheme(self) -> str:
        explicit, sep, _ = self.http_addr.rpartition("://")
        if sep:
            return explicit
        return "https" if self.http_ssl else "http"

    @property
    def base_url(self) -> str:
        rest = self.http_addr.rpartition("://")[2].rstrip("/")
        return f"{self.scheme}://{rest}"

    @property
    def verify(self) -> bool:
        return self.http_ssl_verify is not False


def env_names() -> dict[str, str]:
    """Map each Settings field to ``FLAG / VARIABLE`` for error messages."""
    flags = {
        "store_type": "--store-type",
        "advertise_addr": "--advertise-addr",
        "port": "--port",
        "host": "--host",
        "node_id": "--id",
        "cluster_id": "--cluster",
        "config": "--config",
        "admin_user": "--admin-user",
        "admin_pass": "--admin-pass",
        "admin_secret": "--admin-secret",
        "dev": "--dev",
        "upstream": "--upstream",
        "upstream_token": "--upstream-token",
    }
    names = {}
    for field in Settings.model_fields:
        variable = field.upper()
        names[field] = f"{flags[field]} / {variable}" if field in flags else variable
    return names
