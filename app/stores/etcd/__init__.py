"""The etcd v3 store and how to reach etcd."""

from app.stores.etcd.config import ETCD_VARIABLES, EtcdConfig
from app.stores.etcd.store import EtcdStore

__all__ = ["ETCD_VARIABLES", "EtcdConfig", "EtcdStore"]
