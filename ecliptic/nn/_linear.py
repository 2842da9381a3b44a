"""Affine maps: `Linear` and the no-op `Identity`."""

from __future__ import annotations

from typing import Any, Literal, Union

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from .._module import Module, field
from ._arg_checks import check_feature_size, check_key, check_rank, explain_parameter_shapes
from ._init_helpers import fan_in_bound, resolve_dtype, uniform_init
from ._scope import named_scope_call

Size = Union[int, Literal["scalar"]]


class Linear(Module):
    """An affine map ``y = weight @ x + bias``, as PyTorch's ``nn.Linear``.

    **Arguments:**

    - `in_features`: input size, or `"scalar"` for an input of shape `()`.
    - `out_features`: output size, or `"scalar"` for an output of shape `()`.
    - `use_bias`: whether to add a bias.
    - `dtype`: parameter dtype; float32 by default (float64 in x64 mode).
    - `key`: a PRNG key for initialisation (keyword only).

    **Parameters:** `weight` of shape `(out_features, in_features)` and `bias` of shape
    `(out_features,)` (or `None`), a `"scalar"` size counting as 1. Both are initialised
    from U(-1/sqrt(in_features), 1/sqrt(in_features)), as PyTorch does.

    **Input:** shape `(in_features,)` (or `()`); **output:** shape `(out_features,)`
    (or `()`). One example at a time: batch with `jax.vmap`.

    ```python
    layer = ecliptic.nn.Linear(3, 2, key=jax.random.key(0))
    y = layer(jnp.ones(3))  # shape (2,)
    ```
    """

    weight: Array
    bias: Array | None
    in_features: Size = field(static=True)
    out_features: Size = field(static=True)
    use_bias: bool = field(static=True)

    def __init__(
        self,
        in_features: Size,
        out_features: Size,
        use_bias: bool = True,
        dtype: Any = None,
        *,
        key: PRNGKeyArray,
    ):
        n_in = check_feature_size(in_features, "in_features", "Linear")
        n_out = check_feature_size(out_features, "out_features", "Linear")
        check_key(key, "Linear")
        dtype = resolve_dtype(dtype)
        wkey, bkey = jax.random.split(key)
        bound = fan_in_bound(n_in)
        self.weight = uniform_init(wkey, (n_out, n_in), dtype, bound)
        self.bias = uniform_init(bkey, (n_out,), dtype, bound) if use_bias else None
        self.in_features = in_features
        self.out_features = out_features
        self.use_bias = bool(use_bias)

    @named_scope_call
    def __call__(self, x: Array, *, key: PRNGKeyArray | None = None) -> Array:
        """**Arguments:** `x` of shape `(in_features,)` (or `()` for "scalar"); `key` is
        ignored. **Returns:** shape `(out_features,)` (or `()` for "scalar")."""
        del key
        x = jnp.asarray(x)
        if self.in_features == "scalar":
            check_rank(x, 0, "Linear", "a scalar, as in_features='scalar'")
            x = x.reshape(1)
        else:
            check_rank(x, 1, "Linear", f"(in_features,) = ({self.in_features},)")
            if x.shape[0] != self.in_features:
                raise ValueError(
                    f"Linear expects an input of shape ({self.in_features},); got shape "
                    f"{x.shape}. Layers act on one unbatched example: batch with jax.vmap."
                )
        try:
            y = jnp.matmul(self.weight, x)
            if self.bias is not None:
                y = y + self.bias
        except (TypeError, ValueError) as error:
            out = 1 if self.out_features == "scalar" else self.out_features
            n_in = 1 if self.in_features == "scalar" else self.in_features
            expected = [("weight", self.weight, (out, n_in)), ("bias", self.bias, (out,))]
            explain_parameter_shapes("Linear", expected, error)
            raise
        if self.out_features == "scalar":
            y = y.reshape(())
        return y


class Identity(Module):
    """The identity map: returns its input unchanged.

    Accepts and ignores any constructor arguments (so it can stand in for another layer
    with the same call), and ignores `key` when called. No parameters; any input shape.

    ```python
    layer = ecliptic.nn.Identity(3, 4, key=jax.random.key(0))
    layer(jnp.ones(3))  # the same array
    ```
    """

    def __init__(self, *args: Any, **kwargs: Any):
        del args, kwargs

    @named_scope_call
    def __call__(self, x: Any, *, key: PRNGKeyArray | None = None) -> Any:
        """**Arguments:** `x`, anything; `key` is ignored. **Returns:** `x`."""
        del key
        return x
