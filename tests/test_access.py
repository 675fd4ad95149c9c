"""app.access: roles and project patterns, principals, minted-token strings, the limiter."""

from __future__ import annotations

import hashlib
import re

import orjson
import pytest

from app.access import (
    InvalidScope,
    MalformedToken,
    Principal,
    ProjectScope,
    Role,
    TokenRefused,
    minted,
)
from app.access.limiter import LoginLimiter, client_key
from app.access.scopes import MAX_PATTERNS, ProjectPattern
from app.access.token_records import InvalidTokenRecord, TokenRecord

# --- roles ------------------------------------------------------------------------------


def test_roles_parse_and_unknown_ones_are_named() -> None:
    assert [Role.parse(text) for text in ("admin", "writer", "reader")] == [
        Role.ADMIN,
        Role.WRITER,
        Role.READER,
    ]
    for bad in ("root", "Admin", "", None, 1):
        with pytest.raises(InvalidScope) as error:
            Role.parse(bad)
        assert str(error.value) == f"unknown role {bad!r}: valid roles are reader, writer, admin"


# --- patterns and scopes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "project", "expected"),
    [
        (["*"], "anything", True),
        (["shop"], "shop", True),
        (["shop"], "shop-eu", False),
        (["shop"], "sho", False),
        (["shop*"], "shop", True),
        (["shop-*"], "shop-eu", True),
        (["shop-*"], "shop", False),
        (["shop-*"], "shopping", False),
        (["a", "b-*"], "b-1", True),
        (["a", "b-*"], "c", False),
    ],
)
def test_scope_matching(patterns: list[str], project: str, expected: bool) -> None:
    assert ProjectScope.parse(patterns).matches(project) is expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("Shop", "is neither a project id"),
        ("shop/eu", "is neither a project id"),
        ("", "is neither a project id"),
        ("shop\n", "is neither a project id"),
        ("-shop", "is neither a project id"),
        ("a" * 64, "is neither a project id"),
        ("*shop", "is neither a project id"),
        ("sh*p", "is neither a project id"),
        ("shop**", "is not a project id prefix followed by '*'"),
        ("-*", "is not a project id prefix followed by '*'"),
        (7, "must be a string"),
        (None, "must be a string"),
    ],
)
def test_malformed_patterns_are_refused_with_their_reason(value: object, message: str) -> None:
    with pytest.raises(InvalidScope, match=re.escape(message)):
        ProjectPattern.parse(value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([], "at least one pattern"),
        ("shop", "must be a list"),
        ({"shop": 1}, "must be a list"),
        (None, "must be a list"),
        (["shop", "Bad"], "'Bad'"),
        ([f"p{i}" for i in range(MAX_PATTERNS + 1)], f"at most {MAX_PATTERNS}"),
    ],
)
def test_bad_pattern_lists_are_refused(values: object, message: str) -> None:
    with pytest.raises(InvalidScope, match=re.escape(message)):
        ProjectScope.parse(values)


def test_a_scope_keeps_its_patterns_in_order_without_duplicates() -> None:
    scope = ProjectScope.parse(["b", "a-*", "b"])
    assert scope.texts() == ["b", "a-*"]
    assert not scope.is_everything
    assert ProjectScope.parse(["x", "*"]).is_everything


# --- principals -------------------------------------------------------------------------


def test_what_each_role_may_do() -> None:
    scope = ProjectScope.parse(["shop-*"])
    reader = Principal("svc", Role.READER, scope)
    writer = Principal("ci", Role.WRITER, scope)
    admin = Principal.admin("admin")
    assert reader.may_read("shop-eu") and not reader.may_write("shop-eu")
    assert not reader.may_read("blog")
    assert writer.may_read("shop-eu") and writer.may_write("shop-eu")
    assert not writer.may_write("blog") and not writer.may_read("blog")
    assert not reader.may_admin and not writer.may_admin
    assert admin.may_admin and admin.may_write("blog") and admin.may_read("blog")
    # An admin role narrowed to some projects writes them but cannot mint tokens.
    narrow = Principal("ops", Role.ADMIN, scope)
    assert narrow.may_write("shop-eu") and not narrow.may_write("blog")
    assert not narrow.may_admin


def test_expiry() -> None:
    assert not Principal.admin("admin").expired()
    assert Principal.admin("admin", expires_at=100.0).expired(now=100.0)
    assert not Principal.admin("admin", expires_at=100.0).expired(now=99.9)


# --- minted token strings ---------------------------------------------------------------


def test_a_minted_token_parses_back_and_only_its_hash_is_kept() -> None:
    token = minted.mint()
    presented = minted.parse(token.token)
    assert presented.id == token.id
    assert token.token.startswith(f"{minted.PREFIX}{token.id}.")
    assert presented.secret not in token.secret_hash
    assert token.secret_hash == hashlib.sha256(presented.secret.encode()).hexdigest()
    presented.check(token.secret_hash)  # does not raise
    assert minted.looks_minted(token.token)


def test_minted_tokens_are_distinct() -> None:
    tokens = [minted.mint() for _ in range(200)]
    assert len({token.id for token in tokens}) == len({token.token for token in tokens}) == 200


def test_a_wrong_secret_part_is_refused() -> None:
    first, second = minted.mint(), minted.mint()
    with pytest.raises(TokenRefused, match="not valid"):
        minted.parse(first.token).check(second.secret_hash)


def _with_secret(token: minted.MintedToken, secret: str) -> str:
    return f"{minted.PREFIX}{token.id}.{secret}"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda t: t.token.removeprefix(minted.PREFIX), "starts with 'sct_'"),
        (lambda t: t.token.replace(".", ""), "is sct_<id>.<secret>"),
        (lambda t: t.token.replace(t.id, t.id.upper()), "16 lower-case hex digits"),
        (lambda t: t.token.replace(t.id, t.id[:-1]), "16 lower-case hex digits"),
        (lambda t: t.token + "x", "43 URL-safe base64"),
        (lambda t: _with_secret(t, "a" * 42 + "="), "43 URL-safe base64"),
        (lambda t: _with_secret(t, ""), "43 URL-safe base64"),
        (lambda t: t.token + "\n", "43 URL-safe base64"),
    ],
    ids=[
        "no prefix",
        "no dot",
        "upper-case id",
        "short id",
        "long secret",
        "bad char",
        "empty",
        "newline",
    ],
)
def test_malformed_tokens_say_what_is_wrong_without_echoing_them(build, message: str) -> None:
    token = minted.mint()
    text = build(token)
    with pytest.raises(MalformedToken, match=re.escape(message)) as error:
        minted.parse(text)
    assert minted.parse(token.token).secret not in str(error.value)


# --- the failed-login limiter -----------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, **options: object) -> LoginLimiter:
    defaults: dict = {"max_failures": 3, "window_seconds": 60.0, "max_block_seconds": 30.0}
    return LoginLimiter(clock=clock, **{**defaults, **options})


def test_blocked_after_a_handful_of_failures_and_the_block_grows_to_its_bound() -> None:
    clock = Clock()
    limits = limiter(clock)
    for _ in range(2):
        limits.failed("10.0.0.1")
        assert limits.retry_after("10.0.0.1") is None
    limits.failed("10.0.0.1")
    waits = []
    for _ in range(8):
        wait = limits.retry_after("10.0.0.1")
        assert wait is not None
        waits.append(wait)
        clock.now += wait  # waits it out, then fails again
        assert limits.retry_after("10.0.0.1") is None
        limits.failed("10.0.0.1")
    assert waits == [1, 2, 4, 8, 16, 30, 30, 30]
    assert limits.retry_after("10.0.0.2") is None  # other addresses are not affected


def test_attempts_while_blocked_do_not_count() -> None:
    clock = Clock()
    limits = limiter(clock)
    for _ in range(3):
        limits.failed("10.0.0.1")
    for _ in range(100):
        assert limits.retry_after("10.0.0.1") == 1
    clock.now += 0.5
    assert limits.retry_after("10.0.0.1") == 1  # rounded up, never 0


def test_a_success_resets_the_address() -> None:
    clock = Clock()
    limits = limiter(clock)
    for _ in range(2):
        limits.failed("10.0.0.1")
    limits.succeeded("10.0.0.1")
    for _ in range(2):
        limits.failed("10.0.0.1")
    assert limits.retry_after("10.0.0.1") is None


def test_failures_spread_beyond_the_window_are_forgotten() -> None:
    clock = Clock()
    limits = limiter(clock)
    for _ in range(10):
        limits.failed("10.0.0.1")
        clock.now += 61
    assert limits.retry_after("10.0.0.1") is None
    assert len(limits) == 0


def test_memory_is_bounded_under_a_flood_of_addresses() -> None:
    clock = Clock()
    limits = limiter(clock, max_clients=100)
    limits.failed("10.9.9.9")
    for index in range(10_000):
        limits.failed(f"10.{index // 65536}.{index // 256 % 256}.{index % 256}")
        clock.now += 0.001
    assert len(limits) == 100
    clock.now += 61
    limits.retry_after("10.0.0.1")
    assert len(limits) == 0  # all expired


def test_an_attacker_keeps_its_record_fresh_while_blocked() -> None:
    clock = Clock()
    limits = limiter(clock, max_clients=3)
    for _ in range(3):
        limits.failed("10.0.0.1")
    for address in ("10.0.0.2", "10.0.0.3"):
        limits.failed(address)
    assert limits.retry_after("10.0.0.1") == 1  # a look refreshes it
    limits.failed("10.0.0.4")  # evicts 10.0.0.2, the least recently seen
    assert limits.retry_after("10.0.0.1") == 1


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("testclient", "testclient"),
    ],
)
def test_client_keys(address: str, key: str) -> None:
    assert client_key(address) == key


# --- token records ----------------------------------------------------------------------


def test_a_minted_record_authenticates_its_token_only() -> None:
    record, token = TokenRecord.mint("ci deploy", "writer", ["shop-*"], 3600, now=1000)
    assert record.created_at == 1000 and record.expires_at == 4600
    principal = record.authenticate(minted.parse(token), now=2000)
    assert principal == Principal(
        "ci deploy", Role.WRITER, ProjectScope.parse(["shop-*"]), 4600, token_id=record.id
    )
    with pytest.raises(TokenRefused, match="expired"):
        record.authenticate(minted.parse(token), now=4600)
    other, other_token = TokenRecord.mint("other", "reader", ["*"])
    with pytest.raises(TokenRefused, match="not valid"):
        record.authenticate(minted.parse(other_token))
    forged = minted.PresentedToken(record.id, minted.parse(other_token).secret)
    with pytest.raises(TokenRefused, match="not valid"):
        record.authenticate(forged)
    assert other.expires_at is None and not other.principal().expired()


def test_a_record_round_trips_and_never_shows_its_secret() -> None:
    record, token = TokenRecord.mint("svc", "reader", ["a", "b-*"], 60)
    stored = record.to_json()
    assert TokenRecord.from_json(stored) == record
    secret = minted.parse(token).secret
    assert secret not in stored.decode() and token not in stored.decode()
    public = record.public()
    assert set(public) == {"id", "name", "role", "projects", "createdAt", "expiresAt"}
    assert public["projects"] == ["a", "b-*"] and public["role"] == "reader"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": ""}, "a token name is 1-64 characters"),
        ({"name": "x" * 65}, "a token name is 1-64 characters"),
        ({"name": "bad\nname"}, "a token name is 1-64 characters"),
        ({"name": None}, "a token name is 1-64 characters"),
        ({"role": "root"}, "unknown role 'root'"),
        ({"projects": []}, "at least one pattern"),
        ({"projects": ["UPPER"]}, "'UPPER'"),
        ({"ttl_seconds": 0}, "between 1 and"),
        ({"ttl_seconds": -5}, "between 1 and"),
        ({"ttl_seconds": 10**12}, "between 1 and"),
        ({"ttl_seconds": 1.5}, "whole number"),
        ({"ttl_seconds": True}, "whole number"),
        ({"ttl_seconds": "60"}, "whole number"),
    ],
)
def test_bad_mint_requests_are_refused(fields: dict, message: str) -> None:
    request: dict = {"name": "svc", "role": "reader", "projects": ["*"], "ttl_seconds": None}
    with pytest.raises(InvalidScope, match=re.escape(message)):
        TokenRecord.mint(**{**request, **fields})


def _stored(**changes: object) -> bytes:
    record, _ = TokenRecord.mint("svc", "reader", ["*"], 60)
    data = orjson.loads(record.to_json())
    data.update(changes)
    return orjson.dumps({key: value for key, value in data.items() if value != "DROP"})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (_stored(secretHash="DROP"), "field 'secretHash' is missing"),
        (_stored(secretHash="abc"), "not a SHA-256 hex digest"),
        (_stored(id="../../etc"), "not a token id"),
        (_stored(role="root"), "unknown role"),
        (_stored(role=["admin"]), "damaged"),
        (_stored(projects="*"), "must be a list"),
        (_stored(createdAt="yesterday"), "not epoch seconds"),
        (_stored(expiresAt=-1), "not epoch seconds"),
        (_stored(name=7), "a token name"),
    ],
)
def test_damaged_stored_records_are_refused(value: bytes, message: str) -> None:
    with pytest.raises(InvalidTokenRecord, match=re.escape(message)):
        TokenRecord.from_json(value)
