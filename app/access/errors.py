"""The one exception root of access control: every message is one sentence for a client."""

from __future__ import annotations


class AccessError(ValueError):
    """Something about a credential or a scope is not acceptable; ``str()`` says what."""


class InvalidScope(AccessError):
    """A role or a list of project patterns that cannot be granted."""


class MalformedToken(AccessError):
    """A string that is not a token of the expected format."""


class TokenRefused(AccessError):
    """A well-formed token that does not authenticate (bad signature, expired, revoked)."""
