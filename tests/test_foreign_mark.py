"""The Consul change log's record of changes by other clients (``.foreign``): what a
replay may pass over. Values come from the store, so anything unreadable refuses every
replay rather than allowing one."""

from __future__ import annotations

from app.stores.consul.foreign import ForeignMark


def test_a_range_is_clear_unless_a_recorded_revision_lies_in_it() -> None:
    mark = ForeignMark().with_revisions([10, 20])
    assert mark is not None
    assert mark.clear(0, 9) and mark.clear(10, 19) and mark.clear(20, 99)
    assert not mark.clear(9, 10) and not mark.clear(0, 99)


def test_recording_what_is_recorded_changes_nothing() -> None:
    mark = ForeignMark().with_revisions([10])
    assert mark is not None and mark.with_revisions([10]) is None
    assert ForeignMark().with_revisions([]) is None


def test_beyond_its_size_the_oldest_become_the_floor() -> None:
    mark = ForeignMark().with_revisions(range(1, ForeignMark.KEEP + 11))
    assert mark is not None
    assert mark.floor == 10 and len(mark.revisions) == ForeignMark.KEEP
    assert not mark.clear(5, 9)  # below the floor: nothing is known any more
    assert mark.with_revisions([3]) is None  # under the floor already


def test_it_survives_its_encoding() -> None:
    mark = ForeignMark().with_revisions([7, 3, 12])
    assert mark is not None
    assert ForeignMark.parse(mark.encode()) == mark
    assert ForeignMark.parse(None) == ForeignMark()


def test_a_mark_another_tool_wrote_refuses_every_replay() -> None:
    for raw in (b"", b"x", b"1 -2", b"1 " + b"9" * 40, "\u0661".encode()):
        assert not ForeignMark.parse(raw).clear(0, 1), raw
        assert not ForeignMark.parse(raw).clear(10**12, 10**12 + 1), raw
