"""How to reach etcd: the ``ETCD_*`` variables, read from an environment mapping."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from app.stores.base import StoreVariableError
from app.stores.variables import Variables

#: Every variable :meth:`EtcdConfig.from_env` reads.
ETCD_VARIABLES = (
    "ETCD_ENDPOINTS",
    "ETCD_USER",
    "ETCD_PASSWORD",
    "ETCD_HTTP_SSL",
    "ETCD_CACERT",
    "ETCD_CLIENT_CERT",
    "ETCD_CLIENT_KEY",
)
DEFAULT_ENDPOINTS = "127.0.0.1:2379"


@dataclass(frozen=True, slots=True)
class EtcdConfig:
    """The members to use (failover in this order), credentials and TLS files."""

    endpoints: tuple[tuple[str, int], ...] = (("127.0.0.1", 2379),)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    cacert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EtcdConfig:
        """Read ``ETCD_*``; raise :class:`StoreVariableError` naming a bad one.

        TLS is on when ``ETCD_HTTP_SSL`` says so, else when a CA, a client certificate
        or an ``https://`` endpoint implies it.
        """
        variables = Variables(env)
        text = env.get("ETCD_ENDPOINTS", DEFAULT_ENDPOINTS)
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise StoreVariableError.invalid("ETCD_ENDPOINTS", text, "list at least one host:port")
        endpoints = tuple(
            variables.host_port("ETCD_ENDPOINTS", _without_scheme(item)) for item in items
        )
        variables.both_or_neither("ETCD_CLIENT_CERT", "ETCD_CLIENT_KEY")
        variables.both_or_neither("ETCD_USER", "ETCD_PASSWORD")
        cacert = variables.file("ETCD_CACERT")
        client_cert = variables.file("ETCD_CLIENT_CERT")
        client_key = variables.file("ETCD_CLIENT_KEY")
        tls = variables.flag("ETCD_HTTP_SSL")
        if tls is None:
            tls = bool(cacert or client_cert or any(i.startswith("https://") for i in items))
        return cls(
            endpoints=endpoints,
            user=variables.text("ETCD_USER"),
            password=variables.text("ETCD_PASSWORD"),
            tls=tls,
            cacert=cacert,
            client_cert=client_cert,
            client_key=client_key,
        )


def _without_scheme(endpoint: str) -> str:
    for scheme in ("http://", "https://"):
        if endpoint.startswith(scheme):
            return endpoint.removeprefix(scheme)
    return endpoint
