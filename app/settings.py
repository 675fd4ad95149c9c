"""Settings: command-line flags > environment variables > ``.env`` > defaults.

The flags are parsed in ``app.cli`` only and passed in as keyword arguments, which
pydantic-settings ranks above every other source.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.addresses import split_host_port
from app.store_types import STORE_TYPE_ALIASES, StoreType

#: HS256 keys shorter than its hash output are refused (RFC 7518 §3.2).
MIN_SECRET_BYTES = 32

#: The most versions PROJECT_VERSIONS may keep per project.
MAX_PROJECT_VERSIONS = 1000

_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_CLUSTER_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


#: Read from the working directory, below the environment and the flags.
DOTENV = Path(".env")


def _settings_config() -> SettingsConfigDict:
    return SettingsConfigDict(
        env_file=DOTENV,
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )


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


def _origin(value: str) -> str:
    """A browser origin, ``scheme://host[:port]``, as the ``Origin`` header carries it."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("list origins as http(s)://host[:port], separated by commas")
    if parts.username is not None or parts.query or parts.fragment or parts.path not in ("", "/"):
        raise ValueError("an origin is only scheme://host[:port] (no user, path or query)")
    return f"{parts.scheme}://{parts.netloc}".lower()


def _comma_list(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


Origins = Annotated[
    list[Annotated[str, AfterValidator(_origin)]],
    NoDecode,
    BeforeValidator(_comma_list),
]


def _in_existing_folder(value: Path | None) -> Path | None:
    if value is not None and not (value.parent if str(value.parent) else Path(".")).is_dir():
        raise ValueError(f"the folder {str(value.parent)!r} does not exist")
    if value is not None and value.is_dir():
        raise ValueError("name a file, not a folder")
    return value


def _blank_as_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


def _random_node_id() -> str:
    return f"auto-{secrets.token_hex(4)}"


class Settings(BaseSettings):
    """Everything ``space-cloud run`` can be told (docs/design.md §2; flags in app.cli)."""

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
    #: The last applied configs, served when the store is unreachable at start; off if unset.
    cache_file: Annotated[Path | None, AfterValidator(_in_existing_folder)] = None

    # Tuning; every one has an environment variable, none a flag.
    history_size: int = Field(1000, ge=1)
    #: Versions kept per project (docs/design.md, "Versions").
    project_versions: int = Field(50, ge=1, le=MAX_PROJECT_VERSIONS)
    token_ttl_seconds: int = Field(24 * 3600, ge=60)
    sse_ping_seconds: float = Field(15.0, gt=0)
    sse_retry_ms: int = Field(3000, ge=0)
    sse_send_timeout_seconds: float = Field(10.0, gt=0)
    sse_queue_size: int = Field(1024, ge=1)
    wait_revision_timeout_seconds: float = Field(10.0, gt=0)
    store_timeout_seconds: float = Field(5.0, gt=0)
    instance_ttl_seconds: int = Field(10, ge=2)
    #: None: the etcd store's limit, so a config that fits locally also fits etcd.
    local_value_limit: int | None = Field(None, ge=1024)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = False
    log_format: Literal["text", "json"] = "text"
    #: ``follow`` only: a silent upstream stream is given up after this (it pings every 15 s).
    upstream_read_timeout_seconds: float = Field(45.0, gt=0)
    #: Browser origins allowed to call the API (CORS); none by default.
    cors_origins: Origins = Field(default_factory=list)
    #: Failed logins from one address within the window before it is blocked; each failure
    #: after a block doubles the next one, up to the maximum.
    login_max_failures: int = Field(5, ge=1)
    login_window_seconds: float = Field(60.0, gt=0)
    login_max_block_seconds: float = Field(300.0, ge=1)
    # Limits on what a client may hold (docs/design.md §10).
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
        if "://" in value:
            raise ValueError("a scheme is not allowed: give host:port, as other instances dial it")
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
        if self.admin_secret and len(self.admin_secret.encode()) < MIN_SECRET_BYTES:
            return (
                f"ADMIN_SECRET (or --admin-secret) is {len(self.admin_secret.encode())} bytes: "
                f"use at least {MIN_SECRET_BYTES} random bytes, e.g. from "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
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


def read_environment(env_file: Path | None = DOTENV) -> dict[str, str]:
    """The process environment over ``.env``: what the stores' own variables
    (``ETCD_*``, ``CONSUL_*``) are read from, with the same precedence as Settings."""
    dotenv = dotenv_values(env_file, encoding="utf-8") if env_file is not None else {}
    values = {name: value for name, value in dotenv.items() if value is not None}
    return {**values, **os.environ}
