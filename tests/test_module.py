import abc
import dataclasses
import functools
import warnings
from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import pytest

import ecliptic as ec


class Affine(ec.Module):
    weight: jax.Array
    bias: jax.Array
    activation: Callable = ec.field(static=True, default=jax.nn.relu)

    def __call__(self, x):
        return self.activation(self.weight @ x + self.bias)

    def double(self, x):
        return 2 * self(x)


def make_affine():
    return Affine(jnp.arange(6.0).reshape(2, 3), jnp.array([1.0, -40.0]))


def test_default_init_positional_and_keyword():
    a = Affine(jnp.ones((2, 3)), bias=jnp.zeros(2))
    assert a.activation is jax.nn.relu
    assert a.bias.shape == (2,)


def test_pytree_structure_keeps_static_in_treedef():
    a = make_affine()
    leaves, treedef = jtu.tree_flatten(a)
    assert len(leaves) == 2
    b = jtu.tree_unflatten(treedef, leaves)
    assert b.activation is jax.nn.relu and type(b) is Affine
    paths = [jtu.keystr(p) for p, _ in jtu.tree_flatten_with_path(a)[0]]
    assert paths == [".weight", ".bias"]


def test_plain_jax_transforms_work_on_array_only_modules():
    a = make_affine()
    x = jnp.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(jax.jit(lambda m, x: m(x))(a, x), a(x))
    grads = jax.grad(lambda m: m(x).sum())(a)
    # relu kills the second unit; d/dW of unit 0 is x
    np.testing.assert_allclose(grads.weight, np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(grads.bias, np.array([1.0, 0.0]))


def test_immutable_after_init():
    a = make_affine()
    with pytest.raises(dataclasses.FrozenInstanceError, match="immutable"):
        a.weight = jnp.zeros((2, 3))
    with pytest.raises(dataclasses.FrozenInstanceError):
        del a.bias


def test_custom_init_and_converter_and_check_init():
    class Scale(ec.Module):
        factor: jax.Array = ec.field(converter=jnp.asarray)
        name: str = ec.field(static=True, default="s")

        def __init__(self, factor):
            self.factor = factor

        def __check_init__(self):
            if jnp.any(self.factor < 0):
                raise ValueError("factor must be non-negative")

    s = Scale(2.0)
    assert isinstance(s.factor, jax.Array) and s.name == "s"
    with pytest.raises(ValueError, match="non-negative"):
        Scale(-1.0)


def test_check_init_runs_for_every_class_in_mro():
    calls = []

    class Parent(ec.Module):
        x: int

        def __check_init__(self):
            calls.append("parent")

    class Child(Parent):
        def __check_init__(self):
            calls.append("child")

    Child(1)
    assert sorted(calls) == ["child", "parent"]


def test_post_init_with_generated_init():
    class WithPost(ec.Module):
        x: float
        y: float = ec.field(init=False)

        def __post_init__(self):
            self.y = 2 * self.x

    assert WithPost(3.0).y == 6.0


def test_unassigned_field_error_names_field():
    class Incomplete(ec.Module):
        a: int
        b: int

        def __init__(self):
            self.a = 1

    with pytest.raises(ValueError, match=r"\['b'\]"):
        Incomplete()


def test_default_filled_with_custom_init():
    class Defaults(ec.Module):
        a: int
        b: int = 5
        c: list = ec.field(default_factory=list)

        def __init__(self):
            self.a = 1

    d = Defaults()
    assert (d.a, d.b, d.c) == (1, 5, [])


def test_undeclared_attribute_rejected():
    class Bad(ec.Module):
        a: int

        def __init__(self):
            self.a = 1
            self.oops = 2

    with pytest.raises(AttributeError, match="oops.*not a declared field"):
        Bad()


@pytest.mark.parametrize("default", [jnp.zeros(3), np.zeros(3)])
def test_array_class_default_rejected(default):
    with pytest.raises(TypeError, match="class-level default"):

        class Bad(ec.Module):
            a: jax.Array = default


def test_abstract_var_and_abstract_method():
    class Base(ec.Module):
        size: ec.AbstractVar[int]
        kind: ec.AbstractClassVar[str]

        @abc.abstractmethod
        def run(self): ...

    class Concrete(Base):
        size: int
        kind: ClassVar[str] = "concrete"  # pyright: ignore[reportIncompatibleVariableOverride]

        def run(self):  # pyright: ignore[reportIncompatibleMethodOverride]
            return self.size

    class MissingVar(Base):
        kind: ClassVar[str] = "x"  # pyright: ignore[reportIncompatibleVariableOverride]

        def run(self):  # pyright: ignore[reportIncompatibleMethodOverride]
            return 0

    class MissingMethod(Base):
        size: int = 1
        kind: ClassVar[str] = "x"  # pyright: ignore[reportIncompatibleVariableOverride]

    assert Concrete(3).run() == 3
    with pytest.raises(TypeError, match="AbstractVar.*size"):
        MissingVar()
    with pytest.raises(TypeError, match="abstract"):
        MissingMethod()  # pyright: ignore[reportAbstractUsage]
    with pytest.raises(TypeError, match="AbstractVar"):
        Base()  # pyright: ignore[reportAbstractUsage]


def test_abstract_var_resolved_by_property():
    class Base(ec.Module):
        n: ec.AbstractVar[int]

    class ByProperty(Base):
        @property
        def n(self):  # pyright: ignore[reportIncompatibleVariableOverride]
            return 4

    assert ByProperty().n == 4


def test_declared_abstract_classes_and_equinox_strict_option():
    class Base(ec.Module, is_abstract=True):
        x: int

        def double(self):
            return 2 * self.x

    class Child(Base):
        pass

    class Legacy(ec.Module, strict=True):  # Equinox's old option: accepted, no effect
        x: int

    class LegacyAbstract(ec.Module, strict=ec.StrictConfig(force_abstract=True)):
        x: int

    class LegacyConcrete(ec.Module, strict=ec.StrictConfig(some_old_option=True)):
        x: int

    assert Child(3).double() == 6  # abstractness is not inherited
    assert Legacy(1).x == LegacyConcrete(1).x == 1
    for abstract in (Base, LegacyAbstract):
        with pytest.raises(TypeError, match=f"Can't instantiate {abstract.__qualname__}.*abstract"):
            abstract(1)
    assert jax.tree.leaves(jax.tree.map(lambda v: v + 1, Child(1))) == [2]
    with pytest.raises(TypeError, match="class Bad: is_abstract must be a bool; got str"):

        class Bad(ec.Module, is_abstract="yes"):  # pyright: ignore[reportArgumentType]
            pass

    with pytest.raises(TypeError, match="class Bad2: strict must be a bool, None or"):

        class Bad2(ec.Module, strict="yes"):  # pyright: ignore[reportArgumentType]
            pass

    with pytest.raises(TypeError, match="force_abstract must be a bool; got int"):
        ec.StrictConfig(force_abstract=1)  # pyright: ignore[reportArgumentType]


def test_unassigned_field_error_is_both_value_and_type_error():
    class Half(ec.Module):
        a: int
        b: int

        def __init__(self):
            self.a = 1

    for kind in (ValueError, TypeError):  # ours, and the type Equinox raises
        with pytest.raises(kind, match=r"did not assign the field\(s\) \['b'\]"):
            Half()


def test_super_init_chain():
    class Parent(ec.Module):
        a: int

        def __init__(self, a):
            self.a = a

    class Child(Parent):
        b: int

        def __init__(self, a, b):
            super().__init__(a)
            self.b = b

    c = Child(1, 2)
    assert (c.a, c.b) == (1, 2)


def test_inherited_generated_init_includes_parent_fields():
    class Parent(ec.Module):
        a: int

    class Child(Parent):
        b: int

    assert Child(1, 2).b == 2


def test_bound_method_is_pytree():
    a = make_affine()
    method = a.double
    assert isinstance(method, ec.BoundMethod) and isinstance(method, ec.Module)
    assert len(jtu.tree_leaves(method)) == 2
    x = jnp.ones(3)
    np.testing.assert_allclose(jax.jit(method)(x), a.double(x))
    np.testing.assert_allclose(ec.filter_jit(a.__call__)(x), a(x))
    # the jitted bound method sees new arrays when passed in as a pytree
    out = jax.jit(lambda m, x: m(x))(method, x)
    np.testing.assert_allclose(out, 2 * a(x))
    assert method.__name__ == "double"
    assert a.double == a.double and hash(a.double) == hash(a.double)


def test_class_access_returns_plain_function():
    assert Affine.double.__name__ == "double"
    a = make_affine()
    np.testing.assert_allclose(Affine.double(a, jnp.ones(3)), a.double(jnp.ones(3)))


def test_partial_is_pytree():
    p = ec.Partial(lambda a, b, c=0: a * b + c, jnp.array(2.0), c=jnp.array(1.0))
    assert len([x for x in jtu.tree_leaves(p) if ec.is_array(x)]) == 2
    assert ec.filter_jit(lambda f, x: f(x))(p, 3.0) == 7.0
    params, static = ec.partition(p, ec.is_array)
    grads = jax.grad(lambda params: ec.combine(params, static)(3.0))(params)
    assert grads.args[0] == 3.0 and grads.keywords["c"] == 1.0
    with pytest.raises(TypeError, match="callable"):
        ec.Partial(3)


def test_module_update_wrapper():
    class Wrapper(ec.Module):
        fn: Callable

        @property
        def __wrapped__(self):
            return self.fn

        def __call__(self, *args):
            return self.fn(*args)

    def target(x):
        """Doubles."""
        return 2 * x

    wrapped = ec.module_update_wrapper(Wrapper(target))
    assert wrapped.__name__ == "target" and wrapped.__doc__ == "Doubles."
    again = jtu.tree_map(lambda x: x, wrapped)
    assert again.__name__ == "target"
    assert wrapped(2) == 4
    with pytest.raises(TypeError, match="Module"):
        ec.module_update_wrapper(target)


@pytest.mark.parametrize(
    "transform", [ec.filter_jit, ec.filter_grad, ec.filter_vmap, ec.filter_value_and_grad]
)
def test_transform_wrappers_keep_metadata_through_jit(transform):
    def scaled(x: jax.Array, k: int = 2) -> jax.Array:
        """Scales."""
        return jnp.sum(k * x)

    seen = {}

    @ec.filter_jit
    def inspect(wrapper):
        seen.update(name=wrapper.__name__, doc=wrapper.__doc__, annotations=wrapper.__annotations__)

    inspect(transform(scaled))  # rebuilt from its leaves inside the trace
    assert seen == {
        "name": "scaled",
        "doc": "Scales.",
        "annotations": {"x": jax.Array, "k": int, "return": jax.Array},
    }
    # Equal wrappers of the same function share a compiled call; the metadata is hashable.
    assert hash(jtu.tree_structure(transform(scaled))) == hash(
        jtu.tree_structure(transform(scaled))
    )


def test_static_field_deprecated_alias():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        class Old(ec.Module):
            a: int = ec.static_field(default=1)

    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    assert jtu.tree_leaves(Old()) == []


def test_equality_and_hash():
    a, b = make_affine(), make_affine()
    assert a == b
    assert a != Affine(jnp.zeros((2, 3)), jnp.zeros(2))

    class Config(ec.Module):
        n: int
        name: str

    assert hash(Config(1, "a")) == hash(Config(1, "a"))
    with pytest.raises(TypeError):
        hash(a)


def test_repr_uses_pretty_printer():
    text = repr(make_affine())
    assert text.startswith("Affine(") and "f32[2,3]" in text


def test_module_in_lax_scan():
    a = make_affine()

    def step(carry, _):
        return carry, carry(jnp.ones(3))

    _, ys = jax.lax.scan(step, a, None, length=3)
    assert ys.shape == (3, 2)


def test_methods_defined_by_functools_partial_not_wrapped():
    class WithPartial(ec.Module):
        x: int
        plus = functools.partial(lambda self, y: self.x + y)

    assert WithPartial(1).x == 1
