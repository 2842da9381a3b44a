"""Registering a Module class as a pytree node: flatten reads the instance's ``__dict__``
directly and unflatten bypasses ``__init__``, both as cheap as a tuple build."""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from typing import Any

import jax.tree_util as jtu

from ._field import CONVERTER, STATIC

WRAPPER_META = "__ecliptic_wrapper_meta__"


def tuple_getter(names: tuple[Any, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """A C-level getter returning ``tuple(d[n] for n in names)`` for a dict's keys or a
    sequence's indices (the hot paths of flatten and of the split plan)."""
    if not names:
        return lambda d: ()
    if len(names) == 1:
        (name,) = names
        return lambda d: (d[name],)
    return operator.itemgetter(*names)


def make_flatteners(cls: type, optional: frozenset[str] = frozenset()) -> None:
    """Register a Module class (after dataclass processing) as a pytree node and record its
    field layout on it. `optional` fields (see `overridden_fields`) may be missing from an
    instance: classes with any take a slower path that flattens only the fields it has."""
    fields = dataclasses.fields(cls)
    dynamic = tuple(
        f.name for f in fields if not f.metadata.get(STATIC, False) and f.name not in optional
    )
    static = tuple(
        f.name for f in fields if f.metadata.get(STATIC, False) and f.name not in optional
    )
    cls.__ecliptic_dynamic_fields__ = dynamic
    cls.__ecliptic_static_fields__ = static
    cls.__ecliptic_field_map__ = {f.name: f for f in fields}
    cls.__ecliptic_optional_fields__ = optional
    cls.__ecliptic_converters__ = tuple(
        (f.name, f.metadata[CONVERTER]) for f in fields if CONVERTER in f.metadata
    )
    if optional:
        _make_optional_flatteners(cls, fields, dynamic, static, optional)
        return
    names = dynamic + static
    keys = tuple(jtu.GetAttrKey(name) for name in dynamic)
    get_dynamic, get_static = tuple_getter(dynamic), tuple_getter(static)
    new = object.__new__

    def flatten(obj: Any) -> tuple[tuple[Any, ...], Any]:
        d = obj.__dict__
        if WRAPPER_META in d:  # rare: a copy made by module_update_wrapper
            return get_dynamic(d), WrapperMeta(get_static(d), d[WRAPPER_META].attributes)
        return get_dynamic(d), get_static(d)

    def flatten_with_keys(obj: Any) -> tuple[tuple[Any, ...], Any]:
        children, aux = flatten(obj)
        return tuple(zip(keys, children)), aux

    def unflatten(aux: Any, children: Any) -> Any:
        obj = new(cls)
        d = obj.__dict__
        if type(aux) is WrapperMeta:
            d[WRAPPER_META] = aux
            d.update(aux.attributes)
            aux = aux.static_values
        d.update(zip(names, (*children, *aux)))
        return obj

    jtu.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)


def _make_optional_flatteners(
    cls: type,
    fields: tuple[dataclasses.Field[Any], ...],
    dynamic: tuple[str, ...],
    static: tuple[str, ...],
    optional: frozenset[str],
) -> None:
    """The pytree registration of a class with fields that an instance may lack. Its aux
    data is ``(static values, names of the dynamic fields present, names of the static
    fields present)``; static values come required fields first."""
    opt_dynamic = tuple(
        f.name for f in fields if f.name in optional and not f.metadata.get(STATIC, False)
    )
    opt_static = tuple(
        f.name for f in fields if f.name in optional and f.metadata.get(STATIC, False)
    )

    def flatten(obj: Any) -> tuple[tuple[Any, ...], Any]:
        d = obj.__dict__
        dyn = dynamic + tuple(n for n in opt_dynamic if n in d)
        sta = static + tuple(n for n in opt_static if n in d)
        aux = (tuple(d[n] for n in sta), dyn, sta)
        if WRAPPER_META in d:
            aux = WrapperMeta(aux, d[WRAPPER_META].attributes)
        return tuple(d[n] for n in dyn), aux

    def flatten_with_keys(obj: Any) -> tuple[tuple[Any, ...], Any]:
        children, aux = flatten(obj)
        dyn = (aux.static_values if type(aux) is WrapperMeta else aux)[1]
        return tuple((jtu.GetAttrKey(n), c) for n, c in zip(dyn, children)), aux

    def unflatten(aux: Any, children: Any) -> Any:
        obj = object.__new__(cls)
        d = obj.__dict__
        if type(aux) is WrapperMeta:
            d[WRAPPER_META] = aux
            d.update(aux.attributes)
            aux = aux.static_values
        values, dyn, sta = aux
        d.update(zip(dyn, children))
        d.update(zip(sta, values))
        return obj

    jtu.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)


class WrapperMeta:
    """Metadata copied by `module_update_wrapper`; rides in the aux data through
    flatten/unflatten together with the static field values."""

    __slots__ = ("static_values", "attributes")

    def __init__(self, static_values: tuple[Any, ...], attributes: dict[str, Any]):
        self.static_values = static_values
        self.attributes = attributes

    def __eq__(self, other: Any) -> bool:
        return (
            type(other) is WrapperMeta
            and self.static_values == other.static_values
            and self.attributes == other.attributes
        )

    def __hash__(self) -> int:
        # Hash the names only: `__annotations__` is a dict (compared by `__eq__`).
        named = tuple(sorted((k, v) for k, v in self.attributes.items() if isinstance(v, str)))
        return hash((self.static_values, named))
