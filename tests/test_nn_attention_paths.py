"""MultiheadAttention's two paths: fused `jax.nn.dot_product_attention` (by default on
GPU only) whenever nothing needs the attention weights, the explicit softmax otherwise
(dropout on the weights). Which one runs is read off the jaxpr; both are checked against
a float64 NumPy reference, fully masked rows included. Also Equinox's single-head
helpers."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ecliptic as ec
from ecliptic import nn
from ecliptic.nn import _attention_functions
from ecliptic.nn._attention_functions import FUSED_NAME, multihead_attention

KEY = jax.random.key(0)


def reference(q, k, v, mask=None):
    """float64 NumPy attention over heads `(seq, heads, d)`; a fully masked row attends
    uniformly to every key (ecliptic's documented behaviour)."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    logits = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(q.shape[-1])
    if mask is not None:
        mask = np.broadcast_to(np.asarray(mask), logits.shape)
        logits = np.where(mask, logits, -np.inf)
        logits = np.where(mask.any(-1, keepdims=True), logits, 0.0)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("hqk,khd->qhd", weights, v)


@pytest.fixture
def gpu_policy(monkeypatch):
    """The default choice as on a GPU backend (where the fused call is preferred)."""
    monkeypatch.setattr(_attention_functions, "prefers_fused", lambda: True)


def uses_fused(fn, *args) -> bool:
    return f"name={FUSED_NAME}" in str(jax.make_jaxpr(fn)(*args))


def heads(seed, q_seq=5, kv_seq=7, h=3, d=4):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((n, h, d)).astype(np.float32) for n in (q_seq, kv_seq, kv_seq))
    mask = rng.random((h, q_seq, kv_seq)) < 0.6
    mask[:, 0] = False  # a query that may attend to nothing
    mask[1, 2] = False
    return q, k, v, mask


@pytest.mark.parametrize("mask_kind", ["none", "2d", "3d"])
def test_both_paths_match_float64_reference(mask_kind):
    q, k, v, mask = heads(1)
    mask = {"none": None, "2d": mask[0], "3d": mask}[mask_kind]
    want = reference(q, k, v, mask)
    fused = jax.jit(lambda q, k, v, m: multihead_attention(q, k, v, m, fused=True))
    explicit = jax.jit(lambda q, k, v, m: multihead_attention(q, k, v, m, fused=False))
    weights_seen = jax.jit(
        lambda q, k, v, m: multihead_attention(q, k, v, m, lambda w: w, fused=True)
    )
    assert uses_fused(fused, q, k, v, mask)
    assert not uses_fused(explicit, q, k, v, mask)
    assert not uses_fused(weights_seen, q, k, v, mask)
    for path in (fused, explicit, weights_seen):
        np.testing.assert_allclose(path(q, k, v, mask), want, rtol=2e-5, atol=2e-6)
    if mask is not None:  # fully masked rows: the plain mean of the values on both paths
        np.testing.assert_allclose(fused(q, k, v, mask)[0], v.mean(0), rtol=1e-5, atol=1e-6)


CASES = list(itertools.product(["none", "2d", "3d"], [0.0, 0.5], [False, True], [False, True]))


@pytest.mark.parametrize("mask_kind, p, inference, rope", CASES)
def test_layer_path_choice(mask_kind, p, inference, rope, gpu_policy):
    mha = nn.MultiheadAttention(2, 8, dropout_p=p, inference=inference, key=KEY)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 8)).astype(np.float32)
    m = rng.random((2, 5, 5)) < 0.7
    mask = {"none": None, "2d": m[0], "3d": m}[mask_kind]
    process = None
    if rope:
        embed = nn.RotaryPositionalEmbedding(4)
        process = lambda q, k, v: (embed(q), embed(k), v)  # noqa: E731

    def call(x, mask):
        return mha(x, x, x, mask, key=jax.random.key(1), process_heads=process)

    dropout_active = p > 0 and not inference
    assert uses_fused(call, x, mask) == (not dropout_active)


def test_cpu_default_is_the_explicit_path():
    # On CPU, XLA's fallback of the fused call is slower and needs more memory
    # (benchmarks/attention.py), so the layer keeps the explicit softmax there.
    mha = nn.MultiheadAttention(2, 8, key=KEY)
    x = np.ones((3, 8), np.float32)
    on_gpu = jax.default_backend() in ("gpu", "cuda", "rocm")
    assert _attention_functions.prefers_fused() == on_gpu
    assert uses_fused(lambda x: mha(x, x, x), x) == on_gpu


def test_layer_falls_back_when_the_fused_call_cannot_express_it(gpu_policy):
    x = np.random.default_rng(3).standard_normal((4, 6)).astype(np.float32)
    # Values and keys of different head sizes: the fused call needs equal shapes.
    mha = nn.MultiheadAttention(2, 6, qk_size=3, vo_size=2, key=KEY)
    assert not uses_fused(lambda x: mha(x, x, x), x)
    fused_ok = nn.MultiheadAttention(2, 6, key=KEY)
    assert uses_fused(lambda x: fused_ok(x, x, x), x)
    # Inference overrides a training dropout: fused again.
    dropping = nn.MultiheadAttention(2, 6, dropout_p=0.3, key=KEY)
    assert not uses_fused(lambda x: dropping(x, x, x, key=jax.random.key(0)), x)
    assert uses_fused(lambda x: dropping(x, x, x, inference=True), x)


@pytest.mark.parametrize("policy", ["gpu", "cpu"])
def test_layer_matches_float64_reference_with_fully_masked_rows(policy, monkeypatch):
    monkeypatch.setattr(_attention_functions, "prefers_fused", lambda: policy == "gpu")
    mha = nn.MultiheadAttention(2, 8, use_query_bias=True, use_output_bias=True, key=KEY)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 8)).astype(np.float32)
    mask = rng.random((5, 5)) < 0.5
    mask[3] = False

    def project(linear, x):
        w = np.asarray(linear.weight, np.float64)
        b = 0.0 if linear.bias is None else np.asarray(linear.bias, np.float64)
        return x @ w.T + b

    x64 = x.astype(np.float64)
    q, k, v = (
        project(p, x64).reshape(5, 2, 4) for p in (mha.query_proj, mha.key_proj, mha.value_proj)
    )
    want = project(mha.output_proj, reference(q, k, v, mask).reshape(5, 8))
    got = ec.filter_jit(lambda layer, x, mask: layer(x, x, x, mask))(mha, x, mask)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_equinox_single_head_helpers():
    rng = np.random.default_rng(5)
    q = rng.standard_normal((3, 4)).astype(np.float32)
    k = rng.standard_normal((6, 4)).astype(np.float32)
    v = rng.standard_normal((6, 2)).astype(np.float32)
    mask = rng.random((3, 6)) < 0.5
    mask[1] = False
    want = reference(q[:, None], k[:, None], v[:, None], mask[None])[:, 0]
    weights = nn.dot_product_attention_weights(q, k, mask)  # pyright: ignore[reportArgumentType]
    assert weights.shape == (3, 6) and weights.dtype == jnp.float32
    np.testing.assert_allclose(weights[1], np.full(6, 1 / 6), rtol=1e-6)
    np.testing.assert_allclose(nn.dot_product_attention(q, k, v, mask), want, rtol=1e-5, atol=1e-6)  # pyright: ignore[reportArgumentType]
    half = nn.dot_product_attention_weights(q.astype(np.float16), k.astype(np.float16))  # pyright: ignore[reportArgumentType]
    assert half.dtype == jnp.float16
    dropout = nn.Dropout(0.5)
    dropped = nn.dot_product_attention(q, k, v, dropout=dropout, key=jax.random.key(2))  # pyright: ignore[reportArgumentType]
    kept = nn.dot_product_attention(q, k, v, dropout=dropout, inference=True)  # pyright: ignore[reportArgumentType]
    assert not np.allclose(dropped, kept)
    np.testing.assert_allclose(kept, nn.dot_product_attention(q, k, v), rtol=1e-6)  # pyright: ignore[reportArgumentType]


def _heads_of(dtype, seq=8, d=16):
    rng = np.random.default_rng(5)
    return tuple(jnp.asarray(rng.standard_normal((seq, 2, d)), dtype) for _ in range(3))


@pytest.mark.parametrize(
    "backend, dtype, d, seq, masked, want",
    [
        ("gpu", jnp.bfloat16, 16, 512, True, True),
        ("gpu", jnp.float16, 128, 512, False, True),
        ("gpu", jnp.float32, 16, 512, False, False),  # cuDNN's kernel is half precision only
        ("gpu", jnp.bfloat16, 12, 512, False, False),  # head size not a multiple of 8
        ("gpu", jnp.bfloat16, 136, 512, False, False),  # head size over 128
        ("gpu", jnp.bfloat16, 16, 511, True, False),  # odd length with a mask (its gradient)
        ("gpu", jnp.bfloat16, 16, 513, False, True),  # odd length without one is fine
        ("gpu", jnp.bfloat16, 16, 256, False, False),  # short: XLA's version is faster
        ("cpu", jnp.bfloat16, 16, 512, False, False),
    ],
)
def test_cudnn_kernel_is_chosen_only_where_it_can_run(
    backend, dtype, d, seq, masked, want, monkeypatch
):
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    q, k, v = _heads_of(dtype, seq, d)
    mask = jnp.ones((seq, seq), bool) if masked else None
    assert _attention_functions.cudnn_can_run(q, k, v, mask) == want


def test_fused_call_falls_back_to_xla_where_cudnn_is_absent(monkeypatch):
    # As on a GPU without cuDNN: the cuDNN call refuses while tracing, and XLA's version
    # of the same call computes the result instead.
    if jax.default_backend() == "gpu":
        pytest.skip("needs a backend without cuDNN")
    seq = 512
    q, k, v = _heads_of(jnp.bfloat16, seq=seq, d=8)
    mask = np.tril(np.ones((seq, seq), bool))
    want = reference(q, k, v, mask)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert _attention_functions.cudnn_can_run(q, k, v, mask)
    got = jax.jit(lambda *a: multihead_attention(*a, fused=True))(q, k, v, mask)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=3e-2)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN runs on a GPU only")
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_cudnn_flash_attention_on_gpu(dtype):
    seq = 512
    q, k, v = _heads_of(dtype, seq=seq, d=32)
    mask = np.tril(np.ones((seq, seq), bool))
    mask[5] = False  # a query that may attend to nothing: uniform weights
    call = jax.jit(lambda *a: multihead_attention(*a, fused=True))
    assert "fmha" in call.lower(q, k, v, mask).compile().as_text().lower()  # cuDNN's kernel  # pyright: ignore[reportOptionalMemberAccess]
    got = np.asarray(call(q, k, v, mask), np.float64)
    np.testing.assert_allclose(got, reference(q, k, v, mask), atol=3e-2)
    np.testing.assert_allclose(got[5], np.asarray(v, np.float64).mean(0), atol=3e-2)
    # Gradients flow through the kernel (NaN-free, the fully masked row included) and
    # agree with the explicit path's; so does a vmapped batch sharing one mask.
    explicit = jax.jit(lambda *a: multihead_attention(*a, fused=False))

    def loss(f):
        return lambda q, k, v: jnp.sum(f(q, k, v, mask).astype(jnp.float32) ** 2)

    def close(a, b):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        assert not np.isnan(a).any()
        assert np.abs(a - b).max() <= 0.05 * np.abs(b).max() + 1e-3

    grads = (jax.grad(loss(f), argnums=(0, 1, 2))(q, k, v) for f in (call, explicit))
    for g_fused, g_explicit in zip(*grads):
        close(g_fused, g_explicit)
    batch = tuple(jnp.stack([a, a[::-1]]) for a in (q, k, v))
    batched = (jax.jit(jax.vmap(f, (0, 0, 0, None))) for f in (call, explicit))
    close(*(f(*batch, mask) for f in batched))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_fused_call_works_under_strict_dtype_promotion(dtype):
    # JAX's attention promotes half precision inside; a user's strict promotion mode
    # governs their code, so the fused call must not fail under it (it did on a GPU).
    q, k, v = _heads_of(dtype, seq=6, d=8)
    mask = np.tril(np.ones((6, 6), bool))
    with jax.numpy_dtype_promotion("strict"):
        got = jax.jit(lambda *a: multihead_attention(*a, fused=True))(q, k, v, mask)
    np.testing.assert_allclose(
        np.asarray(got, np.float64), reference(q, k, v, mask), atol=3e-2, rtol=1e-2
    )
