"""AbstractVar / AbstractClassVar: the `__abstractvars__` / `__abstractclassvars__` sets a
class carries, how subclasses resolve them, and the errors for misuse."""

from typing import ClassVar

import pytest

import ecliptic as ec


class Shape(ec.Module):
    sides: ec.AbstractVar[int]
    label: ec.AbstractClassVar[str]


def test_declared_names_are_recorded_per_kind():
    assert Shape.__abstractvars__ == frozenset({"sides"})
    assert Shape.__abstractclassvars__ == frozenset({"label"})
    assert ec.Module.__abstractvars__ == frozenset()
    assert ec.Module.__abstractclassvars__ == frozenset()


def test_instantiating_names_what_is_left():
    with pytest.raises(TypeError, match="abstract attributes and abstract class attributes"):
        Shape()

    class OnlyLabel(Shape):
        label = "polygon"

    assert OnlyLabel.__abstractvars__ == frozenset({"sides"})
    assert OnlyLabel.__abstractclassvars__ == frozenset()
    with pytest.raises(TypeError, match=r"AbstractVar\(s\) \['sides'\].*abstract attributes"):
        OnlyLabel()


def test_field_property_or_class_attribute_resolves_an_abstract_var():
    class AsField(Shape):
        sides: int
        label: ClassVar[str] = "field"  # pyright: ignore[reportIncompatibleVariableOverride]

    class AsProperty(Shape):
        label = "property"

        @property
        def sides(self):  # pyright: ignore[reportIncompatibleVariableOverride]
            return 4

    class AsClassAttribute(Shape):
        sides = 3
        label = "class attribute"

    for cls in (AsField, AsProperty, AsClassAttribute):
        assert cls.__abstractvars__ == frozenset()
        assert cls.__abstractclassvars__ == frozenset()
    assert AsField(5).sides == 5
    assert AsProperty().sides == 4
    assert AsClassAttribute().sides == 3


def test_an_instance_field_resolves_an_abstract_class_var():
    class Named(Shape):
        sides = 0
        label: str

    assert Named.__abstractclassvars__ == frozenset()
    assert Named("circle").label == "circle"


def test_redeclaring_can_strengthen_but_not_weaken():
    class Stronger(Shape):
        sides: ec.AbstractClassVar[int]

    assert Stronger.__abstractvars__ == frozenset()
    assert Stronger.__abstractclassvars__ == frozenset({"sides", "label"})

    class NotWeaker(Shape):
        label: ec.AbstractVar[str]

    assert NotWeaker.__abstractvars__ == frozenset({"sides"})
    assert NotWeaker.__abstractclassvars__ == frozenset({"label"})


def test_a_base_elsewhere_in_the_mro_resolves_it():
    class HasSides(ec.Module):
        sides: int

    class Square(HasSides, Shape):
        label = "square"

    assert Square.__abstractvars__ == frozenset()
    assert Square(4).sides == 4


def test_misuse_errors():
    with pytest.raises(TypeError, match="unsubscripted"):

        class Bare(ec.Module):
            x: ec.AbstractVar  # pyright: ignore[reportMissingTypeArgument]

    with pytest.raises(TypeError, match="cannot have value"):

        class WithValue(ec.Module):
            x: ec.AbstractClassVar[int] = 1  # pyright: ignore

    with pytest.raises(NotImplementedError, match="stringified abstract annotations"):

        class Stringified(ec.Module):
            x: "ec.AbstractVar[int]"
