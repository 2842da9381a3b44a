"""Embedding and RotaryPositionalEmbedding: PyTorch goldens, init statistics, RoPE's
properties, dtypes, transformations, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from goldens_norm_attention_rnn import (
    check_golden,
    check_grads_f64,
    golden,
    init_stat,
    jcall,
    many_inits,
    randn,
    replace,
    roundtrip,
)

from ecliptic.nn import Embedding, RotaryPositionalEmbedding


def test_embedding_matches_torch(getkey):
    g = golden("embedding")
    layer = Embedding(10, 4, key=getkey())
    check_golden(g, lambda p, i: replace(layer, weight=p["weight"])(i["x"]))


def test_embedding_indices(getkey):
    weight = randn(6, 3)
    layer = Embedding(weight=weight)
    assert (layer.num_embeddings, layer.embedding_size) == (6, 3)
    np.testing.assert_array_equal(jcall(layer, 2), weight[2])
    np.testing.assert_array_equal(jcall(layer, np.int32(5)), weight[5])
    idx = np.array([[0, 5], [1, 1]])
    np.testing.assert_array_equal(jcall(layer, idx), weight[idx])
    np.testing.assert_array_equal(jcall(layer, jnp.array(-1)), weight[-1])  # traced: not checked
    with pytest.raises(IndexError, match=r"index 6 is out of range"):
        layer(np.array([0, 6]))
    assert Embedding(6, 3, weight=weight).weight.shape == (6, 3)
    layer16 = Embedding(7, 2, dtype=jnp.bfloat16, key=getkey())
    assert layer16.weight.dtype == jnp.bfloat16
    assert jcall(layer16, np.arange(3)).dtype == jnp.bfloat16


def test_embedding_init_matches_torch():
    weights = many_inits(lambda k: Embedding(20, 10, key=k).weight)
    want = init_stat("embedding.weight")
    assert abs(weights.std() - want.std) < 0.03
    assert abs(weights.mean()) < 0.02
    # N(0, 1): about 68.3% within one standard deviation, 95.4% within two.
    assert abs(np.mean(np.abs(weights) < 1) - 0.6827) < 0.01
    assert abs(np.mean(np.abs(weights) < 2) - 0.9545) < 0.006


def test_embedding_jit_vmap_grad(getkey):
    layer = Embedding(10, 4, key=getkey())
    roundtrip(layer, (np.array([[1, 2], [9, 9], [0, 3]]),))
    grad = jax.jit(jax.grad(lambda m: jnp.sum(m(jnp.array([1, 1, 3])))))(layer)
    counts = np.zeros(10)
    counts[[1, 3]] = [2, 1]
    np.testing.assert_array_equal(grad.weight, np.repeat(counts[:, None], 4, axis=1))


def test_embedding_errors(getkey):
    layer = Embedding(5, 2, key=getkey())
    with pytest.raises(TypeError, match="integer"):
        layer(np.array([1.0, 2.0]))
    with pytest.raises(TypeError, match="integer index"):
        layer(1.0)
    with pytest.raises(TypeError, match="integer"):
        layer(np.array([True, False]))
    with pytest.raises(TypeError, match="PRNG key"):
        Embedding(5, 2)
    with pytest.raises(ValueError, match="num_embeddings and embedding_size"):
        Embedding(5, key=getkey())
    with pytest.raises(ValueError, match="does not match"):
        Embedding(4, 2, weight=np.zeros((5, 2)))
    with pytest.raises(ValueError, match="weight must have shape"):
        Embedding(weight=np.zeros(5))


@pytest.mark.parametrize("case", ["rope_a", "rope_b"])
def test_rope_matches_reference(case):
    g = golden(case)
    rope = RotaryPositionalEmbedding(g.cfg["embedding_size"], theta=g.cfg["theta"])
    check_golden(g, lambda p, i: rope(i["x"]))


def test_rope_properties():
    rope = RotaryPositionalEmbedding(8)
    q, k = randn(6, 8), randn(6, 8)
    rq = np.asarray(jcall(rope, q))
    # Position 0 is not rotated; rotations preserve the norm of every (i, i + d/2) pair.
    np.testing.assert_allclose(rq[0], q[0], rtol=1e-6)
    pair_norm = lambda x: x[:, :4] ** 2 + x[:, 4:] ** 2
    np.testing.assert_allclose(pair_norm(rq), pair_norm(q), rtol=1e-5)
    # Relative positions: <rope(q)_m, rope(k)_n> depends on m - n only.
    same = np.broadcast_to(q[2], (6, 8))
    rs = np.asarray(jcall(rope, same))
    rk_same = np.asarray(jcall(rope, np.broadcast_to(k[1], (6, 8))))
    dots = [rs[m] @ rk_same[m - 1] for m in range(1, 6)]
    np.testing.assert_allclose(dots, dots[0], rtol=1e-4, atol=1e-5)
    # (seq, heads, d): the same rotation for every head.
    heads = randn(6, 3, 8)
    np.testing.assert_allclose(
        jcall(rope, heads), jax.vmap(rope, in_axes=1, out_axes=1)(heads), rtol=1e-6, atol=1e-6
    )


def test_rope_helpers_rebuild_the_rotation():
    x = randn(5, 6)
    cos, sin = RotaryPositionalEmbedding.precompute_freqs_cis(6, 5, 100.0, jnp.float32)
    assert cos.shape == sin.shape == (5, 3) and cos.dtype == jnp.float32
    angles = np.arange(5.0)[:, None] * 100.0 ** (-np.arange(0.0, 6.0, 2.0) / 6.0)  # float64
    np.testing.assert_allclose(cos, np.cos(angles), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(sin, np.sin(angles), rtol=1e-6, atol=1e-7)
    rotated = RotaryPositionalEmbedding.rotate_half(jnp.asarray(x))
    np.testing.assert_array_equal(rotated, np.concatenate([-x[:, 3:], x[:, :3]], axis=1))
    # y = x * cos + rotate_half(x) * sin, with cos/sin repeated over both halves.
    tile = lambda a: np.concatenate([a, a], axis=1)
    expected = x * tile(cos) + np.asarray(rotated) * tile(sin)
    np.testing.assert_allclose(
        jcall(RotaryPositionalEmbedding(6, theta=100.0), x), expected, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_rope_low_precision(dtype):
    x = randn(5, 6)
    rope = RotaryPositionalEmbedding(6)
    y = jcall(rope, x.astype(dtype))
    assert y.dtype == dtype
    np.testing.assert_allclose(np.asarray(y, np.float32), jcall(rope, x), rtol=0.02, atol=0.02)


def test_rope_float64_and_transformations():
    x = randn(4, 6)
    with jax.enable_x64(True):
        rope = RotaryPositionalEmbedding(6)
        x64 = x.astype(np.float64)
        assert jcall(rope, x64).dtype == jnp.float64
        check_grads_f64(rope, (x64,))
    roundtrip(RotaryPositionalEmbedding(6), (randn(2, 4, 6),))
    # The defining formula, with angles t * theta^(-2i/d).
    angles = np.arange(4)[:, None] * 10000.0 ** (-np.arange(3) * 2 / 6)
    x1, x2 = x[:, :3], x[:, 3:]
    want = np.concatenate(
        [x1 * np.cos(angles) - x2 * np.sin(angles), x2 * np.cos(angles) + x1 * np.sin(angles)], 1
    )
    np.testing.assert_allclose(jcall(RotaryPositionalEmbedding(6), x), want, rtol=1e-5, atol=1e-6)
    assert math.isclose(RotaryPositionalEmbedding(6, theta=500).theta, 500.0)


def test_rope_errors():
    with pytest.raises(ValueError, match="must be even"):
        RotaryPositionalEmbedding(5)
    with pytest.raises(ValueError, match=r"\(seq_len, 6\)"):
        RotaryPositionalEmbedding(6)(np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"\(seq_len, 6\)"):
        RotaryPositionalEmbedding(6)(np.ones(6, np.float32))
    with pytest.raises(TypeError, match="floating-point"):
        RotaryPositionalEmbedding(2)(np.ones((3, 2), np.int32))


def test_optional_runtime_check_of_traced_indices(monkeypatch):
    import ecliptic

    layer = Embedding(weight=jnp.arange(12.0).reshape(6, 2))
    lookup = ecliptic.filter_jit(lambda m, i: m(i))
    # off by default: JAX clamps silently (documented)
    np.testing.assert_array_equal(lookup(layer, jnp.array(9)), [10.0, 11.0])
    monkeypatch.setenv("ECLIPTIC_RUNTIME_CHECKS", "1")
    checked = ecliptic.filter_jit(lambda m, i: m(i) + 0)  # a new function: traced anew
    with pytest.raises(ecliptic.EclipticRuntimeError, match="out of range for num_embeddings=6"):
        checked(layer, jnp.array(9))
    np.testing.assert_array_equal(checked(layer, jnp.array(2)), [4.0, 5.0])
