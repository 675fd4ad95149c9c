"""Build the store the settings name: the one place in ``app.stores`` that reads settings.

Each store takes its own config object; the etcd and Consul ones read their variables
(``ETCD_*``, ``CONSUL_*``) from the environment mapping given here.
"""

from __future__ import annotations

from collections.abc import Mapping

from app.settings import Settings, read_environment
from app.stores.base import Store


def build_store(settings: Settings, env: Mapping[str, str] | None = None) -> Store:
    """The store ``settings.store_type`` names, configured from ``env`` (default: the
    process environment over ``.env``). A bad variable raises ``StoreVariableError``."""
    if settings.store_type == "etcd":
        from app.stores.etcd import EtcdConfig, EtcdStore

        return EtcdStore(
            EtcdConfig.from_env(read_environment() if env is None else env),
            settings.cluster_id,
            instance_ttl=settings.instance_ttl_seconds,
            timeout=settings.store_timeout_seconds,
            keep_versions=settings.project_versions,
        )
    if settings.store_type == "consul":
        from app.stores.consul import ConsulConfig, ConsulStore

        return ConsulStore(
            ConsulConfig.from_env(read_environment() if env is None else env),
            settings.cluster_id,
            instance_ttl=settings.instance_ttl_seconds,
            timeout=settings.store_timeout_seconds,
            keep_versions=settings.project_versions,
        )
    from app.stores.local import LocalStore

    if settings.local_value_limit is None:
        return LocalStore(settings.config, keep_versions=settings.project_versions)
    return LocalStore(
        settings.config,
        value_limit=settings.local_value_limit,
        keep_versions=settings.project_versions,
    )
