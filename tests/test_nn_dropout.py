"""Dropout: identity cases, inverted-dropout statistics, the inference/deterministic flags,
dtypes, transformations, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from goldens_norm_attention_rnn import jcall, randn, roundtrip

import ecliptic as ec
from ecliptic.nn import Dropout


def test_identity_cases_need_no_key():
    x = randn(4, 5)
    np.testing.assert_array_equal(Dropout(0.0)(x), x)
    np.testing.assert_array_equal(Dropout(0.5, inference=True)(x), x)
    np.testing.assert_array_equal(Dropout(0.5, deterministic=True)(x), x)
    np.testing.assert_array_equal(Dropout(0.5)(x, inference=True), x)
    np.testing.assert_array_equal(Dropout(0.5)(x, deterministic=True), x)
    assert not np.any(np.asarray(Dropout(1.0)(x)))


def test_flags_and_aliases():
    assert Dropout().p == 0.5 and Dropout().inference is False
    layer = Dropout(0.3, deterministic=True)
    assert layer.inference is True and layer.deterministic is True
    # Call-time flags override the field, under either name.
    x = np.ones(1000, np.float32)
    key = jax.random.key(0)
    dropped = jcall(layer, x, key=key, inference=False)
    assert np.any(np.asarray(dropped) == 0)
    np.testing.assert_array_equal(jcall(layer, x, key=key, deterministic=False), dropped)
    np.testing.assert_array_equal(jcall(Dropout(0.3), x, key=key), dropped)
    with pytest.raises(ValueError, match="disagree"):
        layer(x, inference=True, deterministic=False)
    # `inference` is a static bool field: not a leaf, so jit/grad never see it.
    # Equinox's leaf layout: p and inference are Python-scalar leaves
    assert jax.tree_util.tree_leaves(layer) == [0.3, True]


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_statistics_match_inverted_dropout(p):
    n = 200_000
    x = np.ones(n, np.float32)
    y = np.asarray(jcall(Dropout(p), x, key=jax.random.key(42)))
    zero_fraction = np.mean(y == 0)
    assert abs(zero_fraction - p) < 5 * np.sqrt(p * (1 - p) / n)
    # Survivors are scaled by exactly 1 / (1 - p), so the mean is preserved.
    np.testing.assert_allclose(y[y != 0], 1 / (1 - p), rtol=1e-6)
    assert abs(y.mean() - 1) < 5 * np.sqrt(p / (1 - p) / n)


def test_keys_and_gradient():
    x = randn(1000)
    layer = Dropout(0.5)
    a = jcall(layer, x, key=jax.random.key(1))
    b = jcall(layer, x, key=jax.random.key(1))
    c = jcall(layer, x, key=jax.random.key(2))
    np.testing.assert_array_equal(a, b)
    assert np.any(np.asarray(a) != np.asarray(c))
    grad = jax.jit(jax.grad(lambda x: jnp.sum(layer(x, key=jax.random.key(1)))))(x)
    kept = np.asarray(a) != 0
    np.testing.assert_allclose(np.asarray(grad), np.where(kept, 2.0, 0.0))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision(dtype):
    x = np.ones(64, dtype)
    y = jcall(Dropout(0.5), x, key=jax.random.key(0))
    assert y.dtype == dtype
    assert set(np.unique(np.asarray(y, np.float32))) <= {0.0, 2.0}


def test_jit_vmap_grad_roundtrip():
    x = randn(3, 8)
    keys = jax.random.split(jax.random.key(0), 3)
    roundtrip(Dropout(0.5), (x, keys), call=lambda m, x, k: m(x, key=k))
    out = jax.vmap(lambda x, k: Dropout(0.5)(x, key=k))(x, keys)
    # Different keys per example: different masks.
    assert not np.array_equal(np.asarray(out[0]) == 0, np.asarray(out[1]) == 0)
    y = ec.filter_jit(lambda m, x, k: m(x, key=k))(Dropout(0.5), x, keys[0])
    np.testing.assert_array_equal(y, jcall(Dropout(0.5), x, key=keys[0]))


def test_errors():
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
            Dropout(bad)
    with pytest.raises(TypeError, match="p must be a float"):
        Dropout("0.5")
    for kind in (ValueError, RuntimeError):  # ours, and the type Equinox raises
        with pytest.raises(kind, match=r"pass key=.*inference=True"):
            Dropout(0.5)(np.ones(3, np.float32))
    with pytest.raises(TypeError, match="floating-point"):
        Dropout(0.5)(np.arange(3), key=jax.random.key(0))


def test_inference_mode_and_sequential(getkey):
    # inference_mode flips the static `inference` field, also nested inside attention.
    model = (Dropout(0.5), ec.nn.MultiheadAttention(2, 4, dropout_p=0.5, key=getkey()))
    frozen = ec.nn.inference_mode(model)
    assert frozen[0].inference is True and frozen[1].dropout.inference is True
    assert ec.nn.inference_mode(frozen, value=False)[1].dropout.inference is False
    x = randn(3, 4)
    np.testing.assert_array_equal(frozen[0](x), x)
    # In a Sequential, which hands every layer its own key.
    seq = ec.nn.Sequential([ec.nn.LayerNorm(4), Dropout(0.5), ec.nn.PReLU()])
    y = np.asarray(jcall(seq, x, key=jax.random.key(0)))
    assert y.shape == (3, 4) and np.any(y == 0)
    np.testing.assert_allclose(
        jcall(ec.nn.inference_mode(seq), x), jcall(ec.nn.PReLU(), jcall(ec.nn.LayerNorm(4), x))
    )
