"""A stream never outlives its token: it ends at the token's expiry, or as soon as the
watch reports the minted token revoked (docs/design.md §9). The client logs in again
and resumes with ``Last-Event-ID``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from app.access import Principal
from app.sync import AppliedTokens


class TokenLifetime:
    """Ends one stream when its principal's credential ends."""

    def __init__(self, principal: Principal, tokens: AppliedTokens) -> None:
        self.principal = principal
        self._tokens = tokens
        self._timer: asyncio.TimerHandle | None = None
        self._unwatch: Callable[[], None] | None = None

    @classmethod
    def of(cls, principal: Principal, tokens: AppliedTokens) -> TokenLifetime | None:
        """None for a credential that neither expires nor can be revoked (``--dev``)."""
        if principal.expires_at is None and principal.token_id is None:
            return None
        return cls(principal, tokens)

    def bind(self, end: Callable[[str], None]) -> None:
        """From now on, call ``end(why)`` (once) when the token ends."""
        expires_at = self.principal.expires_at
        if expires_at is not None:
            delay = max(0.0, expires_at - time.time())
            self._timer = asyncio.get_running_loop().call_later(delay, end, "expired")
        if self.principal.token_id is not None:
            self._unwatch = self._tokens.when_gone(
                self.principal.token_id, lambda: end("was revoked")
            )

    def release(self) -> None:
        """The stream is over: nothing more to watch."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        unwatch, self._unwatch = self._unwatch, None
        if unwatch is not None:
            unwatch()
