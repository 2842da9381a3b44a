"""``Module``: a frozen dataclass that is also a JAX pytree node, with methods.

- The metaclass makes every subclass a dataclass (frozen by ``__setattr__`` once built,
  not by dataclasses' ``frozen``) and a pytree node: non-static fields are children,
  static ones aux data (``_flatten.py``). A class gets a generated ``__init__`` unless
  the nearest one in its MRO is hand-written (``_class_setup.py``).
- The metaclass' ``__call__`` runs ``__init__`` (and ``__post_init__``), fills in
  defaults, runs converters, checks every field was set, runs every ``__check_init__``
  in the MRO, then freezes the instance.
- Functions on the class stay plain while it is created (``__init_subclass__`` hooks
  see them), then become descriptors returning `BoundMethod`, a Module holding the
  instance, so that ``model.method`` is a pytree too.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import inspect
import sys
import types
from collections.abc import Callable
from typing import Any, TypeVar

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
from ._copy import new_instance, replace_fields
from ._field import field
from ._flatten import WRAPPER_META, WrapperMeta, make_flatteners

if sys.version_info >= (3, 11):
    from typing import dataclass_transform
else:  # Python 3.10
    from typing_extensions import dataclass_transform

_T = TypeVar("_T")
_INITIALISING = "__ecliptic_initialising__"
_PLAIN_METHODS = "__ecliptic_no_method_wrapping__"
_WRAPPER_ATTRIBUTES = ("__module__", "__name__", "__qualname__", "__doc__", "__annotations__")
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
        return new_instance(BoundMethod, __func__=self.method, __self__=instance)

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
        # Classes that opt out of method wrapping (transformation wrappers) pass it on.
        plain = namespace.pop(_PLAIN_METHODS, False) or any(
            getattr(base, _PLAIN_METHODS, False) for base in bases
        )
        # Methods stay plain functions while the class is created, so that
        # `__init_subclass__` and `__set_name__` hooks see them as written.
        cls = super().__new__(mcs, name, bases, namespace, **kw)
        if plain:
            type.__setattr__(cls, _PLAIN_METHODS, True)
        else:  # including any function an `__init_subclass__` hook put in their place
            annotated = namespace.get("__annotations__", {})  # a function-valued default
            for attr, value in list(cls.__dict__.items()):
                if attr not in annotated and _should_wrap(attr, value):
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
        make_flatteners(cls, overridden_fields(cls, custom_init))
        return cls

    @property
    def __signature__(cls) -> inspect.Signature | None:
        # `inspect.signature(SomeModule)` would otherwise describe `__call__` below.
        return module_signature(cls)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls.__ecliptic_check_concrete__:
            _check_concrete(cls)
        new: Any = cls.__new__  # a class' own __new__ receives the arguments too
        self: Any = new(cls) if new is _object_new else new(cls, *args, **kwargs)
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
        name
        for name in cls.__abstractvars__
        if not hasattr(cls, name) and name not in cls.__ecliptic_field_map__
    )
    missing_classvars = sorted(name for name in cls.__abstractclassvars__ if not hasattr(cls, name))
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
        if kind not in _CHECKED_ASSIGNMENT_TYPES:  # the common case: one set lookup
            d[name] = value  # pyright: ignore[reportIndexIssue]
            return
        if kind is not BoundMethod:
            warn_if_transformed_module(type(self), name, value, Module)
        elif value.__dict__["__self__"] is self:
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

    Copies `__module__`, `__name__`, `__qualname__`, `__doc__` and `__annotations__` from
    `wrapped` onto a copy of `wrapper`; they survive flattening and unflattening.

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
    return replace_fields(wrapper, **{WRAPPER_META: WrapperMeta((), attributes)}, **attributes)


# Values `__setattr__` looks at more closely during `__init__`.
_CHECKED_ASSIGNMENT_TYPES = TRANSFORM_RESULT_TYPES | {BoundMethod}
