"""TokenIssuer: admin credentials, signed tokens and their verification."""

from __future__ import annotations

import base64
import time

import jwt
import orjson
import pytest

from app.auth import ALGORITHM, ISSUER, TokenIssuer

SECRET = "a-long-enough-test-secret-0123456789abcdef"


def issuer(**overrides: object) -> TokenIssuer:
    options: dict = {"user": "admin", "password": "pw", "secret": SECRET, "ttl_seconds": 3600}
    options.update(overrides)
    return TokenIssuer(**options)


def test_issue_then_verify() -> None:
    tokens = issuer()
    before = int(time.time())
    token, expires = tokens.issue("admin")
    claims = tokens.verify(token)
    assert claims["sub"] == "admin"
    assert claims["iss"] == ISSUER
    assert claims["exp"] == expires
    assert before + 3600 <= expires <= int(time.time()) + 3600
    assert claims["iat"] <= claims["exp"]


def test_token_verifies_on_another_instance_with_the_same_secret() -> None:
    token, _ = issuer().issue("admin")
    assert issuer().verify(token)["sub"] == "admin"


def test_wrong_secret_fails() -> None:
    token, _ = issuer().issue("admin")
    with pytest.raises(jwt.InvalidSignatureError):
        issuer(secret="another-secret-that-is-long-enough-0123456789").verify(token)


def test_without_secret_each_issuer_has_its_own() -> None:
    first, second = issuer(secret=None), issuer(secret=None)
    token, _ = first.issue("admin")
    assert first.verify(token)["sub"] == "admin"
    with pytest.raises(jwt.InvalidTokenError):
        second.verify(token)


def test_expired_token_fails() -> None:
    now = int(time.time())
    claims = {"sub": "admin", "iss": ISSUER, "iat": now - 7200, "exp": now - 3600}
    token = jwt.encode(claims, SECRET, algorithm=ALGORITHM)
    with pytest.raises(jwt.ExpiredSignatureError):
        issuer().verify(token)


def _tamper(token: str, **changes: object) -> str:
    header, payload, signature = token.split(".")
    padded = payload + "=" * (-len(payload) % 4)
    claims = orjson.loads(base64.urlsafe_b64decode(padded))
    claims.update(changes)
    new_payload = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=").decode()
    return f"{header}.{new_payload}.{signature}"


def test_tampered_token_fails() -> None:
    tokens = issuer()
    token, _ = tokens.issue("admin")
    forged = _tamper(token, exp=int(time.time()) + 10 * 365 * 86400)
    with pytest.raises(jwt.InvalidSignatureError):
        tokens.verify(forged)
    # A flipped signature character fails as well.
    head, _, signature = token.rpartition(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    with pytest.raises(jwt.InvalidTokenError):
        tokens.verify(f"{head}.{flipped}")


def test_unsigned_token_fails() -> None:
    now = int(time.time())
    claims = {"sub": "admin", "iss": ISSUER, "iat": now, "exp": now + 60}
    token = jwt.encode(claims, None, algorithm="none")
    with pytest.raises(jwt.InvalidTokenError):
        issuer().verify(token)


@pytest.mark.parametrize("missing", ["exp", "iat", "sub", "iss"])
def test_missing_claim_fails(missing: str) -> None:
    now = int(time.time())
    claims = {"sub": "admin", "iss": ISSUER, "iat": now, "exp": now + 60}
    del claims[missing]
    token = jwt.encode(claims, SECRET, algorithm=ALGORITHM)
    with pytest.raises(jwt.MissingRequiredClaimError):
        issuer().verify(token)


def test_wrong_issuer_fails() -> None:
    now = int(time.time())
    claims = {"sub": "admin", "iss": "someone-else", "iat": now, "exp": now + 60}
    token = jwt.encode(claims, SECRET, algorithm=ALGORITHM)
    with pytest.raises(jwt.InvalidIssuerError):
        issuer().verify(token)


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "Bearer x"])
def test_garbage_fails(garbage: str) -> None:
    with pytest.raises(jwt.InvalidTokenError):
        issuer().verify(garbage)


def test_credentials_match() -> None:
    tokens = issuer()
    assert tokens.credentials_match("admin", "pw") is True
    assert tokens.credentials_match("admin", "wrong") is False
    assert tokens.credentials_match("root", "pw") is False
    assert tokens.credentials_match("admin", "") is False
    assert tokens.credentials_match("", "") is False
    assert tokens.credentials_match("admin", "pw ") is False


def test_credentials_match_non_ascii() -> None:
    tokens = issuer(user="ädmin", password="pässwörd")
    assert tokens.credentials_match("ädmin", "pässwörd") is True
    assert tokens.credentials_match("ädmin", "passwort") is False


def test_no_password_configured_never_matches() -> None:
    tokens = issuer(password=None)
    assert tokens.credentials_match("admin", "") is False
    assert tokens.credentials_match("admin", "None") is False
    assert tokens.credentials_match("admin", "pw") is False
