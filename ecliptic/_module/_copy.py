"""Changed copies of Modules, made without running `__init__`.

The one way ecliptic's own code builds an updated Module (a layer with a new field, a
wrapper around already-built parts): `__init__` and its checks ran when the original
was built, and a copy must not run them again, nor trip the immutability guard.
"""

from __future__ import annotations

from typing import Any, TypeVar

_M = TypeVar("_M")


def new_instance(cls: type[_M], **fields: Any) -> _M:
    """An instance of the Module class `cls` holding exactly `fields`, without `__init__`."""
    new = object.__new__(cls)
    new.__dict__.update(fields)
    return new


def replace_fields(module: _M, **changes: Any) -> _M:
    """A copy of `module` with `changes` applied to its fields, without `__init__`."""
    new = object.__new__(type(module))
    new.__dict__.update(module.__dict__)
    new.__dict__.update(changes)
    return new
