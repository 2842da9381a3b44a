"""Weight normalisation: a wrapped layer's weight reparametrised as magnitude x direction."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from .._checks import is_int
from .._module import Module, field
from .._tree import tree_at
from ._scope import named_scope_call
from ._spectral_norm import get_weight

_Layer = TypeVar("_Layer")


def _norm_except(v: jax.Array, axis: int | None) -> jax.Array:
    """The 2-norm of ``v`` over every axis but ``axis`` (all axes for None), keepdims."""
    if axis is None:
        return jnp.sqrt(jnp.sum(jnp.abs(v) ** 2))
    axes = tuple(i for i in range(v.ndim) if i != axis)
    return jnp.sqrt(jnp.sum(jnp.abs(v) ** 2, axis=axes, keepdims=True))


class WeightNorm(Module, Generic[_Layer]):
    """Wraps a layer so that its weight is `g * v / ||v||`, as
    `torch.nn.utils.parametrizations.weight_norm`.

    The direction `v` is the wrapped layer's own weight; the magnitude `g` is a new
    parameter, initialised to `||v||` so that the wrapped layer starts out unchanged.
    Norms are taken over every axis except `axis`, one per slice along it.

    **Arguments:**

    - `layer`: the layer to wrap (`Linear`, `Conv2d`, ...).
    - `weight_name`: the attribute of `layer` holding the weight.
    - `axis`: the axis kept by the norm (0: one norm per output unit, as PyTorch's
        default `dim=0`); negative values count from the end; `None` takes one norm over
        the whole weight (PyTorch's `dim=None`).

    **Parameters:** `layer` (its weight is `v`) and `g`, of the weight's shape with
    every axis but `axis` reduced to 1 (shape `()` for `axis=None`), like PyTorch's
    `original0`.

    **Shapes:** those of `layer`.

    ```python
    layer = ecliptic.nn.WeightNorm(ecliptic.nn.Linear(4, 3, key=jax.random.key(0)))
    y = layer(jnp.ones(4))  # (3,); layer.g has shape (3, 1)
    ```
    """

    layer: _Layer
    g: Array
    weight_name: str = field(static=True)
    axis: int | None = field(static=True)

    def __init__(self, layer: _Layer, weight_name: str = "weight", axis: int | None = 0):
        weight = get_weight(layer, weight_name, "WeightNorm")
        if axis is not None:
            if not is_int(axis):
                raise TypeError(f"WeightNorm: axis must be an int or None; got {axis!r}.")
            if not -weight.ndim <= axis < weight.ndim:
                raise ValueError(
                    f"WeightNorm: axis={axis} is out of range for {type(layer).__name__}."
                    f"{weight_name} of shape {weight.shape}."
                )
            axis = axis % weight.ndim
        self.layer = layer
        self.g = _norm_except(weight, axis).astype(weight.dtype)
        self.weight_name = weight_name
        self.axis = axis

    def _weight(self) -> jax.Array:
        """The effective weight `g * v / ||v||`."""
        v = getattr(self.layer, self.weight_name)
        return (v * (self.g / _norm_except(v, self.axis))).astype(v.dtype)

    @named_scope_call
    def __call__(self, x: Any, *, key: PRNGKeyArray | None = None) -> Any:
        """**Arguments:** `x`, the wrapped layer's input; `key`, passed on to it.

        **Returns:** the wrapped layer's output, computed with the normalised weight.
        """
        layer = tree_at(lambda m: getattr(m, self.weight_name), self.layer, self._weight())
        return layer(x, key=key)  # type: ignore[operator]
