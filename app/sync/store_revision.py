"""How far the store has got: what tells a ``?waitRevision=`` that can never come.

A revision beyond the store's current one is no write of the past: waiting for it would
only end in a 504. The applied revision is no bound (a change may be on its way), so
the store is asked, once for all the requests that need it at the same moment, and what
it answered is remembered: revisions up to it need no question (see docs/design.md §12).
"""

from __future__ import annotations

import asyncio
import logging

from app.stores.base import StoreError
from app.sync.source import ChangeSource

log = logging.getLogger("space_cloud.sync")


class StoreRevision:
    """The store's current revision as far as it is known, asked for when needed."""

    def __init__(self, source: ChangeSource, timeout: float) -> None:
        self._source = source
        self._timeout = timeout
        self.known = 0
        self._asked = 0  # questions started so far
        self._asking: tuple[int, asyncio.Future[int | None]] | None = None

    async def beyond(self, revision: int) -> int | None:
        """The store's revision when ``revision`` is beyond it; None when the store has
        it, or cannot tell (then the caller waits, as for any revision).

        Only an answer to a question asked after this call may say "beyond": one already
        on its way may predate the write that made ``revision``.
        """
        if revision <= self.known:
            return None
        asked_before = self._asked
        while True:
            number, answer = self._question()
            current = await asyncio.shield(answer)
            if current is None or revision <= current:
                return None
            if number > asked_before:
                return current

    def _question(self) -> tuple[int, asyncio.Future[int | None]]:
        if self._asking is None or self._asking[1].done():
            self._asked += 1
            self._asking = (self._asked, asyncio.ensure_future(self._fetch()))
        return self._asking

    async def _fetch(self) -> int | None:
        try:
            current = await asyncio.wait_for(self._source.current_revision(), self._timeout)
        except (StoreError, TimeoutError) as exc:
            log.debug("the store's revision is unknown: %s", exc)
            return None
        if current is not None:
            self.known = max(self.known, current)
        return current
