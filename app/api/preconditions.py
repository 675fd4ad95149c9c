"""``If-Match`` and ``If-None-Match``: the conditions a write or a read asks for, as a
revision the store compares (``ABSENT``: the project must not exist)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Header, HTTPException, status

from app.api.dependencies import State
from app.api.revisions import parse_number
from app.stores.base import ABSENT

_ETAG = re.compile(r'^\s*(?:W/)?"?([0-9]+)"?\s*$')
#: What ``If-Match`` takes, for the OpenAPI document: a revision (as an ETag) or ``*``.
IF_MATCH_PATTERN = r'^\s*(\*|(W/)?"?[1-9][0-9]{0,17}"?)\s*$'

# The patterns document what the routes check themselves (400, not FastAPI's 422).
IfMatch = Annotated[
    str | None,
    Header(
        description='Write only if the project is at this revision: `"<revision>"` or `*`.',
        json_schema_extra={"pattern": IF_MATCH_PATTERN},
    ),
]
IfNoneMatch = Annotated[
    str | None,
    Header(
        description="`*`: create only; 412 if the project exists.",
        json_schema_extra={"pattern": r"^\s*\*\s*$"},
    ),
]


def none_match(header: str | None, revision: int) -> bool:
    """Whether ``If-None-Match`` names ``revision`` (or is ``*``): a 304 then."""
    if header is None:
        return False
    for tag in header.split(","):
        if tag.strip() == "*":
            return True
        match = _ETAG.match(tag)
        if match is not None and parse_number(match.group(1)) == revision:
            return True
    return False


def expected_revision(
    state: State, project: str, if_match: str | None, if_none_match: str | None
) -> int | None:
    """The store condition that ``If-Match`` / ``If-None-Match`` ask for."""
    if if_match is not None and if_none_match is not None:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "send If-Match or If-None-Match, not both")
    if if_none_match is not None:
        if if_none_match.strip() != "*":
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "If-None-Match takes only '*'")
        return ABSENT
    if if_match is None:
        return None
    if if_match.strip() == "*":
        current = state.projects.get(project)
        if current is None:
            raise HTTPException(
                status.HTTP_412_PRECONDITION_FAILED, f"project {project!r} does not exist"
            )
        return current.revision
    match = _ETAG.match(if_match)
    revision = None if match is None else parse_number(match.group(1), lowest=ABSENT + 1)
    if revision is None:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, 'If-Match takes one revision, as "<revision>", or *'
        )
    return revision
