"""Admin tokens: JWTs signed with the admin secret, bound to their cluster and password.

``aud`` is the cluster id, so a token from another cluster that shares the secret is
refused; ``pwf`` is a fingerprint of the admin password keyed with the secret (never the
password), so changing the password retires every token issued under the old one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import Any

import jwt

from app.access.errors import TokenRefused
from app.access.principal import Principal

ALGORITHM = "HS256"
ISSUER = "space-cloud"
#: Verified tokens remembered (oldest forgotten first).
VERIFIED_CACHE_SIZE = 1024
_FINGERPRINT_CONTEXT = b"space-cloud admin password\x00"


class PasswordChanged(jwt.InvalidTokenError):
    """The token was issued under another admin password."""


class TokenIssuer:
    """Checks the admin credentials and signs and verifies admin tokens."""

    def __init__(
        self,
        user: str,
        password: str | None,
        secret: str | None,
        ttl_seconds: int,
        *,
        cluster_id: str,
    ) -> None:
        self.user = user
        self.password = password
        # Without a configured secret (local mode) tokens live as long as this process.
        self.secret = secret or secrets.token_urlsafe(32)
        self.ttl_seconds = ttl_seconds
        self.cluster_id = cluster_id
        self._fingerprint = password_fingerprint(self.secret, password or "")
        self._verified: dict[str, Principal] = {}

    def credentials_match(self, user: str, password: str) -> bool:
        if self.password is None:
            return False
        user_ok = _same(user, self.user)
        pass_ok = _same(password, self.password)
        return user_ok and pass_ok

    def issue(self, user: str) -> tuple[str, int]:
        now = int(time.time())
        expires = now + self.ttl_seconds
        claims = {
            "sub": user,
            "role": "admin",
            "iss": ISSUER,
            "aud": self.cluster_id,
            "pwf": self._fingerprint,
            "iat": now,
            "exp": expires,
        }
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM), expires

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims; raises ``jwt.InvalidTokenError`` when it is not valid."""
        claims: dict[str, Any] = jwt.decode(
            token,
            self.secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            audience=self.cluster_id,
            # ``aud`` is required by ``audience=``, checked after ``exp``: a token that is
            # both expired and of an older format is refused as expired.
            options={"require": ["exp", "iat", "sub"]},
        )
        fingerprint = claims.get("pwf")
        if not isinstance(fingerprint, str):
            raise jwt.InvalidTokenError("the token carries no password fingerprint")
        if not hmac.compare_digest(fingerprint.encode(), self._fingerprint.encode()):
            raise PasswordChanged("the token was issued under another admin password")
        if claims.get("role") != "admin":
            raise jwt.InvalidTokenError("an admin token carries role 'admin'")
        return claims

    def authenticate(self, token: str) -> Principal:
        """The principal ``token`` stands for; raises :class:`TokenRefused` saying why not.

        Only a token that passed :meth:`verify` is remembered, and only until it expires,
        so the signature check is paid once per token rather than once per request.
        """
        principal = self._verified.get(token)
        if principal is not None:
            if not principal.expired():
                return principal
            del self._verified[token]
        claims = self._checked_claims(token)
        principal = Principal.admin(str(claims["sub"]), expires_at=claims["exp"])
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = principal
        return principal

    def _checked_claims(self, token: str) -> dict[str, Any]:
        try:
            return self.verify(token)
        except jwt.ExpiredSignatureError:
            raise TokenRefused("the token has expired: log in again") from None
        except jwt.InvalidAudienceError:
            raise TokenRefused("the token was issued for another cluster") from None
        except PasswordChanged:
            raise TokenRefused(
                "the token was issued before the admin password changed: log in again"
            ) from None
        except jwt.InvalidTokenError:
            raise TokenRefused("the token is not valid") from None


def _same(given: str, expected: str) -> bool:
    """Equal strings, in a time that reveals neither their content nor their length."""
    digest = hashlib.sha256
    return hmac.compare_digest(digest(given.encode()).digest(), digest(expected.encode()).digest())


def password_fingerprint(secret: str, password: str) -> str:
    """A short keyed digest of the password: equal for equal passwords under one secret,
    useless for guessing the password without the secret."""
    digest = hmac.new(secret.encode(), _FINGERPRINT_CONTEXT + password.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()[:16]).rstrip(b"=").decode()
