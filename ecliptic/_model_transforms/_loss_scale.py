"""Dynamic loss scaling for float16 training, as a small immutable pytree.

float16 cannot represent gradients much below 6e-8: small ones flush to zero. Scaling the
loss by a large factor before differentiating, and the gradients back down after, keeps
them representable. The factor is adjusted as training goes: halved (and the step
skipped) whenever a gradient overflows to inf/NaN, doubled after a run of finite steps.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, ArrayLike, PyTree

from .._checks import is_real
from .._filters import is_array
from .._messages import short_repr
from .._module import Module, field

__all__ = ["DynamicLossScale", "all_finite", "select_tree"]


def all_finite(tree: PyTree) -> Array:
    """Whether every floating-point array of a pytree is finite (no inf, no NaN).

    **Arguments:** `tree`, any pytree (e.g. gradients); non-array leaves are ignored.

    **Returns:** a boolean scalar array (`True` for a tree without floating arrays).

    ```python
    ok = ecliptic.all_finite(grads)
    ```
    """
    checks = [
        jnp.all(jnp.isfinite(leaf))
        for leaf in jtu.tree_leaves(tree)
        if is_array(leaf) and jnp.issubdtype(leaf.dtype, jnp.inexact)
    ]
    if not checks:
        return jnp.asarray(True)
    return jnp.stack(checks).all()


def select_tree(pred: ArrayLike, on_true: PyTree, on_false: PyTree) -> PyTree:
    """Pick between two pytrees of the same structure with a traced boolean, leaf by leaf.

    Use it to skip a training step whose gradients were not finite:
    `model = select_tree(ok, new_model, model)`. Array leaves are chosen with `jnp.where`;
    non-array leaves must be equal and are taken from `on_true`.

    **Arguments:** `pred`, a boolean scalar (array or Python bool); `on_true`,
    `on_false`, pytrees of the same structure, shapes and dtypes.

    **Returns:** a pytree like `on_true`.

    ```python
    params = ecliptic.select_tree(finite, new_params, params)
    ```
    """
    pred = jnp.asarray(pred)
    if pred.shape != () or pred.dtype != jnp.bool_:
        raise TypeError(
            f"select_tree: pred must be a boolean scalar; got dtype {pred.dtype} and shape "
            f"{pred.shape}."
        )
    true_leaves, treedef = jtu.tree_flatten(on_true)
    false_leaves, other = jtu.tree_flatten(on_false)
    if treedef != other:
        raise ValueError(
            "select_tree: on_true and on_false must have the same pytree structure; got "
            f"{treedef} and {other}."
        )
    leaves = [
        jnp.where(pred, a, b) if is_array(a) else a for a, b in zip(true_leaves, false_leaves)
    ]
    return treedef.unflatten(leaves)


class DynamicLossScale(Module):
    """A loss scale that adapts to the gradients: an immutable pytree, carried through a
    training step like an optimiser state.

    **Arguments:**

    - `scale`: the initial scale (default `2**15`).
    - `growth_interval`: after this many finite steps in a row, the scale is multiplied by
      `growth_factor` (defaults 2000 and 2.0).
    - `backoff_factor`: the scale is multiplied by it after a non-finite step (default 0.5).
    - `min_scale`: the scale never drops below it (default 1.0).

    **Fields:** `scale` (float32 scalar), `finite_steps` (int32 scalar, finite steps since
    the last change).

    **Use:** `scaled_loss = ls.scale(loss)`, differentiate it, `grads = ls.unscale(grads)`,
    `ok = all_finite(grads)`, apply the update only if `ok` (see `select_tree`), and
    carry on with `ls = ls.adjust(ok)`.

    ```python
    ls = ecliptic.DynamicLossScale()
    grads = ls.unscale(ecliptic.filter_grad(lambda m: ls.scale(loss(m)))(model))
    ok = ecliptic.all_finite(grads)
    model = ecliptic.select_tree(ok, ecliptic.apply_updates(model, step(grads)), model)
    ls = ls.adjust(ok)
    ```
    """

    scale_value: jax.Array
    finite_steps: jax.Array
    growth_interval: int = field(static=True)
    growth_factor: float = field(static=True)
    backoff_factor: float = field(static=True)
    min_scale: float = field(static=True)

    def __init__(
        self,
        scale: Any = 2.0**15,
        growth_interval: int = 2000,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        min_scale: float = 1.0,
        finite_steps: Any = 0,
    ):
        if (
            isinstance(growth_interval, bool)
            or not isinstance(growth_interval, int)
            or (growth_interval < 1)
        ):
            raise ValueError(
                f"DynamicLossScale: growth_interval must be an int >= 1; got "
                f"{short_repr(growth_interval)}."
            )
        for name, value, ok in (
            ("growth_factor", growth_factor, lambda v: v >= 1.0),
            ("backoff_factor", backoff_factor, lambda v: 0.0 < v <= 1.0),
            ("min_scale", min_scale, lambda v: v > 0.0),
        ):
            if not is_real(value) or not ok(value):
                raise ValueError(
                    f"DynamicLossScale: {name} has an invalid value {short_repr(value)} "
                    "(growth_factor >= 1, 0 < backoff_factor <= 1, min_scale > 0)."
                )
        self.scale_value = jnp.asarray(scale, jnp.float32)
        self.finite_steps = jnp.asarray(finite_steps, jnp.int32)
        self.growth_interval = growth_interval
        self.growth_factor = float(growth_factor)
        self.backoff_factor = float(backoff_factor)
        self.min_scale = float(min_scale)

    def scale(self, loss: Any) -> Any:
        """`loss` (any pytree of floating arrays) multiplied by the scale, in its own dtype.
        **Returns:** the scaled loss."""
        return jtu.tree_map(lambda x: x * self.scale_value.astype(x.dtype), loss)

    def unscale(self, grads: Any) -> Any:
        """Gradients of a scaled loss divided by the scale (floating arrays only; other
        leaves, e.g. `None`, pass through). **Returns:** the true gradients."""

        def unscale_leaf(g: Any) -> Any:
            if is_array(g) and jnp.issubdtype(g.dtype, jnp.floating):
                return g / self.scale_value.astype(g.dtype)
            return g

        return jtu.tree_map(unscale_leaf, grads)

    def adjust(self, grads_finite: Any) -> DynamicLossScale:
        """The loss scale for the next step.

        **Arguments:** `grads_finite`, a boolean scalar: whether this step's gradients
        were all finite (`all_finite(grads)`).

        **Returns:** a new `DynamicLossScale`: after a non-finite step the scale times
        `backoff_factor` (at least `min_scale`) and the count reset; after
        `growth_interval` finite steps in a row the scale times `growth_factor`.
        """
        finite = jnp.asarray(grads_finite)
        if finite.shape != () or finite.dtype != jnp.bool_:
            raise TypeError(
                "DynamicLossScale.adjust: grads_finite must be a boolean scalar (e.g. "
                f"ecliptic.all_finite(grads)); got dtype {finite.dtype}, shape {finite.shape}."
            )
        grow = finite & (self.finite_steps + 1 >= self.growth_interval)
        scale = jnp.where(
            finite,
            jnp.where(grow, self.scale_value * self.growth_factor, self.scale_value),
            jnp.maximum(self.scale_value * self.backoff_factor, self.min_scale),
        )
        # A growth that overflows float32 keeps the old scale.
        scale = jnp.where(jnp.isfinite(scale), scale, self.scale_value)
        steps = jnp.where(finite & ~grow, self.finite_steps + 1, 0)
        return DynamicLossScale(
            scale,
            self.growth_interval,
            self.growth_factor,
            self.backoff_factor,
            self.min_scale,
            finite_steps=steps,
        )
