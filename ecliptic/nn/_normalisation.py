"""Normalisation layers: LayerNorm, GroupNorm and RMSNorm, with PyTorch's semantics.

All three compute their statistics in float32 when given float16/bfloat16 (sums of
squares lose too much in half precision) and cast the result back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from .._checks import is_int, is_real
from .._module import Module, field
from ._arg_checks import explain_parameter_shapes
from ._init_helpers import compute_dtype, filled, resolve_dtype
from ._scope import named_scope_call

# Marks "no state passed", so that these layers can sit in a `Sequential` that threads a
# state through: called with a state they return `(output, state)` unchanged.
_NO_STATE = object()


def _normalized_shape(shape: Any, layer: str) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (int(shape),)
    elif isinstance(shape, Sequence) and all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in shape
    ):
        shape = tuple(int(s) for s in shape)
    else:
        raise TypeError(f"{layer}: shape must be an int or a sequence of ints; got {shape!r}.")
    if any(s < 1 for s in shape):
        raise ValueError(f"{layer}: every entry of shape must be >= 1; got {shape}.")
    return shape


def _check_eps(eps: Any, layer: str) -> float:
    if not is_real(eps):
        raise TypeError(f"{layer}: eps must be a float >= 0; got {eps!r}.")
    if not eps >= 0:  # also catches NaN
        raise ValueError(f"{layer}: eps must be a float >= 0; got {eps!r}.")
    return float(eps)


def _check_trailing(x: jax.Array, shape: tuple[int, ...], layer: str) -> None:
    n = len(shape)
    if x.ndim < n or tuple(x.shape[x.ndim - n :]) != shape:
        raise ValueError(
            f"{layer}: the input's trailing dimensions must be {shape} (the normalised "
            f"shape); got an input of shape {tuple(x.shape)}."
        )


def _as_float_input(x: Any, layer: str) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{layer} expects a floating-point input; got dtype {x.dtype}.")
    return x


def _affine(
    y: jax.Array, weight: jax.Array | None, bias: jax.Array | None, out_dtype: Any
) -> jax.Array:
    """Scale and shift in the compute dtype, then cast once at the end."""
    if weight is not None:
        y = y * weight.astype(y.dtype)
    if bias is not None:
        y = y + bias.astype(y.dtype)
    return y.astype(out_dtype)


def _out_dtype(x: jax.Array, *params: jax.Array | None) -> Any:
    return jnp.result_type(x.dtype, *[p.dtype for p in params if p is not None])


def _checked_affine(layer: str, y: Any, norm: Any, shape: Any, out_dtype: Any) -> Any:
    """`_affine` with `norm`'s weight and bias, explaining a parameter of the wrong shape."""
    try:
        return _affine(y, norm.weight, norm.bias, out_dtype)
    except (TypeError, ValueError) as error:
        if shape is not None:
            expected = [("weight", norm.weight, shape), ("bias", norm.bias, shape)]
            explain_parameter_shapes(layer, expected, error)
        raise


class LayerNorm(Module):
    """Layer normalisation over the trailing `shape` dimensions, as `torch.nn.LayerNorm`:
    `y = (x - mean) / sqrt(var + eps) * weight + bias`, with the biased variance.

    **Arguments:**

    - `shape`: the normalised shape (an int or a tuple): the trailing dimensions of the
        input to take statistics over. `None` normalises over the whole input and has
        no parameters.
    - `eps`: added to the variance for numerical stability.
    - `use_weight`, `use_bias`: whether to learn an elementwise scale / shift.
    - `dtype`: parameter dtype (default float32, float64 with x64 on).
    - `elementwise_affine`: PyTorch's name; if given, sets both `use_weight` and `use_bias`.

    **Parameters:** `weight` of shape `shape` (init ones), `bias` of shape `shape` (init
    zeros); each is `None` when disabled.

    **Shapes:** input `(*leading, *shape)`; output the same shape.

    ```python
    norm = ecliptic.nn.LayerNorm(64)
    y = norm(x)  # x: (seq, 64)
    ```
    """

    weight: Array | None
    bias: Array | None
    shape: tuple[int, ...] | None = field(static=True)
    eps: float = field(static=True)
    use_weight: bool = field(static=True)
    use_bias: bool = field(static=True)

    def __init__(
        self,
        shape: int | Sequence[int] | None,
        eps: float = 1e-5,
        use_weight: bool = True,
        use_bias: bool = True,
        dtype: Any = None,
        *,
        elementwise_affine: bool | None = None,
    ):
        if elementwise_affine is not None:
            use_weight = use_bias = bool(elementwise_affine)
        dtype = resolve_dtype(dtype)
        if shape is None:
            # No shape to build parameters from: only the statistics are applied.
            use_weight = use_bias = False
            self.shape = None
        else:
            self.shape = _normalized_shape(shape, "LayerNorm")
        self.eps = _check_eps(eps, "LayerNorm")
        self.use_weight = bool(use_weight)
        self.use_bias = bool(use_bias)
        self.weight = filled(self.shape, 1, dtype) if self.use_weight else None  # pyright: ignore[reportArgumentType]
        self.bias = filled(self.shape, 0, dtype) if self.use_bias else None  # pyright: ignore[reportArgumentType]

    @named_scope_call
    def __call__(
        self, x: ArrayLike, state: Any = _NO_STATE, *, key: PRNGKeyArray | None = None
    ) -> Any:
        """**Arguments:**

        - `x`: an array of shape `(*leading, *shape)`.
        - `state`: optional; if given, `(output, state)` is returned (for `Sequential`).
        - `key`: ignored; accepted so that every layer has the same call signature.

        **Returns:** the normalised array, same shape as `x`.
        """
        x = _as_float_input(x, "LayerNorm")
        if self.shape is None:
            axes = tuple(range(x.ndim))
        else:
            _check_trailing(x, self.shape, "LayerNorm")
            axes = tuple(range(x.ndim - len(self.shape), x.ndim))
        out_dtype = _out_dtype(x, self.weight, self.bias)
        xc = x.astype(compute_dtype(x.dtype))
        mean = jnp.mean(xc, axis=axes, keepdims=True)
        centred = xc - mean
        # Two-pass variance: E[(x - mean)^2] does not cancel catastrophically.
        var = jnp.mean(jnp.square(centred), axis=axes, keepdims=True)
        y = _checked_affine(
            "LayerNorm", centred * jax.lax.rsqrt(var + self.eps), self, self.shape, out_dtype
        )
        return y if state is _NO_STATE else (y, state)


class GroupNorm(Module):
    """Group normalisation, as `torch.nn.GroupNorm`: the channels are split into `groups`
    groups and each group is normalised over its channels and all spatial positions; then
    an optional per-channel affine transform is applied.

    **Arguments:**

    - `groups`: number of groups; must divide the number of channels.
    - `channels`: number of channels; required when `channelwise_affine=True`.
    - `eps`: added to the variance for numerical stability.
    - `channelwise_affine`: whether to learn a per-channel scale and shift.
    - `dtype`: parameter dtype (default float32, float64 with x64 on).

    **Parameters:** `weight` `(channels,)` (init ones), `bias` `(channels,)` (init zeros);
    `None` when `channelwise_affine=False`.

    **Shapes:** input `(channels, *spatial)`; output the same shape.

    ```python
    norm = ecliptic.nn.GroupNorm(groups=4, channels=32)
    y = norm(x)  # x: (32, height, width)
    ```
    """

    weight: Array | None
    bias: Array | None
    groups: int = field(static=True)
    channels: int | None = field(static=True)
    eps: float = field(static=True)
    channelwise_affine: bool = field(static=True)

    def __init__(
        self,
        groups: int,
        channels: int | None = None,
        eps: float = 1e-5,
        channelwise_affine: bool = True,
        dtype: Any = None,
    ):
        if not is_int(groups) or groups < 1:
            raise ValueError(f"GroupNorm: groups must be a positive int; got {groups!r}.")
        if channels is not None:
            if not is_int(channels):
                raise TypeError(f"GroupNorm: channels must be an int; got {channels!r}.")
            if channels < 1 or channels % groups != 0:
                raise ValueError(
                    f"GroupNorm: channels ({channels}) must be a positive multiple of "
                    f"groups ({groups})."
                )
        if channelwise_affine and channels is None:
            raise ValueError(
                "GroupNorm(channelwise_affine=True) needs channels=... to build its "
                "per-channel weight and bias."
            )
        dtype = resolve_dtype(dtype)
        self.groups = int(groups)
        self.channels = None if channels is None else int(channels)
        self.eps = _check_eps(eps, "GroupNorm")
        self.channelwise_affine = bool(channelwise_affine)
        if self.channelwise_affine:
            self.weight = filled((self.channels,), 1, dtype)  # pyright: ignore[reportArgumentType]
            self.bias = filled((self.channels,), 0, dtype)  # pyright: ignore[reportArgumentType]
        else:
            self.weight = None
            self.bias = None

    @named_scope_call
    def __call__(
        self, x: ArrayLike, state: Any = _NO_STATE, *, key: PRNGKeyArray | None = None
    ) -> Any:
        """**Arguments:**

        - `x`: an array of shape `(channels, *spatial)`.
        - `state`: optional; if given, `(output, state)` is returned (for `Sequential`).
        - `key`: ignored.

        **Returns:** the normalised array, same shape as `x`.
        """
        x = _as_float_input(x, "GroupNorm")
        if x.ndim < 1:
            raise ValueError(
                "GroupNorm expects an input of shape (channels, *spatial); got a scalar."
            )
        c = x.shape[0]
        if self.channels is not None and c != self.channels:
            raise ValueError(
                f"GroupNorm expects {self.channels} channels (input shape (channels, "
                f"*spatial)); got shape {tuple(x.shape)}."
            )
        if c % self.groups != 0:
            raise ValueError(f"GroupNorm: {c} channels cannot be split into {self.groups} groups.")
        out_dtype = _out_dtype(x, self.weight, self.bias)
        xc = x.astype(compute_dtype(x.dtype)).reshape(self.groups, -1)
        centred = xc - jnp.mean(xc, axis=1, keepdims=True)
        var = jnp.mean(jnp.square(centred), axis=1, keepdims=True)
        y = (centred * jax.lax.rsqrt(var + self.eps)).reshape(x.shape)
        if self.channelwise_affine:
            # (C,) -> (C, 1, ..., 1) so the parameters broadcast over spatial positions.
            bshape = (c,) + (1,) * (x.ndim - 1)
            try:
                weight, bias = self.weight.reshape(bshape), self.bias.reshape(bshape)  # pyright: ignore[reportOptionalMemberAccess]
            except (TypeError, ValueError) as error:
                expected = [("weight", self.weight, (c,)), ("bias", self.bias, (c,))]
                explain_parameter_shapes("GroupNorm", expected, error)
                raise
            y = _affine(y, weight, bias, out_dtype)
        else:
            y = y.astype(out_dtype)
        return y if state is _NO_STATE else (y, state)


class RMSNorm(Module):
    """Root-mean-square normalisation over the trailing `shape` dimensions:
    `y = x / sqrt(mean(x**2) + eps) * weight + bias`.

    `torch.nn.RMSNorm` has no bias: with `use_bias=False` this layer matches it exactly
    (pass `eps` explicitly to torch, whose default is the dtype's machine epsilon). The
    optional `bias` is added after the scale.

    **Arguments:**

    - `shape`: the normalised shape (an int or a tuple of trailing dimensions).
    - `eps`: added to the mean square for numerical stability.
    - `use_weight`, `use_bias`: whether to learn an elementwise scale / shift.
    - `dtype`: parameter dtype (default float32, float64 with x64 on).

    **Parameters:** `weight` of shape `shape` (init ones), `bias` of shape `shape` (init
    zeros); each is `None` when disabled.

    **Shapes:** input `(*leading, *shape)`; output the same shape.

    ```python
    norm = ecliptic.nn.RMSNorm(64, use_bias=False)
    y = norm(x)  # x: (seq, 64)
    ```
    """

    weight: Array | None
    bias: Array | None
    shape: tuple[int, ...] = field(static=True)
    eps: float = field(static=True)
    use_weight: bool = field(static=True)
    use_bias: bool = field(static=True)

    def __init__(
        self,
        shape: int | Sequence[int],
        eps: float = 1e-5,
        use_weight: bool = True,
        use_bias: bool = True,
        dtype: Any = None,
    ):
        dtype = resolve_dtype(dtype)
        self.shape = _normalized_shape(shape, "RMSNorm")
        self.eps = _check_eps(eps, "RMSNorm")
        self.use_weight = bool(use_weight)
        self.use_bias = bool(use_bias)
        self.weight = filled(self.shape, 1, dtype) if self.use_weight else None
        self.bias = filled(self.shape, 0, dtype) if self.use_bias else None

    @named_scope_call
    def __call__(
        self, x: ArrayLike, state: Any = _NO_STATE, *, key: PRNGKeyArray | None = None
    ) -> Any:
        """**Arguments:**

        - `x`: an array of shape `(*leading, *shape)`.
        - `state`: optional; if given, `(output, state)` is returned (for `Sequential`).
        - `key`: ignored.

        **Returns:** the normalised array, same shape as `x`.
        """
        x = _as_float_input(x, "RMSNorm")
        _check_trailing(x, self.shape, "RMSNorm")
        axes = tuple(range(x.ndim - len(self.shape), x.ndim))
        out_dtype = _out_dtype(x, self.weight, self.bias)
        xc = x.astype(compute_dtype(x.dtype))
        mean_square = jnp.mean(jnp.square(xc), axis=axes, keepdims=True)
        y = _checked_affine(
            "RMSNorm", xc * jax.lax.rsqrt(mean_square + self.eps), self, self.shape, out_dtype
        )
        return y if state is _NO_STATE else (y, state)
