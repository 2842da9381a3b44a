"""Activation layers with learnable parameters."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from .._checks import is_int
from .._module import Module, field
from ._init_helpers import filled, resolve_dtype
from ._scope import named_scope_call


class PReLU(Module):
    """Parametric ReLU, as `torch.nn.PReLU`: `y = x` where `x > 0`, else
    `negative_slope * x`.

    **Arguments:**

    - `init_alpha`: initial negative slope: a float (one slope shared by every element),
        or an array of per-channel slopes `(C,)`.
    - `dtype`: parameter dtype (default float32, float64 with x64 on).
    - `num_parameters`: PyTorch's per-channel option: with a float `init_alpha`, build
        `num_parameters` slopes (all `init_alpha`). Default 1: one shared slope.
    - `channels_first`: where per-channel slopes `(C,)` apply. `False` (as Equinox):
        they broadcast against the input as NumPy does, i.e. along its LAST axis.
        `True` (as PyTorch for one unbatched example): along its first axis, the input
        being `(C, *spatial)`. Default `None`: `True` for slopes built with
        `num_parameters > 1` (PyTorch's option), `False` otherwise.

    **Parameters:** `negative_slope` of shape `()` for one shared slope (Equinox's
    layout; PyTorch's `PReLU.weight` is the same value with shape `(1,)`), or `(C,)` per
    channel.

    **Shapes:** input any shape (`(..., C)`, or `(C, *spatial)` with `channels_first`,
    when the slope is per channel); output the same.

    ```python
    act = ecliptic.nn.PReLU()
    y = act(x)
    ```
    """

    negative_slope: Array
    channels_first: bool = field(static=True)

    def __init__(
        self,
        init_alpha: Any = 0.25,
        dtype: Any = None,
        *,
        num_parameters: int = 1,
        channels_first: bool | None = None,
    ):
        if not is_int(num_parameters):
            raise TypeError(f"PReLU: num_parameters must be an int; got {num_parameters!r}.")
        if num_parameters < 1:
            raise ValueError(f"PReLU: num_parameters must be >= 1; got {num_parameters}.")
        self.channels_first = num_parameters > 1 if channels_first is None else bool(channels_first)
        if isinstance(init_alpha, (jax.Array, np.ndarray)):
            alpha = jnp.asarray(init_alpha, resolve_dtype(dtype) if dtype is not None else None)
            if not jnp.issubdtype(alpha.dtype, jnp.floating):
                alpha = alpha.astype(resolve_dtype(None))
            if alpha.ndim == 0 and num_parameters > 1:
                alpha = jnp.broadcast_to(alpha, (num_parameters,))
            elif alpha.ndim != 1:
                raise ValueError(
                    "PReLU: an array init_alpha must be a scalar or a vector of per-channel "
                    f"slopes (C,); got shape {tuple(alpha.shape)}."
                )
            self.negative_slope = alpha
        else:
            shape = () if num_parameters == 1 else (int(num_parameters),)
            if dtype is None:
                # A Python number gives a weakly typed slope (as in Equinox): it takes a
                # floating input's dtype instead of promoting it.
                self.negative_slope = jnp.full(shape, float(init_alpha))
            else:
                self.negative_slope = filled(shape, init_alpha, resolve_dtype(dtype))

    @named_scope_call
    def __call__(self, x: ArrayLike, *, key: PRNGKeyArray | None = None) -> Array:
        """**Arguments:**

        - `x`: an array; channels first `(C, *spatial)` if the slope is per channel.
        - `key`: ignored.

        **Returns:** an array of the same shape.
        """
        x = jnp.asarray(x)
        slope = self.negative_slope
        if slope.size > 1:
            c = slope.shape[0]
            axis = 0 if self.channels_first else -1
            if x.ndim < 1 or x.shape[axis] != c:
                expected = f"({c}, *spatial)" if self.channels_first else f"(..., {c})"
                raise ValueError(
                    f"PReLU has {c} per-channel slopes and expects an input of shape "
                    f"{expected}; got shape {tuple(x.shape)}."
                )
            if self.channels_first:
                slope = slope.reshape((c,) + (1,) * (x.ndim - 1))
            else:  # explicit, so that rank promotion set to "raise" accepts it
                slope = slope.reshape((1,) * (x.ndim - 1) + (c,))
        else:
            slope = slope.reshape(())
        # The output dtype, promoted explicitly so that strict dtype promotion accepts any
        # input: an integer input takes the slope's dtype; a floating input keeps its own
        # against a weakly typed slope (from a Python number), else the two promote.
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            out_dtype = slope.dtype
        elif getattr(slope, "weak_type", False):
            out_dtype = x.dtype
        else:
            out_dtype = jnp.promote_types(x.dtype, slope.dtype)
        x, slope = x.astype(out_dtype), slope.astype(out_dtype)
        # `x > 0` (not >=) so that the gradient at 0 is the slope's, as in PyTorch.
        return jnp.where(x > 0, x, slope * x)
