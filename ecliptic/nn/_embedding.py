"""Embedding tables and rotary positional embeddings."""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from .._checks import is_int
from .._errors import error_if
from .._module import Module, field
from ._arg_checks import check_key, check_positive_int
from ._init_helpers import compute_dtype, resolve_dtype
from ._scope import named_scope_call


class Embedding(Module):
    """A lookup table of learnt vectors, as `torch.nn.Embedding`.

    **Arguments:**

    - `num_embeddings`: number of rows (the vocabulary size).
    - `embedding_size`: length of each vector.
    - `weight`: an existing `(num_embeddings, embedding_size)` table to use instead of a
        random one (the sizes may then be omitted; if given they must match).
    - `dtype`: parameter dtype (default float32, float64 with x64 on).
    - `key`: PRNG key for the initialisation; needed unless `weight` is given.

    **Parameters:** `weight` of shape `(num_embeddings, embedding_size)`, initialised from
    N(0, 1) as in PyTorch.

    **Shapes:** input an integer index: a scalar gives `(embedding_size,)`; an integer array
    of shape `s` gives `(*s, embedding_size)`. Indices given from the host (Python ints,
    NumPy arrays) must lie in `[0, num_embeddings)`, else `IndexError` (as PyTorch).
    Indices that are JAX arrays (e.g. traced under `jit`) are not checked by default:
    negative ones count from the end and too-large ones are clamped (JAX's gather
    semantics). Set the environment variable `ECLIPTIC_RUNTIME_CHECKS=1` before tracing to
    check them at run time with `error_if` (a branch per call).

    ```python
    embed = ecliptic.nn.Embedding(1000, 64, key=jax.random.key(0))
    vectors = embed(jnp.array([3, 1, 4]))  # (3, 64)
    ```
    """

    weight: Array
    num_embeddings: int = field(static=True)
    embedding_size: int = field(static=True)

    def __init__(
        self,
        num_embeddings: int | None = None,
        embedding_size: int | None = None,
        weight: Any = None,
        dtype: Any = None,
        *,
        key: PRNGKeyArray | None = None,
    ):
        if weight is None:
            if num_embeddings is None or embedding_size is None:
                raise ValueError(
                    "Embedding needs num_embeddings and embedding_size (or a weight=... table)."
                )
            num = check_positive_int(num_embeddings, "num_embeddings", "Embedding")
            size = check_positive_int(embedding_size, "embedding_size", "Embedding")
            check_key(key, "Embedding")
            weight = jax.random.normal(key, (num, size), resolve_dtype(dtype))  # pyright: ignore[reportArgumentType]
        else:
            weight = jnp.asarray(weight, None if dtype is None else resolve_dtype(dtype))
            if weight.ndim != 2:
                raise ValueError(
                    "Embedding: weight must have shape (num_embeddings, embedding_size); "
                    f"got shape {tuple(weight.shape)}."
                )
            for name, given, actual in (
                ("num_embeddings", num_embeddings, weight.shape[0]),
                ("embedding_size", embedding_size, weight.shape[1]),
            ):
                if given is not None and given != actual:
                    raise ValueError(
                        f"Embedding: {name}={given} does not match the weight of shape "
                        f"{tuple(weight.shape)}."
                    )
        self.weight = weight
        self.num_embeddings = int(weight.shape[0])
        self.embedding_size = int(weight.shape[1])

    @named_scope_call
    def __call__(
        self, x: Array | np.ndarray | np.integer | int, *, key: PRNGKeyArray | None = None
    ) -> Array:
        """**Arguments:**

        - `x`: an integer index, scalar or array.
        - `key`: ignored.

        **Returns:** the rows of `weight` at `x`: shape `(*x.shape, embedding_size)`.
        """
        dtype = getattr(x, "dtype", None)
        if dtype is None:
            if not is_int(x):
                raise TypeError(
                    f"Embedding expects an integer index (a Python int or an integer array); "
                    f"got {type(x).__name__} {x!r}."
                )
        elif jnp.dtype(dtype) == jnp.bool_ or not jnp.issubdtype(dtype, jnp.integer):
            raise TypeError(
                f"Embedding expects integer indices; got an array of dtype {dtype}. "
                "Cast with x.astype(jnp.int32) if the values are whole numbers."
            )
        if isinstance(x, (int, np.integer, np.ndarray)):
            # Host values are checked for free; JAX's indexing would silently clamp them.
            _check_range(np.asarray(x), self.num_embeddings)
        elif runtime_checks_enabled():
            # Device/traced indices: an opt-in check at run time (a branch per call).
            x = error_if(
                x,
                (x < 0) | (x >= self.num_embeddings),
                f"Embedding: an index is out of range for num_embeddings="
                f"{self.num_embeddings}; indices must be in [0, {self.num_embeddings - 1}].",
            )
        return self.weight[jnp.asarray(x)]


def runtime_checks_enabled() -> bool:
    """Whether `ECLIPTIC_RUNTIME_CHECKS` asks layers for value checks at run time.

    Read when a layer is traced (like `ECLIPTIC_ON_ERROR`), so set it before the first
    call of a jitted function. Off by default: the checks cost a branch per call.
    """
    return os.environ.get("ECLIPTIC_RUNTIME_CHECKS", "").strip().lower() in ("1", "true", "yes")


def _check_range(x: np.ndarray, num_embeddings: int) -> None:
    if x.size and (x.min() < 0 or x.max() >= num_embeddings):
        bad = x.min() if x.min() < 0 else x.max()
        raise IndexError(
            f"Embedding: index {bad} is out of range for num_embeddings={num_embeddings}; "
            f"indices must be in [0, {num_embeddings - 1}]."
        )


class RotaryPositionalEmbedding(Module):
    """Rotary positional embedding (RoPE), in the "rotate half" convention of GPT-NeoX
    (and Equinox, and Hugging Face's Llama code).

    Position `t` (the index along the first axis) rotates each pair of features
    `(x[i], x[i + d/2])`, `i < d/2`, by the angle `t * theta**(-2i/d)`:

        y[..., :d/2] = x1 * cos - x2 * sin
        y[..., d/2:] = x2 * cos + x1 * sin,      x1, x2 = x[..., :d/2], x[..., d/2:]

    i.e. `y = x * cos + rotate_half(x) * sin` with `rotate_half(x) = concat(-x2, x1)`.
    The original RoFormer/Meta-Llama code pairs *adjacent* features `(x[2i], x[2i+1])`
    instead; the two differ by a fixed permutation of the features (of the query/key
    projection weights when converting checkpoints).

    **Arguments:**

    - `embedding_size`: the feature size `d`; must be even.
    - `theta`: the base of the frequencies.
    - `dtype`: dtype to compute the angles and the rotation in; default `None` uses the
        input's dtype (float32 for float16/bfloat16 inputs, mixed in by JAX's promotion, which
        strict dtype promotion rejects, as in Equinox). The output has the input's
        dtype either way.

    **Parameters:** none.

    **Shapes:** input `(seq_len, embedding_size)`, or `(seq_len, ..., embedding_size)`
    (positions along the first axis, e.g. `(seq_len, num_heads, head_size)` inside
    `MultiheadAttention(process_heads=...)`); output the same shape.

    ```python
    rope = ecliptic.nn.RotaryPositionalEmbedding(64)
    y = rope(x)  # x: (seq_len, 64)
    ```
    """

    embedding_size: int = field(static=True)
    theta: float = field(static=True)
    dtype: Any = field(static=True)

    def __init__(self, embedding_size: int, theta: float = 10000.0, dtype: Any = None):
        size = check_positive_int(embedding_size, "embedding_size", "RotaryPositionalEmbedding")
        if size % 2 != 0:
            raise ValueError(
                f"RotaryPositionalEmbedding: embedding_size must be even (features are "
                f"rotated in pairs); got {size}."
            )
        self.embedding_size = size
        self.theta = float(theta)
        self.dtype = None if dtype is None else resolve_dtype(dtype)

    @staticmethod
    def rotate_half(x: jax.Array) -> jax.Array:
        """The quarter-turn that RoPE mixes in: `concat(-x2, x1)` for the two halves
        `x1, x2` of the last axis, so that `y = x * cos + rotate_half(x) * sin`.

        **Arguments:** `x`, an array whose last axis has even size.

        **Returns:** an array of the same shape.
        """
        half = x.shape[-1] // 2
        return jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)

    @staticmethod
    def precompute_freqs_cis(
        embedding_size: int, end: int, theta: float, dtype: Any
    ) -> tuple[jax.Array, jax.Array]:
        """The cosines and sines of the rotation angles `t * theta**(-2i/d)` for
        positions `t < end` and pairs `i < d/2`.

        **Arguments:** `embedding_size` (`d`), `end` (the number of positions), `theta`,
        and the `dtype` of the results (computed in the default float precision first).

        **Returns:** `(cos, sin)`, each of shape `(end, embedding_size // 2)`.
        """
        exponents = jnp.arange(0.0, embedding_size, 2.0) / embedding_size
        angles = jnp.outer(jnp.arange(float(end)), 1.0 / theta**exponents)
        return jnp.cos(angles).astype(dtype), jnp.sin(angles).astype(dtype)

    @named_scope_call
    def __call__(self, x: ArrayLike, *, key: PRNGKeyArray | None = None) -> Array:
        """**Arguments:**

        - `x`: an array of shape `(seq_len, ..., embedding_size)`.
        - `key`: ignored.

        **Returns:** the rotated array, same shape and dtype as `x`.
        """
        x = jnp.asarray(x)
        if x.ndim < 2 or x.shape[-1] != self.embedding_size:
            raise ValueError(
                "RotaryPositionalEmbedding expects an input of shape (seq_len, "
                f"{self.embedding_size}) (or (seq_len, ..., {self.embedding_size})); "
                f"got shape {tuple(x.shape)}."
            )
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(
                f"RotaryPositionalEmbedding expects a floating-point input; got {x.dtype}."
            )
        dtype = compute_dtype(x.dtype) if self.dtype is None else self.dtype
        half = self.embedding_size // 2
        inv_freq = self.theta ** (-jnp.arange(half, dtype=dtype) * (2.0 / self.embedding_size))
        angles = jnp.arange(x.shape[0], dtype=dtype)[:, None] * inv_freq[None, :]
        # (seq, half) -> (seq, 1, ..., 1, half) to broadcast over any middle axes.
        angles = angles.reshape((x.shape[0],) + (1,) * (x.ndim - 2) + (half,))
        cos, sin = jnp.cos(angles), jnp.sin(angles)
        # No explicit cast of `x`: a float16 input against float32 angles promotes as JAX
        # promotes (an error under strict dtype promotion, as in Equinox).
        x1, x2 = x[..., :half], x[..., half:]
        out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
        return out.astype(x.dtype)
