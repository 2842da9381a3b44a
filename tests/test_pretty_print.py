"""Tests for tree_pformat / tree_pprint and Module.__repr__."""

import collections
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ecliptic as ec


class Linear(ec.Module):
    weight: jax.Array
    bias: object
    activation: object
    size: int = ec.field(static=True, default=3)
    secret: int = ec.field(static=True, default=0, repr=False)


class MLP(ec.Module):
    layers: tuple


def make_linear(bias=True):
    return Linear(jnp.ones((3, 2)), jnp.zeros(3) if bias else None, jax.nn.relu)


@pytest.mark.parametrize(
    "x, expected",
    [
        (jnp.ones((3, 4)), "f32[3,4]"),
        (jnp.ones(()), "f32[]"),
        (jnp.ones(2, jnp.float16), "f16[2]"),
        (jnp.ones(2, jnp.bfloat16), "bf16[2]"),
        (jnp.ones(2, jnp.int32), "i32[2]"),
        (jnp.ones(2, jnp.uint8), "u8[2]"),
        (jnp.ones(2, bool), "bool[2]"),
        (jnp.ones(2, jnp.complex64), "c64[2]"),
        (np.ones((2, 1), np.float64), "f64[2,1](numpy)"),
        (np.int32(3), "i32[](numpy)"),
        (jax.ShapeDtypeStruct((5,), jnp.float32), "ShapeDtypeStruct(shape=(5,), dtype=float32)"),
    ],
)
def test_leaves(x, expected):
    assert ec.tree_pformat(x) == expected


def test_struct_as_array():
    struct = jax.ShapeDtypeStruct((2, 3), jnp.int8)
    assert ec.tree_pformat(struct, struct_as_array=True) == "i8[2,3]"


def test_functions():
    def my_fn(x):
        return x

    assert ec.tree_pformat(my_fn) == "<function my_fn>"
    assert ec.tree_pformat(lambda x: x) == "<function <lambda>>"
    assert ec.tree_pformat(jax.nn.relu) == "<function relu>"  # a custom_jvp object
    assert ec.tree_pformat(jnp.tanh) == "<function tanh>"  # a jitted function
    assert ec.tree_pformat(jax.jit(my_fn)) == "<function my_fn>"
    assert ec.tree_pformat(print) == "<function print>"
    assert ec.tree_pformat(functools.partial(my_fn, 1)) == "partial(<function my_fn>, 1)"


def test_containers_on_one_line():
    Pair = collections.namedtuple("Pair", "a b")
    tree = [(1,), (), {"k": "v"}, Pair(1, jnp.ones(2)), [None, True]]
    assert (
        ec.tree_pformat(tree)
        == "[(1,), (), {'k': 'v'}, Pair(a=1, b=f32[2]), [None, True]]"
    )


def test_dataclass():
    @dataclasses.dataclass
    class Config:
        lr: float
        hidden: int = dataclasses.field(repr=False, default=0)

    assert ec.tree_pformat(Config(0.1)) == "Config(lr=0.1)"


def test_module_field_order_static_fields_and_repr_false():
    layer = make_linear()
    text = "Linear(weight=f32[3,2], bias=f32[3], activation=<function relu>, size=3)"
    assert ec.tree_pformat(layer) == text
    assert repr(layer) == text
    assert "secret" not in repr(layer)
    assert "bias=None" in repr(make_linear(bias=False))


def test_wrapping_and_indent():
    model = MLP((make_linear(), make_linear()))
    text = ec.tree_pformat(model, width=60)
    assert text == (
        "MLP(\n"
        "  layers=(\n"
        "    Linear(\n"
        "      weight=f32[3,2],\n"
        "      bias=f32[3],\n"
        "      activation=<function relu>,\n"
        "      size=3,\n"
        "    ),\n"
        "    Linear(\n"
        "      weight=f32[3,2],\n"
        "      bias=f32[3],\n"
        "      activation=<function relu>,\n"
        "      size=3,\n"
        "    ),\n"
        "  ),\n"
        ")"
    )
    wide = ec.tree_pformat(model, width=200)
    assert "\n" not in wide
    four = ec.tree_pformat(model, width=60, indent=4)
    assert "\n    layers=(\n        Linear(\n" in four
    for width in (40, 60, 80):
        lines = ec.tree_pformat(model, width=width).splitlines()
        assert all(len(line) <= width for line in lines)


def test_short_arrays_false_prints_values():
    text = ec.tree_pformat({"w": jnp.array([1.0, 2.0])}, short_arrays=False)
    assert "1." in text and "2." in text and "f32[" not in text


def test_truncate_leaf():
    model = MLP((make_linear(), 5))
    text = ec.tree_pformat(model, truncate_leaf=lambda x: isinstance(x, Linear))
    assert text == "MLP(layers=(Linear(...), 5))"


def test_tracers_print_like_arrays():
    seen = []

    @jax.jit
    def f(x):
        seen.append(ec.tree_pformat({"x": x}))
        return x

    f(jnp.ones((2, 2)))
    assert seen == ["{'x': f32[2,2]}"]


def test_recursive_containers_do_not_loop():
    tree = [1]
    tree.append(tree)
    assert ec.tree_pformat(tree) == "[1, <recursive list>]"


def test_repr_during_init_shows_unset_fields():
    class Slow(ec.Module):
        a: int
        b: int

        def __init__(self):
            self.a = 1
            Slow.seen = repr(self)
            self.b = 2

    Slow()
    assert Slow.seen == "Slow(a=1, b=<unset>)"


def test_bad_arguments():
    with pytest.raises(ValueError, match="width"):
        ec.tree_pformat(1, width=0)
    with pytest.raises(ValueError, match="indent"):
        ec.tree_pformat(1, indent=-1)
    with pytest.raises(TypeError, match="truncate_leaf"):
        ec.tree_pformat(1, truncate_leaf=True)


def test_tree_pprint(capsys):
    ec.tree_pprint({"a": jnp.ones(3)}, width=10)
    assert capsys.readouterr().out == "{\n  'a': f32[3],\n}\n"
