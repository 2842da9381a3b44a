"""Linear and Identity: PyTorch parity, "scalar" sizes, init, dtypes, transforms, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from goldens_linear_conv_pool import (
    abstract,
    case,
    check_against_golden,
    check_init_uniform,
    materialise,
    set_params,
)
from jax.test_util import check_grads

import ecliptic.nn as enn


@pytest.mark.parametrize("name", ["linear", "linear_nobias"])
def test_linear_matches_torch(name, getkey):
    cfg, arrays = case(name)
    key = getkey()
    layer = abstract(lambda: enn.Linear(cfg["in"], cfg["out"], cfg["use_bias"], key=key))
    if cfg["use_bias"]:
        fn = lambda w, b, x: set_params(layer, weight=w, bias=b)(x)
        check_against_golden(fn, arrays, ("weight", "bias", "x"))
    else:
        assert layer.bias is None
        fn = lambda w, x: set_params(layer, weight=w)(x)
        check_against_golden(fn, arrays, ("weight", "x"))


def test_linear_shapes_and_fields(getkey):
    layer = enn.Linear(4, 3, key=getkey())
    assert layer.weight.shape == (3, 4) and layer.bias.shape == (3,)
    assert layer.in_features == 4 and layer.out_features == 3 and layer.use_bias
    assert layer.weight.dtype == jnp.float32
    # Static config stays out of the leaves: only the two parameters are leaves.
    assert len(jax.tree_util.tree_leaves(layer)) == 2


@pytest.mark.parametrize(
    "n_in, n_out, x_shape, y_shape",
    [("scalar", 3, (), (3,)), (3, "scalar", (3,), ()), ("scalar", "scalar", (), ())],
)
def test_linear_scalar(n_in, n_out, x_shape, y_shape, getkey):
    layer = enn.Linear(n_in, n_out, key=getkey())
    x = jnp.ones(x_shape)
    assert layer(x).shape == y_shape
    w = layer.weight.shape
    assert w == (1 if n_out == "scalar" else n_out, 1 if n_in == "scalar" else n_in)
    expected = (layer.weight @ x.reshape(-1) + layer.bias).reshape(y_shape)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-6)


def test_linear_init_matches_torch_distribution():
    # Weight and bias ~ U(+-1/sqrt(in_features)), PyTorch's default.
    layer = enn.Linear(7, 3000, key=jax.random.key(0))
    bound = 1 / np.sqrt(7)
    check_init_uniform(layer.weight, bound)
    check_init_uniform(layer.bias, bound)
    # The same key gives the same parameters, another key others.
    same = enn.Linear(7, 3000, key=jax.random.key(0))
    other = enn.Linear(7, 3000, key=jax.random.key(1))
    np.testing.assert_array_equal(layer.weight, same.weight)
    assert not np.allclose(layer.weight, other.weight)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_linear_dtypes(dtype, getkey):
    key = getkey()  # outside the traced constructor: the fixture must not see tracers
    layer = materialise(lambda: enn.Linear(3, 2, dtype=dtype, key=key))
    assert layer.weight.dtype == dtype and layer.bias.dtype == dtype
    y = jax.jit(lambda m, x: m(x))(layer, jnp.ones(3, dtype))
    assert y.dtype == dtype
    g = jax.grad(lambda m: m(jnp.ones(3, dtype)).astype(jnp.float32).sum())(layer)
    assert g.weight.dtype == dtype


def test_linear_jit_vmap_grad(getkey):
    key = getkey()
    layer = materialise(lambda: enn.Linear(3, 2, key=key))
    xs = jax.random.normal(getkey(), (5, 3))
    ys = jax.jit(jax.vmap(layer))(xs)
    np.testing.assert_allclose(ys, xs @ layer.weight.T + layer.bias, rtol=1e-5, atol=1e-6)
    grads = jax.grad(lambda m: jax.vmap(m)(xs).sum())(layer)
    np.testing.assert_allclose(grads.weight, np.broadcast_to(xs.sum(0), (2, 3)), rtol=1e-5)
    np.testing.assert_allclose(grads.bias, [5.0, 5.0])


def test_linear_finite_differences():
    with jax.enable_x64(True):
        layer = materialise(lambda: enn.Linear(3, 2, dtype=jnp.float64, key=jax.random.key(0)))
        x = jnp.array([0.3, -1.2, 0.5])
        f = jax.jit(lambda w, b, x: set_params(layer, weight=w, bias=b)(x))
        check_grads(f, (layer.weight, layer.bias, x), order=1, modes=("rev",))


def test_linear_default_dtype_follows_x64():
    with jax.enable_x64(True):
        assert enn.Linear(2, 2, key=jax.random.key(0)).weight.dtype == jnp.float64


def test_linear_errors(getkey):
    layer = enn.Linear(3, 2, key=getkey())
    with pytest.raises(ValueError, match=r"rank 1.*\(4, 3\).*vmap"):
        layer(jnp.ones((4, 3)))
    with pytest.raises(ValueError, match=r"shape \(3,\); got shape \(4,\)"):
        layer(jnp.ones(4))
    with pytest.raises(ValueError, match="rank 0"):
        enn.Linear("scalar", 2, key=getkey())(jnp.ones(1))
    with pytest.raises(ValueError, match="in_features must be >= 0"):
        enn.Linear(-1, 2, key=getkey())
    with pytest.raises(TypeError, match="out_features"):
        enn.Linear(2, "vector", key=getkey())
    with pytest.raises(TypeError, match="PRNG key"):
        enn.Linear(2, 2, key=None)
    with pytest.raises(TypeError, match="floating"):
        enn.Linear(2, 2, dtype=jnp.int32, key=getkey())


def test_linear_zero_features(getkey):
    # As in Equinox: empty inputs or outputs are allowed (an empty sum is zero).
    empty_in = enn.Linear(0, 3, key=getkey())
    np.testing.assert_array_equal(empty_in(jnp.ones(0)), empty_in.bias)
    assert enn.Linear(4, 0, key=getkey())(jnp.ones(4)).shape == (0,)
    complex_layer = enn.Linear(2, "scalar", dtype=jnp.complex64, key=getkey())
    assert complex_layer.weight.dtype == jnp.complex64
    assert float(jnp.abs(complex_layer.weight.imag).max()) > 0


def test_identity(getkey):
    layer = enn.Identity(3, "anything", use_bias=False, key=getkey())
    x = jnp.arange(3.0)
    assert layer(x, key=getkey()) is x
    assert jax.tree_util.tree_leaves(layer) == []
    np.testing.assert_array_equal(jax.jit(jax.vmap(layer))(jnp.ones((2, 3))), jnp.ones((2, 3)))
    assert jax.grad(lambda x: layer(x).sum())(x).tolist() == [1.0, 1.0, 1.0]
