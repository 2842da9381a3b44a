"""Mixed precision as a wrapper: any model computes in a low-precision dtype while its
stored parameters stay in float32.

`MixedPrecision(model, ...)` keeps `model` exactly as it is (float32 parameters: the
optimiser's master copy, what gradients arrive in and what checkpoints save). Each call
casts, inside the call, the floating parameters and inputs to the compute dtype, runs the
model, and casts the floating outputs to the output dtype. Because the casts are part of
the computation, gradients flow back through them and arrive in float32.

Layers whose maths needs float32 (normalisation statistics, by default) keep float32
parameters and see float32 inputs; their outputs go back to the compute dtype. A
`State` (BatchNorm statistics, ...) is never cast.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import PyTree

from .._filters import is_array
from .._messages import short_repr
from .._module import field
from ..nn import BatchNorm, GroupNorm, LayerNorm, RMSNorm, State, StatefulLayer

__all__ = ["DEFAULT_FLOAT32_LAYERS", "MixedPrecision", "cast_floating", "mixed_precision"]

#: Layer types kept in float32 by default: their statistics lose too much in 16 bits.
DEFAULT_FLOAT32_LAYERS: tuple[type, ...] = (LayerNorm, GroupNorm, RMSNorm, BatchNorm)


def _floating_dtype(dtype: Any, name: str) -> np.dtype:
    try:
        resolved = jnp.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved is None or not jnp.issubdtype(resolved, jnp.floating):
        raise TypeError(
            f"mixed_precision: {name} must be a floating dtype such as jnp.bfloat16, "
            f"jnp.float16 or jnp.float32; got {short_repr(dtype)}."
        )
    return resolved


def _is_state(x: Any) -> bool:
    return isinstance(x, State)


def cast_floating(tree: PyTree, dtype: Any) -> PyTree:
    """Cast every floating-point array of a pytree to `dtype`.

    Integer, boolean and key arrays, non-array leaves and `State` objects are left
    alone, so a model's state and a batch's integer labels pass through unchanged.

    **Arguments:** `tree`, any pytree; `dtype`, the floating dtype to cast to.

    **Returns:** a pytree of the same structure.

    ```python
    half = ecliptic.cast_floating(model, jnp.bfloat16)  # parameters in bfloat16
    ```
    """
    dtype = jnp.dtype(dtype)

    def cast(leaf: Any) -> Any:
        if _is_state(leaf) or not is_array(leaf):
            return leaf
        if jnp.issubdtype(leaf.dtype, jnp.floating) and leaf.dtype != dtype:
            return leaf.astype(dtype)
        return leaf

    return jtu.tree_map(cast, tree, is_leaf=_is_state)


def _stateful(layer: Any) -> bool:
    return isinstance(layer, StatefulLayer) and bool(layer.is_stateful())


class _InFloat32(StatefulLayer):
    """A layer run in float32 inside a mixed-precision call: float32 inputs in, outputs
    cast back to the compute dtype. Built afresh in each call, never stored. (A
    `StatefulLayer` answering as the layer does, so `Sequential` passes it the state.)"""

    layer: Any
    compute_dtype: Any = field(static=True)

    def is_stateful(self) -> bool:
        return _stateful(self.layer)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        args, kwargs = cast_floating((args, kwargs), jnp.float32)
        return cast_floating(self.layer(*args, **kwargs), self.compute_dtype)


class MixedPrecision(StatefulLayer):
    """A model that computes in a low-precision dtype while its parameters stay float32.

    Build it with `mixed_precision`. Calling it calls `model` with its floating
    parameters and floating inputs cast to `compute_dtype` (so matrix products and
    convolutions run in that dtype), except inside the `keep_float32` layer types, which
    get float32 parameters and inputs; floating outputs are cast to `output_dtype`.
    `State` values pass through uncast. It is stateful (for `Sequential`) exactly when
    the model is.

    **Fields:** `model` (the wrapped model, unchanged: train it, save it, load into it),
    `compute_dtype`, `output_dtype`, `keep_float32`.
    """

    model: Any
    compute_dtype: Any = field(static=True)
    output_dtype: Any = field(static=True)
    keep_float32: tuple[type, ...] = field(static=True)

    def is_stateful(self) -> bool:
        """Whether the wrapped model takes and returns a `State`. **Returns:** a bool."""
        return _stateful(self.model)

    def _in_compute_dtype(self) -> Any:
        keep = self.keep_float32

        def convert(node: Any) -> Any:
            if keep and isinstance(node, keep):
                return _InFloat32(cast_floating(node, jnp.float32), self.compute_dtype)
            return cast_floating(node, self.compute_dtype)

        def is_leaf(x: Any) -> bool:
            return _is_state(x) or bool(keep and isinstance(x, keep))

        return jtu.tree_map(convert, self.model, is_leaf=is_leaf)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """**Arguments:** whatever `model` takes; floating arrays among them are cast to
        `compute_dtype`. **Returns:** `model`'s output, floating arrays cast to
        `output_dtype` (a `State` is returned as it is)."""
        model = self._in_compute_dtype()
        args, kwargs = cast_floating((args, kwargs), self.compute_dtype)
        out = model(*args, **kwargs)
        return cast_floating(out, self.output_dtype)

    def __getattr__(self, name: str) -> Any:
        # Reached only for names the wrapper lacks: read them from the model (its
        # submodules, `in_features`, ...).
        if name.startswith("__") or name in ("model", "compute_dtype", "output_dtype"):
            raise AttributeError(name)
        return getattr(self.__dict__["model"], name)


def mixed_precision(
    model: PyTree,
    compute_dtype: Any = jnp.bfloat16,
    *,
    output_dtype: Any = jnp.float32,
    keep_float32: tuple[type, ...] = DEFAULT_FLOAT32_LAYERS,
) -> MixedPrecision:
    """Run a model in mixed precision without changing its code.

    The parameters stay as they are (keep them float32: they are the optimiser's master
    copy and gradients arrive in their dtype); each call computes in `compute_dtype`.

    **Arguments:**

    - `model`: any callable pytree (a Module, a `Sequential`, ...).
    - `compute_dtype`: the dtype of the computation: `jnp.bfloat16` (default) or
      `jnp.float16` (pair it with a `DynamicLossScale`), or `jnp.float32` to turn the
      policy off.
    - `output_dtype`: the dtype of the model's floating outputs (default float32, so that
      losses are computed in float32).
    - `keep_float32`: layer types computed in float32 (default: LayerNorm, GroupNorm,
      RMSNorm, BatchNorm); `()` for none. Attention already computes its softmax in
      float32 for 16-bit inputs.

    **Returns:** a `MixedPrecision` wrapping `model`; `.model` is the model itself.

    ```python
    fast = ecliptic.mixed_precision(model, jnp.bfloat16)
    logits = fast(x)                    # matmuls in bfloat16, logits in float32
    grads = ecliptic.filter_grad(loss)(fast, x, y)   # float32 gradients
    ```
    """
    if not callable(model):
        raise TypeError(
            f"mixed_precision: model must be a callable model; got {short_repr(model)}."
        )
    if isinstance(keep_float32, type):
        keep_float32 = (keep_float32,)
    if not isinstance(keep_float32, (tuple, list)) or not all(
        isinstance(t, type) for t in keep_float32
    ):
        raise TypeError(
            "mixed_precision: keep_float32 must be a tuple of layer types, e.g. "
            f"(ecliptic.nn.LayerNorm,); got {short_repr(keep_float32)}."
        )
    compute = _floating_dtype(compute_dtype, "compute_dtype")
    output = _floating_dtype(output_dtype, "output_dtype")
    return MixedPrecision(model, compute, output, tuple(keep_float32))
