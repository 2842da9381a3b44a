"""LayerNorm, GroupNorm, RMSNorm: PyTorch goldens, finite differences, dtypes, errors."""

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

import ecliptic as ec
from ecliptic.nn import GroupNorm, LayerNorm, RMSNorm


@pytest.mark.parametrize("case", ["ln_a", "ln_b", "ln_c", "ln_d"])
def test_layer_norm_matches_torch(case):
    g = golden(case)
    layer = LayerNorm(
        tuple(g.cfg["shape"]), use_weight=g.cfg["use_weight"], use_bias=g.cfg["use_bias"]
    )
    assert (layer.weight is not None) == g.cfg["use_weight"]
    assert (layer.bias is not None) == g.cfg["use_bias"]
    check_golden(g, lambda p, i: replace(layer, weight=p.get("weight"), bias=p.get("bias"))(i["x"]))


@pytest.mark.parametrize("case", ["gn_a", "gn_b", "gn_c"])
def test_group_norm_matches_torch(case):
    g = golden(case)
    layer = GroupNorm(g.cfg["groups"], g.cfg["channels"], channelwise_affine=g.cfg["affine"])
    check_golden(g, lambda p, i: replace(layer, weight=p.get("weight"), bias=p.get("bias"))(i["x"]))


@pytest.mark.parametrize("case", ["rms_a", "rms_b"])
def test_rms_norm_matches_torch(case):
    g = golden(case)
    layer = RMSNorm(tuple(g.cfg["shape"]), use_weight=g.cfg["use_weight"], use_bias=False)
    assert layer.bias is None
    check_golden(g, lambda p, i: replace(layer, weight=p.get("weight"))(i["x"]))


def test_rms_norm_bias_is_added_after_the_scale():
    x = randn(3, 6)
    weight = randn(6)
    bias = randn(6)
    layer = replace(RMSNorm(6), weight=weight, bias=bias)
    no_bias = replace(RMSNorm(6, use_bias=False), weight=weight)
    np.testing.assert_allclose(jcall(layer, x), jcall(no_bias, x) + bias, rtol=1e-6, atol=1e-6)
    rms = np.sqrt(np.mean(np.asarray(x) ** 2, axis=-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(jcall(no_bias, x), x / rms * weight, rtol=1e-5, atol=1e-6)


def test_defaults_and_parameter_shapes():
    ln = LayerNorm((4, 5))
    assert ln.weight.shape == ln.bias.shape == (4, 5) and ln.weight.dtype == jnp.float32
    assert np.all(np.asarray(ln.weight) == 1) and not np.any(np.asarray(ln.bias))
    assert LayerNorm(3, elementwise_affine=False).weight is None
    assert LayerNorm(3, elementwise_affine=False).bias is None
    gn = GroupNorm(2, 6)
    assert gn.weight.shape == gn.bias.shape == (6,)
    assert GroupNorm(2, channelwise_affine=False).weight is None
    rms = RMSNorm(7)
    assert rms.weight.shape == rms.bias.shape == (7,)
    assert np.all(np.asarray(rms.weight) == 1) and not np.any(np.asarray(rms.bias))


def test_layer_norm_shape_none_normalises_everything():
    x = randn(3, 4)
    y = jcall(LayerNorm(None), x)
    assert LayerNorm(None).weight is None
    np.testing.assert_allclose(y, (x - x.mean()) / np.sqrt(x.var() + 1e-5), rtol=1e-5, atol=1e-6)


def test_layer_norm_leading_dims_and_state():
    x = randn(2, 3, 6)
    layer = LayerNorm(6)
    np.testing.assert_allclose(jcall(layer, x)[1], jcall(layer, x[1]), rtol=1e-6)
    state = np.arange(3)
    out, same = jcall(layer, x, state)
    np.testing.assert_array_equal(same, state)
    np.testing.assert_array_equal(out, jcall(layer, x))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_in_same_dtype_out(dtype):
    x32 = randn(4, 6, 5, scale=200.0)
    x = x32.astype(dtype)
    for layer, ref in [
        (LayerNorm(5, dtype=dtype), LayerNorm(5)),
        (GroupNorm(2, 4, dtype=dtype), GroupNorm(2, 4)),
        (RMSNorm(5, dtype=dtype), RMSNorm(5)),
    ]:
        assert layer.weight.dtype == dtype
        y = jcall(layer, x)
        assert y.dtype == dtype
        # Squares of 200 overflow float16: the statistics must be taken in float32.
        assert bool(jnp.all(jnp.isfinite(y)))
        np.testing.assert_allclose(np.asarray(y, np.float32), jcall(ref, x32), rtol=0.05, atol=0.05)


def test_finite_differences_float64():
    x, w, b, c = randn(3, 4, 5), randn(4, 5), randn(4, 5), randn(3)
    with jax.enable_x64(True):
        x, w, b, c = (a.astype(np.float64) for a in (x, w, b, c))
        ln = LayerNorm((4, 5))
        gn = GroupNorm(3, 3)
        rms = RMSNorm((4, 5))
        assert ln.weight.dtype == jnp.float64
        check_grads_f64(lambda x, w, b: replace(ln, weight=w, bias=b)(x), (x, w, b))
        check_grads_f64(lambda x, w, b: replace(rms, weight=w, bias=b)(x), (x, w, b))
        check_grads_f64(lambda x, w, b: replace(gn, weight=w, bias=b)(x), (x, c, c + 1))


def test_jit_vmap_grad_roundtrip():
    x = randn(2, 6, 4, 3)
    roundtrip(LayerNorm((4, 3)), (x,))
    roundtrip(GroupNorm(3, 6), (x,))
    roundtrip(RMSNorm(3), (x,))
    # And through the filtered transformations.
    y = ec.filter_jit(lambda m, x: m(x))(LayerNorm((4, 3)), x)
    np.testing.assert_allclose(y, jcall(LayerNorm((4, 3)), x), rtol=1e-6)


def test_errors():
    with pytest.raises(ValueError, match="trailing dimensions must be \\(6,\\)"):
        LayerNorm(6)(jnp.ones((3, 5)))
    with pytest.raises(ValueError, match="trailing"):
        RMSNorm((2, 3))(jnp.ones(3))
    with pytest.raises(TypeError, match="shape must be an int"):
        LayerNorm("6")
    with pytest.raises(ValueError, match=">= 1"):
        RMSNorm((3, 0))
    with pytest.raises(ValueError, match="multiple of groups"):
        GroupNorm(4, 6)
    with pytest.raises(ValueError, match="needs channels"):
        GroupNorm(2)
    with pytest.raises(ValueError, match="expects 6 channels"):
        GroupNorm(2, 6)(jnp.ones((4, 3)))
    with pytest.raises(ValueError, match="cannot be split"):
        GroupNorm(4, channelwise_affine=False)(jnp.ones((6, 2)))
    with pytest.raises(TypeError, match="floating-point"):
        LayerNorm(3)(jnp.arange(3))
