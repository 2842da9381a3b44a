"""Multi-head scaled dot-product attention."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from .._module import Module, field
from ._arg_checks import MissingKeyError, check_key, check_positive_int
from ._attention_functions import dot_product_attention as dot_product_attention
from ._attention_functions import (
    dot_product_attention_weights as dot_product_attention_weights,
)
from ._attention_functions import multihead_attention
from ._dropout import Dropout, resolve_inference
from ._init_helpers import fan_in_bound, resolve_dtype, uniform_init
from ._linear import Linear
from ._scope import named_scope_call

HeadsFn = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array, jax.Array]]


def _check_input(x: Any, size: int, name: str, description: str) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[1] != size:
        hint = (
            " Layers act on one unbatched example: batch with jax.vmap or ecliptic.filter_vmap."
            if x.ndim == 3 and x.shape[-1] == size
            else ""
        )
        raise ValueError(
            f"MultiheadAttention expects {name} of shape ({description}, {size}); got shape "
            f"{tuple(x.shape)}.{hint}"
        )
    return x


def _replace_leaves(layer: Module, **new: Any) -> Any:
    """A copy of `layer` with the named top-level array fields replaced."""
    return jtu.tree_map_with_path(lambda path, leaf: new.get(path[0].name, leaf), layer)


def _zeros_like(x: jax.Array | None) -> jax.Array | None:
    return None if x is None else jnp.zeros_like(x)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5, 6))
def _init_projections(
    key: Any,
    in_sizes: tuple[int, int, int],
    qk_total: int,
    vo_total: int,
    output_size: int,
    biases: tuple[bool, bool, bool, bool],
    dtype: Any,
) -> tuple[Linear, Linear, Linear, Linear]:
    """The four projections, initialised as `torch.nn.MultiheadAttention`: Xavier-uniform
    query/key/value weights, zero biases, the output weight U(+-1/sqrt(in)) as a Linear's.
    PyTorch's standard layout packs the three input weights into one (3E, E) matrix, whose
    Xavier bound sqrt(6 / (E + 3E)) we reproduce when our sizes are that layout's;
    otherwise each matrix gets its own sqrt(6 / (in + out)).

    All four weights come from ONE U(-1, 1) draw, sliced and scaled: a single random-bits
    kernel to compile per configuration (XLA's PRNG is costly to compile on CPU)."""
    query_size, key_size, value_size = in_sizes
    packed = key_size == value_size == query_size == qk_total == vo_total
    shapes = [
        (qk_total, query_size),
        (qk_total, key_size),
        (vo_total, value_size),
        (output_size, vo_total),
    ]
    bounds = [
        math.sqrt(6.0 / (4 * query_size if packed else fan_in + fan_out))
        for fan_out, fan_in in shapes[:3]
    ]
    bounds.append(fan_in_bound(vo_total))
    sizes = [rows * cols for rows, cols in shapes]
    flat = uniform_init(key, (sum(sizes),), dtype, 1.0)
    parts = jnp.split(flat, np.cumsum(sizes)[:-1].tolist())
    projections = []
    for (fan_out, fan_in), bound, part, bias in zip(shapes, bounds, parts, biases):
        # The Linear's own random draw is dead code once replaced: XLA removes it.
        proj = Linear(fan_in, fan_out, bias, dtype, key=key)
        weight = (part * jnp.asarray(bound, part.dtype)).reshape(fan_out, fan_in)
        projections.append(_replace_leaves(proj, weight=weight, bias=_zeros_like(proj.bias)))
    return tuple(projections)


class MultiheadAttention(Module):
    """Multi-head scaled dot-product attention (Vaswani et al. 2017), on one unbatched
    sequence:

        q_h = query @ Wq_h,  k_h = key_ @ Wk_h,  v_h = value @ Wv_h      (per head h)
        out = concat_h(softmax(q_h k_h^T / sqrt(qk_size) + mask) v_h) @ Wo

    Every head is computed in one batched contraction (no loop over heads). With the
    defaults (`qk_size = vo_size = query_size // num_heads`, `output_size = query_size`) and
    all four biases equal, this is `torch.nn.MultiheadAttention(batch_first=True)` with
    `q/k/v_proj_weight` = the three projection weights and `out_proj` = `output_proj`,
    and a boolean `attn_mask` that is the negation of `mask`.

    **Arguments:**

    - `num_heads`: number of heads.
    - `query_size`: feature size of the query; `key_size`, `value_size` those of the key
        and value (default `query_size`); `output_size` that of the output (default
        `query_size`).
    - `qk_size`: per-head size of the query/key projections; `vo_size` of the value/output
        projections. Both default to `query_size // num_heads` (then `query_size` must be
        divisible by `num_heads`).
    - `use_query_bias`, `use_key_bias`, `use_value_bias`, `use_output_bias`: biases on
        the four projections.
    - `dropout_p`: dropout probability on the attention weights.
    - `inference`: if `True`, no dropout (stored on the `dropout` sub-layer, where
        `ecliptic.nn.inference_mode` finds it).
    - `dtype`: parameter dtype (default float32, float64 with x64 on).
    - `key`: PRNG key for the initialisation.

    **Parameters:** `query_proj` `Linear(query_size, num_heads*qk_size)`, `key_proj`
    `Linear(key_size, num_heads*qk_size)`, `value_proj` `Linear(value_size,
    num_heads*vo_size)`, `output_proj` `Linear(num_heads*vo_size, output_size)`
    (`.weight` `(out, in)`, `.bias` `(out,)` or `None`); `dropout` a `Dropout`.
    Initialised as `torch.nn.MultiheadAttention`: the query/key/value weights Xavier-
    uniform (with the bound `sqrt(6 / (4 * query_size))` of PyTorch's packed `(3E, E)`
    `in_proj_weight` when all sizes are PyTorch's defaults, else `sqrt(6 / (in + out))`
    per matrix), the output weight U(-1/sqrt(in), 1/sqrt(in)), every bias zero.

    **Shapes:** `query` `(q_seq, query_size)`, `key_` `(kv_seq, key_size)`, `value`
    `(kv_seq, value_size)`, `mask` `(q_seq, kv_seq)` or `(num_heads, q_seq, kv_seq)`;
    output `(q_seq, output_size)`.

    ```python
    mha = ecliptic.nn.MultiheadAttention(4, 64, key=jax.random.key(0))
    y = mha(x, x, x)  # x: (seq, 64) -> y: (seq, 64)
    ```
    """

    query_proj: Linear
    key_proj: Linear
    value_proj: Linear
    output_proj: Linear
    dropout: Dropout
    num_heads: int = field(static=True)
    query_size: int = field(static=True)
    key_size: int = field(static=True)
    value_size: int = field(static=True)
    output_size: int = field(static=True)
    qk_size: int = field(static=True)
    vo_size: int = field(static=True)
    use_query_bias: bool = field(static=True)
    use_key_bias: bool = field(static=True)
    use_value_bias: bool = field(static=True)
    use_output_bias: bool = field(static=True)

    def __init__(
        self,
        num_heads: int,
        query_size: int,
        key_size: int | None = None,
        value_size: int | None = None,
        output_size: int | None = None,
        qk_size: int | None = None,
        vo_size: int | None = None,
        use_query_bias: bool = False,
        use_key_bias: bool = False,
        use_value_bias: bool = False,
        use_output_bias: bool = False,
        dropout_p: float = 0.0,
        inference: bool = False,
        dtype: Any = None,
        *,
        key: PRNGKeyArray | None = None,
    ):
        num_heads = check_positive_int(num_heads, "num_heads", "MultiheadAttention")
        query_size = check_positive_int(query_size, "query_size", "MultiheadAttention")
        if (qk_size is None or vo_size is None) and query_size % num_heads != 0:
            raise ValueError(
                f"MultiheadAttention: query_size ({query_size}) must be divisible by num_heads "
                f"({num_heads}) to split it between the heads; or give qk_size and vo_size "
                "(the per-head sizes) explicitly."
            )
        sizes = {
            "key_size": query_size if key_size is None else key_size,
            "value_size": query_size if value_size is None else value_size,
            "output_size": query_size if output_size is None else output_size,
            "qk_size": query_size // num_heads if qk_size is None else qk_size,
            "vo_size": query_size // num_heads if vo_size is None else vo_size,
        }
        sizes = {
            name: check_positive_int(v, name, "MultiheadAttention") for name, v in sizes.items()
        }
        check_key(key, "MultiheadAttention")
        dtype = resolve_dtype(dtype)
        qk_total = num_heads * sizes["qk_size"]
        vo_total = num_heads * sizes["vo_size"]
        in_sizes = (query_size, sizes["key_size"], sizes["value_size"])
        biases = tuple(
            bool(b) for b in (use_query_bias, use_key_bias, use_value_bias, use_output_bias)
        )
        self.query_proj, self.key_proj, self.value_proj, self.output_proj = _init_projections(
            key, in_sizes, qk_total, vo_total, sizes["output_size"], biases, dtype
        )
        self.dropout = Dropout(dropout_p, inference=inference)
        self.num_heads = num_heads
        self.query_size = query_size
        self.key_size = sizes["key_size"]
        self.value_size = sizes["value_size"]
        self.output_size = sizes["output_size"]
        self.qk_size = sizes["qk_size"]
        self.vo_size = sizes["vo_size"]
        self.use_query_bias = bool(use_query_bias)
        self.use_key_bias = bool(use_key_bias)
        self.use_value_bias = bool(use_value_bias)
        self.use_output_bias = bool(use_output_bias)

    @named_scope_call
    def __call__(
        self,
        query: ArrayLike,
        key_: ArrayLike,
        value: ArrayLike,
        mask: ArrayLike | None = None,
        *,
        key: PRNGKeyArray | None = None,
        inference: bool | None = None,
        deterministic: bool | None = None,
        process_heads: HeadsFn | None = None,
    ) -> Array:
        """**Arguments:**

        - `query`: `(q_seq, query_size)`.
        - `key_`: `(kv_seq, key_size)`.
        - `value`: `(kv_seq, value_size)`.
        - `mask`: optional boolean `(q_seq, kv_seq)` or `(num_heads, q_seq, kv_seq)`;
            `True` means "may attend". A query that may attend to nothing gets uniform
            weights over all keys (PyTorch gives NaN).
        - `key`: PRNG key for the attention dropout (needed when it is active).
        - `inference`, `deterministic`: override the dropout's inference flag.
        - `process_heads`: optional `(query_heads, key_heads, value_heads) -> (q, k, v)`
            applied to the projected heads, each `(seq, num_heads, head_size)`, before the
            attention (e.g. to apply rotary embeddings).

        **Returns:** `(q_seq, output_size)`.
        """
        query = _check_input(query, self.query_size, "query", "q_seq")
        key_ = _check_input(key_, self.key_size, "key_", "kv_seq")
        value = _check_input(value, self.value_size, "value", "kv_seq")
        if key_.shape[0] != value.shape[0]:
            raise ValueError(
                "MultiheadAttention: key_ and value must have the same sequence length; got "
                f"shapes {tuple(key_.shape)} and {tuple(value.shape)}."
            )
        h = self.num_heads
        # Project every position at once, then split the features into heads.
        q = jax.vmap(self.query_proj)(query).reshape(query.shape[0], h, self.qk_size)
        k = jax.vmap(self.key_proj)(key_).reshape(key_.shape[0], h, self.qk_size)
        v = jax.vmap(self.value_proj)(value).reshape(value.shape[0], h, self.vo_size)
        if process_heads is not None:
            if not callable(process_heads):
                raise TypeError(
                    "MultiheadAttention: process_heads must be a function (q, k, v) -> "
                    f"(q, k, v); got {process_heads!r}."
                )
            heads = process_heads(q, k, v)
            if not (
                isinstance(heads, (tuple, list))
                and len(heads) == 3
                and all(hasattr(x, "shape") and hasattr(x, "ndim") for x in heads)
            ):
                raise TypeError(
                    "MultiheadAttention: process_heads must return a tuple of three arrays "
                    f"(q, k, v); got {type(heads).__name__}."
                )
            q, k, v = heads
            if (
                q.ndim != 3
                or k.ndim != 3
                or v.ndim != 3
                or q.shape[1:] != k.shape[1:]
                or k.shape[:2] != v.shape[:2]
                or q.shape[1] != h
            ):
                raise ValueError(
                    "MultiheadAttention: process_heads must return heads of shapes "
                    f"(q_seq, {h}, d_qk), (kv_seq, {h}, d_qk), (kv_seq, {h}, d_v); got "
                    f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}."
                )
        q_seq, kv_seq = q.shape[0], k.shape[0]
        if mask is not None:
            mask = self._check_mask(mask, q_seq, kv_seq)
        training = not resolve_inference(
            self.dropout.inference, inference, deterministic, "MultiheadAttention()"
        )
        dropout_active = training and 0.0 < self.dropout.p < 1.0
        if dropout_active and key is None:
            raise MissingKeyError(
                f"MultiheadAttention(dropout_p={self.dropout.p}) needs a PRNG key for its "
                "attention dropout: pass key=jax.random.key(...) to the call, or set "
                "inference=True (for a whole model: ecliptic.nn.inference_mode(model))."
            )

        def drop_weights(weights: jax.Array) -> jax.Array:
            return self.dropout(weights, key=key, inference=inference, deterministic=deterministic)

        # Dropout on the weights needs the explicit path, which materialises them. (p = 1
        # in training drops everything; the Dropout layer decides what that means.)
        weights_fn = drop_weights if training and self.dropout.p > 0.0 else None

        # Through jax.nn.dot_product_attention (fused) on GPU when nothing needs the weights.
        attended = multihead_attention(q, k, v, mask, weights_fn).reshape(q_seq, -1)
        return jax.vmap(self.output_proj)(attended)

    def _check_mask(self, mask: Any, q_seq: int, kv_seq: int) -> jax.Array:
        mask = jnp.asarray(mask)
        if mask.dtype != jnp.bool_:
            raise TypeError(
                "MultiheadAttention: mask must be boolean (True = may attend); got dtype "
                f"{mask.dtype}. For a PyTorch-style mask (True = blocked) pass ~mask."
            )
        h = self.num_heads
        if mask.shape == (q_seq, kv_seq):
            return mask[None]
        if mask.shape == (h, q_seq, kv_seq):
            return mask
        raise ValueError(
            f"MultiheadAttention: mask must have shape (q_seq, kv_seq) = ({q_seq}, {kv_seq}) "
            f"or (num_heads, q_seq, kv_seq) = ({h}, {q_seq}, {kv_seq}); got shape "
            f"{tuple(mask.shape)}."
        )
