"""Scaled dot-product attention as functions: Equinox's single-head helpers and the
multi-head core of `MultiheadAttention`, which on GPU goes through JAX's fused
`jax.nn.dot_product_attention` (cuDNN's flash attention) whenever it can.

The fused path runs inside a `jax.jit` named ``fused_attention``, so a jaxpr shows
which path a call took; nested in an outer jit it is inlined for free.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from ._init_helpers import HALF_DTYPES, compute_dtype

FUSED_NAME = "fused_attention"


def _masked_logits(q: jax.Array, k: jax.Array, mask: Any, spec: str) -> jax.Array:
    """``q k^T / sqrt(d)`` (accumulated in float32 for half precision), with masked
    entries set to the dtype's lowest finite value: a query that may attend to nothing
    gets uniform weights, never NaN."""
    acc_dtype = compute_dtype(jnp.result_type(q.dtype, k.dtype))
    # Scale the queries, not the (larger) logits.
    q = q * jnp.asarray(1.0 / math.sqrt(q.shape[-1]), q.dtype)
    logits = jnp.einsum(spec, q, k, preferred_element_type=acc_dtype)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    return logits


def dot_product_attention_weights(query: Array, key: Array, mask: Array | None = None) -> Array:
    """The attention weights of one head: `softmax(query @ key.T / sqrt(qk_size))`.

    **Arguments:**

    - `query`: `(q_seq, qk_size)`.
    - `key`: `(kv_seq, qk_size)`.
    - `mask`: optional boolean `(q_seq, kv_seq)`, `True` where a query may attend. A
        query that may attend to nothing gets uniform weights.

    **Returns:** `(q_seq, kv_seq)`, rows summing to one, in the dtype of `query`
    (computed in float32 for half-precision inputs).

    ```python
    w = ecliptic.nn.dot_product_attention_weights(jnp.ones((2, 4)), jnp.ones((3, 4)))
    # w: (2, 3), every entry 1/3
    ```
    """
    query, key = jnp.asarray(query), jnp.asarray(key)
    if mask is not None:
        mask = jnp.asarray(mask)
    logits = _masked_logits(query, key, mask, "qd,kd->qk")
    return jax.nn.softmax(logits, axis=-1).astype(query.dtype)


def dot_product_attention(
    query: Array,
    key_: Array,
    value: Array,
    mask: Array | None = None,
    dropout: Any = None,
    *,
    key: PRNGKeyArray | None = None,
    inference: bool | None = None,
) -> Array:
    """One head of scaled dot-product attention: `weights @ value`, with `weights` from
    `dot_product_attention_weights`, optionally passed through `dropout`.

    **Arguments:**

    - `query`: `(q_seq, qk_size)`; `key_`: `(kv_seq, qk_size)`; `value`:
        `(kv_seq, v_size)`.
    - `mask`: optional boolean `(q_seq, kv_seq)`, `True` where a query may attend.
    - `dropout`: optional `ecliptic.nn.Dropout` applied to the weights.
    - `key`: PRNG key for the dropout; `inference`: passed on to the dropout.

    **Returns:** `(q_seq, v_size)`.

    ```python
    out = ecliptic.nn.dot_product_attention(q, k, v)  # (q_seq, qk), (kv, qk), (kv, v)
    ```
    """
    weights = dot_product_attention_weights(query, key_, mask)
    if dropout is not None:
        weights = dropout(weights, key=key, inference=inference)
    return jnp.einsum("qk,kd->qd", weights, jnp.asarray(value))


def prefers_fused() -> bool:
    """Whether the default backend gains from the fused call: on GPU it is cuDNN's flash
    attention; on CPU, XLA's fallback of `jax.nn.dot_product_attention` measured slower
    (1.6-2.8x) and with twice the scratch memory of the explicit softmax for sequences
    of 512..4096 (`benchmarks/attention.py`), so the explicit path stays there."""
    return jax.default_backend() in ("gpu", "cuda", "rocm")


def can_fuse(q: jax.Array, k: jax.Array, v: jax.Array) -> bool:
    """Whether `jax.nn.dot_product_attention` can compute these heads: the same dtype
    everywhere (a floating one), values with the keys' shape, and not float16 on CPU
    (whose XLA backend lacks the float16 x float16 -> float32 product it uses)."""
    dtypes = {jnp.dtype(q.dtype), jnp.dtype(k.dtype), jnp.dtype(v.dtype)}
    if jnp.dtype(q.dtype) == jnp.float16 and jax.default_backend() == "cpu":
        return False
    return len(dtypes) == 1 and jnp.issubdtype(q.dtype, jnp.floating) and k.shape == v.shape


# Below 512 x 512 logits per head, cuDNN's kernel was slower than XLA's version of the
# call on an H200 (1.5x the time at 128 x 128, level at 512 x 512, 0.53x at 8192 x 8192;
# benchmarks/RESULTS.md, GPU figures).
CUDNN_MIN_LOGITS = 512 * 512


def cudnn_can_run(q: jax.Array, k: jax.Array, v: jax.Array, mask: Any) -> bool:
    """Whether cuDNN's flash kernel takes these heads: a GPU backend, float16 or
    bfloat16, at least `CUDNN_MIN_LOGITS` logits per head (where it was measured no
    slower), a head size that is a multiple of 8 up to 128 (keys' and values' alike),
    and even sequence lengths where a mask is given (cuDNN adds the mask as a bias,
    whose gradient needs them). Anything else goes to XLA's version of the call."""
    if jax.default_backend() != "gpu" or jnp.dtype(q.dtype) not in HALF_DTYPES:
        return False
    if q.shape[0] * k.shape[0] < CUDNN_MIN_LOGITS:
        return False
    d = q.shape[-1]
    if d % 8 or d > 128 or v.shape[-1] != d:
        return False
    return mask is None or (q.shape[0] % 2 == 0 and k.shape[0] % 2 == 0)


@jax.jit
def fused_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: Any) -> jax.Array:
    """`jax.nn.dot_product_attention` with the `1/sqrt(d)` scale, for heads laid out
    `(seq, heads, d)` (see `multihead_attention`): cuDNN's flash attention where
    `cudnn_can_run`, XLA's version of the same call otherwise (JAX's own default,
    `implementation=None`, is always XLA's)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    # JAX's implementations promote half precision to float32 internally, which the
    # user's `jax_numpy_dtype_promotion="strict"` would refuse: that choice is theirs to
    # make about their code, not about JAX's.
    with jax.numpy_dtype_promotion("standard"):
        if cudnn_can_run(q, k, v, mask):
            try:
                return _cudnn_attention(q, k, v, mask, scale)
            except (NotImplementedError, RuntimeError, ValueError):
                # cuDNN refused the shapes or is absent (checked while tracing).
                pass
        # XLA's version masks with a large finite negative number too, so a fully
        # masked row gets uniform weights, as on the explicit path.
        return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale)


def _cudnn_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: Any, scale: float
) -> jax.Array:
    if mask is None:
        return jax.nn.dot_product_attention(q, k, v, scale=scale, implementation="cudnn")
    # cuDNN adds the mask as a bias. Give it every head: JAX's batching rule for the
    # kernel (under `vmap`) reshapes the bias to the full head count.
    mask = jnp.broadcast_to(mask, (q.shape[1], q.shape[0], k.shape[0]))
    attends = jnp.any(mask, axis=-1, keepdims=True)  # (heads, q_seq, 1)
    # A query that may attend to nothing gets uniform weights (the mean of the values),
    # as on the other paths. The kernel sees such rows unmasked: fully masked rows
    # give NaN gradients in cuDNN's backward pass (measured on an H200), and their
    # output is replaced anyway, so no gradient reaches the kernel through them.
    out = jax.nn.dot_product_attention(
        q, k, v, mask=mask | ~attends, scale=scale, implementation="cudnn"
    )
    uniform = jnp.mean(v, axis=0, dtype=jnp.float32).astype(out.dtype)  # (heads, d)
    return jnp.where(jnp.transpose(attends, (1, 0, 2)), out, uniform)


def _explicit(q: jax.Array, k: jax.Array, v: jax.Array, mask: Any, weights_fn: Any) -> jax.Array:
    weights = jax.nn.softmax(_masked_logits(q, k, mask, "qhd,khd->hqk"), axis=-1)
    weights = weights.astype(v.dtype)
    if weights_fn is not None:
        weights = weights_fn(weights)
    return jnp.einsum("hqk,khd->qhd", weights, v)


def multihead_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array | None = None,
    weights_fn: Callable[[jax.Array], jax.Array] | None = None,
    *,
    fused: bool | None = None,
) -> jax.Array:
    """Scaled dot-product attention of every head at once.

    Uses `jax.nn.dot_product_attention` (fused; on GPU cuDNN's kernel, which never
    materialises the `(heads, q_seq, kv_seq)` weights) when `fused` (default:
    `prefers_fused()`, i.e. on GPU), unless `weights_fn` must see the weights or
    `can_fuse` is false; otherwise the explicit softmax.

    **Arguments:**

    - `q`: `(q_seq, heads, d)`; `k`: `(kv_seq, heads, d)`; `v`: `(kv_seq, heads, d_v)`.
    - `mask`: optional boolean, broadcastable to `(heads, q_seq, kv_seq)`; `True` where
        a query may attend. A query that may attend to nothing gets uniform weights.
    - `weights_fn`: optional function applied to the `(heads, q_seq, kv_seq)` weights
        before they multiply the values (e.g. dropout); forces the explicit path.
    - `fused`: `True`/`False` to ask for (where possible) or rule out the fused call;
        `None` decides by backend.

    **Returns:** `(q_seq, heads, d_v)`.

    ```python
    out = multihead_attention(jnp.ones((5, 2, 8)), jnp.ones((7, 2, 8)), jnp.ones((7, 2, 8)))
    ```
    """
    if fused is None:
        fused = prefers_fused()
    if fused and weights_fn is None and can_fuse(q, k, v):
        return fused_attention(q, k, v, mask)
    return _explicit(q, k, v, mask, weights_fn)
