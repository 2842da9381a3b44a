"""``AbstractVar`` and ``AbstractClassVar``: attributes a concrete subclass must provide."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

_T = TypeVar("_T")

if TYPE_CHECKING:
    # For type checkers an abstract attribute is simply an attribute of type T.
    AbstractVar = ClassVar  # type: ignore[misc]  # pragma: no cover
    AbstractClassVar = ClassVar  # type: ignore[misc]  # pragma: no cover
else:

    class AbstractVar(Generic[_T]):
        """Mark an attribute that every concrete subclass must define.

        Annotate ``x: AbstractVar[int]`` in an abstract Module; a subclass provides it as
        a field (``x: int``), a class attribute or a property. Instantiating a class that
        leaves it unresolved raises `TypeError`.
        """

    class AbstractClassVar(Generic[_T]):
        """Mark a class attribute that every concrete subclass must define.

        Annotate ``x: AbstractClassVar[int]``; a subclass provides it as
        ``x: ClassVar[int] = ...`` or a plain class attribute.
        """


def _annotation_kind(annotation: Any) -> str | None:
    """'var', 'classvar' or None, for an annotation; raises on the unsupported forms."""
    if isinstance(annotation, str):
        head = annotation.strip().split("[", 1)[0].strip()
        if head.rsplit(".", 1)[-1] in ("AbstractVar", "AbstractClassVar"):
            return "stringified"
        return None
    if annotation is AbstractVar or annotation is AbstractClassVar:
        return "unsubscripted"
    origin = getattr(annotation, "__origin__", None)
    if origin is AbstractClassVar:
        return "classvar"
    if origin is AbstractVar:
        return "var"
    return None


def strip_abstract_annotations(
    cls_name: str, namespace: dict[str, Any]
) -> tuple[frozenset[str], frozenset[str]]:
    """Remove the ``AbstractVar``/``AbstractClassVar`` annotations from a class body (edited in
    place) and return the names it declares abstract, ``(declared_vars, declared_classvars)``.

    Raises `TypeError` for an unsubscripted marker or an abstract name given a value, and
    `NotImplementedError` for a string annotation (as from
    ``from __future__ import annotations``), which, like Equinox, is not supported."""
    annotations = namespace.get("__annotations__", {})
    declared_vars, declared_classvars = set(), set()
    for name, annotation in list(annotations.items()):
        kind = _annotation_kind(annotation)
        if kind is None:
            continue
        if kind == "stringified":
            raise NotImplementedError(
                f"{cls_name}.{name}: stringified abstract annotations are not supported "
                f"(got {annotation!r}). Remove `from __future__ import annotations` from "
                "this file, or write the annotation without quotes."
            )
        if kind == "unsubscripted":
            raise TypeError(
                f"{cls_name}.{name}: cannot use unsubscripted `AbstractVar` or "
                "`AbstractClassVar`; give the type, e.g. AbstractVar[int]."
            )
        if name in namespace:
            marker = "AbstractVar" if kind == "var" else "AbstractClassVar"
            raise TypeError(
                f"{cls_name}.{name} is annotated as {marker} and so must not have a value in "
                f"the same class: an abstract attribute cannot have value "
                f"(got {namespace[name]!r})."
            )
        del annotations[name]
        (declared_vars if kind == "var" else declared_classvars).add(name)
    return frozenset(declared_vars), frozenset(declared_classvars)


def unresolved_abstract_attributes(
    cls: type,
    namespace: dict[str, Any],
    declared: tuple[frozenset[str], frozenset[str]],
) -> tuple[frozenset[str], frozenset[str]]:
    """``(abstract_vars, abstract_class_vars)`` that a new class (already a dataclass, with its
    body `namespace` and the names `strip_abstract_annotations` returned) leaves unresolved.

    An inherited abstract name is resolved by anything concrete of that name in the class or
    its bases: a field (or any other annotation), a class attribute, a property or a method.
    A name declared `AbstractClassVar` anywhere stays a class variable (redeclaring it as
    `AbstractVar` does not weaken it); redeclaring an `AbstractVar` as `AbstractClassVar`
    strengthens it."""
    declared_vars, declared_classvars = declared
    inherited_vars: set[str] = set()
    inherited_classvars: set[str] = set()
    for base in cls.__mro__[1:]:
        inherited_vars |= base.__dict__.get("__abstractvars__", frozenset())
        inherited_classvars |= base.__dict__.get("__abstractclassvars__", frozenset())
    known = getattr(cls, "__dataclass_fields__", {})

    def provided(name: str) -> bool:
        return name in namespace or name in known or hasattr(cls, name)

    classvars = {n for n in inherited_classvars if not provided(n)} | declared_classvars
    classvars |= declared_vars & inherited_classvars
    variables = {n for n in inherited_vars if not provided(n)} | declared_vars
    return frozenset(variables - classvars), frozenset(classvars)


def StrictConfig(force_abstract: bool = False, **kwargs: object) -> bool | None:  # noqa: N802
    """The value of the legacy ``strict=`` class option, for code written for Equinox.

    ``class Foo(ecliptic.Module, strict=ecliptic.StrictConfig(force_abstract=True))``
    is the old spelling of ``class Foo(ecliptic.Module, is_abstract=True)``; any other
    ``strict=`` value is accepted and has no effect.

    **Arguments:**

    - `force_abstract`: whether the class is to be abstract (not instantiable).
    - `**kwargs`: other options of the old strict mode, accepted and ignored.

    **Returns:** `None` (meaning "abstract") if `force_abstract`, else `False`.
    """
    del kwargs
    if not isinstance(force_abstract, bool):
        raise TypeError(
            f"StrictConfig: force_abstract must be a bool; got {type(force_abstract).__name__}."
        )
    return None if force_abstract else False
