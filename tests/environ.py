"""The environment a test hands the gateway: the caller's, minus every gateway variable.

What counts as a gateway variable is derived from the settings model (one variable per
field) and the variables the etcd and Consul configs read, plus everything under those
clients' prefixes (their own tools read more), the tracing exporter's ``OTEL_*`` and the
command-line client's ``SPACE_CLOUD_*``, so a variable added to the settings or a store
config is cleaned without touching the tests.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import pytest

from app.settings import Settings
from app.stores.consul import CONSUL_VARIABLES
from app.stores.etcd import ETCD_VARIABLES

#: The store clients' prefixes, as etcdctl and consul read theirs; the OpenTelemetry
#: exporter's (app/tracing.py); the command-line client's (app/client/commands.py).
PREFIXES = ("ETCD_", "CONSUL_", "OTEL_", "SPACE_CLOUD_")


def gateway_variables() -> frozenset[str]:
    """The variables the gateway reads: one per settings field, then the stores' own."""
    prefix = Settings.model_config.get("env_prefix", "")
    fields = {f"{prefix}{name}".upper() for name in Settings.model_fields}
    return frozenset(fields | set(ETCD_VARIABLES) | set(CONSUL_VARIABLES))


def is_gateway_variable(name: str) -> bool:
    upper = name.upper()
    return upper.startswith(PREFIXES) or upper in gateway_variables()


def clean_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default: this process's) without any variable the gateway reads."""
    source = os.environ if environ is None else environ
    return {name: value for name, value in source.items() if not is_gateway_variable(name)}


def clear_gateway_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every gateway variable from this process for the current test."""
    for name in list(os.environ):
        if is_gateway_variable(name):
            monkeypatch.delenv(name)
