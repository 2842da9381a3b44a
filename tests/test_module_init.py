"""Building a Module: when converters run, which `__init__` a class gets, its signature
and annotations, `__post_init__`, `__new__`, and fields overridden at class level."""

import dataclasses
import inspect
import typing
import warnings
from typing import Any, Generic, TypeVar

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import pytest

import ecliptic as ec

_T = TypeVar("_T")


def test_converter_runs_after_init_and_post_init():
    seen = []

    class Hand(ec.Module):
        value: jax.Array = ec.field(converter=jnp.asarray)

        def __init__(self, value):
            self.value = value
            seen.append(type(self.value))

    class Generated(ec.Module):
        value: jax.Array = ec.field(converter=jnp.asarray)

        def __post_init__(self):
            seen.append(type(self.value))

    class Inherited(Generated):
        pass

    for cls in (Hand, Generated, Inherited):
        out = cls(2.5).value
        assert isinstance(out, jax.Array)
        np.testing.assert_array_equal(np.asarray(out), np.float32(2.5))
    assert seen == [float, float, float]


def test_converter_runs_once_and_on_defaults():
    calls = []

    def double(x: float) -> float:
        calls.append(x)
        return 2 * x

    class Scaled(ec.Module):
        a: float = ec.field(converter=double)
        b: float = ec.field(converter=double, default=4.0)

        def __post_init__(self):
            pass

    s = Scaled(1.5)
    assert (s.a, s.b) == (3.0, 8.0)
    assert calls == [1.5, 4.0]


def test_a_plain_base_class_init_is_used_and_converted():
    class PlainInit:
        def __init__(self, x):
            self.x = x

    class Converting(ec.Module):
        x: Any = ec.field(converter=np.asarray)

    class UsesPlain(PlainInit, Converting):
        pass

    class UsesGenerated(Converting, PlainInit):
        pass

    for cls in (UsesPlain, UsesGenerated):
        out = cls([1, 2]).x
        assert isinstance(out, np.ndarray)
        np.testing.assert_array_equal(out, [1, 2])
    assert "__init__" not in UsesPlain.__dict__
    assert "__init__" in UsesGenerated.__dict__


def test_post_init_with_a_handwritten_init_warns():
    class Checked(ec.Module):
        def __post_init__(self):
            raise AssertionError("never runs with a hand-written __init__")

    with pytest.warns(UserWarning, match=r"Hand` has both an `__init__` method and a"):

        class Hand(Checked):
            def __init__(self):
                pass

    with pytest.warns(UserWarning, match="HandChild"):

        class HandChild(Hand):
            pass

    HandChild()
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        class Generated(Checked):
            x: int = 0


def test_generated_init_inherits_the_docstring():
    class Base(ec.Module):
        pass

    Base.__init__.__doc__ = "Build it."

    class Child(Base):
        size: int = 1

    assert Child.__init__.__doc__ == "Build it."


def test_unassigned_field_error_names_it():
    class Late(ec.Module):
        x: int = ec.field(init=False)
        flag: dataclasses.InitVar[bool]

        def __post_init__(self, flag):
            if flag:
                self.x = 1

    assert Late(flag=True).x == 1
    with pytest.raises(TypeError, match="Field 'x' was not initialized"):
        Late(flag=False)


def test_field_overridden_at_class_level_is_not_a_leaf():
    class Base(ec.Module):
        size: int = ec.field(init=False)
        names: list = ec.field(static=True)  # pyright: ignore

        @property
        def names(self):  # noqa: F811
            raise NotImplementedError

    class ByProperty(Base):
        names = ["a"]  # pyright: ignore

        @property
        def size(self):  # pyright: ignore[reportIncompatibleVariableOverride]
            return 3

        def __init__(self):
            pass

    m = ByProperty()
    leaves, treedef = jtu.tree_flatten(m)
    assert leaves == []
    back = jtu.tree_unflatten(treedef, leaves)
    assert (back.size, back.names) == (3, ["a"])
    assert jax.jit(lambda m: jnp.float32(len(m.names) + m.size))(m) == 4.0


def test_overriding_class_attribute_with_an_instance_value_round_trips():
    class Base(ec.Module):
        x: int = 1

    class Overridden(Base):
        x = 5

    class HandInit(Overridden):
        def __init__(self, value=None):
            if value is not None:
                self.x = value

    assert jtu.tree_leaves(Overridden()) == [1]  # the generated __init__ sets the default
    assert jtu.tree_leaves(HandInit()) == [] and HandInit().x == 5
    with_value = HandInit(7)
    leaves, treedef = jtu.tree_flatten_with_path(with_value)
    assert [(jtu.keystr(path), leaf) for path, leaf in leaves] == [(".x", 7)]
    assert jtu.tree_unflatten(jtu.tree_structure(with_value), [9]).x == 9


def test_signature_is_the_init_signature():
    class Point(ec.Module):
        x: float
        y: float = 0.0

        def __call__(self, scale: int):
            return scale

    class Hand(ec.Module):
        def __init__(self, a: int, *, b: str = "b"):
            pass

    @dataclasses.dataclass
    class Reference:
        x: float
        y: float = 0.0

    assert inspect.signature(Point) == inspect.signature(Reference)
    assert str(inspect.signature(Hand)) == "(a: int, *, b: str = 'b')"
    assert str(inspect.signature(Point(1.0))) == "(scale: int)"


def test_generated_init_annotates_converter_input_type():
    def untyped(x):
        return x

    def from_int(x: int, base=10) -> str:
        return str(x)

    class Text(ec.Module):
        a: str = ec.field(converter=untyped)
        b: str = ec.field(converter=from_int)
        c: str = "plain"

    annotations = Text.__init__.__annotations__
    assert annotations["a"] is Any
    assert annotations["b"] is int
    assert annotations["c"] is str
    assert inspect.signature(Text).parameters["b"].annotation is int


def test_converter_annotation_accepted_by_a_runtime_type_checker():
    door = pytest.importorskip("beartype.door")

    def as_array(x: float) -> jax.Array:
        return jnp.asarray(x)

    class Checked(ec.Module):
        value: jax.Array = ec.field(converter=as_array)

    hint = typing.get_type_hints(Checked.__init__)["value"]
    assert door.is_bearable(1.5, hint)


def test_own_new_receives_the_arguments():
    received = []

    class Recorded(ec.Module):
        a: int
        b: int = 0

        def __new__(cls, *args, **kwargs):
            received.append((args, kwargs))
            return super().__new__(cls)

    r = Recorded(1, b=2)
    assert received == [((1,), {"b": 2})]
    assert (r.a, r.b) == (1, 2)


def test_generic_module_records_orig_class():
    class Box(ec.Module, Generic[_T]):
        item: Any = None

    box = Box[int]()
    assert box.__orig_class__ == Box[int]  # pyright: ignore[reportAttributeAccessIssue]
    assert jtu.tree_leaves(box) == []
    with pytest.raises(dataclasses.FrozenInstanceError):
        box.item = 1
