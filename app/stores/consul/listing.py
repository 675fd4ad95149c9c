"""What the projects prefix holds: projects, and the deletion marks beside them.

A deletion leaves a mark, ``sc/projects/<cluster>/.deleted/<id>`` (ids never start with
``.``, and nested keys are never taken for projects), written in the deleting transaction,
so its ModifyIndex is the deletion's revision. The change log now carries that revision
(:mod:`app.stores.consul.changelog`); the marks stay for gateways of the previous version
during a rolling upgrade, which label deletions with them, and for the listing diff, which
labels such a gateway's deletions with them. A put no longer removes the mark (its
transaction carries the log entry instead): a mark left behind is ignored, as only a mark
newer than the last answer a watch compared counts.
"""

from __future__ import annotations

from typing import Any

from app.stores.base import StoredProject
from app.stores.consul.client import entry_value

#: Where a deletion leaves its mark, under the projects prefix: ids never start with ".".
DELETION_MARKS = ".deleted/"


def deletion_mark(prefix: str, project_id: str) -> str:
    return f"{prefix}{DELETION_MARKS}{project_id}"


def stored_projects(entries: list[dict[str, Any]], prefix: str) -> dict[str, StoredProject]:
    """Every key under ``prefix`` but the deletion marks: the sync layer judges them."""
    projects = {}
    for entry in entries:
        project_id = entry["Key"].removeprefix(prefix)
        if project_id and not project_id.startswith(DELETION_MARKS):
            projects[project_id] = StoredProject(
                project_id, entry_value(entry), entry["ModifyIndex"]
            )
    return projects


def deletion_marks(entries: list[dict[str, Any]], prefix: str) -> dict[str, int]:
    """Project id -> index of its last deletion by a gateway, from the marks under prefix."""
    marks_prefix = prefix + DELETION_MARKS
    return {
        entry["Key"].removeprefix(marks_prefix): entry["ModifyIndex"]
        for entry in entries
        if entry["Key"].startswith(marks_prefix)
    }
