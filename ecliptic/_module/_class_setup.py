"""What the Module metaclass works out once per class: whether it gets a generated
``__init__``, that ``__init__``'s docstring and converter annotations, the
``__init__``-plus-``__post_init__`` warning, and which fields a subclass overrode at class
level."""

from __future__ import annotations

import dataclasses
import inspect
import typing
import warnings
from typing import Any

from ._field import CONVERTER

CUSTOM_INIT = "__ecliptic_custom_init__"


def has_custom_init(cls: type, defines_init: bool) -> bool:
    """Whether `cls` runs a hand-written ``__init__`` (its own or inherited).

    **Arguments:**

    - `cls`: a new Module class (before dataclass processing).
    - `defines_init`: whether its own body defines ``__init__``.

    **Returns:** `True` if the nearest ``__init__`` in the MRO is hand-written (by a
    Module or any other class), `False` if it is one that dataclasses generated (or
    `object`'s), in which case `cls` gets a generated ``__init__`` too.
    """
    if defines_init:
        return True
    for klass in cls.__mro__[1:]:
        if "__init__" in klass.__dict__:
            if klass is object:
                return False
            return klass.__dict__.get(CUSTOM_INIT, True)
    return False


def warn_init_and_post_init(cls: type) -> None:
    """Warn that a hand-written ``__init__`` means ``__post_init__`` never runs.

    **Arguments:**

    - `cls`: a Module class with a hand-written ``__init__``.

    **Returns:** `None`; emits a `UserWarning` if `cls` has a ``__post_init__``.
    """
    if not hasattr(cls, "__post_init__"):
        return
    name = f"{cls.__module__}.{cls.__qualname__}"
    warnings.warn(
        f"Class `{name}` has both an `__init__` method and a `__post_init__` method. "
        "This means that the `__post_init__` method will not be run: like dataclasses, "
        "a Module calls `__post_init__` only from the `__init__` it generates. To check "
        "invariants whichever `__init__` runs, use `__check_init__` instead.",
        UserWarning,
        stacklevel=3,
    )


def inherit_init_doc(cls: type) -> None:
    """Give a generated ``__init__`` the docstring of the ``__init__`` it replaces.

    **Arguments:**

    - `cls`: a Module class whose ``__init__`` dataclasses just generated.

    **Returns:** `None`.
    """
    init = cls.__dict__["__init__"]
    if init.__doc__ is None:
        init.__doc__ = super(cls, cls).__init__.__doc__


def converter_input_type(converter: Any) -> Any:
    """The type a converter accepts: the annotation of its first parameter, else `Any`.

    **Arguments:**

    - `converter`: the field's converter.

    **Returns:** the annotation (resolved if it was a string and resolvable), or
    `typing.Any` where there is none or the signature cannot be read.

    ```python
    def to_array(x: float) -> jax.Array: ...
    converter_input_type(to_array)  # float
    ```
    """
    try:
        params = list(inspect.signature(converter).parameters.values())
    except (TypeError, ValueError):
        return Any
    if not params or params[0].annotation is inspect.Parameter.empty:
        return Any
    annotation = params[0].annotation
    if isinstance(annotation, str):
        try:
            annotation = typing.get_type_hints(converter).get(params[0].name, annotation)
        except Exception:  # an unresolvable string annotation stays a string
            pass
    return annotation


def annotate_converter_inputs(cls: type) -> None:
    """Annotate a generated ``__init__``'s converter fields with the converter's input type.

    A runtime type checker then checks what the caller passes, not the converted value.

    **Arguments:**

    - `cls`: a Module class whose ``__init__`` dataclasses just generated.

    **Returns:** `None`.
    """
    init = cls.__dict__["__init__"]
    for f in dataclasses.fields(cls):  # pyright: ignore[reportArgumentType]
        converter = f.metadata.get(CONVERTER)
        if converter is not None and f.init:
            init.__annotations__[f.name] = converter_input_type(converter)


def overridden_fields(cls: type, custom_init: bool) -> frozenset[str]:
    """Fields that a class attribute, property or method overrides at class level.

    Such a field may be absent from an instance (reading it then gives the class-level
    value): it is not filled with its default, not required, and flattened only when an
    instance has it.

    **Arguments:**

    - `cls`: a Module class, after dataclass processing.
    - `custom_init`: whether `cls` has a hand-written ``__init__``.

    **Returns:** the names of those fields.
    """
    names = set()
    for f in dataclasses.fields(cls):  # pyright: ignore[reportArgumentType]
        if f.init and not custom_init:
            continue  # the generated __init__ always assigns it
        for klass in cls.__mro__:
            if f.name in klass.__dict__:
                if klass.__dict__[f.name] is not f.default:
                    names.add(f.name)
                break
    return frozenset(names)


def module_signature(cls: type) -> inspect.Signature | None:
    """The call signature of a Module class: its ``__init__``'s, without ``self``.

    **Arguments:**

    - `cls`: a Module class.

    **Returns:** the `inspect.Signature`, or `None` where it cannot be read.
    """
    try:
        signature = inspect.signature(cls.__init__)
    except (TypeError, ValueError):
        return None
    return signature.replace(parameters=list(signature.parameters.values())[1:])
