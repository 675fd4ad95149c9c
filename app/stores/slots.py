"""Where a write's version goes on etcd and Consul: the project's next *slot*.

A version lives at ``sc/history/<cluster>/<project>/<slot>`` (docs/design.md §11). The
write's revision cannot name the key, as the store assigns it only when it applies the
transaction; the slot is known before: the project's next sequence number, 20 digits so
that key order is slot order. The transaction asks that the slot be free, and a slot is
taken only after the one before it exists, so slot order is revision order. The
version's revision is its key's own ``mod_revision`` / ``ModifyIndex``: the same
transaction wrote it, so it is the write's revision.

A plan also names what the write prunes: the oldest slots beyond the newest ``keep``
(at most :data:`~app.stores.base.MAX_PRUNED_PER_WRITE`), deleted in the same
transaction. As the transaction commits only while its slot is free, the plan still held
the newest versions then, so a prune never deletes one of the newest ``keep``.

A plan comes from a listing of the project's version keys, or, after this instance's own
write to the project, from what that write left, with no listing (it costs about as much
as the write): the transaction then also checks that the version it wrote is still
there, unchanged (:attr:`SlotPlan.newest`). With the next slot free, that proves it is
still the newest: a newer one needs the next slot to have existed, and a prune takes the
older ones first. When that transaction fails, the caller :meth:`~SlotPlanner.forget`\\ s
the project and plans again from a listing.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.stores.base import MAX_PRUNED_PER_WRITE

SLOT_DIGITS = 20


@dataclass(frozen=True, slots=True)
class SlotPlan:
    """A write's version slot, the slots it prunes, the slots there are once it is done,
    and, when planned from this instance's last write, that write's (slot, revision)."""

    project_id: str
    slot: str
    pruned: list[str]
    after: list[str]
    newest: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class _LastWrite:
    slots: list[str]
    revision: int


class SlotPlanner:
    """Plans version slots for one store object, remembering its own last writes."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._last_writes: dict[str, _LastWrite] = {}

    def remembered(self, project_id: str) -> SlotPlan | None:
        """A plan from this instance's last write to the project, if it made one."""
        last = self._last_writes.get(project_id)
        if last is None:
            return None
        return self._plan(project_id, last.slots, (last.slots[-1], last.revision))

    def from_listing(self, project_id: str, names: list[str]) -> SlotPlan:
        """A plan from the names of the keys under the project's history prefix; a name
        that is not a slot (another tool's key) is left alone."""
        return self._plan(project_id, [name for name in names if is_slot(name)], None)

    def _plan(self, project_id: str, slots: list[str], newest: tuple[str, int] | None) -> SlotPlan:
        slots = sorted(slots)
        next_slot = str((int(slots[-1]) if slots else 0) + 1).zfill(SLOT_DIGITS)
        excess = len(slots) + 1 - self.keep
        pruned = slots[: max(0, min(excess, MAX_PRUNED_PER_WRITE))]
        after = [*slots[len(pruned) :], next_slot]
        return SlotPlan(project_id, next_slot, pruned, after, newest)

    def written(self, plan: SlotPlan, revision: int) -> None:
        """Remember what a committed write left, to plan the next one from."""
        self._last_writes[plan.project_id] = _LastWrite(plan.after, revision)

    def forget(self, project_id: str) -> None:
        self._last_writes.pop(project_id, None)


def is_slot(name: str) -> bool:
    return len(name) == SLOT_DIGITS and name.isdigit()
