"""The bad-input catalogue: Module definition and use, Enumerations, and filters.

Every row is a user mistake; the test asserts the exception type, that the message names
the offending argument/path and what was expected, and that the error is raised by
ecliptic rather than from deep inside JAX/NumPy (see bad_input_helpers.py).
"""

# Each row passes a wrong type on purpose to check the error: argument types are not checked.
# pyright: reportArgumentType=false, reportCallIssue=false

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bad_input_helpers import check_misuse, misuse
from bad_input_layers import POINT, Point

import ecliptic as ec

# ----------------------------------------------------------------------------- Modules


def assign_after_init() -> None:
    POINT.w = jnp.zeros(3)  # type: ignore[misc]


def delete_field() -> None:
    del POINT.w


def unassigned_field() -> None:
    class Pair(ec.Module):
        a: int
        b: int

        def __init__(self) -> None:
            self.a = 1

    Pair()


def undeclared_attribute() -> None:
    class Box(ec.Module):
        a: int

        def __init__(self) -> None:
            self.a = 1
            self.extra = 2

    Box()


def assign_property() -> None:
    class Box(ec.Module):
        a: int

        @property
        def double(self) -> int:
            return 2 * self.a

        def __init__(self) -> None:
            self.a = 1
            self.double = 2  # pyright: ignore[reportAttributeAccessIssue]

    Box()


def jax_array_class_default() -> None:
    class Box(ec.Module):
        a: jax.Array = jnp.zeros(3)


def numpy_array_class_default() -> None:
    class Box(ec.Module):
        a: np.ndarray = dataclasses.field(default=np.zeros(3))


def _module_class(name: str, annotations: dict[str, Any], **values: Any) -> Any:
    """A Module subclass with real (not stringified) annotations: this file's
    `from __future__ import annotations` would stringify a class body's, and abstract
    annotations must not be strings."""
    namespace = {"__annotations__": annotations, "__qualname__": name, **values}
    return type(ec.Module)(name, (ec.Module,), namespace)


def unresolved_abstract_var() -> None:
    _module_class("Base", {"size": ec.AbstractVar[int]})()


def unresolved_abstract_class_var() -> None:
    _module_class("Base", {"name": ec.AbstractClassVar[str]})()


def abstract_var_with_value() -> None:
    _module_class("Base", {"size": ec.AbstractVar[int]}, size=3)


def abstract_method_left() -> None:
    class Base(ec.Module):
        @abc.abstractmethod
        def run(self) -> None: ...

    Base()  # pyright: ignore[reportAbstractUsage]


def parent_field_not_set_by_child_init() -> None:
    class Parent(ec.Module):
        a: int

    class Child(Parent):
        b: int

        def __init__(self, b: int) -> None:
            self.b = b

    Child(1)


def enumeration_member_not_str() -> None:
    class Colour(ec.Enumeration):
        red = 1


class Colour(ec.Enumeration):
    red = "Red"
    blue = "Blue"


class Shape(ec.Enumeration):
    square = "Square"


MODULE_CASES = [
    misuse(
        "module/assign-after-init",
        assign_after_init,
        dataclasses.FrozenInstanceError,
        r"cannot assign to Point\.w: Modules are immutable.*tree_at",
    ),
    misuse(
        "module/delete-field",
        delete_field,
        dataclasses.FrozenInstanceError,
        r"cannot delete Point\.w: Modules are immutable",
    ),
    misuse(
        "module/unassigned-field",
        unassigned_field,
        ValueError,
        r"Pair\.__init__ did not assign the field\(s\) \['b'\].*must be set",
    ),
    misuse(
        "module/undeclared-attribute",
        undeclared_attribute,
        AttributeError,
        r"cannot assign .*Box\.extra: it is not a declared field.*declared fields: \['a'\]",
    ),
    misuse(
        "module/assign-property",
        assign_property,
        AttributeError,
        r"cannot assign to property .*Box\.double",
    ),
    misuse(
        "module/jax-array-class-default",
        jax_array_class_default,
        TypeError,
        r"Box\.a: a JAX/NumPy array cannot be a class-level default.*default_factory",
    ),
    misuse(
        "module/numpy-array-field-default",
        numpy_array_class_default,
        TypeError,
        r"Box\.a: a JAX/NumPy array cannot be a class-level default",
    ),
    misuse(
        "module/abstract-var-unresolved",
        unresolved_abstract_var,
        TypeError,
        r"Can't instantiate .*Base: it leaves AbstractVar\(s\) \['size'\] unresolved",
    ),
    misuse(
        "module/abstract-class-var-unresolved",
        unresolved_abstract_class_var,
        TypeError,
        r"Can't instantiate .*Base: it leaves AbstractClassVar\(s\) \['name'\] unresolved",
    ),
    misuse(
        "module/abstract-var-with-value",
        abstract_var_with_value,
        TypeError,
        r"Base\.size is annotated as AbstractVar and so must not have a value",
    ),
    misuse(
        "module/abstract-method",
        abstract_method_left,
        TypeError,
        r"Can't instantiate abstract class Base.*run",
    ),
    misuse(
        "module/child-init-skips-parent-field",
        parent_field_not_set_by_child_init,
        ValueError,
        r"Child\.__init__ did not assign the field\(s\) \['a'\]",
    ),
    misuse(
        "module/missing-argument",
        lambda: Point(),
        TypeError,
        r"__init__\(\) missing 1 required positional argument: 'w'",
    ),
    misuse(
        "module/unknown-keyword",
        lambda: Point(jnp.ones(3), colour=1),
        TypeError,
        r"unexpected keyword argument 'colour'",
    ),
    misuse(
        "module/hash-with-arrays",
        lambda: hash(POINT),
        TypeError,
        r"Point is not hashable.*JAX arrays.*filter_jit",
    ),
    misuse(
        "module/jax-jit-of-a-model",
        lambda: jax.jit(POINT)(1.0),
        TypeError,
        r"Point is not hashable.*jax\.jit\(model\)",
    ),
    misuse(
        "field/converter-not-callable",
        lambda: ec.field(converter=3),
        TypeError,
        r"field\(converter=\.\.\.\) must be callable; got 3",
    ),
    misuse(
        "field/static-not-bool",
        lambda: ec.field(static="yes"),
        TypeError,
        r"field\(static=\.\.\.\) must be a bool; got 'yes'",
    ),
    misuse(
        "partial/func-not-callable",
        lambda: ec.Partial(3, 1),
        TypeError,
        r"Partial\(func, \.\.\.\): func must be callable; got 3",
    ),
    misuse(
        "module_update_wrapper/not-a-module",
        lambda: ec.module_update_wrapper(len, len),
        TypeError,
        r"module_update_wrapper\(wrapper=\.\.\.\) must be a Module",
    ),
    misuse(
        "enumeration/member-not-str",
        enumeration_member_not_str,
        TypeError,
        r"Colour\.red: Enumeration members are declared as NAME = 'description'.*got int",
    ),
    misuse(
        "enumeration/unknown-member",
        lambda: Colour.green,  # pyright: ignore[reportAttributeAccessIssue]
        AttributeError,
        r"Colour has no member 'green'; members: \['red', 'blue'\]",
    ),
    misuse(
        "enumeration/compare-other-enumeration",
        lambda: Colour.red == Shape.square,
        ValueError,
        r"same type: a member of Colour was compared with a member of Shape",
    ),
    misuse(
        "enumeration/where-foreign-member",
        lambda: Colour.where(True, Colour.red, Shape.square),
        ValueError,
        r"Colour\.where\(\.\.\.\) must be members of .*Colour: `b` is .*Shape<Square>",
    ),
    misuse(
        "enumeration/where-float-pred",
        lambda: Colour.where(jnp.ones(2), Colour.red, Colour.blue),
        ValueError,
        r"scalar boolean predicate: Colour\.where's `pred` must be .*float32",
    ),
]

# ----------------------------------------------------------------------------- Filters

FILTER_CASES = [
    misuse(
        "filter/spec-is-a-string",
        lambda: ec.filter([1, 2], "yes"),
        TypeError,
        r"filter_spec leaves must be bools or callables `leaf -> bool`; got str",
    ),
    misuse(
        "filter/spec-wrong-length",
        lambda: ec.filter([1, 2], [True]),
        ValueError,
        r"filter_spec must be a pytree prefix of the pytree.*\[\*\].*\[\*, \*\]",
    ),
    misuse(
        "filter/spec-wrong-keys",
        lambda: ec.filter({"a": 1}, {"b": True}),
        ValueError,
        r"filter_spec must be a pytree prefix.*'b'.*'a'",
    ),
    misuse(
        "filter/callable-returns-array",
        lambda: ec.filter([jnp.ones(2)], lambda x: x),
        TypeError,
        r"filter_spec: the callable .* must return a bool for each leaf.*"
        r"shape \(2,\)",
    ),
    misuse(
        "filter/is_leaf-not-callable",
        lambda: ec.filter([1], True, is_leaf=3),
        TypeError,
        r"filter\(is_leaf=\.\.\.\) must be None or a callable; got 3",
    ),
    misuse(
        "partition/spec-is-an-int",
        lambda: ec.partition((1, 2), 3),
        TypeError,
        r"filter_spec leaves must be bools or callables.*got int",
    ),
    misuse(
        "partition/is_leaf-not-callable",
        lambda: ec.partition([1], True, is_leaf="x"),
        TypeError,
        r"partition\(is_leaf=\.\.\.\) must be None or a callable",
    ),
    misuse(
        "combine/nothing", lambda: ec.combine(), TypeError, r"combine\(\) needs at least one pytree"
    ),
    misuse(
        "combine/different-lengths",
        lambda: ec.combine([1, None], [None, 2, 3]),
        ValueError,
        r"combine\(\) needs pytrees of the same structure.*\[\*, \*, \*\]",
    ),
    misuse(
        "combine/dict-and-list",
        lambda: ec.combine({"a": 1}, [1]),
        ValueError,
        r"combine\(\) needs pytrees of the same structure",
    ),
    misuse(
        "combine/is_leaf-not-callable",
        lambda: ec.combine([1], is_leaf=3),
        TypeError,
        r"combine\(is_leaf=\.\.\.\) must be None or a callable",
    ),
]

CASES = MODULE_CASES + FILTER_CASES


@pytest.mark.parametrize("fn, exception, regex", CASES)
def test_misuse(fn: Any, exception: type[BaseException], regex: str) -> None:
    check_misuse(fn, exception, regex)


def test_valid_edge_inputs_are_still_accepted() -> None:
    # The checks above must not reject what is legitimate.
    tree = [jnp.ones(2), 1]
    assert ec.filter(tree, lambda x: np.bool_(ec.is_array(x)))[1] is None
    assert ec.filter(tree, lambda x: jnp.asarray(ec.is_array(x)))[1] is None
    assert Colour.where(np.bool_(True), Colour.red, Colour.blue) == Colour.red
    assert Colour.where(jnp.array(False), Colour.red, Colour.blue) == Colour.blue
