"""The Consul store and how to reach Consul."""

from app.stores.consul.config import CONSUL_VARIABLES, ConsulConfig
from app.stores.consul.store import ConsulStore

__all__ = ["CONSUL_VARIABLES", "ConsulConfig", "ConsulStore"]
