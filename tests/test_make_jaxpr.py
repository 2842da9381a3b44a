"""filter_make_jaxpr."""

import jax
import jax.numpy as jnp
import numpy as np

import ecliptic as ec


def f(x, spec, n, *, table):
    return (x * n + table[: x.shape[0]], "label", {"k": spec.astype(jnp.int32)}, n)


def test_return_convention_and_evaluation():
    x = jnp.array([1.0, 2.0])
    spec = jax.ShapeDtypeStruct((3,), jnp.float32)
    table = jnp.array([10.0, 20.0, 30.0])
    closed, out_struct, out_static = ec.filter_make_jaxpr(f)(x, spec, 2, table=table)
    assert out_struct[0] == jax.ShapeDtypeStruct((2,), jnp.float32)
    assert out_struct[2]["k"] == jax.ShapeDtypeStruct((3,), jnp.int32)
    assert out_struct[1] is None and out_struct[3] is None
    assert out_static == (None, "label", {"k": None}, 2)
    # inputs: the array leaves, in order (x, spec, table); n is static
    assert len(closed.jaxpr.invars) == 3
    y, k = jax.core.eval_jaxpr(closed.jaxpr, closed.consts, x, jnp.array([1.5, 2.5, 3.5]), table)  # pyright: ignore[reportAttributeAccessIssue]
    np.testing.assert_allclose(y, x * 2 + table[:2])
    np.testing.assert_array_equal(k, [1, 2, 3])


def test_closed_over_arrays_are_constants():
    w = np.arange(6.0).reshape(2, 3)
    closed, out_struct, _ = ec.filter_make_jaxpr(lambda x: w @ x)(jnp.ones(3))
    assert len(closed.jaxpr.invars) == 1
    (out,) = jax.core.eval_jaxpr(closed.jaxpr, closed.consts, jnp.ones(3))  # pyright: ignore[reportAttributeAccessIssue]
    np.testing.assert_allclose(out, w.sum(1))
    assert out_struct.shape == (2,)
