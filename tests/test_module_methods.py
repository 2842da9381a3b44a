"""Methods and callables on Modules: what a class' `__dict__` holds, assigning bound
methods or JAX-transformed Modules to fields, arrays in static fields, `Partial[...]`."""

import inspect
import types
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ecliptic as ec


def test_init_subclass_sees_plain_functions():
    seen = {}

    class Registry(ec.Module):
        def __init_subclass__(cls, **kwargs):
            super().__init_subclass__(**kwargs)
            method = cls.__dict__["apply"]
            seen[cls.__name__] = (type(method), method(None, 3))

    class Doubler(Registry):
        def apply(self, x):
            return 2 * x

    assert seen == {"Doubler": (types.FunctionType, 6)}
    # After creation, instance access gives a bound-method pytree and the class-level
    # entry still calls like the function.
    assert isinstance(Doubler().apply, ec.Module)
    assert Doubler().apply(5) == 10
    assert Doubler.__dict__["apply"](None, 4) == 8
    assert Doubler.apply.__name__ == "apply"


def test_init_subclass_replacing_a_method_is_still_bound():
    def logged(fn):
        def wrapper(self, *args):
            return ("logged", fn(self, *args))

        return wrapper

    class Base(ec.Module):
        def __init_subclass__(cls, **kwargs):
            super().__init_subclass__(**kwargs)
            cls.run = logged(cls.__dict__["run"])

    class Job(Base):
        scale: int = 3

        def run(self, x):
            return self.scale * x

    bound = Job().run
    assert isinstance(bound, ec.Module)
    assert bound(2) == ("logged", 6)  # pyright: ignore[reportCallIssue]


def test_assigning_own_method_in_init_is_an_error():
    class Loop(ec.Module):
        fn: Callable

        def __init__(self):
            self.fn = self.step

        def step(self, x):
            return x

    with pytest.raises(ValueError, match="Cannot assign methods in __init__"):
        Loop()

    class Other(ec.Module):
        def step(self, x):
            return x + 1

    class Holder(ec.Module):
        fn: Callable

    assert Holder(Other().step).fn(1) == 2  # another instance's method is fine


def test_jax_transformed_module_in_a_field_warns():
    linear = ec.nn.Linear(2, 2, key=jax.random.key(0))

    class Holder(ec.Module):
        fn: Callable

    for transform in (jax.jit, jax.vmap, jax.grad, jax.hessian, jax.custom_jvp):
        with pytest.warns(UserWarning, match="JAX-transformed callable as an attribute"):
            Holder(transform(linear))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Holder(jax.jit(lambda x: x))
        Holder(ec.filter_jit(linear))
        Holder(jax.nn.relu)


def test_array_in_static_field_warns():
    class Config(ec.Module):
        value: Any = ec.field(static=True)

    for value in ((jnp.ones(2),), {"a": [np.zeros(1)]}, jnp.float32(1)):
        with pytest.warns(UserWarning, match="A JAX array is being set as static"):
            Config(value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for value in (1, "name", (1, 2.0), jax.ShapeDtypeStruct((2,), jnp.float32), None):
            Config(value)


def test_partial_is_subscriptable():
    def annotated(f: "ec.Partial[float]") -> "ec.Partial[float]":
        return f

    alias = ec.Partial[float]
    assert alias.__origin__ is ec.Partial  # pyright: ignore[reportAttributeAccessIssue]
    p = alias(jnp.add, 1.0)
    assert float(p(2.0)) == 3.0
    assert ec.Partial["T"] is not None  # pyright: ignore[reportUndefinedVariable]
    assert annotated(p) is p


def test_function_valued_field_default_is_not_a_method():
    def increment(x):
        return x + 1

    class Generated(ec.Module):
        act: Callable = increment

    class Hand(ec.Module):
        act: Callable = increment
        other: Callable = ec.field(default=increment)

        def __init__(self):
            pass

    for model in (Generated(), Hand()):
        assert model.act is increment
        assert model.act(1) == 2
    assert Hand().other(2) == 3
    assert jax.tree_util.tree_structure(Hand()) == jax.tree_util.tree_structure(Hand())


def test_transformation_wrappers_keep_plain_methods_and_pass_that_on():
    # A wrapper's own methods are not turned into bound-method pytrees: calling it must
    # not build a BoundMethod per call (the dispatch hot path), nor change what it is.
    from ecliptic._module import FunctionWrapper

    def f(x):
        return x

    for wrapper in (
        ec.filter_jit(f),
        ec.filter_vmap(f),
        ec.filter_grad(f),
        ec.filter_checkpoint(f),
    ):
        assert inspect.isfunction(type(wrapper).__dict__["__call__"])

    class Twice(FunctionWrapper):
        def __call__(self, x):
            return 2 * self.fun(x)

    assert inspect.isfunction(Twice.__dict__["__call__"])
    assert Twice(f)(3) == 6

    class Ordinary(ec.Module):
        def method(self):
            return 1

    assert not inspect.isfunction(Ordinary.__dict__["method"])
