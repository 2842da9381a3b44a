"""``Module``: a frozen dataclass that is also a JAX pytree node, with methods.

How it works, in short:

- The metaclass turns every subclass into a dataclass (without dataclasses' own
  ``frozen``, so that converters run on assignment) and registers it as a pytree node
  whose children are its non-static fields and whose aux data are its static fields.
- Instances are created by the metaclass' ``__call__``: it marks the instance as
  initialising, runs ``__init__``, fills in defaults, checks that every field was set,
  runs every ``__check_init__`` in the MRO, and then freezes the instance.
- Functions defined on the class become descriptors returning `BoundMethod`, a Module
  holding the instance, so that ``model.method`` is a pytree too.
- Flattening reads ``__dict__`` directly and unflattening bypasses ``__init__``: both are
  as cheap as a tuple build.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import operator
import sys
import types
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.tree_util as jtu
import numpy as np

from ._abstract import collect_abstract_attributes
from ._field import CONVERTER, STATIC, field

if sys.version_info >= (3, 11):
    from typing import dataclass_transform
else:  # Python 3.10
    from typing_extensions import dataclass_transform

_T = TypeVar("_T")
_INITIALISING = "__ecliptic_initialising__"
_WRAPPER_ATTRIBUTES = ("__module__", "__name__", "__qualname__", "__doc__")
_WRAPPER_META = "__ecliptic_wrapper_meta__"


def _is_mutable_array_default(value: Any) -> bool:
    if isinstance(value, dataclasses.Field):
        value = value.default
    return isinstance(value, (jax.Array, np.ndarray))


class _MethodDescriptor:
    """Wraps a function defined on a Module so that instance access gives a `BoundMethod`."""

    def __init__(self, method: Callable[..., Any]):
        self.method = method
        functools.update_wrapper(self, method)  # pyright: ignore[reportArgumentType]

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is None:
            return self.method
        bound = object.__new__(BoundMethod)
        bound.__dict__.update(  # pyright: ignore[reportAttributeAccessIssue]
            __func__=self.method, __self__=instance
        )
        return bound

    def __set_name__(self, owner: type, name: str) -> None:
        self.__name__ = name


def _should_wrap(name: str, value: Any) -> bool:
    if not isinstance(value, types.FunctionType):
        return False
    if name == "__call__":
        return True
    return not (name.startswith("__") and name.endswith("__"))


def _tuple_getter(names: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A C-level getter returning ``tuple(d[n] for n in names)`` (flatten's hot path)."""
    if not names:
        return lambda d: ()
    if len(names) == 1:
        (name,) = names
        return lambda d: (d[name],)
    return operator.itemgetter(*names)


def _make_flatteners(cls: type) -> None:
    fields = dataclasses.fields(cls)
    dynamic = tuple(f.name for f in fields if not f.metadata.get(STATIC, False))
    static = tuple(f.name for f in fields if f.metadata.get(STATIC, False))
    names = dynamic + static
    keys = tuple(jtu.GetAttrKey(name) for name in dynamic)
    get_dynamic, get_static = _tuple_getter(dynamic), _tuple_getter(static)
    new = object.__new__

    def flatten(obj: Any) -> tuple[tuple[Any, ...], Any]:
        d = obj.__dict__
        if _WRAPPER_META in d:  # rare: a copy made by module_update_wrapper
            return get_dynamic(d), _WrapperMeta(get_static(d), d[_WRAPPER_META].attributes)
        return get_dynamic(d), get_static(d)

    def flatten_with_keys(obj: Any) -> tuple[tuple[Any, ...], Any]:
        children, aux = flatten(obj)
        return tuple(zip(keys, children)), aux

    def unflatten(aux: Any, children: Any) -> Any:
        obj = new(cls)
        d = obj.__dict__
        if type(aux) is _WrapperMeta:
            d[_WRAPPER_META] = aux
            d.update(aux.attributes)
            aux = aux.static_values
        d.update(zip(names, (*children, *aux)))
        return obj

    jtu.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    cls.__ecliptic_dynamic_fields__ = dynamic
    cls.__ecliptic_static_fields__ = static
    cls.__ecliptic_field_map__ = {f.name: f for f in fields}


class _WrapperMeta:
    """Metadata copied by `module_update_wrapper`; rides in the aux data through
    flatten/unflatten together with the static field values."""

    __slots__ = ("static_values", "attributes")

    def __init__(self, static_values: tuple[Any, ...], attributes: dict[str, Any]):
        self.static_values = static_values
        self.attributes = attributes

    def _key(self) -> tuple[Any, ...]:
        return (self.static_values, tuple(sorted(self.attributes.items())))

    def __eq__(self, other: Any) -> bool:
        return type(other) is _WrapperMeta and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


@dataclass_transform(field_specifiers=(dataclasses.field, field))
class _ModuleMeta(abc.ABCMeta):
    # Set on every Module class by __new__ / _make_flatteners (declared for type checkers).
    __ecliptic_abstract_vars__: frozenset[str]
    __ecliptic_abstract_classvars__: frozenset[str]
    __ecliptic_declared_abstract__: bool
    __ecliptic_check_concrete__: bool
    __ecliptic_custom_init__: bool
    __ecliptic_dynamic_fields__: tuple[str, ...]
    __ecliptic_static_fields__: tuple[str, ...]
    __ecliptic_field_map__: dict[str, dataclasses.Field[Any]]

    def __new__(
        mcs,
        name: str,
        bases: tuple[type, ...],
        namespace: dict[str, Any],
        *,
        is_abstract: bool = False,
        strict: bool | None = False,
        **kw: Any,
    ):
        is_abstract = _declared_abstract(name, is_abstract, strict)
        for attr, value in namespace.items():
            if _is_mutable_array_default(value):
                raise TypeError(
                    f"{name}.{attr}: a JAX/NumPy array cannot be a class-level default "
                    "(it would be shared by every instance). Assign it in __init__ or use "
                    "field(default_factory=lambda: jnp.array(...))."
                )
        abstract_vars, abstract_classvars = collect_abstract_attributes(name, namespace, bases)
        wrap = not namespace.pop("__ecliptic_no_method_wrapping__", False)
        if wrap:
            for attr, value in list(namespace.items()):
                if _should_wrap(attr, value):
                    namespace[attr] = _MethodDescriptor(value)
        has_custom_init = "__init__" in namespace
        cls = super().__new__(mcs, name, bases, namespace, **kw)
        cls.__ecliptic_abstract_vars__ = abstract_vars
        cls.__ecliptic_abstract_classvars__ = abstract_classvars
        # Declared abstractness belongs to this class alone: subclasses are concrete.
        cls.__ecliptic_declared_abstract__ = is_abstract
        cls.__ecliptic_check_concrete__ = bool(abstract_vars or abstract_classvars or is_abstract)
        if has_custom_init:
            cls.__ecliptic_custom_init__ = True
        elif not any(getattr(b, "__ecliptic_custom_init__", False) for b in bases):
            cls.__ecliptic_custom_init__ = False
        # A custom __init__ (own or inherited) is kept; otherwise dataclasses writes one.
        init = not cls.__ecliptic_custom_init__
        cls = dataclasses.dataclass(eq=False, repr=False, init=init)(cls)
        _make_flatteners(cls)
        return cls

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls.__ecliptic_check_concrete__:
            _check_concrete(cls)
        self = cls.__new__(cls)  # pyright: ignore[reportCallIssue]
        self.__dict__[_INITIALISING] = True
        try:
            cls.__init__(self, *args, **kwargs)
            _fill_defaults_and_check(cls, self)
        finally:
            del self.__dict__[_INITIALISING]
        for klass in cls.__mro__:
            check = klass.__dict__.get("__check_init__")
            if check is not None:
                check(self)
        return self


def _declared_abstract(name: str, is_abstract: Any, strict: Any) -> bool:
    """The class options `is_abstract=` and Equinox's legacy `strict=` (where `None`,
    as returned by `StrictConfig(force_abstract=True)`, means abstract)."""
    if not isinstance(is_abstract, bool):
        raise TypeError(
            f"class {name}: is_abstract must be a bool; got {type(is_abstract).__name__}."
        )
    if strict is not None and not isinstance(strict, bool):
        raise TypeError(
            f"class {name}: strict must be a bool, None or ecliptic.StrictConfig(...); got "
            f"{type(strict).__name__}."
        )
    return is_abstract or strict is None


def _check_concrete(cls: type) -> None:
    if cls.__dict__.get("__ecliptic_declared_abstract__"):
        raise TypeError(
            f"Can't instantiate {cls.__qualname__}: it is declared abstract "
            "(is_abstract=True). Instantiate a subclass."
        )
    missing_vars = sorted(
        name for name in cls.__ecliptic_abstract_vars__ if not hasattr(cls, name)
        and name not in {f.name for f in dataclasses.fields(cls)}
    )
    missing_classvars = sorted(
        name for name in cls.__ecliptic_abstract_classvars__ if not hasattr(cls, name)
    )
    if missing_vars or missing_classvars:
        parts = []
        if missing_vars:
            parts.append(f"AbstractVar(s) {missing_vars}")
        if missing_classvars:
            parts.append(f"AbstractClassVar(s) {missing_classvars}")
        raise TypeError(
            f"Can't instantiate {cls.__qualname__}: it leaves {' and '.join(parts)} "
            "unresolved. Define them in a subclass (as fields, class attributes or "
            "properties)."
        )


def _fill_defaults_and_check(cls: type, self: Any) -> None:
    d = self.__dict__
    missing = []
    for f in cls.__ecliptic_field_map__.values():
        if f.name in d:
            continue
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            missing.append(f.name)
            continue
        converter = f.metadata.get(CONVERTER)
        d[f.name] = value if converter is None else converter(value)
    if missing:
        raise _UnassignedFieldError(
            f"{cls.__qualname__}.__init__ did not assign the field(s) {missing}. "
            "Every field must be set (self.<name> = ...) before __init__ returns."
        )


class _UnassignedFieldError(TypeError, ValueError):
    """A field left unassigned by `__init__`: a ValueError, and a TypeError as Equinox
    raises (so that code catching either keeps working)."""


class Module(metaclass=_ModuleMeta):
    """Base class for models: a frozen dataclass that is a JAX pytree, with methods.

    Declare fields at class level; use the generated `__init__` or write your own that
    assigns each field once. After `__init__` the instance is immutable: make updated
    copies with `tree_at`. Array fields are pytree leaves; fields declared with
    `field(static=True)` live in the tree structure.

    **Special methods:**

    - `__check_init__(self)`: runs after `__init__` (every one in the MRO), to validate.
    - `__post_init__(self)`: as for dataclasses, with the generated `__init__`.

    ```python
    class Linear(ecliptic.Module):
        weight: jax.Array
        bias: jax.Array

        def __init__(self, in_size, out_size, key):
            wkey, bkey = jax.random.split(key)
            self.weight = jax.random.normal(wkey, (out_size, in_size))
            self.bias = jax.random.normal(bkey, (out_size,))

        def __call__(self, x):
            return self.weight @ x + self.bias
    ```
    """

    def __setattr__(self, name: str, value: Any) -> None:
        d = self.__dict__
        if _INITIALISING not in d:
            raise dataclasses.FrozenInstanceError(
                f"cannot assign to {type(self).__qualname__}.{name}: Modules are immutable "
                "after __init__. Make an updated copy instead, e.g. "
                f"ecliptic.tree_at(lambda m: m.{name}, module, new_value)."
            )
        fields = type(self).__ecliptic_field_map__
        f = fields.get(name)
        if f is None:
            if isinstance(getattr(type(self), name, None), property):
                raise AttributeError(f"cannot assign to property {type(self).__qualname__}.{name}.")
            raise AttributeError(
                f"cannot assign {type(self).__qualname__}.{name}: it is not a declared field. "
                f"Declare it at class level (`{name}: SomeType`); declared fields: "
                f"{sorted(fields)}."
            )
        converter = f.metadata.get(CONVERTER)
        if converter is not None:
            value = converter(value)
        d[name] = value  # pyright: ignore[reportIndexIssue]

    def __delattr__(self, name: str) -> None:
        raise dataclasses.FrozenInstanceError(
            f"cannot delete {type(self).__qualname__}.{name}: Modules are immutable."
        )

    def __repr__(self) -> str:
        from .._pretty_print import tree_pformat

        return tree_pformat(self)

    def __eq__(self, other: Any) -> Any:
        from .._tree import tree_equal

        return tree_equal(self, other)

    def __hash__(self) -> int:
        leaves, treedef = jtu.tree_flatten(self)
        try:
            return hash((treedef, tuple(leaves)))
        except TypeError as e:
            raise TypeError(
                f"{type(self).__qualname__} is not hashable: it holds unhashable leaves "
                f"({e}). A Module holding JAX arrays cannot be hashed, e.g. as the function "
                "of jax.jit(model) or a static argument: use ecliptic.filter_jit(model), or "
                "pass the model as an argument: jax.jit(lambda model, x: model(x))."
            ) from None


class BoundMethod(Module):
    """A method bound to a Module instance; a pytree whose child is the instance.

    `model.method` returns one, so bound methods can be passed to `jax.jit`,
    `filter_jit`, `filter_vmap`, ... and their arrays are seen.
    """

    __ecliptic_no_method_wrapping__ = True
    __func__: Callable[..., Any] = field(static=True)
    __self__: Module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__func__(self.__self__, *args, **kwargs)

    @property
    def __wrapped__(self) -> Any:
        return self.__func__.__get__(self.__self__, type(self.__self__))

    # Like Python's bound methods: equal and hashed by (function, instance identity), so
    # that `jax.jit(model.method)` can cache on it even when the instance holds arrays.
    def __eq__(self, other: Any) -> Any:
        if (
            type(other) is BoundMethod
            and other.__func__ == self.__func__
            and other.__self__ is self.__self__
        ):
            return True
        return super().__eq__(other)

    def __hash__(self) -> int:
        return hash((self.__func__, id(self.__self__)))

    @property
    def __name__(self) -> str:  # type: ignore[override]
        return self.__func__.__name__


def module_update_wrapper(wrapper: _T, wrapped: Any = None) -> _T:
    """Make a wrapper Module look like the function it wraps, as `functools.update_wrapper`.

    Copies `__module__`, `__name__`, `__qualname__` and `__doc__` from `wrapped` onto a
    copy of `wrapper`; they survive flattening and unflattening.

    **Arguments:**

    - `wrapper`: a Module instance.
    - `wrapped`: the wrapped callable; defaults to `wrapper.__wrapped__`.

    **Returns:** a copy of `wrapper` carrying the wrapped function's metadata.
    """
    if not isinstance(wrapper, Module):
        raise TypeError(f"module_update_wrapper(wrapper=...) must be a Module; got {wrapper!r}.")
    if wrapped is None:
        try:
            wrapped = wrapper.__wrapped__  # type: ignore[attr-defined]
        except AttributeError:
            raise TypeError(
                "module_update_wrapper: pass `wrapped`, or give the wrapper Module a "
                "`__wrapped__` property."
            ) from None
    attributes = {}
    for attr in _WRAPPER_ATTRIBUTES:
        try:
            attributes[attr] = getattr(wrapped, attr)
        except AttributeError:
            pass
    leaves, treedef = jtu.tree_flatten(wrapper)
    copy = jtu.tree_unflatten(treedef, leaves)
    copy.__dict__[_WRAPPER_META] = _WrapperMeta((), attributes)
    copy.__dict__.update(attributes)
    return copy


class Partial(Module):
    """A `functools.partial` that is a pytree: the function and the arguments are children.

    **Arguments:**

    - `func`: the callable (itself may be a pytree, such as a Module).
    - `*args`, `**kwargs`: arguments bound ahead of the call's own.

    ```python
    add_one = ecliptic.Partial(jnp.add, jnp.array(1.0))
    jax.jit(lambda f, x: f(x))(add_one, 2.0)  # 3.0
    ```
    """

    func: Callable[..., Any]
    args: tuple[Any, ...]
    keywords: dict[str, Any]

    def __init__(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any):
        if not callable(func):
            raise TypeError(f"Partial(func, ...): func must be callable; got {func!r}.")
        self.func = func
        self.args = args
        self.keywords = kwargs

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*self.args, *args, **self.keywords, **kwargs)


def bind_partial(func: Callable[..., Any], *args: Any) -> Partial:
    """`Partial(func, *args)` without the checks of `__init__`: for internal hot paths
    such as binding a transformed method to its instance."""
    bound = object.__new__(Partial)
    bound.__dict__.update(  # pyright: ignore[reportAttributeAccessIssue]
        func=func, args=args, keywords={}
    )
    return bound
