"""The minted tokens this instance honours: the store's token records, as last applied.

The sync loop feeds :meth:`AppliedTokens.apply` every full map the store's token watch
yields (list, then watch; a new list after any reset), so a record deleted on one
instance is gone here as soon as the watch delivers it (docs/design.md §9). Records are
untrusted store values: one that does not parse, or that sits under another id's key,
is left out (and logged once), never honoured.

Requests are checked against the applied records directly, with no cache of accepted
tokens: a lookup, a parse and a hash comparison cost 3.8 µs with 1 000 records applied
(docs/design.md §9), and nothing cached can then outlive a revocation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from app.access import Principal, TokenRefused, minted
from app.access.token_records import InvalidTokenRecord, TokenRecord

log = logging.getLogger("space_cloud.sync")


class TokensNotSynced(Exception):
    """The first listing of the token records has not been applied yet."""


class AppliedTokens:
    """Token records by id, replaced as a whole on every change the store reports.

    ``held=False`` (a follower, which has no store): no record ever arrives, and a
    minted token is refused saying so rather than waiting for a sync that never comes.
    """

    def __init__(self, *, held: bool = True) -> None:
        self.held = held
        self.synced = asyncio.Event()
        self._records: dict[str, TokenRecord] = {}
        self._raw: dict[str, bytes] = {}
        self._changed = asyncio.Event()

    def apply(self, raw: Mapping[str, bytes]) -> None:
        """Take the full map ``token id -> stored record``."""
        records = {}
        for token_id, value in raw.items():
            if self._raw.get(token_id) == value and token_id in self._records:
                records[token_id] = self._records[token_id]
                continue
            record = _checked(token_id, value, already_logged=self._raw.get(token_id) == value)
            if record is not None:
                records[token_id] = record
        self._records, self._raw = records, dict(raw)
        self.synced.set()
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def authenticate(self, token: str) -> Principal:
        """The principal of a presented ``sct_`` token; :class:`TokenRefused` (or
        :class:`~app.access.MalformedToken`) saying why not."""
        if not self.held:
            raise TokenRefused(
                "this instance follows another one and honours no minted tokens: "
                "use them on the cluster that minted them"
            )
        presented = minted.parse(token)
        if not self.synced.is_set():
            raise TokensNotSynced
        record = self._records.get(presented.id)
        if record is None:
            raise TokenRefused("the token is not valid: it was revoked or never minted here")
        return record.authenticate(presented)

    def get(self, token_id: str) -> TokenRecord | None:
        return self._records.get(token_id)

    def records(self) -> list[TokenRecord]:
        """Every applied record, oldest first."""
        return sorted(self._records.values(), key=lambda record: (record.created_at, record.id))

    async def wait_until(self, check: Callable[[], bool], within: float) -> bool:
        """Wait until ``check()`` holds after some change; False if ``within`` s passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not check():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return check()
        return True


def _checked(token_id: str, value: bytes, *, already_logged: bool) -> TokenRecord | None:
    try:
        record = TokenRecord.from_json(value)
    except InvalidTokenRecord as damaged:
        if not already_logged:
            log.warning("ignoring the token record under id %r: %s", token_id, damaged)
        return None
    if record.id != token_id:
        if not already_logged:
            log.warning("ignoring the token record under id %r: it names another id", token_id)
        return None
    return record
