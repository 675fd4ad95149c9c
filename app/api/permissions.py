"""403 for what a principal may not do (docs/design.md §9): the routes ask here."""

from __future__ import annotations

from fastapi import HTTPException, status

from app.access import Principal


def _forbidden(message: str) -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN, message)


def require_read(principal: Principal, project: str) -> None:
    """403 outside the principal's projects, whether the project exists or not (its
    existence is no business of a token that may not read it)."""
    if not principal.may_read(project):
        raise _forbidden(f"the token {principal.name!r} may not read project {project!r}")


def require_write(principal: Principal, project: str) -> None:
    if principal.may_write(project):
        return
    if principal.may_read(project):
        raise _forbidden(f"the token {principal.name!r} may only read project {project!r}")
    raise _forbidden(f"the token {principal.name!r} may not write project {project!r}")


def require_admin(principal: Principal) -> None:
    """Cluster-wide powers (tokens): an admin bound to every project."""
    if not principal.may_admin:
        raise _forbidden(
            f"the token {principal.name!r} is not an admin for every project: "
            "only such an admin manages tokens"
        )
