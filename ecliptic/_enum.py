"""``Enumeration``: class-based enums whose members are pytrees, usable under ``jit``."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np

from ._errors import branched_error_if
from ._module import Module, field


def _is_traced(value: Any) -> bool:
    return isinstance(value, jax.core.Tracer)  # pyright: ignore[reportAttributeAccessIssue]


def _full_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class EnumerationItem(Module):
    """A member of an `Enumeration`: an int32 scalar array plus its enumeration (static).

    Compare members of the same enumeration with `==` (a bool array, so it works under
    `jit`), select with `MyEnum.where(pred, a, b)`, raise its message with `error_if`, and
    read `.name` / `.message` outside of tracing.

    ```python
    class Status(ecliptic.Enumeration):
        ok = "all good"
        failed = "it failed"

    Status.ok == Status.failed  # Array(False)
    ```
    """

    _value: Any
    _enumeration: Any = field(static=True)

    def _check_same_enumeration(self, other: Any) -> None:
        if not isinstance(other, EnumerationItem) or other._enumeration is not self._enumeration:
            mine = self._enumeration.__name__
            given = (
                f"a member of {other._enumeration.__name__}"
                if isinstance(other, EnumerationItem)
                else f"a {type(other).__name__}"
            )
            raise ValueError(
                "Can only compare equality between enumerations of the same type: "
                f"a member of {mine} was compared with {given}. (To compare with a member "
                f"of a parent enumeration, `{mine}.promote` it first.)"
            )

    def __eq__(self, other: Any) -> Any:  # type: ignore[override]
        self._check_same_enumeration(other)
        with jax.ensure_compile_time_eval():
            return jnp.equal(self._value, other._value)

    def __ne__(self, other: Any) -> Any:  # type: ignore[override]
        self._check_same_enumeration(other)
        with jax.ensure_compile_time_eval():
            return jnp.not_equal(self._value, other._value)

    def __hash__(self) -> int:
        return hash((self._enumeration, int(self._value)))

    def is_traced(self) -> bool:
        """Whether the member's value is only known at run time (e.g. chosen inside `jit`).

        **Returns:** a Python bool.

        ```python
        Status.ok.is_traced()  # False
        ```
        """
        return _is_traced(self._value)

    @property
    def name(self) -> str:
        """The member's name (needs a concrete value: not available under `jit`)."""
        return self._enumeration._names[int(self._value)]

    @property
    def message(self) -> str:
        """The member's description string (needs a concrete value)."""
        return self._enumeration._messages[int(self._value)]

    def error_if(self, token: Any, pred: Any) -> Any:
        """Raise this member's message as a run-time error where `pred` is True.

        Works under `jit`, also when the member itself was chosen at run time.

        **Arguments:**

        - `token`: any pytree; its array leaves carry the check (as for `error_if`).
        - `pred`: a boolean array or Python bool.

        **Returns:** `token`, unchanged.

        ```python
        x = Status.failed.error_if(x, x < 0)
        ```
        """
        return branched_error_if(token, pred, self._value, self._enumeration._messages)

    def __repr__(self) -> str:
        prefix = _full_name(self._enumeration)
        if _is_traced(self._value):
            return f"{prefix}<traced>"
        index = np.asarray(self._value)
        messages = self._enumeration._messages
        if index.ndim == 0:
            return f"{prefix}<{messages[int(index)]}>"
        return f"{prefix}<{np.asarray(messages)[index]}>"


_DESCRIPTORS = (classmethod, staticmethod, property)


def _is_member_declaration(key: str, value: Any) -> bool:
    return not (key.startswith("_") or callable(value) or isinstance(value, _DESCRIPTORS))


def _set_member(
    names: list[str], messages: list[str], key: str, message: str, cls_name: str
) -> None:
    if key not in names:
        names.append(key)
        messages.append(message)
        return
    position = names.index(key)
    if messages[position] != message:
        warnings.warn(
            f"Enumeration has duplicate incompatible values for {key}. Using the latest, "
            f"which is {message!r}. (In {cls_name}: its parents, or the class and a parent, "
            "give this member different messages.)",
            UserWarning,
            stacklevel=3,
        )
        messages[position] = message


class _EnumerationMeta(type):
    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any]):
        names: list[str] = []
        messages: list[str] = []
        for base in bases:
            for key, message in zip(getattr(base, "_names", ()), getattr(base, "_messages", ())):
                _set_member(names, messages, key, message, name)
        for key, value in list(namespace.items()):
            if not _is_member_declaration(key, value):
                continue
            if not isinstance(value, str):
                raise TypeError(
                    f"{name}.{key}: Enumeration members are declared as NAME = 'description' "
                    f"(a string); got {type(value).__name__}."
                )
            _set_member(names, messages, key, value, name)
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

    def __getitem__(cls, item: Any) -> str:
        if not isinstance(item, EnumerationItem):
            raise ValueError(
                "Index must be an enumeration item. "
                f"({cls.__name__}[...] gives a member's message, e.g. {cls.__name__}[member]; "
                f"got {item!r}.)"
            )
        if item._enumeration is not cls:
            raise ValueError(
                "Enumeration item must be from this enumeration. "
                f"({cls.__name__}[...] was given {item!r}.)"
            )
        if item.is_traced():
            raise ValueError(
                f"{cls.__name__}[...] needs a concrete member; got one only known at run time "
                "(under jit). Use `member.error_if(...)` to report it at run time."
            )
        return item.message

    def __len__(cls) -> int:
        return len(cls._names)  # pyright: ignore[reportArgumentType]

    def __iter__(cls) -> Iterator[EnumerationItem]:
        return (getattr(cls, n) for n in cls._names)  # pyright: ignore[reportGeneralTypeIssues]

    def __instancecheck__(cls, instance: Any) -> bool:
        return isinstance(instance, EnumerationItem) and instance._enumeration is cls


def _is_scalar_bool(pred: Any) -> bool:
    if isinstance(pred, (bool, np.bool_)):
        return True
    dtype = getattr(pred, "dtype", None)
    return dtype == np.bool_ and np.shape(pred) == ()


# For type checkers this class is replaced by `_TypedEnumeration` (end of this file).
class Enumeration(metaclass=_EnumerationMeta):  # pyright: ignore[reportRedeclaration]
    """Base class for enumerations whose members work inside JAX transformations.

    Each class attribute `NAME = "message"` declares a member. Subclasses inherit their
    parents' members (and may add more); `promote` turns a parent's member into the
    subclass's.

    ```python
    class Status(ecliptic.Enumeration):
        ok = "all good"
        diverged = "the solver diverged"

    status = Status.where(residual < 1e-6, Status.ok, Status.diverged)  # under jit too
    status == Status.ok   # a bool array
    Status[status]        # the message, outside jit
    ```
    """

    @classmethod
    def where(cls, pred: Any, a: EnumerationItem, b: EnumerationItem) -> EnumerationItem:
        """Choose `a` where `pred` is True, else `b`.

        When the choice is known while tracing (a Python bool, or both branches the same
        member) the result stays concrete.

        **Arguments:**

        - `pred`: a scalar boolean (Python bool or bool array of shape `()`).
        - `a`, `b`: members of this enumeration (not of a parent or child).

        **Returns:** an `EnumerationItem`.

        ```python
        Status.where(x > 0, Status.ok, Status.diverged)
        ```
        """
        for item in (a, b):
            if not isinstance(item, EnumerationItem) or item._enumeration is not cls:
                raise ValueError(
                    f"Arguments to {_full_name(cls)}.where(...) must be members of "
                    f"{_full_name(cls)}: `{'a' if item is a else 'b'}` is {item!r}. "
                    f"(A parent enumeration's member can be `{cls.__name__}.promote`d first.)"
                )
        if not _is_scalar_bool(pred):
            raise ValueError(
                f"`where` requires a scalar boolean predicate: {cls.__name__}.where's `pred` "
                f"must be a Python bool or a bool array of shape (); got "
                f"{type(pred).__name__} of dtype {getattr(pred, 'dtype', None)} and shape "
                f"{np.shape(pred)}."
            )
        if a._value is b._value:
            return a
        concrete = not (_is_traced(a._value) or _is_traced(b._value))
        if concrete and np.array_equal(np.asarray(a._value), np.asarray(b._value)):
            return a
        with jax.ensure_compile_time_eval():
            return EnumerationItem(jnp.where(pred, a._value, b._value), cls)

    @classmethod
    def promote(cls, item: EnumerationItem) -> EnumerationItem:
        """Re-type a member of a parent enumeration as the same-named member of this one.

        **Arguments:**

        - `item`: a member of a (strict) parent class of this enumeration.

        **Returns:** the member of this enumeration with the same name.

        ```python
        class MoreStatus(Status):
            pending = "not yet"

        MoreStatus.promote(Status.ok) == MoreStatus.ok  # Array(True)
        ```
        """
        if not isinstance(item, EnumerationItem):
            raise ValueError(
                f"Can only promote enumerations. ({cls.__name__}.promote got {item!r}.)"
            )
        parent = item._enumeration
        if parent is cls or not issubclass(cls, parent):
            raise ValueError(
                "Can only promote from inherited enumerations. "
                f"({cls.__name__}.promote got {item!r}, whose enumeration is not a parent "
                f"class of {cls.__name__}.)"
            )
        table = np.asarray([cls._index[n] for n in parent._names], dtype=np.int32)  # pyright: ignore
        if _is_traced(item._value):
            return EnumerationItem(jnp.asarray(table)[item._value], cls)
        return EnumerationItem(table[np.asarray(item._value)], cls)


if TYPE_CHECKING:
    # What type checkers see (never executed). A member declared as `ok = "message"` is
    # an EnumerationItem at run time, but a checker would type it as `str`: declaring
    # Enumeration as an `enum.Enum` makes checkers type `Status.ok` as a `Status` member,
    # and inheriting EnumerationItem gives it `.name`, `.message`, `==` and `error_if`.
    # (Checkers treat an enum with members as final, so subclassing an Enumeration that
    # already has members is still reported by them; it works at run time.)
    import enum

    from typing_extensions import Self

    class _EnumerationTypingMeta(enum.EnumMeta):
        def __getitem__(cls, item: EnumerationItem) -> str: ...  # pyright: ignore[reportIncompatibleMethodOverride]

    # The metaclasses of Module and enum.Enum are never combined at run time.
    class _TypedEnumeration(  # pyright: ignore[reportGeneralTypeIssues]
        EnumerationItem, enum.Enum, metaclass=_EnumerationTypingMeta
    ):
        def __init__(self, *args: Any) -> None: ...

        @classmethod
        def where(cls, pred: Any, a: EnumerationItem, b: EnumerationItem) -> Self: ...

        @classmethod
        def promote(cls, item: EnumerationItem) -> Self: ...

    # An explicit alias, not a second `class Enumeration`: checkers take this last
    # declaration, while documentation tools reading the source keep the run-time class.
    Enumeration: TypeAlias = _TypedEnumeration
