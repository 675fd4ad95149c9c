"""The store types ``--store-type`` takes, apart from the settings model so that the
command line can name them without loading pydantic."""

from __future__ import annotations

from typing import Literal

StoreType = Literal["local", "etcd", "consul", "follow"]
STORE_TYPES: tuple[str, ...] = ("local", "etcd", "consul", "follow")
STORE_TYPE_ALIASES = {"none": "local"}
