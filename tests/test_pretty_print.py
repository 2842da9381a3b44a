"""Tests for tree_pformat / tree_pprint and Module.__repr__."""

import collections
import dataclasses
import functools
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
        (np.int32(3), "np.int32(3)"),  # a NumPy scalar is no array: its repr
        (jnp.array(1.0), "weak_f32[]"),  # a weakly typed Python scalar
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

    @functools.wraps(my_fn)
    def wrapper(x):
        return x

    local = "test_functions.<locals>"
    assert ec.tree_pformat(my_fn) == f"<function {local}.my_fn>"  # qualified names
    assert ec.tree_pformat(wrapper) == f"<wrapped function {local}.my_fn>"
    assert ec.tree_pformat(lambda x: x) == f"<function {local}.<lambda>>"
    assert ec.tree_pformat(jax.nn.relu) == "<function relu>"  # a custom_jvp object
    assert ec.tree_pformat(jnp.tanh) == "<function tanh>"  # a jitted function
    assert ec.tree_pformat(jax.jit(my_fn)) == f"<function {local}.my_fn>"
    assert ec.tree_pformat(print) == "<built-in function print>"
    assert ec.tree_pformat(functools.partial(my_fn, 1)) == f"partial(<function {local}.my_fn>, 1)"
    partial = jax.tree_util.Partial(my_fn, 1)
    assert ec.tree_pformat(partial) == (
        f"Partial(func=<function {local}.my_fn>, args=(1,), keywords={{}})"
    )


def test_types_sets_and_specials():
    tree = [int, type(None), np.ndarray, {1, 2}, set(), frozenset(), ..., typing.Any]
    text = "[int, None, numpy.ndarray, {1, 2}, set(), frozenset(), ..., Any]"
    assert ec.tree_pformat(tree) == text


def test_containers_on_one_line():
    Pair = collections.namedtuple("Pair", "a b")
    tree = [(1,), (), {"k": "v"}, Pair(1, jnp.ones(2)), [None, True]]
    assert ec.tree_pformat(tree) == "[(1,), (), {'k': 'v'}, Pair(a=1, b=f32[2]), [None, True]]"


def test_dataclass():
    @dataclasses.dataclass
    class Config:
        lr: float
        hidden: int = dataclasses.field(repr=False, default=0)

    assert ec.tree_pformat(Config(0.1)) == "test_dataclass.<locals>.Config(lr=0.1)"


def test_module_field_order_static_fields_defaults_and_repr_false():
    layer = make_linear()
    text = "Linear(weight=f32[3,2], bias=f32[3], activation=<function relu>)"
    assert ec.tree_pformat(layer) == text  # size still holds its default: not shown
    assert repr(layer) == text
    assert "secret" not in repr(dataclasses.replace(layer, secret=1))
    assert "bias=None" in repr(make_linear(bias=False))
    resized = dataclasses.replace(layer, size=4)
    assert repr(resized) == text[:-1] + ", size=4)"


def test_wrapping_and_indent():
    model = MLP((make_linear(), make_linear()))
    text = ec.tree_pformat(model, width=64)
    assert text == (
        "MLP(\n"
        "  layers=(\n"
        "    Linear(\n"
        "      weight=f32[3,2], bias=f32[3], activation=<function relu>\n"
        "    ),\n"
        "    Linear(\n"
        "      weight=f32[3,2], bias=f32[3], activation=<function relu>\n"
        "    )\n"
        "  )\n"
        ")"
    )
    wide = ec.tree_pformat(model, width=200)
    assert "\n" not in wide
    four = ec.tree_pformat(model, width=60, indent=4)
    assert "\n    layers=(\n        Linear(\n" in four
    narrow = ec.tree_pformat(make_linear(), width=30)
    assert narrow == (
        "Linear(\n  weight=f32[3,2],\n  bias=f32[3],\n  activation=<function relu>\n)"
    )
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
    tree: list[object] = [1]
    tree.append(tree)
    assert ec.tree_pformat(tree) == "[1, <recursive>]"


def test_repr_during_init_shows_unset_fields():
    class Slow(ec.Module):
        a: int
        b: int

        def __init__(self):
            self.a = 1
            Slow.seen = repr(self)
            self.b = 2

    Slow()
    assert Slow.seen.endswith("Slow(a=1, b=<uninitialised>)")


def test_bad_arguments():
    with pytest.raises(ValueError, match="width"):
        ec.tree_pformat(1, width=0)
    with pytest.raises(ValueError, match="indent"):
        ec.tree_pformat(1, indent=-1)
    with pytest.raises(TypeError, match="truncate_leaf"):
        ec.tree_pformat(1, truncate_leaf=True)  # pyright: ignore[reportArgumentType]


def test_tree_pprint(capsys):
    ec.tree_pprint({"a": jnp.ones(3)}, width=10)
    assert capsys.readouterr().out == "{\n  'a':\n  f32[3]\n}\n"


# -- the same output as Equinox's printer ------------------------------------------------


@dataclasses.dataclass
class _Record:
    x: object
    y: object = 7


class _MultiLine:
    """A leaf whose repr spans several lines."""

    def __init__(self, lines):
        self.lines = lines

    def __repr__(self):
        return "\n".join("m" * (i + 3) for i in range(self.lines))


def _leaves():
    return st.one_of(
        st.integers(-5, 1000),
        st.text("ab", max_size=30),
        st.sampled_from(
            [
                None,
                1.5,
                True,
                jnp.ones((2, 3)),
                jnp.array(1.0),
                np.ones(2),
                np.float32(2),
                jax.ShapeDtypeStruct((3,), jnp.float32),
                int,
                np.ndarray,
                frozenset([1, 2]),
                set(),
            ]
        ),
        st.integers(1, 3).map(_MultiLine),
    )


def _trees():
    def extend(children):
        return st.one_of(
            st.lists(children, max_size=5),
            st.lists(children, max_size=5).map(tuple),
            st.dictionaries(st.text("kq", min_size=1, max_size=8), children, max_size=4),
            st.tuples(children, children).map(lambda ab: _Pair(*ab)),
            st.tuples(children, children).map(lambda ab: _Record(*ab)),
            children.map(_Record),
            st.lists(children, max_size=3).map(lambda xs: functools.partial(print, *xs)),
        )

    return st.recursive(_leaves(), extend, max_leaves=25)


_Pair = collections.namedtuple("_Pair", "a b")


@settings(max_examples=300, deadline=None)
@given(
    tree=_trees(),
    width=st.sampled_from([1, 10, 20, 40, 80, 120]),
    indent=st.integers(0, 4),
    short_arrays=st.booleans(),
    struct_as_array=st.booleans(),
)
def test_layout_matches_equinox(tree, width, indent, short_arrays, struct_as_array):
    eqx = pytest.importorskip("equinox")
    if not hasattr(eqx, "StrictConfig"):  # before 0.13 Equinox had another printer
        pytest.skip("needs Equinox >= 0.13")
    options = dict(
        width=width, indent=indent, short_arrays=short_arrays, struct_as_array=struct_as_array
    )
    assert ec.tree_pformat(tree, **options) == eqx.tree_pformat(tree, **options)
