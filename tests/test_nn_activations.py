"""PReLU: PyTorch goldens (shared and per-channel slopes), finite differences, dtypes,
transformations, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from goldens_norm_attention_rnn import (
    check_golden,
    check_grads_f64,
    golden,
    jcall,
    randn,
    replace,
    roundtrip,
)

from ecliptic.nn import PReLU


@pytest.mark.parametrize("case", ["prelu_a", "prelu_c"])
def test_prelu_matches_torch(case):
    g = golden(case)
    layer = PReLU(num_parameters=g.cfg["num_parameters"])
    # PyTorch's weight is (num_parameters,); ours is () for one shared slope.
    shape = layer.negative_slope.shape
    assert layer.negative_slope.size == g.params["weight"].size
    # prelu_a has inputs exactly 0, where PyTorch's gradient is the slope's.
    check_golden(g, lambda p, i: replace(layer, negative_slope=p["weight"].reshape(shape))(i["x"]))


def test_defaults_and_init_alpha():
    layer = PReLU()
    # one shared slope has shape (), as in Equinox
    assert layer.negative_slope.shape == () and layer.negative_slope.dtype == jnp.float32
    np.testing.assert_array_equal(layer.negative_slope, 0.25)
    slopes = PReLU(0.1, num_parameters=3).negative_slope
    np.testing.assert_array_equal(slopes, np.full(3, 0.1, np.float32))
    per_channel = PReLU(np.array([0.1, 0.2], np.float32), channels_first=True)
    assert per_channel.negative_slope.shape == (2,)
    x = -np.ones((2, 3), np.float32)
    np.testing.assert_allclose(jcall(per_channel, x), [[-0.1] * 3, [-0.2] * 3], rtol=1e-6)
    # Without channels_first (Equinox's default for an array of slopes): NumPy
    # broadcasting, so the slopes run along the last axis.
    last_axis = PReLU(np.array([0.1, 0.2, 0.3], np.float32))
    np.testing.assert_allclose(jcall(last_axis, x), [[-0.1, -0.2, -0.3]] * 2, rtol=1e-6)
    ints = jcall(last_axis, -np.ones((2, 3), np.int32))  # integers take the slope's dtype
    assert ints.dtype == jnp.float32
    np.testing.assert_allclose(jcall(layer, np.array([-2.0, 3.0])), [-0.5, 3.0])


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision(dtype):
    layer = PReLU(dtype=dtype)
    assert layer.negative_slope.dtype == dtype
    x = randn(3, 4).astype(dtype)
    y = jcall(layer, x)
    assert y.dtype == dtype
    # A float32 layer keeps a half-precision input's dtype too.
    assert jcall(PReLU(), x).dtype == dtype


def test_finite_differences_and_transformations():
    x = randn(3, 4)
    x = np.where(np.abs(x) < 0.1, 0.5, x)  # finite differences straddling 0 are meaningless
    with jax.enable_x64(True):
        layer = PReLU(num_parameters=3)
        assert layer.negative_slope.dtype == jnp.float64
        check_grads_f64(
            lambda x, a: replace(layer, negative_slope=a)(x),
            (x.astype(np.float64), np.array([0.1, 0.2, 0.3])),
        )
    roundtrip(PReLU(), (randn(2, 3, 4),))
    roundtrip(PReLU(num_parameters=3), (randn(2, 3, 4),))


def test_errors():
    with pytest.raises(ValueError, match=r"3 per-channel slopes.*\(3, \*spatial\)"):
        PReLU(num_parameters=3)(np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match="num_parameters must be >= 1"):
        PReLU(num_parameters=0)
    with pytest.raises(ValueError, match="scalar or a vector"):
        PReLU(np.ones((2, 2)))
