"""MultiheadAttention: PyTorch goldens (torch ops and torch.nn.MultiheadAttention), masks,
process_heads, dropout, init statistics, dtypes, transformations, errors."""

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

import ecliptic as ec
from ecliptic.nn import MultiheadAttention, RotaryPositionalEmbedding


def from_torch(mha, p):
    """Our layer with PyTorch-layout projection weights `wq, bq, ..., wo, bo`."""

    def proj(linear, w, b):
        return replace(linear, weight=p[w], bias=p.get(b))

    return replace(
        mha,
        query_proj=proj(mha.query_proj, "wq", "bq"),
        key_proj=proj(mha.key_proj, "wk", "bk"),
        value_proj=proj(mha.value_proj, "wv", "bv"),
        output_proj=proj(mha.output_proj, "wo", "bo"),
    )


def build(cfg, key):
    qk = cfg.get("qk_size")
    return MultiheadAttention(
        cfg["num_heads"],
        cfg["query_size"],
        cfg["key_size"],
        cfg["value_size"],
        cfg.get("output_size"),
        qk,
        cfg.get("vo_size"),
        *cfg["bias"],
        key=key,
    )


@pytest.mark.parametrize("case", ["att_std", "att_kv", "att_nobias", "att_sizes", "att_single"])
def test_matches_torch(case, getkey):
    g = golden(case)
    mha = build(g.cfg, getkey())
    check_golden(
        g, lambda p, i: from_torch(mha, p)(i["query"], i["key"], i["value"], i.get("mask"))
    )
    if "module_out" in g.extra:
        # The same case through torch.nn.MultiheadAttention(batch_first=True).
        out = jcall(
            from_torch(mha, g.params),
            g.inputs["query"],
            g.inputs["key"],
            g.inputs["value"],
            g.inputs.get("mask"),
        )
        np.testing.assert_allclose(out, g.extra["module_out"], rtol=1e-5, atol=1e-5)


def numpy_attention(q, k, v, mask=None):
    """Reference on already projected heads (seq, heads, d)."""
    logits = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        logits = np.where(mask, logits, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("hqk,khd->qhd", weights, v).reshape(q.shape[0], -1)


def test_process_heads_applies_rope(getkey):
    mha = MultiheadAttention(2, 8, key=getkey())
    rope = RotaryPositionalEmbedding(4)
    x = randn(5, 8)
    seen = {}

    def process(q, k, v):
        seen["shapes"] = (q.shape, k.shape, v.shape)
        return rope(q), rope(k), v

    out = jcall(mha, x, x, x, process_heads=process)
    assert seen["shapes"] == ((5, 2, 4),) * 3
    heads = lambda lin: np.asarray(jax.vmap(lin)(x)).reshape(5, 2, 4)
    q, k, v = heads(mha.query_proj), heads(mha.key_proj), heads(mha.value_proj)
    want = numpy_attention(np.asarray(rope(q)), np.asarray(rope(k)), v)
    want = want @ np.asarray(mha.output_proj.weight).T
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_masks(getkey):
    mha = MultiheadAttention(2, 4, use_value_bias=True, key=getkey())
    q, kv = randn(3, 4), randn(5, 4)
    full = jcall(mha, q, kv, kv)
    np.testing.assert_allclose(jcall(mha, q, kv, kv, np.ones((3, 5), bool)), full, rtol=1e-6)
    mask = np.random.default_rng(1).random((3, 5)) > 0.5
    mask[:, 0] = True
    np.testing.assert_allclose(
        jcall(mha, q, kv, kv, mask), jcall(mha, q, kv, kv, np.stack([mask, mask])), rtol=1e-6
    )
    # A query that may attend to nothing averages all values (finite, no NaN).
    blocked = mask.copy()
    blocked[1] = False
    out = np.asarray(jcall(mha, q, kv, kv, blocked))
    values = np.asarray(jax.vmap(mha.value_proj)(kv)).mean(0)
    np.testing.assert_allclose(out[1], np.asarray(mha.output_proj(values)), rtol=1e-5, atol=1e-6)


def test_dropout_on_weights(getkey):
    mha = MultiheadAttention(2, 4, dropout_p=0.5, key=getkey())
    x = randn(6, 4)
    assert mha.dropout.p == 0.5 and mha.dropout.inference is False
    clean = jcall(mha, x, x, x, inference=True)
    np.testing.assert_array_equal(jcall(mha, x, x, x, deterministic=True), clean)
    frozen = MultiheadAttention(2, 4, dropout_p=0.5, inference=True, key=getkey())
    assert frozen.dropout.inference is True
    dropped = jcall(mha, x, x, x, key=jax.random.key(3))
    assert not np.allclose(dropped, clean)
    with pytest.raises(ValueError, match=r"PRNG key.*inference=True"):
        mha(x, x, x)


def test_init_matches_torch(getkey):
    for name, kwargs in [("mha_packed", {}), ("mha_sep", {"key_size": 5, "value_size": 3})]:
        layers = many_inits(lambda k, kw=kwargs: MultiheadAttention(2, 8, **kw, key=k))
        for short, proj in [
            ("wq", layers.query_proj),
            ("wk", layers.key_proj),
            ("wv", layers.value_proj),
            ("wo", layers.output_proj),
        ]:
            values = np.asarray(proj.weight)
            want = init_stat(f"{name}.{short}")
            assert abs(values.std() - want.std) < 0.04 * want.std, (name, short)
            assert want.absmax * 0.97 < np.abs(values).max() <= want.absmax * 1.02, (name, short)
    biased = MultiheadAttention(2, 8, use_query_bias=True, use_output_bias=True, key=getkey())
    assert init_stat("mha_packed.biases").absmax == 0
    assert not np.any(np.asarray(biased.query_proj.bias))
    assert not np.any(np.asarray(biased.output_proj.bias))
    assert biased.key_proj.bias is None


def test_one_contraction_for_all_heads(getkey):
    """The number of dot products does not grow with the number of heads."""

    def count_dots(heads):
        mha = MultiheadAttention(heads, 8, key=getkey())
        x = jnp.zeros((3, 8))
        jaxpr, _, _ = ec.filter_make_jaxpr(lambda m, x: m(x, x, x))(mha, x)
        return str(jaxpr).count("dot_general")

    assert count_dots(1) == count_dots(4)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision(dtype, getkey):
    mha = MultiheadAttention(2, 8, use_query_bias=True, dtype=dtype, key=getkey())
    ref = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32) if ec.is_array(a) else a, mha)
    assert mha.query_proj.weight.dtype == dtype
    x = randn(4, 8)
    y = jcall(mha, x.astype(dtype), x.astype(dtype), x.astype(dtype))
    assert y.dtype == dtype
    want = jcall(ref, x.astype(dtype).astype(np.float32), *[x.astype(dtype).astype(np.float32)] * 2)
    np.testing.assert_allclose(np.asarray(y, np.float32), want, atol=0.03, rtol=0.03)


def test_finite_differences_float64(getkey):
    key = getkey()
    q, kv, mask = randn(3, 4), randn(2, 6), np.array([[True, False], [True, True], [False, True]])
    with jax.enable_x64(True):
        mha = MultiheadAttention(
            2, 4, key_size=6, value_size=6, qk_size=3, vo_size=2, use_key_bias=True, key=key
        )
        assert mha.key_proj.weight.dtype == jnp.float64
        wk = mha.key_proj.weight
        check_grads_f64(
            lambda q, kv, w: replace(mha, key_proj=replace(mha.key_proj, weight=w))(
                q, kv, kv, mask
            ),
            (q.astype(np.float64), kv.astype(np.float64), wk),
        )


def test_jit_vmap_grad_roundtrip(getkey):
    mha = MultiheadAttention(2, 4, key_size=3, value_size=3, use_output_bias=True, key=getkey())
    q, kv = randn(2, 3, 4), randn(2, 5, 3)
    mask = np.random.default_rng(2).random((2, 3, 5)) > 0.3
    mask[..., 0] = True
    roundtrip(mha, (q, kv, mask), call=lambda m, q, kv, mask: m(q, kv, kv, mask))
    y = ec.filter_jit(lambda m, q, kv: m(q, kv, kv))(mha, q[0], kv[0])
    np.testing.assert_allclose(y, jcall(mha, q[0], kv[0], kv[0]), rtol=1e-6)


def test_errors(getkey):
    with pytest.raises(ValueError, match=r"query_size \(10\) must be divisible by num_heads \(4\)"):
        MultiheadAttention(4, 10, key=getkey())
    MultiheadAttention(4, 10, qk_size=3, vo_size=3, key=getkey())  # fine with explicit sizes
    with pytest.raises(TypeError, match="PRNG key"):
        MultiheadAttention(2, 4)
    mha = MultiheadAttention(2, 4, key_size=3, value_size=5, key=getkey())
    q, k, v = np.ones((3, 4), np.float32), np.ones((2, 3), np.float32), np.ones((2, 5), np.float32)
    with pytest.raises(ValueError, match=r"\(q_seq, kv_seq\) = \(3, 2\).*got shape \(2, 3\)"):
        mha(q, k, v, np.ones((2, 3), bool))
    with pytest.raises(ValueError, match=r"\(num_heads, q_seq, kv_seq\) = \(2, 3, 2\).*\(3, 3,"):
        mha(q, k, v, np.ones((3, 3, 2), bool))
    with pytest.raises(TypeError, match="mask must be boolean"):
        mha(q, k, v, np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"query of shape \(q_seq, 4\).*jax.vmap"):
        mha(q[None], k, v)
    with pytest.raises(ValueError, match=r"key_ of shape \(kv_seq, 3\)"):
        mha(q, v, v)
    with pytest.raises(ValueError, match="same sequence length"):
        mha(q, k, np.ones((4, 5), np.float32))
    with pytest.raises(ValueError, match="process_heads must return"):
        mha(q, k, v, process_heads=lambda q, k, v: (q[:, :1], k, v))
