"""The check of store values (pure) and the intake that applies it to listings and batches."""

from __future__ import annotations

import logging

import orjson
import pytest

from app.metrics import Metrics
from app.stores.base import ProjectChange, ProjectListing, StoredProject
from app.sync.intake import Intake
from app.sync.values import Reason, Rejected, check_value, shown_key

LIMIT = 1024

PRETTY = b'{\n  "id": "shop",\n  "name": "Shop",\n  "modules": {"db": {"enabled": true}}\n}\n'


def test_a_pretty_printed_object_is_served_compact() -> None:
    served = check_value("shop", PRETTY, LIMIT)
    assert served == b'{"id":"shop","name":"Shop","modules":{"db":{"enabled":true}}}'
    assert b"\n" not in served


def test_a_value_without_an_id_is_served_with_the_key_as_its_id() -> None:
    assert check_value("shop", b'{"name": "Shop"}', LIMIT) == b'{"id":"shop","name":"Shop"}'


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("shop", b"not json", Reason.NOT_JSON),
        ("shop", b"", Reason.NOT_JSON),
        ("shop", b'{"id": "shop",}', Reason.NOT_JSON),
        ("shop", b"\xff\xfe", Reason.NOT_JSON),
        ("shop", b"[1, 2]", Reason.NOT_OBJECT),
        ("shop", b'"shop"', Reason.NOT_OBJECT),
        ("shop", b"42", Reason.NOT_OBJECT),
        ("shop", b"null", Reason.NOT_OBJECT),
        ("shop", b"true", Reason.NOT_OBJECT),
        ("UPPER", b'{"id": "UPPER"}', Reason.BAD_KEY),
        ("a/b", b'{"id": "a/b"}', Reason.BAD_KEY),
        ("", b"{}", Reason.BAD_KEY),
        (".deleted", b"{}", Reason.BAD_KEY),
        ("x" * 64, b"{}", Reason.BAD_KEY),
        ("shop", b'{"id": "other"}', Reason.ID_MISMATCH),
        ("shop", b'{"id": 5}', Reason.ID_MISMATCH),
        ("shop", b'{"id": null}', Reason.ID_MISMATCH),
        ("shop", b'{"id": "shop", "pad": "' + b"x" * LIMIT + b'"}', Reason.TOO_LARGE),
    ],
)
def test_anything_else_is_rejected_with_its_reason(key: str, value: bytes, reason: Reason) -> None:
    rejected = check_value(key, value, LIMIT)
    assert isinstance(rejected, Rejected)
    assert rejected.reason == reason
    assert rejected.detail and "\n" not in rejected.detail


def test_the_reason_names_the_json_kind() -> None:
    rejected = check_value("shop", b"[1]", LIMIT)
    assert isinstance(rejected, Rejected) and "array" in rejected.detail
    rejected = check_value("shop", b'{"id": 5}', LIMIT)
    assert isinstance(rejected, Rejected) and "5" in rejected.detail


def test_shown_keys_are_printable_and_bounded() -> None:
    assert shown_key("a\nb\x1b[31m") == "a\\nb\\x1b[31m"
    long = shown_key("k" * 10_000)
    assert len(long) < 200 and "10000 characters" in long


# --- the intake ---------------------------------------------------------------------------


def stored(key: str, value: bytes, revision: int) -> StoredProject:
    return StoredProject(key, value, revision)


def put(key: str, value: bytes, revision: int) -> ProjectChange:
    return ProjectChange("put", key, revision, value)


def skipped_total(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("sc_store_values_skipped_total", {"reason": reason})
    return value or 0.0


def test_a_listing_keeps_the_valid_projects_compact_and_records_the_rest() -> None:
    metrics = Metrics()
    intake = Intake(LIMIT, metrics)
    listing = ProjectListing(
        {
            "shop": stored("shop", PRETTY, 3),
            "bad": stored("bad", b"nope", 4),
            "UPPER": stored("UPPER", b"{}", 5),
        },
        9,
    )
    checked = intake.listing(listing)
    assert checked.revision == 9
    assert list(checked.projects) == ["shop"]
    assert checked.projects["shop"].revision == 3
    assert orjson.loads(checked.projects["shop"].value)["name"] == "Shop"
    assert {key: value.reason for key, value in intake.skipped.items()} == {
        "bad": "not_json",
        "UPPER": "bad_key",
    }
    assert skipped_total(metrics, "not_json") == 1
    assert metrics.registry.get_sample_value("sc_store_values_invalid") == 2


def test_a_skipped_value_is_logged_and_counted_once_per_key_and_revision(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    intake = Intake(LIMIT, metrics)
    listing = ProjectListing({"bad": stored("bad", b"[]", 4)}, 4)
    with caplog.at_level(logging.WARNING, "space_cloud.sync"):
        intake.listing(listing)
        intake.listing(listing)  # a resync lists it again
        intake.changes([put("bad", b"[]", 4)])  # and a watch may repeat it
    lines = [r.getMessage() for r in caplog.records if "bad" in r.getMessage()]
    assert len(lines) == 1 and "'bad'" in lines[0] and "revision 4" in lines[0]
    assert skipped_total(metrics, "not_object") == 1
    intake.changes([put("bad", b"[2]", 5)])  # a new revision is a new value
    assert skipped_total(metrics, "not_object") == 2


def test_an_invalid_put_under_a_project_id_becomes_a_delete() -> None:
    intake = Intake(LIMIT, Metrics())
    passed = intake.changes(
        [
            put("shop", PRETTY, 5),
            put("shop", b"{oops", 6),
            put("a/b", b"{}", 7),
            put("ok", b"{}", 8),
        ]
    )
    assert passed == [
        ProjectChange("put", "shop", 5, check_value("shop", PRETTY, LIMIT)),  # type: ignore[arg-type]
        ProjectChange("delete", "shop", 6),
        ProjectChange("put", "ok", 8, b'{"id":"ok"}'),
    ]
    assert set(intake.skipped) == {"shop", "a/b"}


def test_a_later_valid_write_or_a_delete_clears_the_skipped_key() -> None:
    intake = Intake(LIMIT, Metrics())
    intake.changes([put("shop", b"null", 5), put("a/b", b"x", 6)])
    passed = intake.changes([put("shop", b'{"id":"shop"}', 7), ProjectChange("delete", "a/b", 8)])
    assert passed == [ProjectChange("put", "shop", 7, b'{"id":"shop"}')]  # a/b never served
    assert intake.skipped == {}


def test_a_listing_forgets_skipped_keys_that_are_gone() -> None:
    intake = Intake(LIMIT, Metrics())
    intake.changes([put("bad", b"x", 3)])
    intake.listing(ProjectListing({}, 5))
    assert intake.skipped == {}
