"""Exponential back-off with full jitter, for every loop that retries a remote."""

from __future__ import annotations

import asyncio
import random


class Backoff:
    """Exponential back-off with full jitter."""

    def __init__(self, base: float = 0.1, cap: float = 5.0) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return random.uniform(delay / 2, delay)

    async def sleep(self) -> None:
        await asyncio.sleep(self.next_delay())
