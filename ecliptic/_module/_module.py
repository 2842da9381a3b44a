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
import inspect
import operator
import sys
import types
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import jax
import jax.tree_util as jtu
import numpy as np

from ._abstract import strip_abstract_annotations, unresolved_abstract_attributes
from ._assignment_checks import (
    TRANSFORM_RESULT_TYPES,
    warn_if_static_arrays,
    warn_if_transformed_module,
)
from ._class_setup import (
    CUSTOM_INIT,
    annotate_converter_inputs,
    has_custom_init,
    inherit_init_doc,
    module_signature,
    overridden_fields,
    warn_init_and_post_init,
)
from ._field import CONVERTER, STATIC, field

if sys.version_info >= (3, 11):
    from typing import dataclass_transform
else:  # Python 3.10
    from typing_extensions import dataclass_transform

_T = TypeVar("_T")
_Return = TypeVar("_Return")
_INITIALISING = "__ecliptic_initialising__"
_WRAPPER_ATTRIBUTES = ("__module__", "__name__", "__qualname__", "__doc__")
_WRAPPER_META = "__ecliptic_wrapper_meta__"
_object_new = object.__new__


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

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Found in a class' `__dict__` after class creation, it still calls like the function.
        return self.method(*args, **kwargs)


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


def _make_flatteners(cls: type, optional: frozenset[str] = frozenset()) -> None:
    """Register `cls` as a pytree node. Fields in `optional` (overridden at class level,
    see `overridden_fields`) may be missing from an instance: classes with any take a
    slower path that flattens only the fields an instance has."""
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
        if _WRAPPER_META in d:
            aux = _WrapperMeta(aux, d[_WRAPPER_META].attributes)
        return tuple(d[n] for n in dyn), aux

    def flatten_with_keys(obj: Any) -> tuple[tuple[Any, ...], Any]:
        children, aux = flatten(obj)
        dyn = (aux.static_values if type(aux) is _WrapperMeta else aux)[1]
        return tuple((jtu.GetAttrKey(n), c) for n, c in zip(dyn, children)), aux

    def unflatten(aux: Any, children: Any) -> Any:
        obj = object.__new__(cls)
        d = obj.__dict__
        if type(aux) is _WrapperMeta:
            d[_WRAPPER_META] = aux
            d.update(aux.attributes)
            aux = aux.static_values
        values, dyn, sta = aux
        d.update(zip(dyn, children))
        d.update(zip(sta, values))
        return obj

    jtu.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)


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
    __abstractvars__: frozenset[str]
    __abstractclassvars__: frozenset[str]
    __ecliptic_declared_abstract__: bool
    __ecliptic_check_concrete__: bool
    __ecliptic_custom_init__: bool
    __ecliptic_dynamic_fields__: tuple[str, ...]
    __ecliptic_static_fields__: tuple[str, ...]
    __ecliptic_field_map__: dict[str, dataclasses.Field[Any]]
    __ecliptic_optional_fields__: frozenset[str]
    __ecliptic_converters__: tuple[tuple[str, Callable[[Any], Any]], ...]

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
        declared_abstract = strip_abstract_annotations(name, namespace)
        wrap = not namespace.pop("__ecliptic_no_method_wrapping__", False)
        # Methods stay plain functions while the class is created, so that
        # `__init_subclass__` and `__set_name__` hooks see them as written.
        cls = super().__new__(mcs, name, bases, namespace, **kw)
        if wrap:  # including any function an `__init_subclass__` hook put in their place
            for attr, value in list(cls.__dict__.items()):
                if _should_wrap(attr, value):
                    type.__setattr__(cls, attr, _MethodDescriptor(value))
        # Declared abstractness belongs to this class alone: subclasses are concrete.
        cls.__ecliptic_declared_abstract__ = is_abstract
        custom_init = has_custom_init(cls, "__init__" in namespace)
        setattr(cls, CUSTOM_INIT, custom_init)
        cls = dataclasses.dataclass(eq=False, repr=False, init=not custom_init)(cls)
        if custom_init:
            warn_init_and_post_init(cls)
        else:
            inherit_init_doc(cls)
            annotate_converter_inputs(cls)
        abstract_vars, abstract_classvars = unresolved_abstract_attributes(
            cls, namespace, declared_abstract
        )
        cls.__abstractvars__ = abstract_vars
        cls.__abstractclassvars__ = abstract_classvars
        cls.__ecliptic_check_concrete__ = bool(abstract_vars or abstract_classvars or is_abstract)
        _make_flatteners(cls, overridden_fields(cls, custom_init))
        return cls

    @property
    def __signature__(cls) -> inspect.Signature | None:
        # `inspect.signature(SomeModule)` would otherwise describe `__call__` below.
        return module_signature(cls)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls.__ecliptic_check_concrete__:
            _check_concrete(cls)
        new = cls.__new__  # a class' own __new__ receives the arguments too
        self = new(cls) if new is _object_new else new(cls, *args, **kwargs)  # pyright: ignore[reportCallIssue]
        self.__dict__[_INITIALISING] = True
        try:
            cls.__init__(self, *args, **kwargs)
            _finish_init(cls, self)
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
    # Re-checked here: a class attribute set after class creation resolves a name too.
    missing_vars = sorted(
        name for name in cls.__abstractvars__ if not hasattr(cls, name)
        and name not in cls.__ecliptic_field_map__
    )
    missing_classvars = sorted(
        name for name in cls.__abstractclassvars__ if not hasattr(cls, name)
    )
    if missing_vars or missing_classvars:
        parts, kinds = [], []
        if missing_vars:
            parts.append(f"AbstractVar(s) {missing_vars}")
            kinds.append("abstract attributes")
        if missing_classvars:
            parts.append(f"AbstractClassVar(s) {missing_classvars}")
            kinds.append("abstract class attributes")
        raise TypeError(
            f"Can't instantiate {cls.__qualname__}: it leaves {' and '.join(parts)} "
            f"unresolved. Define these {' and '.join(kinds)} in a subclass (as fields, "
            "class attributes or properties)."
        )


def _finish_init(cls: Any, self: Any) -> None:
    """After `__init__`: fill defaults, run the converters, check every field is set."""
    d = self.__dict__
    optional = cls.__ecliptic_optional_fields__
    missing = []
    for f in cls.__ecliptic_field_map__.values():
        if f.name in d or f.name in optional:
            continue
        if f.default is not dataclasses.MISSING:
            d[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            d[f.name] = f.default_factory()
        else:
            missing.append(f.name)
    if missing:
        raise _UnassignedFieldError(
            f"Field {missing[0]!r} was not initialized. {cls.__qualname__}.__init__ did "
            f"not assign the field(s) {missing}: every field must be set "
            "(self.<name> = ...) before __init__ returns."
        )
    for name, converter in cls.__ecliptic_converters__:
        if name in d:
            d[name] = converter(d[name])
    if cls.__ecliptic_static_fields__:
        warn_if_static_arrays(cls, cls.__ecliptic_static_fields__, d)


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
            if name == "__orig_class__":  # set by `SomeModule[T](...)`, as on any generic
                d[name] = value  # pyright: ignore[reportIndexIssue]
                return
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
        kind = type(value)
        if kind in TRANSFORM_RESULT_TYPES:
            warn_if_transformed_module(type(self), name, value, Module)
        elif kind is BoundMethod and value.__dict__["__self__"] is self:
            raise ValueError(
                f"Cannot assign methods in __init__: {type(self).__qualname__}.{name} = "
                f"self.{value.__func__.__name__} would make the instance contain itself. "
                "Call the method from another method instead, or assign a function that "
                "takes the instance as an argument."
            )
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


class Partial(Module, Generic[_Return]):
    """A `functools.partial` that is a pytree: the function and the arguments are children.

    Generic in the function's return type, so ``Partial[float]`` works in annotations.

    **Arguments:**

    - `func`: the callable (itself may be a pytree, such as a Module).
    - `*args`, `**kwargs`: arguments bound ahead of the call's own.

    ```python
    add_one = ecliptic.Partial(jnp.add, jnp.array(1.0))
    jax.jit(lambda f, x: f(x))(add_one, 2.0)  # 3.0
    ```
    """

    func: Callable[..., _Return]
    args: tuple[Any, ...]
    keywords: dict[str, Any]

    def __init__(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any):
        if not callable(func):
            raise TypeError(f"Partial(func, ...): func must be callable; got {func!r}.")
        self.func = func
        self.args = args
        self.keywords = kwargs

    def __call__(self, *args: Any, **kwargs: Any) -> _Return:
        return self.func(*self.args, *args, **self.keywords, **kwargs)


def bind_partial(func: Callable[..., Any], *args: Any) -> Partial:
    """`Partial(func, *args)` without the checks of `__init__`: for internal hot paths
    such as binding a transformed method to its instance."""
    bound = object.__new__(Partial)
    bound.__dict__.update(  # pyright: ignore[reportAttributeAccessIssue]
        func=func, args=args, keywords={}
    )
    return bound
