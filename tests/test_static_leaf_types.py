"""Static (non-array) leaves are part of a filtered transformation's cache key. Python
says ``1 == 1.0 == True`` (with equal hashes), but the three trace differently (dtype,
`isinstance`), so a function traced for one must never be reused for another: keys
compare the leaves' types as well as their values, at any depth."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ecliptic as ec

VALUES = (1, 1.0, True, 1, True, 1.0)  # each value again after the others


def describe(n):
    return jnp.asarray(n), type(n).__name__


def reference(n):
    """What plain jax.jit with a static argument computes."""
    out = jax.jit(jnp.asarray, static_argnums=0)(n)
    return out.dtype, type(n).__name__


def check(f):
    for n in VALUES:
        for _ in range(2):  # the second call may take filter_jit's identity fast path
            out, name = f(n)
            assert (out.dtype, name) == reference(n)
            assert out == n


def test_filter_jit_tells_int_float_and_bool_apart():
    check(ec.filter_jit(describe))


def test_inside_tuples_lists_dicts_and_modules():
    class Holder(ec.Module):
        value: object
        array: jax.Array

    for wrap in (lambda n: (n,), lambda n: [n], lambda n: {"n": n}, lambda n: ((n, 2),)):
        f = ec.filter_jit(lambda box: describe(jax.tree.leaves(box)[0]))
        check(lambda n, f=f, wrap=wrap: f(wrap(n)))
    g = ec.filter_jit(lambda h: describe(h.value))
    check(lambda n: g(Holder(n, jnp.zeros(2))))
    h = ec.filter_jit(lambda *, n: describe(n))
    check(lambda n: h(n=n))


def test_inside_static_leaves_that_are_containers():
    f = ec.filter_jit(lambda s: describe(next(iter(s))))
    check(lambda n: f(frozenset({n})))


def test_donating_jit_eval_shape_and_checkpoint():
    donating = ec.filter_jit(lambda n, x: (x, describe(n)), donate="all")
    check(lambda n: donating(n, jnp.zeros(2))[1])
    shape = ec.filter_eval_shape(lambda n: jnp.asarray(n), 1.0)
    assert shape.dtype == jnp.float32 and ec.filter_eval_shape(jnp.asarray, 1).dtype == jnp.int32
    assert ec.filter_eval_shape(jnp.asarray, True).dtype == jnp.bool_
    ckpt = ec.filter_checkpoint(lambda n, x: (x, type(n).__name__))
    for n in VALUES:
        assert ckpt(n, jnp.zeros(()))[1] == type(n).__name__


def test_filter_pmap():
    f = ec.filter_pmap(lambda n, x: (x, jnp.zeros_like(x, dtype=jnp.asarray(n).dtype)))
    for n in VALUES:
        _, out = f(n, jnp.zeros((1,)))
        assert out.dtype == reference(n)[0]


@pytest.mark.parametrize("a", [np.float32(1.0), np.int32(1)])
def test_numpy_and_jax_arrays_still_share_one_trace(a):
    traces = []

    @ec.filter_jit
    def f(x):
        traces.append(1)
        return x + 1

    f(np.asarray(a)), f(jnp.asarray(a))
    assert len(traces) == 1
