"""The local file's ``history:`` section: every project's versions, oldest first.

It is one JSON line (JSON is YAML): dumping 50 versions of a 1 KB project as YAML made a
write ~20 ms slower, as JSON the whole history costs about 2 ms (docs/design.md §13).
Each version keeps the project's JSON as a string, so its bytes come back exactly (YAML
would resolve some JSON numbers otherwise).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from app.stores.base import StoreConfigError, Version, decode_version

#: Project id -> its versions, oldest first.
History = dict[str, list[Version]]


def parse_history(path: Path, history: Any) -> History:
    """The ``history`` section; a file without one (older, or Space Cloud's) has none."""
    if history is None:
        return {}
    if not isinstance(history, dict):
        raise StoreConfigError(f"{path}: 'history' must map project ids to version lists")
    parsed: History = {}
    for project_id, records in history.items():
        if not isinstance(records, list):
            raise StoreConfigError(f"{path}: history.{project_id} must be a list")
        versions = [_version(str(project_id), record) for record in records]
        if None in versions:
            raise StoreConfigError(f"{path}: history.{project_id} holds an invalid version")
        parsed[str(project_id)] = versions  # type: ignore[assignment]
    return parsed


def _version(project_id: str, record: Any) -> Version | None:
    """A version as the file keeps it: the project's JSON as a string, so that its bytes
    come back exactly (YAML would resolve some JSON numbers otherwise)."""
    if not isinstance(record, dict):
        return None
    revision, project = record.get("revision"), record.get("project")
    if not isinstance(revision, int) or isinstance(revision, bool) or revision < 1:
        return None
    if not isinstance(project, str | None):
        return None
    raw = {**record, "project": orjson.Fragment(project) if project is not None else None}
    return decode_version(project_id, revision, orjson.dumps(raw))


def dump_history(history: History) -> bytes:
    return orjson.dumps(
        {
            project_id: [_version_record(version) for version in versions]
            for project_id, versions in history.items()
        }
    )


def _version_record(version: Version) -> dict[str, Any]:
    project = version.value.decode() if version.value is not None else None
    return {
        "revision": version.revision,
        "op": version.op,
        "at": version.at,
        "by": version.by,
        "node": version.node,
        "project": project,
    }
