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
    """'var', 'classvar' or None, for a (possibly string) annotation."""
    if isinstance(annotation, str):
        text = annotation.strip()
        for prefix, kind in (
            ("AbstractClassVar", "classvar"),
            ("AbstractVar", "var"),
        ):
            if text.startswith(prefix) or f".{prefix}" in text.split("[", 1)[0]:
                return kind
        return None
    origin = getattr(annotation, "__origin__", annotation)
    if origin is AbstractClassVar:
        return "classvar"
    if origin is AbstractVar:
        return "var"
    return None


def collect_abstract_attributes(
    cls_name: str, namespace: dict[str, Any], bases: tuple[type, ...]
) -> tuple[frozenset[str], frozenset[str]]:
    """Strip abstract annotations from ``namespace`` and return what remains unresolved.

    Returns ``(abstract_vars, abstract_class_vars)`` for the new class: those inherited
    from bases that the class does not resolve, plus those it declares itself.
    """
    annotations = namespace.get("__annotations__", {})
    declared_vars, declared_classvars = set(), set()
    for name, annotation in list(annotations.items()):
        kind = _annotation_kind(annotation)
        if kind is None:
            continue
        if name in namespace:
            marker = "AbstractVar" if kind == "var" else "AbstractClassVar"
            raise TypeError(
                f"{cls_name}.{name} is annotated as {marker} and so must not have a value in "
                "the same class."
            )
        del annotations[name]
        (declared_vars if kind == "var" else declared_classvars).add(name)

    inherited_vars: set[str] = set()
    inherited_classvars: set[str] = set()
    for base in bases:
        inherited_vars |= getattr(base, "__ecliptic_abstract_vars__", frozenset())
        inherited_classvars |= getattr(base, "__ecliptic_abstract_classvars__", frozenset())
    resolved = set(namespace) | {
        name for name in annotations if _annotation_kind(annotations[name]) is None
    }
    classvar_resolved = set(namespace)
    vars_left = (inherited_vars - resolved) | declared_vars
    classvars_left = (inherited_classvars - classvar_resolved) | declared_classvars
    return frozenset(vars_left), frozenset(classvars_left)


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
