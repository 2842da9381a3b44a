"""Tests for the leaf predicates and filter / partition / combine."""

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ecliptic as ec


class Affine(ec.Module):
    weight: jax.Array
    bias: object
    activation: object
    name: str = ec.field(static=True, default="affine")


def make_affine(bias=True):
    return Affine(jnp.ones((2, 3)), jnp.zeros(2) if bias else None, jax.nn.relu)


class HasJaxArray:
    def __init__(self, value):
        self.value = value

    def __jax_array__(self):
        return jnp.asarray(self.value)


# ---------------------------------------------------------------- predicates


@pytest.mark.parametrize(
    "x, array, array_like, inexact, inexact_like",
    [
        (jnp.ones(2), True, True, True, True),
        (jnp.ones(2, jnp.int32), True, True, False, False),
        (np.ones(2), True, True, True, True),
        (np.float32(1.0), True, True, True, True),
        (np.int8(1), True, True, False, False),
        (jnp.ones(2, jnp.complex64), True, True, True, True),
        # ml_dtypes floats: NumPy's own issubdtype does not call these inexact.
        (jnp.ones(2, jnp.bfloat16), True, True, True, True),
        (jnp.ones(2, jnp.float8_e4m3fn), True, True, True, True),
        (np.ones(2, jnp.bfloat16), True, True, True, True),
        (jnp.ones(2, bool), True, True, False, False),
        (1.0, False, True, False, True),
        (1, False, True, False, False),
        (True, False, True, False, False),
        (1j, False, True, False, True),
        ("a", False, False, False, False),
        (None, False, False, False, False),
        (jax.nn.relu, False, False, False, False),
        (HasJaxArray(1.0), False, True, False, True),
        (HasJaxArray(1), False, True, False, False),
    ],
)
def test_predicates(x, array, array_like, inexact, inexact_like):
    assert ec.is_array(x) is array
    assert ec.is_array_like(x) is array_like
    assert ec.is_inexact_array(x) is inexact
    assert ec.is_inexact_array_like(x) is inexact_like


def test_predicates_see_tracers():
    def f(x):
        assert ec.is_array(x) and ec.is_inexact_array(x)
        return x

    jax.jit(f)(jnp.ones(2))
    jax.grad(lambda x: f(x).sum())(jnp.ones(2))


def test_prng_keys_are_arrays_but_not_inexact():
    key = jax.random.key(0)
    assert ec.is_array(key)
    assert not ec.is_inexact_array(key)


# ---------------------------------------------------------------- filter


def test_filter_with_bool():
    tree = [1, jnp.ones(2), "a"]
    assert ec.filter(tree, True) == tree
    assert ec.filter(tree, False) == [None, None, None]
    assert ec.filter(tree, True, inverse=True) == [None, None, None]


def test_filter_with_callable():
    tree = {"a": 1, "b": jnp.ones(2), "c": np.ones(2, np.int32)}
    out = ec.filter(tree, ec.is_inexact_array)
    assert out["a"] is None and out["c"] is None and out["b"] is tree["b"]
    out = ec.filter(tree, ec.is_inexact_array, inverse=True)
    assert out["a"] == 1 and out["b"] is None and out["c"] is tree["c"]


def test_filter_replace():
    tree = (1, jnp.ones(2))
    out = ec.filter(tree, ec.is_array, replace=0)
    assert out[0] == 0 and out[1] is tree[1]


def test_filter_on_module_keeps_structure_and_static_fields():
    model = make_affine()
    params = ec.filter(model, ec.is_inexact_array)
    assert type(params) is Affine
    assert params.name == "affine"
    assert params.activation is None
    assert params.weight is model.weight


def test_filter_with_pytree_prefix_spec():
    tree = {"a": [1, 2], "b": (jnp.ones(1), 3)}
    spec = {"a": True, "b": (ec.is_array, False)}
    out = ec.filter(tree, spec)
    assert out == {"a": [1, 2], "b": (tree["b"][0], None)}


def test_filter_with_module_spec():
    model = make_affine()
    spec = jtu.tree_map(lambda _: False, model)
    spec = ec.tree_at(lambda m: m.bias, spec, True)
    out = ec.filter(model, spec)
    assert out.weight is None and out.bias is model.bias and out.activation is None


def test_filter_is_leaf():
    tree = [(1, 2), (3, 4)]
    out = ec.filter(
        tree, lambda x: x == (1, 2), is_leaf=lambda x: isinstance(x, tuple) and len(x) == 2
    )
    assert out == [(1, 2), None]


def test_filter_none_leaves_with_is_leaf():
    tree = [None, 1]
    out = ec.filter(tree, lambda x: x is None, replace="gone", is_leaf=lambda x: x is None)
    assert out == [None, "gone"]


def test_filter_passes_none_subtrees_through():
    model = make_affine(bias=False)
    out = ec.filter(model, ec.is_array)
    assert out.bias is None


def test_filter_spec_not_a_prefix_is_a_clear_error():
    with pytest.raises(ValueError, match="prefix"):
        ec.filter({"a": 1, "b": 2}, {"a": True})
    with pytest.raises(ValueError, match="prefix"):
        ec.filter([1, 2], [True, False, True])


def test_filter_spec_bad_leaf_is_a_clear_error():
    for kind in (TypeError, ValueError):  # ours, and the type Equinox raises
        with pytest.raises(kind, match="bools or callables"):
            ec.filter([1, 2], [True, "yes"])


def test_filter_callable_errors_propagate():
    def bad(x):
        raise ValueError("boom from the predicate")

    with pytest.raises(ValueError, match="boom from the predicate"):
        ec.filter([1, 2], bad)
    with pytest.raises(ValueError, match="boom from the predicate"):
        ec.filter([1, 2], [True, bad])


# ---------------------------------------------------------------- partition / combine


def test_partition_and_combine():
    model = make_affine()
    params, static = ec.partition(model, ec.is_inexact_array)
    assert params.activation is None and static.weight is None and static.bias is None
    assert static.activation is jax.nn.relu
    back = ec.combine(params, static)
    assert type(back) is Affine
    assert back.weight is model.weight and back.activation is jax.nn.relu
    assert back.name == "affine"


def test_partition_with_prefix_spec_and_replace():
    tree = {"a": 1, "b": [2, 3]}
    left, right = ec.partition(tree, {"a": False, "b": True}, replace=0)
    assert left == {"a": 0, "b": [2, 3]}
    assert right == {"a": 1, "b": [0, 0]}


def test_partition_is_leaf():
    tree = [(1, 2), 3]
    left, right = ec.partition(tree, lambda x: isinstance(x, tuple), is_leaf=lambda x: x == (1, 2))
    assert left == [(1, 2), None]
    assert right == [None, 3]
    assert ec.combine(left, right, is_leaf=lambda x: x == (1, 2)) == tree


def test_combine_first_non_none_wins():
    assert ec.combine([None, 1, None], [2, 3, None], [4, 5, 6]) == [2, 1, 6]
    assert ec.combine([None]) == [None]


def test_combine_accepts_none_for_a_subtree():
    assert ec.combine({"a": None, "b": 1}, {"a": [1, 2], "b": None}) == {"a": [1, 2], "b": 1}


def test_combine_mismatched_structures_is_a_clear_error():
    with pytest.raises(ValueError, match="same structure"):
        ec.combine([1, None], [1, None, 3])
    with pytest.raises(ValueError, match="same structure"):
        ec.combine({"a": 1}, {"b": 1})


def test_combine_needs_a_pytree():
    with pytest.raises(TypeError, match="at least one"):
        ec.combine()


def test_partition_under_jit_round_trip():
    model = make_affine()
    params, static = ec.partition(model, ec.is_array)

    @jax.jit
    def double(p):
        return jtu.tree_map(lambda x: 2 * x, p)

    out = ec.combine(double(params), static)
    np.testing.assert_allclose(out.weight, 2 * model.weight)
    assert out.activation is jax.nn.relu


# ---------------------------------------------------------------- property tests

_leaves = st.one_of(
    st.integers(-5, 5),
    st.floats(-1e3, 1e3, allow_nan=False),
    st.text(max_size=3),
    st.booleans(),
    st.builds(
        lambda n, f: np.arange(n, dtype=np.float32 if f else np.int32),
        st.integers(0, 3),
        st.booleans(),
    ),
)
pytrees = st.recursive(
    _leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(st.sampled_from("abcd"), children, max_size=3),
    ),
    max_leaves=12,
)
predicates = st.sampled_from(
    [
        ec.is_array,
        ec.is_inexact_array,
        ec.is_array_like,
        lambda x: isinstance(x, str),
        lambda x: isinstance(x, bool),
    ]
)


@given(pytrees, predicates)
def test_partition_combine_round_trip(tree, predicate):
    left, right = ec.partition(tree, predicate)
    back = ec.combine(left, right)
    assert ec.tree_equal(back, tree, typematch=True)
    assert jtu.tree_structure(back) == jtu.tree_structure(tree)
    # The two halves are disjoint and cover every leaf.
    for a, b in zip(
        jtu.tree_leaves(left, is_leaf=lambda x: x is None),
        jtu.tree_leaves(right, is_leaf=lambda x: x is None),
    ):
        assert (a is None) != (b is None)


@given(pytrees, predicates)
def test_filter_and_inverse_filter_partition_the_leaves(tree, predicate):
    kept = ec.filter(tree, predicate)
    dropped = ec.filter(tree, predicate, inverse=True)
    assert ec.tree_equal(ec.combine(kept, dropped), tree)
    assert all(predicate(x) for x in jtu.tree_leaves(kept))
    assert not any(predicate(x) for x in jtu.tree_leaves(dropped))
