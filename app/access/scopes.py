"""Roles and the project patterns a credential is bound to (docs/design.md, "Who may do what").

A pattern is an exact project id (``shop``), a prefix ending in ``*`` (``shop-*``), or
``*`` alone for every project.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from app.access.errors import InvalidScope
from app.models import PROJECT_ID_PATTERN

_PROJECT_ID = re.compile(PROJECT_ID_PATTERN)
#: Beyond this many patterns a scope is a mistake, and matching would cost every request.
MAX_PATTERNS = 100


class Role(StrEnum):
    """What a credential may do within its patterns; each role includes the ones below."""

    READER = "reader"
    WRITER = "writer"
    ADMIN = "admin"

    @classmethod
    def parse(cls, value: object) -> Role:
        try:
            return cls(str(value))
        except ValueError:
            valid = ", ".join(role.value for role in cls)
            raise InvalidScope(f"unknown role {value!r}: valid roles are {valid}") from None

    @property
    def may_write(self) -> bool:
        return self in (Role.WRITER, Role.ADMIN)


@dataclass(frozen=True, slots=True)
class ProjectPattern:
    """An exact id, or a prefix (``text`` ends in ``*``) matching every id it starts."""

    text: str

    @property
    def prefix(self) -> str | None:
        return self.text[:-1] if self.text.endswith("*") else None

    def matches(self, project_id: str) -> bool:
        prefix = self.prefix
        if prefix is None:
            return project_id == self.text
        return project_id.startswith(prefix)

    @classmethod
    def parse(cls, value: object) -> ProjectPattern:
        if not isinstance(value, str):
            raise InvalidScope(f"a project pattern must be a string, not {value!r}")
        if value == "*":
            return cls(value)
        if value.endswith("*"):
            if not _PROJECT_ID.fullmatch(value[:-1]):
                raise InvalidScope(
                    f"project pattern {value!r} is not a project id prefix followed by '*'"
                )
            return cls(value)
        if not _PROJECT_ID.fullmatch(value):
            raise InvalidScope(
                f"project pattern {value!r} is neither a project id (lower-case letters, "
                "digits, '_' and '-'), a prefix ending in '*', nor '*'"
            )
        return cls(value)


@dataclass(frozen=True, slots=True)
class ProjectScope:
    """The projects a credential covers: any of its patterns matches."""

    patterns: tuple[ProjectPattern, ...]

    @classmethod
    def parse(cls, values: object) -> ProjectScope:
        if not isinstance(values, list | tuple):
            raise InvalidScope("projects must be a list of project patterns")
        patterns = [ProjectPattern.parse(value) for value in values]
        if not patterns:
            raise InvalidScope("projects must list at least one pattern ('*' for every project)")
        if len(patterns) > MAX_PATTERNS:
            raise InvalidScope(f"projects may list at most {MAX_PATTERNS} patterns")
        return cls(tuple(dict.fromkeys(patterns)))  # duplicates dropped, order kept

    @classmethod
    def everything(cls) -> ProjectScope:
        return cls((ProjectPattern("*"),))

    @property
    def is_everything(self) -> bool:
        return any(pattern.text == "*" for pattern in self.patterns)

    def matches(self, project_id: str) -> bool:
        return any(pattern.matches(project_id) for pattern in self.patterns)

    def texts(self) -> list[str]:
        return [pattern.text for pattern in self.patterns]
