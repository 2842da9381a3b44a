"""``Enumeration``: class-based enums whose members are pytrees, usable under ``jit``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._module import Module, field


class EnumerationItem(Module):
    """A member of an `Enumeration`: an int32 scalar array plus its enumeration (static).

    Compare members with `==` (a bool array, so it works under `jit`), select with
    `MyEnum.where(pred, a, b)`, and read `.name` / `.message` outside of tracing.
    """

    _value: jax.Array
    _enumeration: Any = field(static=True)

    def __eq__(self, other: Any) -> Any:  # type: ignore[override]
        if not isinstance(other, EnumerationItem):
            return False
        if not _compatible(self._enumeration, other._enumeration):
            raise ValueError(
                f"cannot compare members of {self._enumeration.__name__} and "
                f"{other._enumeration.__name__}."
            )
        return self._value == other._value

    def __ne__(self, other: Any) -> Any:  # type: ignore[override]
        equal = self.__eq__(other)
        return not equal if isinstance(equal, bool) else jnp.logical_not(equal)

    def __hash__(self) -> int:
        return hash((self._enumeration, int(self._value)))

    @property
    def name(self) -> str:
        """The member's name (needs a concrete value: not available under `jit`)."""
        return self._enumeration._names[int(self._value)]

    @property
    def message(self) -> str:
        """The member's description string."""
        return self._enumeration._messages[int(self._value)]

    def __repr__(self) -> str:
        try:
            return f"{self._enumeration.__name__}.{self.name}"
        except (TypeError, jax.errors.ConcretizationTypeError):
            return f"{self._enumeration.__name__}.<traced>"


_DESCRIPTORS = (classmethod, staticmethod, property)


def _compatible(a: type, b: type) -> bool:
    return issubclass(a, b) or issubclass(b, a)


class _EnumerationMeta(type):
    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any]):
        names: list[str] = []
        messages: list[str] = []
        for base in bases:
            names.extend(getattr(base, "_names", ()))
            messages.extend(getattr(base, "_messages", ()))
        for key, value in list(namespace.items()):
            if key.startswith("_") or callable(value) or isinstance(value, _DESCRIPTORS):
                continue
            if not isinstance(value, str):
                raise TypeError(
                    f"{name}.{key}: Enumeration members are declared as NAME = 'description' "
                    f"(a string); got {type(value).__name__}."
                )
            if key in names:
                raise ValueError(f"{name}.{key} is already a member of a parent enumeration.")
            names.append(key)
            messages.append(value)
            del namespace[key]
        namespace["_names"] = tuple(names)
        namespace["_messages"] = tuple(messages)
        namespace["_index"] = {n: i for i, n in enumerate(names)}
        return super().__new__(mcs, name, bases, namespace)

    def __getattr__(cls, item: str) -> EnumerationItem:
        index = cls.__dict__.get("_index", {})
        if item in index:
            return EnumerationItem(np.int32(index[item]), cls)
        raise AttributeError(f"{cls.__name__} has no member {item!r}; members: {list(index)}.")

    def __getitem__(cls, item: Any) -> Any:
        if isinstance(item, str):
            return getattr(cls, item)
        if isinstance(item, EnumerationItem):
            return item.message
        raise TypeError(f"{cls.__name__}[...] takes a member name or a member; got {item!r}.")

    def __len__(cls) -> int:
        return len(cls._names)  # pyright: ignore[reportArgumentType]

    def __iter__(cls) -> Iterator[EnumerationItem]:
        return (getattr(cls, n) for n in cls._names)  # pyright: ignore[reportGeneralTypeIssues]

    def __instancecheck__(cls, instance: Any) -> bool:
        return isinstance(instance, EnumerationItem) and issubclass(instance._enumeration, cls)


class Enumeration(metaclass=_EnumerationMeta):
    """Base class for enumerations whose members work inside JAX transformations.

    ```python
    class Status(ecliptic.Enumeration):
        ok = "all good"
        diverged = "the solver diverged"

    status = Status.where(residual < 1e-6, Status.ok, Status.diverged)  # under jit too
    status == Status.ok   # a bool array
    Status[status]        # the message, outside jit
    ```
    """

    def __init__(self) -> None:
        raise TypeError("Enumerations are not instantiated: use their members, e.g. MyEnum.name.")

    @classmethod
    def where(cls, pred: Any, a: EnumerationItem, b: EnumerationItem) -> EnumerationItem:
        """Member-wise `jnp.where`: `a` where `pred` is true, else `b`.

        **Arguments:**

        - `pred`: a bool scalar (or array).
        - `a`, `b`: members of this enumeration.

        **Returns:** an `EnumerationItem`.
        """
        for arg_name, item in (("a", a), ("b", b)):
            if not isinstance(item, EnumerationItem) or not _compatible(item._enumeration, cls):
                raise TypeError(
                    f"{cls.__name__}.where: {arg_name} must be a member of {cls.__name__}; "
                    f"got {item!r}."
                )
        if not (isinstance(pred, bool) or jnp.result_type(pred) == jnp.bool_):
            raise TypeError(
                f"{cls.__name__}.where: pred must be a bool or a boolean array (e.g. x > 0); "
                f"got {type(pred).__name__} of dtype {jnp.result_type(pred)}."
            )
        return EnumerationItem(jnp.where(pred, a._value, b._value), cls)

    @classmethod
    def promote(cls, item: EnumerationItem) -> EnumerationItem:
        """Re-type a member of a parent enumeration as a member of this one.

        **Arguments:**

        - `item`: a member of a parent class of this enumeration.

        **Returns:** the same member, typed as this enumeration.
        """
        if not isinstance(item, EnumerationItem) or not issubclass(cls, item._enumeration):
            raise TypeError(
                f"{cls.__name__}.promote needs a member of a parent enumeration; got {item!r}."
            )
        return EnumerationItem(item._value, cls)
