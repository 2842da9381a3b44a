"""filter_closure_convert."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ecliptic as ec


def test_same_results_and_non_array_outputs():
    table = jnp.array([1.0, 2.0, 3.0])

    def f(x, mode, *, scale):
        return {"y": jnp.sin(x) * table * scale, "mode": mode, "n": 3}

    x = jnp.array([0.1, 0.2, 0.3])
    converted = ec.filter_closure_convert(f, x, "fast", scale=2.0)
    out = converted(jnp.array([1.0, 2.0, 3.0]), "fast", scale=2.0)
    ref = f(jnp.array([1.0, 2.0, 3.0]), "fast", scale=2.0)
    np.testing.assert_allclose(out["y"], ref["y"], rtol=1e-6)
    assert out["mode"] == "fast" and out["n"] == 3
    assert ec.filter_closure_convert(converted, x) is converted  # already converted
    structure = jax.ShapeDtypeStruct((3,), jnp.float32)
    assert converted.in_struct == ((structure, "fast"), {"scale": 2.0})
    assert converted.out_struct == {"y": structure, "mode": "fast", "n": 3}


def test_closed_over_tracer_becomes_a_leaf_and_is_differentiable():
    x = jnp.array([0.5, -1.0])

    def outer(a):
        fn = ec.filter_closure_convert(lambda x: x * a**2, x)
        leaves = jax.tree_util.tree_leaves(fn)
        assert any(isinstance(leaf, jax.core.Tracer) for leaf in leaves)  # pyright: ignore[reportAttributeAccessIssue]
        return jnp.sum(fn(x))

    # d/da sum(x * a^2) = 2 a sum(x)
    a = jnp.array(3.0)
    np.testing.assert_allclose(jax.grad(outer)(a), 2 * 3.0 * jnp.sum(x), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(jax.grad(outer))(a), 2 * 3.0 * jnp.sum(x), rtol=1e-6)


def test_converted_function_is_a_pytree_that_crosses_jit():
    w = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    fn = ec.filter_closure_convert(lambda x: w @ x, jnp.ones(2))
    out = ec.filter_jit(lambda f, x: f(x))(fn, jnp.array([1.0, -1.0]))
    np.testing.assert_allclose(out, w @ jnp.array([1.0, -1.0]))
    # its arrays are leaves, so vmapping over a stack of them works
    stacked = jax.tree_util.tree_map(lambda c: jnp.stack([c, 2 * c]), fn)
    outs = jax.vmap(lambda f: f(jnp.ones(2)))(stacked)
    np.testing.assert_allclose(outs, jnp.stack([w @ jnp.ones(2), 2 * w @ jnp.ones(2)]))


def test_errors_for_different_inputs():
    fn = ec.filter_closure_convert(lambda x, n: x * n, jnp.ones(2), 2)
    with pytest.raises(ValueError, match=r"args\[0\] is a f32\[3\] array.*f32\[2\]"):
        fn(jnp.ones(3), 2)
    with pytest.raises(ValueError, match=r"args\[0\] is a i32\[2\] array"):
        fn(jnp.ones(2, jnp.int32), 2)
    with pytest.raises(ValueError, match=r"args\[1\] is int 3.*int 2.*baked in"):
        fn(jnp.ones(2), 3)
    with pytest.raises(ValueError, match="same pytree structure"):
        fn(jnp.ones(2))
    with pytest.raises(TypeError, match="callable"):
        ec.filter_closure_convert(3, jnp.ones(2))  # pyright: ignore[reportArgumentType]


def test_a_function_closing_over_no_array_is_called_directly():
    calls = []

    def f(x, n):
        calls.append(n)
        return x * n

    fn = ec.filter_closure_convert(f, jnp.ones(2), 3)
    assert type(fn).__name__ == "_TrivialClosureConvert"
    assert calls == [3]  # traced once, for the structures
    assert fn.out_struct == jax.ShapeDtypeStruct((2,), jnp.float32)
    np.testing.assert_allclose(fn(jnp.array([1.0, 2.0]), 3), [3.0, 6.0])
    assert calls == [3, 3]  # then the original function runs
    with pytest.raises(ValueError, match=r"args\[0\] is a f32\[3\] array"):
        fn(jnp.ones(3), 3)
