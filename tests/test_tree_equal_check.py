"""Tests for tree_equal, tree_check and tree_flatten_one_level."""

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import pytest
from hypothesis import given
from tree_helpers import MLP, Empty, Linear, make_mlp, pytrees

import ecliptic as ec

# ================================================================ tree_equal


def _jax_bool(out, expected):
    """Equinox's answer type when JAX array values were compared: a JAX bool scalar."""
    return (
        isinstance(out, jax.Array)
        and out.dtype == jnp.bool_
        and out.shape == ()
        and bool(out) is expected
    )


def test_tree_equal_basics():
    a = {"x": jnp.arange(3.0), "y": [1, "s", None]}
    b = {"x": jnp.arange(3.0), "y": [1, "s", None]}
    assert _jax_bool(ec.tree_equal(a, b), True)
    assert _jax_bool(ec.tree_equal(a, b, a), True)
    assert ec.tree_equal(a) is True
    assert _jax_bool(ec.tree_equal(a, {"x": jnp.arange(3.0) + 1, "y": [1, "s", None]}), False)
    # a non-array leaf that differs answers a plain False, wherever it is
    assert ec.tree_equal(a, {"x": jnp.arange(3.0), "y": [1, "t", None]}) is False
    assert ec.tree_equal([jnp.ones(2), 1], [jnp.zeros(2), 2]) is False


def test_tree_equal_numpy_only_answers_python_bools():
    x = np.array([1.0, 2.0], np.float32)
    assert ec.tree_equal(x, x.copy()) is True
    assert ec.tree_equal(x, x + 1) is False
    assert ec.tree_equal(x, x + 1e-6, atol=1e-3) is True
    assert ec.tree_equal(np.float32(1), np.array(1, np.float32)) is True


def test_tree_equal_structure_shape_dtype():
    assert ec.tree_equal([1, 2], (1, 2)) is False
    assert ec.tree_equal([1, 2], [1, 2, 3]) is False
    assert ec.tree_equal(jnp.ones(2), jnp.ones(3)) is False
    assert ec.tree_equal(jnp.ones(2), jnp.ones((2, 1))) is False
    assert ec.tree_equal(jnp.ones(2), jnp.ones(2, jnp.int32)) is False
    assert ec.tree_equal(jnp.ones(2), 1.0) is False
    assert ec.tree_equal(None, None) is True


def test_tree_equal_numpy_and_jax():
    assert _jax_bool(ec.tree_equal(np.ones(2, np.float32), jnp.ones(2)), True)
    assert ec.tree_equal(np.ones(2, np.float32), jnp.ones(2), typematch=True) is False
    assert ec.tree_equal(np.ones(2), jnp.ones(2)) is False  # float64 vs float32


def test_tree_equal_typematch_on_python_leaves():
    assert ec.tree_equal(1, 1.0) is True
    assert ec.tree_equal(1, 1.0, typematch=True) is False
    assert ec.tree_equal(True, 1, typematch=True) is False


def test_tree_equal_tolerances():
    a, b = jnp.array([1.0, 2.0]), jnp.array([1.0, 2.001])
    assert _jax_bool(ec.tree_equal(a, b), False)
    assert _jax_bool(ec.tree_equal(a, b, rtol=1e-2), True)
    assert _jax_bool(ec.tree_equal(a, b, atol=1e-2), True)
    assert _jax_bool(ec.tree_equal(a, b, atol=1e-4), False)
    bools = jnp.array([True, False])
    assert _jax_bool(ec.tree_equal(bools, bools, atol=1.0), True)
    with pytest.raises(ValueError, match="rtol"):
        ec.tree_equal(a, b, rtol="small")  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="atol"):
        ec.tree_equal(a, b, atol="big")  # pyright: ignore[reportArgumentType]


def test_tree_equal_nan_is_unequal_like_eq():
    nan = jnp.array([jnp.nan])
    assert _jax_bool(ec.tree_equal(nan, nan), False)
    assert ec.tree_equal(np.array([np.nan]), np.array([np.nan])) is False


def test_tree_equal_prng_keys():
    k = jax.random.key(0)
    assert _jax_bool(ec.tree_equal(k, jax.random.key(0)), True)
    assert _jax_bool(ec.tree_equal(k, jax.random.key(1)), False)


def test_tree_equal_modules_static_fields_are_structure():
    a = Linear(jnp.ones((1, 2)), None, "a")
    assert _jax_bool(ec.tree_equal(a, Linear(jnp.ones((1, 2)), None, "a")), True)
    assert ec.tree_equal(a, Linear(jnp.ones((1, 2)), None, "b")) is False
    assert a == Linear(jnp.ones((1, 2)), None, "a")
    assert a != Linear(jnp.zeros((1, 2)), None, "a")
    assert _jax_bool(ec.tree_equal(make_mlp(), make_mlp()), True)


def test_tree_equal_needs_a_pytree():
    with pytest.raises(TypeError, match="at least one"):
        ec.tree_equal()


def test_tree_equal_inside_jit_returns_traced_bool():
    seen = []

    @jax.jit
    def f(x, y):
        out = ec.tree_equal({"a": x, "s": 1}, {"a": y, "s": 1})
        seen.append(out)
        return out

    assert bool(f(jnp.ones(3), jnp.ones(3)))
    assert not bool(f(jnp.ones(3), jnp.zeros(3)))
    assert isinstance(seen[0], jax.core.Tracer)  # pyright: ignore[reportAttributeAccessIssue]
    assert seen[0].dtype == jnp.bool_ and seen[0].shape == ()


def test_tree_equal_inside_jit_is_static_when_it_can_be():
    const = jnp.ones(2)

    @jax.jit
    def f(x):
        # Structure/shape mismatches and concrete values are decided at trace time.
        assert ec.tree_equal(x, jnp.ones(4)) is False
        assert ec.tree_equal([x, 1], [x, 2]) is False
        assert ec.tree_equal(np.ones(2), np.ones(2)) is True  # NumPy only: decided now
        # A JAX array, even a closed-over concrete one, answers a traced bool (as Equinox).
        assert isinstance(ec.tree_equal(const, np.ones(2, np.float32)), jax.core.Tracer)  # pyright: ignore[reportAttributeAccessIssue]
        return ec.tree_equal(x, x + 0, rtol=1e-6)

    assert bool(f(jnp.ones(3)))


# ================================================================ tree_check


def test_tree_check_accepts_well_formed_trees():
    x = jnp.ones(2)
    ec.tree_check(make_mlp())
    ec.tree_check([x, x, 1, 1])  # repeated leaves are fine
    ec.tree_check([None, None, (), (), Empty(), Empty()])
    empty = Empty()
    ec.tree_check([empty, empty])  # nothing to untie


def test_tree_check_rejects_duplicate_modules_naming_the_paths():
    layer = Linear(jnp.ones((1, 1)), None)
    with pytest.raises(ValueError, match=r"Linear.*\.layers\[0\].*\.layers\[1\]"):
        ec.tree_check(MLP((layer, layer)))


def test_tree_check_rejects_duplicate_containers():
    inner = [1, 2]
    with pytest.raises(ValueError, match="twice"):
        ec.tree_check({"a": inner, "b": inner})


def test_tree_check_rejects_cycles():
    tree: list[object] = [1]
    tree.append(tree)
    with pytest.raises(ValueError, match="cycle"):
        ec.tree_check(tree)


# ================================================================ tree_flatten_one_level


def test_tree_flatten_one_level():
    children, treedef = ec.tree_flatten_one_level([1, [2, 3], {"a": 4}])
    assert children == [1, [2, 3], {"a": 4}]
    assert jtu.tree_unflatten(treedef, ["x", "y", "z"]) == ["x", "y", "z"]
    assert ec.tree_flatten_one_level(5) == ([5], jtu.tree_structure(5))
    assert ec.tree_flatten_one_level(None) == ([], jtu.tree_structure(None))
    model = make_mlp()
    children, treedef = ec.tree_flatten_one_level(model)
    assert len(children) == 1 and children[0] is model.layers
    assert jtu.tree_unflatten(treedef, children) == model


def test_tree_flatten_one_level_rejects_self_containment():
    tree: list[object] = [1]
    tree.append(tree)
    with pytest.raises(ValueError, match="contains itself"):
        ec.tree_flatten_one_level(tree)


# ================================================================ property tests


@given(pytrees)
def test_tree_equal_is_reflexive(tree):
    # The leaves here are Python values and NumPy arrays: plain Python bools throughout.
    assert ec.tree_equal(tree, tree) is True
    copy = jtu.tree_map(lambda x: x.copy() if isinstance(x, np.ndarray) else x, tree)
    assert ec.tree_equal(tree, copy, typematch=True) is True
    jax_copy = jtu.tree_map(lambda x: jnp.asarray(x) if isinstance(x, np.ndarray) else x, tree)
    has_arrays = any(isinstance(x, np.ndarray) for x in jtu.tree_leaves(tree))
    out = ec.tree_equal(tree, jax_copy)
    assert _jax_bool(out, True) if has_arrays else out is True


@pytest.mark.parametrize(
    "rtol, atol", [(-1.0, 0.0), (-1.0, 0.1), (0.0, -1.0), (-0.5, 1.0), (True, 0)]
)
def test_tree_equal_accepts_any_real_tolerance_as_allclose_does(rtol, atol):
    import numpy as np

    pairs = [
        (np.ones(2), np.ones(2)),
        (np.ones(2), np.ones(2) * 1.05),
        (np.ones(2), np.ones(2) * 1.5),
    ]
    for a, b in pairs:
        expected = bool(np.allclose(a, b, rtol=rtol, atol=atol))
        assert ec.tree_equal(a, b, rtol=rtol, atol=atol) is expected
        assert bool(ec.tree_equal(jnp.asarray(a), jnp.asarray(b), rtol=rtol, atol=atol)) is expected
        traced = jax.jit(lambda x, y: ec.tree_equal(x, y, rtol=rtol, atol=atol))(a, b)
        assert bool(traced) is expected
