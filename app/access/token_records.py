"""What is kept of a minted token: its name, role, patterns, times and secret's hash.

The store (``sc/tokens/<cluster>/<id>``) holds :meth:`TokenRecord.to_json`; a value read
back is untrusted like any store value, so :meth:`TokenRecord.from_json` checks it all.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import orjson

from app.access import minted
from app.access.errors import AccessError, InvalidScope, TokenRefused
from app.access.principal import Principal
from app.access.scopes import ProjectScope, Role

#: A minted token lives at most this long (a year and a day); without a TTL, forever.
MAX_TTL_SECONDS = 366 * 86400
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.@:/-]{0,63}")
_HASH = re.compile(r"[0-9a-f]{64}")


class InvalidTokenRecord(AccessError):
    """A stored token record that cannot be used (damaged or written by something else)."""


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: str
    name: str
    role: Role
    scope: ProjectScope
    created_at: int
    expires_at: int | None
    secret_hash: str

    @classmethod
    def mint(
        cls,
        name: object,
        role: object,
        projects: object,
        ttl_seconds: object = None,
        now: float | None = None,
    ) -> tuple[TokenRecord, str]:
        """A new record and the token string to show once; :class:`InvalidScope` on bad
        input, naming it."""
        checked_name = check_name(name)
        checked_role, scope = Role.parse(role), ProjectScope.parse(projects)
        created = int(time.time() if now is None else now)
        expires = None if ttl_seconds is None else created + check_ttl(ttl_seconds)
        token = minted.mint()
        record = cls(
            token.id, checked_name, checked_role, scope, created, expires, token.secret_hash
        )
        return record, token.token

    def principal(self) -> Principal:
        return Principal(self.name, self.role, self.scope, self.expires_at, self.id)

    def authenticate(self, presented: minted.PresentedToken, now: float | None = None) -> Principal:
        """The principal, if ``presented`` is this token's and it has not expired."""
        if presented.id != self.id:
            raise TokenRefused("the token is not valid")
        presented.check(self.secret_hash)
        principal = self.principal()
        if principal.expired(now):
            raise TokenRefused("the token has expired")
        return principal

    def public(self) -> dict[str, Any]:
        """The record as the API lists it: never the secret, nor its hash."""
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role.value,
            "projects": self.scope.texts(),
            "createdAt": self.created_at,
            "expiresAt": self.expires_at,
        }

    def to_json(self) -> bytes:
        return orjson.dumps({**self.public(), "secretHash": self.secret_hash})

    @classmethod
    def from_json(cls, value: bytes) -> TokenRecord:
        try:
            data = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise InvalidTokenRecord("a stored token is not JSON") from None
        if not isinstance(data, dict):
            raise InvalidTokenRecord("a stored token is not a JSON object")
        try:
            return cls._from_fields(data)
        except (AccessError, KeyError, TypeError) as error:
            raise InvalidTokenRecord(f"a stored token is damaged: {_describe(error)}") from None

    @classmethod
    def _from_fields(cls, data: dict[str, Any]) -> TokenRecord:
        token_id, secret_hash = data["id"], data["secretHash"]
        if not isinstance(token_id, str) or not minted.ID_PATTERN.fullmatch(token_id):
            raise InvalidTokenRecord("its id is not a token id")
        if not isinstance(secret_hash, str) or not _HASH.fullmatch(secret_hash):
            raise InvalidTokenRecord("its secret hash is not a SHA-256 hex digest")
        created, expires = data["createdAt"], data["expiresAt"]
        if not _is_time(created) or not (expires is None or _is_time(expires)):
            raise InvalidTokenRecord("its times are not epoch seconds")
        return cls(
            token_id,
            check_name(data["name"]),
            Role.parse(data["role"]),
            ProjectScope.parse(data["projects"]),
            created,
            expires,
            secret_hash,
        )


def check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidScope(
            "a token name is 1-64 characters: letters, digits, space and _ . @ : / -, "
            "starting with a letter or digit"
        )
    return name


def check_ttl(ttl_seconds: object) -> int:
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int):
        raise InvalidScope("ttlSeconds must be a whole number of seconds")
    if not 0 < ttl_seconds <= MAX_TTL_SECONDS:
        raise InvalidScope(f"ttlSeconds must be between 1 and {MAX_TTL_SECONDS} (366 days)")
    return ttl_seconds


def _is_time(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _describe(error: Exception) -> str:
    if isinstance(error, KeyError):
        return f"field {error.args[0]!r} is missing"
    if isinstance(error, TypeError):
        return "a field has the wrong type"
    return str(error)
