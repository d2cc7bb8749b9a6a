"""Frozen, slotted record classes: what ``dataclass(frozen=True, slots=True)`` makes of a
class, built with one generated method instead of six.

Why: the protocol declares about a hundred such classes (every message, every event), and the
server imports them all before it listens.  On Python 3.11 the dataclass decorator compiles
``__init__``, ``__repr__``, ``__eq__``, ``__hash__``, ``__setattr__`` and ``__delattr__`` from
source for each class, ~0.6 ms a class on the 2-core VMs this project is measured on: about
60 ms of the ~0.18 s from process start to listening (``python -X importtime``).  Here only
``__init__`` is generated (it must stay as fast to call as the dataclass's); the other methods
are shared functions that read the class's field names.

What a record keeps of a dataclass: the constructor (positional or keyword, defaults,
``__post_init__``), ``__slots__``, ``__match_args__``, value equality and hashing over the fields
in order, a dataclass-style ``repr``, :class:`dataclasses.FrozenInstanceError` on any
assignment, copying and pickling, and ``__dataclass_fields__`` for ``dataclasses.fields()``,
``asdict()``, ``replace()`` and ``is_dataclass()``.  What it does not: ``field()``
specifications and inheritance of fields between records.
"""

from __future__ import annotations

import dataclasses
from operator import attrgetter
from typing import Any, TypeVar, dataclass_transform

__all__ = ["record", "record_fields"]

T = TypeVar("T", bound=type)

_setattr = object.__setattr__


def _values(self: Any) -> tuple[Any, ...]:
    return type(self)._record_values(self)  # type: ignore[no-any-return]


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is self.__class__:
        return _values(self) == _values(other)
    return NotImplemented


def _hash(self: Any) -> int:
    return hash(_values(self))


def _repr(self: Any) -> str:
    cls = type(self)
    fields = ", ".join(
        f"{name}={value!r}" for name, value in zip(cls.__match_args__, _values(self), strict=True)
    )
    return f"{cls.__qualname__}({fields})"


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


def _setstate(self: Any, state: tuple[Any, ...]) -> None:
    # copy and pickle restore a slotted, frozen instance through here, as they do a dataclass's
    for name, value in zip(type(self).__match_args__, state, strict=True):
        _setattr(self, name, value)


def record_fields(cls: type) -> tuple[str, ...]:
    """The field names of a :func:`record` class, in order."""
    fields: tuple[str, ...] = cls.__match_args__  # type: ignore[attr-defined]
    return fields


@dataclass_transform(frozen_default=True)
def record(cls: T) -> T:
    """Make ``cls`` a frozen, slotted record of its annotated fields (see the module)."""
    own = cls.__dict__
    annotations = own.get("__annotations__", {})
    names = [
        name
        for name, annotation in annotations.items()
        if not str(annotation).startswith(("ClassVar", "typing.ClassVar"))
    ]
    defaults = {name: own[name] for name in names if name in own}
    params = []
    after_default = False
    for name in names:
        if name in defaults:
            params.append(f"{name}=_default_{name}")
            after_default = True
        elif after_default:
            raise TypeError(f"{cls.__name__}: non-default field {name!r} follows a default")
        else:
            params.append(name)
    body = [f"    _setattr(self, {name!r}, {name})" for name in names]
    if "__post_init__" in own:
        body.append("    self.__post_init__()")
    source = (
        f"def __init__(self{''.join(', ' + p for p in params)}) -> None:\n"
        + ("\n".join(body) if body else "    pass")
        + "\n"
    )
    scope: dict[str, Any] = {"_setattr": _setattr}
    scope.update((f"_default_{name}", value) for name, value in defaults.items())
    exec(source, scope)  # one compile a class, the dataclass decorator's six

    namespace = {key: value for key, value in own.items() if key not in defaults}
    namespace["__dataclass_fields__"] = {
        name: _field(name, annotations[name], defaults.get(name, dataclasses.MISSING))
        for name in names
    }
    namespace.pop("__dict__", None)
    namespace.pop("__weakref__", None)
    fields = tuple(names)
    namespace.update(
        __slots__=fields,
        __match_args__=fields,
        __init__=scope["__init__"],
        __eq__=_eq,
        __hash__=_hash,
        __repr__=_repr,
        __setattr__=_frozen_setattr,
        __delattr__=_frozen_delattr,
        __getstate__=_values,
        __setstate__=_setstate,
        _record_values=_getter(fields),
    )
    made = type(cls)(cls.__name__, cls.__bases__, namespace)
    scope["__init__"].__qualname__ = f"{made.__qualname__}.__init__"
    return made  # type: ignore[return-value]


def _field(name: str, annotation: Any, default: Any) -> dataclasses.Field[Any]:
    """The ``dataclasses.Field`` of one field, so that ``dataclasses.fields()``, ``asdict()``,
    ``replace()`` and ``is_dataclass()`` work on records as on the dataclasses they were (an
    embedding program may use them on events)."""
    field: dataclasses.Field[Any] = dataclasses.field(default=default)
    field.name = name
    field.type = annotation
    field._field_type = getattr(dataclasses, "_FIELD", None)  # type: ignore[attr-defined]
    return field


def _getter(fields: tuple[str, ...]) -> Any:
    """A function of an instance returning its field values as a tuple."""
    if not fields:
        return staticmethod(lambda self: ())
    if len(fields) == 1:
        one = attrgetter(fields[0])
        return staticmethod(lambda self: (one(self),))
    return staticmethod(attrgetter(*fields))
