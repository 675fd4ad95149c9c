"""The change log's record of changes by other clients (``sc/changes/<cluster>/.foreign``):
what a replay may not pass over (:mod:`app.stores.consul.changelog`). Its value comes from
the store, where other tools write too: anything unreadable refuses every replay rather
than allowing one."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class ForeignMark:
    """``.foreign``: the newest :attr:`KEEP` revisions of changes by other clients, and
    ``floor``, the highest one dropped from them (or every revision, when another tool
    wrote the marker: no replay then)."""

    floor: int = 0
    revisions: tuple[int, ...] = ()
    KEEP: ClassVar[int] = 64

    def clear(self, after: int, through: int) -> bool:
        """Whether no change by another client is known in ``(after, through]``."""
        return after >= self.floor and not any(after < r <= through for r in self.revisions)

    def with_revisions(self, new: Iterable[int]) -> ForeignMark | None:
        """The mark with ``new`` added; None when it holds them already."""
        revisions = sorted(set(self.revisions).union(r for r in new if r > self.floor))
        if tuple(revisions) == self.revisions:
            return None
        dropped, kept = revisions[: -self.KEEP], revisions[-self.KEEP :]
        return ForeignMark(max([self.floor, *dropped]), tuple(kept))

    def encode(self) -> bytes:
        return " ".join(map(str, (self.floor, *self.revisions))).encode()

    @classmethod
    def parse(cls, raw: bytes | None) -> ForeignMark:
        if raw is None:
            return cls()
        numbers = raw.split()
        if not numbers or not all(n.isdigit() and len(n) <= 20 for n in numbers):
            return cls(floor=2**64)
        floor, *revisions = map(int, numbers)
        return cls(floor, tuple(sorted(revisions)))
