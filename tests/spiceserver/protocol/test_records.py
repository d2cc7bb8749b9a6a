"""records.record: what dataclass(frozen=True, slots=True) gives, for the protocol's classes."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import ClassVar

import pytest

from spiceserver.protocol.events import KeyEvent, PointerMotion
from spiceserver.protocol.messages import REGISTRY, CursorShape, SetAck
from spiceserver.protocol.records import record, record_fields


@record
class Point:
    """A test record."""

    KIND: ClassVar[str] = "point"
    x: int
    y: int = 7
    label: bytes = b""


@dataclasses.dataclass(frozen=True, slots=True)
class DataPoint:
    KIND: ClassVar[str] = "point"
    x: int
    y: int = 7
    label: bytes = b""


def test_a_record_behaves_as_the_frozen_slotted_dataclass() -> None:
    for args, kwargs in (
        ((1,), {}),
        ((1, 2), {}),
        ((), {"x": 3, "label": b"a"}),
        ((4, 5, b"z"), {}),
    ):
        ours, theirs = Point(*args, **kwargs), DataPoint(*args, **kwargs)
        assert repr(ours) == repr(theirs).replace("DataPoint", "Point")
        assert (ours.x, ours.y, ours.label) == (theirs.x, theirs.y, theirs.label)
        assert hash(ours) == hash(theirs)
    assert Point(1, 2) == Point(1, 2) and Point(1, 2) != Point(1, 3)
    assert Point(1) != DataPoint(1)  # another class is never equal, as with dataclasses
    assert Point.__match_args__ == DataPoint.__match_args__ == ("x", "y", "label")
    assert record_fields(Point) == ("x", "y", "label")
    assert Point.KIND == "point" and Point.__doc__ == "A test record."
    assert Point.__slots__ == ("x", "y", "label") and not hasattr(Point(1), "__dict__")
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Point(1, 2, b"", 4)  # type: ignore[call-arg]


def test_a_record_is_frozen() -> None:
    point = Point(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        point.x = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del point.x  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        point.other = 1  # type: ignore[attr-defined]


def test_the_dataclasses_functions_work_on_records() -> None:
    event = KeyEvent(30, True)
    assert dataclasses.is_dataclass(event) and dataclasses.is_dataclass(SetAck)
    assert [f.name for f in dataclasses.fields(event)] == ["scancode", "pressed"]
    assert dataclasses.asdict(event) == {"scancode": 30, "pressed": True}
    assert dataclasses.replace(event, pressed=False) == KeyEvent(30, False)
    assert dataclasses.replace(Point(1), label=b"a") == Point(1, 7, b"a")
    assert [f.default for f in dataclasses.fields(Point)] == [dataclasses.MISSING, 7, b""]


def test_a_record_copies_and_pickles() -> None:
    point = Point(1, 2, b"x")
    for copied in (copy.copy(point), copy.deepcopy(point), pickle.loads(pickle.dumps(point))):
        assert copied == point and copied is not point
    shape = CursorShape(1, 1, 1, 0, 0, b"\0" * 4)
    assert pickle.loads(pickle.dumps(shape)) == shape
    ack = SetAck(1, 2)  # a message (its base class has no slots)
    assert copy.deepcopy(ack) == pickle.loads(pickle.dumps(ack)) == ack


def test_post_init_runs_and_patterns_match() -> None:
    with pytest.raises(ValueError, match="width \\* height \\* 4"):
        CursorShape(1, 2, 2, 0, 0, b"\0" * 15)
    match PointerMotion(3, 4, 0):
        case PointerMotion(dx, dy):
            assert (dx, dy) == (3, 4)
        case _:
            pytest.fail("no match")
    assert {KeyEvent(30, True), KeyEvent(30, True)} == {KeyEvent(30, True)}


def test_every_message_round_trips_its_fields() -> None:
    for cls in REGISTRY.values():
        assert cls._FIELDS == record_fields(cls) == cls.__match_args__
        assert cls.__init__.__qualname__ == f"{cls.__qualname__}.__init__"


def test_a_default_before_a_field_without_one_is_refused() -> None:
    class Bad:
        a: int = 1
        b: int

    with pytest.raises(TypeError, match="non-default field 'b'"):
        record(Bad)
