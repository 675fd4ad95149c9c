"""The one gate between a change source and the applied state.

Every listing and every batch of changes (from a store's list and watch, a resync, a
follower, the cache file) passes through :class:`Intake`, which serves only what
:func:`~app.sync.values.check_value` accepts, compact. What it skips is logged once per
key and revision, counted in ``sc_store_values_skipped_total{reason}`` and listed on
``/readyz`` until the key is deleted or written validly. A served project whose key
receives an invalid value is removed from what is served: its put becomes a delete at
the same revision (see docs/design.md §12).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from app.metrics import Metrics
from app.stores.base import ProjectChange, ProjectListing, StoredProject
from app.sync.values import Rejected, check_value, is_project_id, shown_key

log = logging.getLogger("space_cloud.sync")


@dataclass(frozen=True, slots=True)
class SkippedValue:
    """A store value that is not served, as ``/readyz`` lists it."""

    key: str
    revision: int
    reason: str
    error: str


class Intake:
    """Checks what a change source hands up; remembers what it skipped and why."""

    def __init__(self, value_limit: int, metrics: Metrics) -> None:
        self.value_limit = value_limit
        self._metrics = metrics
        self._skipped: dict[str, SkippedValue] = {}

    @property
    def skipped(self) -> Mapping[str, SkippedValue]:
        """Key -> the value skipped there now, in the order they were found."""
        return self._skipped

    def listing(self, listing: ProjectListing) -> ProjectListing:
        """The servable part of a full listing; the skipped keys become exactly its
        invalid ones."""
        served: dict[str, StoredProject] = {}
        invalid: set[str] = set()
        for key, project in listing.projects.items():
            checked = check_value(key, project.value, self.value_limit)
            if isinstance(checked, Rejected):
                self._skip(key, project.revision, checked)
                invalid.add(key)
            else:
                served[key] = StoredProject(key, checked, project.revision)
        for gone in self._skipped.keys() - invalid:
            del self._skipped[gone]
        self._metrics.store_values_invalid.set(len(self._skipped))
        return ProjectListing(served, listing.revision)

    def changes(self, changes: Iterable[ProjectChange]) -> list[ProjectChange]:
        """The servable changes of a batch, in the same order.

        A put of an invalid value under a project id becomes a delete of that id (the
        applied state ignores it unless the project was served); changes under keys that
        are not project ids were never served and are dropped.
        """
        passed = []
        for change in changes:
            served, rejected = servable(change, self.value_limit)
            if rejected is None:
                self._skipped.pop(change.id, None)
            else:
                self._skip(change.id, change.revision, rejected)
            if served is not None:
                passed.append(served)
        self._metrics.store_values_invalid.set(len(self._skipped))
        return passed

    def _skip(self, key: str, revision: int, rejected: Rejected) -> None:
        known = self._skipped.get(key)
        if known is not None and known.revision == revision:
            return  # seen already (a resync lists it again): logged and counted once
        shown = shown_key(key)
        self._skipped[key] = SkippedValue(shown, revision, rejected.reason, rejected.detail)
        self._metrics.store_values_skipped.labels(rejected.reason).inc()
        log.warning(
            "not serving the store value under %r (revision %d): %s",
            shown,
            revision,
            rejected.detail,
        )


def servable(change: ProjectChange, limit: int) -> tuple[ProjectChange | None, Rejected | None]:
    """What the applied state gets for one change (None: nothing), and why its value is
    not served, if it is not. Pure: the live path (:meth:`Intake.changes`) and a replay
    from the store (:mod:`app.sync.replay`) judge every change alike."""
    if change.kind == "delete" or change.value is None:
        if is_project_id(change.id):
            return ProjectChange("delete", change.id, change.revision), None
        return None, None
    checked = check_value(change.id, change.value, limit)
    if not isinstance(checked, Rejected):
        return ProjectChange("put", change.id, change.revision, checked), None
    if is_project_id(change.id):
        return ProjectChange("delete", change.id, change.revision), checked
    return None, checked
