"""Build the store the settings name."""

from __future__ import annotations

from app.settings import ConsulSettings, EtcdSettings, Settings
from app.stores.base import Store


def build_store(
    settings: Settings,
    etcd: EtcdSettings | None = None,
    consul: ConsulSettings | None = None,
) -> Store:
    """The store ``settings.store_type`` names, configured from its variables."""
    if settings.store_type == "etcd":
        from app.stores.etcd import EtcdStore

        return EtcdStore(
            etcd or EtcdSettings(),
            settings.cluster_id,
            instance_ttl=settings.instance_ttl_seconds,
            timeout=settings.store_timeout_seconds,
        )
    if settings.store_type == "consul":
        from app.stores.consul import ConsulStore

        return ConsulStore(
            consul or ConsulSettings(),
            settings.cluster_id,
            instance_ttl=settings.instance_ttl_seconds,
            timeout=settings.store_timeout_seconds,
        )
    from app.stores.local import LocalStore

    return LocalStore(settings.config, value_limit=settings.local_value_limit)
