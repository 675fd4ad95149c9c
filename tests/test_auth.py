"""TokenIssuer: admin credentials, signed tokens bound to their cluster and password."""

from __future__ import annotations

import base64
import time

import jwt
import orjson
import pytest

from app.access import Principal, Role, TokenRefused
from app.access.admin_tokens import VERIFIED_CACHE_SIZE, password_fingerprint
from app.auth import ALGORITHM, ISSUER, TokenIssuer

SECRET = "a-long-enough-test-secret-0123456789abcdef"
CLUSTER = "test-cluster"


def issuer(**overrides: object) -> TokenIssuer:
    options: dict = {
        "user": "admin",
        "password": "pw",
        "secret": SECRET,
        "ttl_seconds": 3600,
        "cluster_id": CLUSTER,
    }
    options.update(overrides)
    return TokenIssuer(**options)


def claims(**changes: object) -> dict:
    """Valid admin claims for :func:`issuer`'s defaults, with ``changes`` applied."""
    now = int(time.time())
    valid = {
        "sub": "admin",
        "role": "admin",
        "iss": ISSUER,
        "aud": CLUSTER,
        "pwf": password_fingerprint(SECRET, "pw"),
        "iat": now,
        "exp": now + 60,
    }
    valid.update(changes)
    return {name: value for name, value in valid.items() if value is not None}


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
    token = jwt.encode(claims(iat=now - 7200, exp=now - 3600), SECRET, algorithm=ALGORITHM)
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
    token = jwt.encode(claims(), None, algorithm="none")
    with pytest.raises(jwt.InvalidTokenError):
        issuer().verify(token)


@pytest.mark.parametrize("missing", ["exp", "iat", "sub", "iss", "aud", "pwf"])
def test_missing_claim_fails(missing: str) -> None:
    token = jwt.encode(claims(**{missing: None}), SECRET, algorithm=ALGORITHM)
    expected = jwt.InvalidTokenError if missing == "pwf" else jwt.MissingRequiredClaimError
    with pytest.raises(expected):
        issuer().verify(token)
    with pytest.raises(TokenRefused, match="the token is not valid"):
        issuer().authenticate(token)


def test_an_expired_token_of_the_older_format_is_refused_as_expired() -> None:
    now = int(time.time())
    older = {"sub": "admin", "iss": ISSUER, "iat": now - 120, "exp": now - 60}
    with pytest.raises(TokenRefused, match="expired"):
        issuer().authenticate(jwt.encode(older, SECRET, algorithm=ALGORITHM))


def test_wrong_issuer_fails() -> None:
    token = jwt.encode(claims(iss="someone-else"), SECRET, algorithm=ALGORITHM)
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


# --- binding to the cluster and the admin password -------------------------------------


def test_token_from_another_cluster_with_the_same_secret_fails() -> None:
    token, _ = issuer(cluster_id="other-cluster").issue("admin")
    with pytest.raises(jwt.InvalidAudienceError):
        issuer().verify(token)
    with pytest.raises(TokenRefused, match="another cluster"):
        issuer().authenticate(token)


def test_token_from_before_a_password_change_fails() -> None:
    token, _ = issuer(password="old-password").issue("admin")
    with pytest.raises(TokenRefused, match="before the admin password changed"):
        issuer(password="new-password").authenticate(token)


def test_the_token_carries_a_keyed_fingerprint_never_the_password() -> None:
    password = "correct horse battery staple"
    token, _ = issuer(password=password).issue("admin")
    payload = jwt.decode(token, options={"verify_signature": False})
    assert password not in token and password not in orjson.dumps(payload).decode()
    assert payload["aud"] == CLUSTER
    # The fingerprint depends on the secret: without it, it says nothing of the password.
    other = password_fingerprint("another-secret-that-is-long-enough-0123456789", password)
    assert payload["pwf"] == password_fingerprint(SECRET, password) != other


@pytest.mark.parametrize("role", ["reader", "writer", None])
def test_a_signed_token_without_the_admin_role_fails(role: str | None) -> None:
    token = jwt.encode(claims(role=role), SECRET, algorithm=ALGORITHM)
    with pytest.raises(TokenRefused, match="not valid"):
        issuer().authenticate(token)


def test_a_claims_forged_token_is_valid_only_with_every_binding() -> None:
    token = jwt.encode(claims(), SECRET, algorithm=ALGORITHM)
    assert issuer().authenticate(token) == Principal.admin("admin", claims()["exp"])


# --- authenticate: the principal, the messages, the cache ------------------------------


def test_authenticate_gives_the_admin_principal() -> None:
    token, expires = issuer().issue("admin")
    principal = issuer().authenticate(token)
    assert principal.name == "admin" and principal.role is Role.ADMIN
    assert principal.expires_at == expires
    assert principal.may_admin and principal.may_write("any") and principal.may_read("any")


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (jwt.encode(claims(), None, algorithm="none"), "the token is not valid"),
        (
            jwt.encode(claims(), "another-secret-that-is-long-enough-0123", algorithm=ALGORITHM),
            "the token is not valid",
        ),
        (
            jwt.encode(claims(exp=int(time.time()) - 1), SECRET, algorithm=ALGORITHM),
            "the token has expired: log in again",
        ),
        ("garbage", "the token is not valid"),
    ],
    ids=["alg none", "another secret", "expired", "garbage"],
)
def test_authenticate_refuses_with_one_sentence(token: str, message: str) -> None:
    with pytest.raises(TokenRefused) as refused:
        issuer().authenticate(token)
    assert str(refused.value) == message


def test_the_cache_never_lets_a_refused_token_through() -> None:
    tokens = issuer()
    good, _ = tokens.issue("admin")
    assert tokens.authenticate(good).name == "admin"
    assert tokens.authenticate(good).name == "admin"  # a cache hit
    forged = _tamper(good, sub="mallory")
    for _ in range(2):  # neither the first look nor a second one lets it in
        with pytest.raises(TokenRefused):
            tokens.authenticate(forged)
    foreign, _ = issuer(cluster_id="other-cluster").issue("admin")
    for _ in range(2):
        with pytest.raises(TokenRefused):
            tokens.authenticate(foreign)


def test_a_cached_token_is_refused_once_it_expires() -> None:
    tokens = issuer(ttl_seconds=1)
    token, expires = tokens.issue("admin")
    assert tokens.authenticate(token).name == "admin"  # now cached
    time.sleep(max(0.0, expires - time.time()) + 0.05)  # time passes: the token expires
    with pytest.raises(TokenRefused, match="expired"):
        tokens.authenticate(token)


def test_the_cache_is_bounded() -> None:
    tokens = issuer()
    for index in range(VERIFIED_CACHE_SIZE + 10):
        tokens.authenticate(jwt.encode(claims(sub=f"user-{index}"), SECRET, algorithm=ALGORITHM))
    assert len(tokens._verified) == VERIFIED_CACHE_SIZE
