"""Reading a store's connection variables from an environment mapping.

Each store's config object (``EtcdConfig.from_env``, ``ConsulConfig.from_env``) reads its
own variables with these helpers, the way Consul's Go client has ``DefaultConfig()`` read
``CONSUL_*``: the caller decides what the environment is (the process's, over ``.env``).
Every bad value raises :class:`StoreVariableError`, which names the variable to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from app.addresses import split_host_port
from app.stores.base import StoreVariableError

_TRUE = frozenset({"1", "t", "true", "y", "yes", "on"})
_FALSE = frozenset({"0", "f", "false", "n", "no", "off"})


class Variables:
    """Typed, validated reads of one environment mapping."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str) -> str | None:
        """The value, None when unset or blank."""
        value = self.env.get(name)
        return value if value is not None and value.strip() else None

    def flag(self, name: str) -> bool | None:
        """A boolean (true/false, 1/0, yes/no, on/off), None when unset or blank."""
        value = self.text(name)
        if value is None:
            return None
        lowered = value.strip().lower()
        if lowered in _TRUE | _FALSE:
            return lowered in _TRUE
        raise StoreVariableError.invalid(name, value, "use true/false, 1/0, yes/no or on/off")

    def file(self, name: str) -> Path | None:
        """A path to an existing file, None when unset."""
        value = self.text(name)
        if value is None:
            return None
        if not Path(value).is_file():
            raise StoreVariableError.invalid(name, value, "no such file")
        return Path(value)

    def folder(self, name: str) -> Path | None:
        """A path to an existing directory, None when unset."""
        value = self.text(name)
        if value is None:
            return None
        if not Path(value).is_dir():
            raise StoreVariableError.invalid(name, value, "no such directory")
        return Path(value)

    def host_port(self, name: str, value: str) -> tuple[str, int]:
        """``value`` (an item of ``name``) as ``(host, port)``."""
        try:
            return split_host_port(value)
        except ValueError as error:
            raise StoreVariableError.invalid(name, self.env.get(name, value), str(error)) from None

    def both_or_neither(self, first: str, second: str) -> None:
        """Raise unless ``first`` and ``second`` are both set or both unset."""
        if self.text(first) is None and self.text(second) is not None:
            raise StoreVariableError.pair(first, second)
        if self.text(second) is None and self.text(first) is not None:
            raise StoreVariableError.pair(second, first)
