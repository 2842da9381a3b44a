"""Batch normalisation over a named `vmap` axis, with running statistics in a `State`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from .._checks import is_int
from .._module import field
from ._arg_checks import explain_parameter_shapes
from ._init_helpers import compute_dtype, resolve_dtype
from ._scope import named_scope_call
from ._stateful import MISSING_STATE, State, StatefulLayer, StateIndex, check_state

_MODES = ("ema", "batch", "torch")

# Equinox's wording, for the same situation: `mode` left unspecified.
_DEFAULT_MODE_WARNING = (
    "When `eqx.nn.BatchNorm(..., mode=...)` is unspecified it defaults to 'ema', for "
    "backward compatibility. This typically has a performance impact, and for new code "
    "the user is encouraged to use 'batch' instead. See "
    "`https://github.com/patrick-kidger/equinox/issues/659`."
)


def _check_axis_name(axis_name: Any) -> Hashable | tuple[Hashable, ...]:
    names = axis_name if isinstance(axis_name, tuple) else (axis_name,)
    if not names or any(n is None or not isinstance(n, Hashable) for n in names):
        raise TypeError(
            "BatchNorm: axis_name must be the name given to the batching vmap (e.g. "
            f"'batch'), or a non-empty tuple of names; got {axis_name!r}."
        )
    return axis_name


def _axis_size(axis_name: Any) -> int:
    """The number of examples along ``axis_name``, or a clear error outside that vmap."""
    try:
        return int(jax.lax.axis_size(axis_name))
    except NameError as e:
        raise NameError(
            f"BatchNorm(axis_name={axis_name!r}) computes statistics over the batch, so it "
            "must run inside jax.vmap / ecliptic.filter_vmap(..., "
            f"axis_name={axis_name!r}) (for a tuple, nested vmaps naming each axis); no "
            f"such vmap is active ({e}). Use inference mode to normalise with the running "
            "statistics instead."
        ) from None


class BatchNorm(StatefulLayer):
    """Batch normalisation, as `torch.nn.BatchNorm1d/2d/3d`, for one example at a time.

    Call it inside `jax.vmap` / `filter_vmap` with `axis_name` set: the statistics of
    each channel are taken over the examples of that vmap and over the spatial
    dimensions. Running statistics live in the `State`.

    **Arguments:**

    - `input_size`: the number of channels `C`.
    - `axis_name`: the name of the batching vmap axis, or a tuple of names (statistics
        over all of them, e.g. nested vmaps or a vmap inside `pmap`).
    - `eps`: added to the variance before the square root.
    - `channelwise_affine`: whether to learn `weight` and `bias`.
    - `momentum`: the weight of the old value in the running averages, as in Equinox:
        `new = momentum * old + (1 - momentum) * batch_value`. PyTorch's `momentum` is
        the weight of the batch value, so PyTorch's `momentum=0.1` is `momentum=0.9`
        here (`torch_momentum = 1 - momentum`). Default 0.99 (PyTorch 0.01).
    - `inference`: if `True`, normalise with the running statistics and leave the state
        unchanged (no vmap needed). Toggle with `ecliptic.nn.inference_mode`.
    - `dtype`: the dtype of the parameters and running statistics (float32 by default).
        Half-precision inputs are normalised in float32.
    - `mode`: how the running statistics are kept, and what training normalises with.
        Left unspecified it is `"ema"` (with a warning), as in Equinox.
        - `"ema"` (Equinox's `"ema"`): the running mean and (biased) variance start at
            0 and 0, are set to the first batch's statistics, then updated as above; the
            running values (this batch's included) are what training normalises with.
        - `"batch"` (Equinox's `"batch"`): training normalises with the batch mean and
            (biased) variance; the running mean and variance start at 0 and 1, are
            updated as above, and inference divides them by `1 - momentum**n` after `n`
            batches (Adam's debiasing; the raw 0 and 1 before any batch).
        - `"torch"` (PyTorch's behaviour): training normalises with the batch mean and
            (biased) variance; the running mean and the **unbiased** running variance
            start at 0 and 1 and are updated as above (as PyTorch does with momentum
            `1 - momentum`); inference uses them as they are. Training needs more than
            one value per channel, as in PyTorch.

    **Parameters:** `weight` (ones) and `bias` (zeros), of shape `(C,)`, or `None`
    without `channelwise_affine`. **State:** in `"batch"` and `"torch"` modes
    `batch_counter` (the number of batches seen, PyTorch's `num_batches_tracked`) and
    `batch_state_index` (`(running_mean, running_var)`, each `(C,)`); in `"ema"` mode
    `ema_first_time_index` and `ema_state_index`.

    **Shapes:** input `(C, *spatial)` per example (any number of spatial dims, or none);
    output the same.

    ```python
    bn, state = ecliptic.nn.make_with_state(ecliptic.nn.BatchNorm)(3, "batch", mode="batch")
    batched = jax.vmap(bn, axis_name="batch", in_axes=(0, None), out_axes=(0, None))
    y, state = batched(jnp.ones((8, 3, 5)), state)  # y: (8, 3, 5)
    ```
    """

    weight: Array | None
    bias: Array | None
    ema_first_time_index: StateIndex[jax.Array] | None
    ema_state_index: StateIndex[tuple[jax.Array, jax.Array]] | None
    batch_counter: StateIndex[jax.Array] | None
    batch_state_index: StateIndex[tuple[jax.Array, jax.Array]] | None
    inference: bool  # a Python-bool leaf, as in Equinox (filter_jit keeps it static)
    axis_name: Hashable | tuple[Hashable, ...] = field(static=True)
    input_size: int = field(static=True)
    eps: float = field(static=True)
    channelwise_affine: bool = field(static=True)
    momentum: float = field(static=True)
    mode: str = field(static=True)

    def __init__(
        self,
        input_size: int,
        axis_name: Hashable | tuple[Hashable, ...],
        eps: float = 1e-5,
        channelwise_affine: bool = True,
        momentum: float = 0.99,
        inference: bool = False,
        dtype: Any = None,
        mode: Literal["ema", "batch", "torch", "legacy"] = "legacy",
    ):
        if not is_int(input_size):
            raise TypeError(f"BatchNorm: input_size must be a positive int; got {input_size!r}.")
        if input_size < 1:
            raise ValueError(f"BatchNorm: input_size must be >= 1; got {input_size}.")
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0:
            raise ValueError(f"BatchNorm: eps must be a float >= 0; got {eps!r}.")
        if (
            not isinstance(momentum, (int, float))
            or isinstance(momentum, bool)
            or not 0.0 <= momentum <= 1.0
        ):
            raise ValueError(
                f"BatchNorm: momentum must be in [0, 1] (the weight of the old running "
                f"value; PyTorch's momentum is 1 - this); got {momentum!r}."
            )
        if mode == "legacy":  # Equinox's spelling of "unspecified"
            warnings.warn(_DEFAULT_MODE_WARNING, stacklevel=2)
            mode = "ema"
        if mode not in _MODES:
            raise ValueError(f"BatchNorm: mode must be one of {_MODES}; got {mode!r}.")
        dtype = resolve_dtype(dtype)
        if jnp.issubdtype(dtype, jnp.complexfloating):
            raise TypeError(f"BatchNorm: dtype must be a real floating dtype; got {dtype}.")
        c = int(input_size)
        self.weight = jnp.ones((c,), dtype) if channelwise_affine else None
        self.bias = jnp.zeros((c,), dtype) if channelwise_affine else None
        if mode == "ema":
            self.ema_first_time_index = StateIndex(jnp.array(True))
            self.ema_state_index = StateIndex((jnp.zeros((c,), dtype), jnp.zeros((c,), dtype)))
            self.batch_counter = None
            self.batch_state_index = None
        else:
            self.ema_first_time_index = None
            self.ema_state_index = None
            self.batch_counter = StateIndex(jnp.array(0, jnp.int32))
            self.batch_state_index = StateIndex((jnp.zeros((c,), dtype), jnp.ones((c,), dtype)))
        self.inference = bool(inference)
        self.axis_name = _check_axis_name(axis_name)
        self.input_size = c
        self.eps = float(eps)
        self.channelwise_affine = bool(channelwise_affine)
        self.momentum = float(momentum)
        self.mode = mode

    @named_scope_call
    def __call__(
        self,
        x: Array,
        state: State = MISSING_STATE,
        *,
        key: PRNGKeyArray | None = None,
        inference: bool | None = None,
    ) -> tuple[Array, State]:
        """**Arguments:**

        - `x`: one example, shape `(input_size, *spatial)`.
        - `state`: the model's `State` (holding the running statistics).
        - `key`: ignored.
        - `inference`: overrides `self.inference` for this call.

        **Returns:** `(y, state)`: `y` of the shape of `x`, and the updated state (the
        same state in inference mode).

        **Raises:** `NameError` in training mode outside a vmap with `axis_name`.
        """
        del key
        state = check_state(state, "BatchNorm")
        inference = self.inference if inference is None else bool(inference)
        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[0] != self.input_size:
            hint = (
                " BatchNorm acts on one example: batch with jax.vmap(..., axis_name=...)."
                if x.ndim >= 2 and x.shape[1] == self.input_size
                else ""
            )
            raise ValueError(
                f"BatchNorm expects an input of shape (input_size, *spatial) = "
                f"({self.input_size}, ...); got shape {x.shape}.{hint}"
            )
        param_dtype = self.weight.dtype if self.weight is not None else x.dtype
        out_dtype = jnp.result_type(x.dtype, param_dtype)
        calc = compute_dtype(out_dtype)
        xc = x.astype(calc)
        if inference:
            mean, var = self._running_statistics(state, calc)
        elif self.mode == "ema":
            mean, var, state = self._train_ema(xc, state)
        else:
            mean, var, state = self._train_batch(xc, state)
        shape = (self.input_size,) + (1,) * (x.ndim - 1)
        y = (xc - mean.reshape(shape)) * jax.lax.rsqrt(var.reshape(shape) + self.eps)
        if self.channelwise_affine:
            try:
                y = y * self.weight.astype(calc).reshape(shape)  # type: ignore[union-attr]
                y = y + self.bias.astype(calc).reshape(shape)  # type: ignore[union-attr]
            except (TypeError, ValueError) as error:
                size = (self.input_size,)
                expected = [("weight", self.weight, size), ("bias", self.bias, size)]
                explain_parameter_shapes("BatchNorm", expected, error)
                raise
        return y.astype(out_dtype), state

    def _batch_statistics(self, xc: jax.Array) -> tuple[jax.Array, jax.Array, int]:
        """Mean and biased variance per channel over the batch and spatial dims, and
        how many values each was taken over."""
        count = _axis_size(self.axis_name) * math.prod(xc.shape[1:])
        spatial = tuple(range(1, xc.ndim))
        mean = jax.lax.pmean(jnp.mean(xc, axis=spatial), self.axis_name)
        centred = xc - mean.reshape((self.input_size,) + (1,) * (xc.ndim - 1))
        var = jax.lax.pmean(jnp.mean(centred * centred, axis=spatial), self.axis_name)
        return mean, var, count

    def _running_statistics(self, state: State, calc: Any) -> tuple[jax.Array, jax.Array]:
        """The mean and variance inference normalises with, in dtype ``calc``."""
        index = self.ema_state_index if self.mode == "ema" else self.batch_state_index
        mean, var = state.get(index)  # type: ignore[arg-type]
        mean, var = mean.astype(calc), var.astype(calc)
        if self.mode == "batch":
            # Debias the averages (started at 0 and 1) as Adam does, once there are any.
            assert self.batch_counter is not None
            count = state.get(self.batch_counter)
            correction = 1 - jnp.asarray(self.momentum, calc) ** count.astype(calc)
            seen = count > 0
            mean = jnp.where(seen, mean / correction, mean)
            var = jnp.where(seen, var / correction, var)
        return mean, var

    def _train_batch(self, xc: jax.Array, state: State) -> tuple[jax.Array, jax.Array, State]:
        mean, var, count = self._batch_statistics(xc)
        if self.mode == "torch" and count < 2:
            raise ValueError(
                "BatchNorm: training needs more than one value per channel (batch size x "
                f"spatial size = {count}); the unbiased running variance is undefined."
            )
        assert self.batch_state_index is not None and self.batch_counter is not None
        running_mean, running_var = state.get(self.batch_state_index)
        m = self.momentum
        batch_var = jax.lax.stop_gradient(var)
        if self.mode == "torch":  # PyTorch keeps the unbiased variance
            batch_var = batch_var * (count / (count - 1))
        new_mean = m * running_mean + (1 - m) * jax.lax.stop_gradient(mean)
        new_var = m * running_var + (1 - m) * batch_var
        state = state.set(
            self.batch_state_index,
            (new_mean.astype(running_mean.dtype), new_var.astype(running_var.dtype)),
        )
        state = state.set(self.batch_counter, state.get(self.batch_counter) + 1)
        return mean, var, state

    def _train_ema(self, xc: jax.Array, state: State) -> tuple[jax.Array, jax.Array, State]:
        batch_mean, batch_var, _ = self._batch_statistics(xc)
        assert self.ema_state_index is not None and self.ema_first_time_index is not None
        first = state.get(self.ema_first_time_index)
        running_mean, running_var = state.get(self.ema_state_index)
        m = self.momentum
        mean = m * running_mean.astype(xc.dtype) + (1 - m) * batch_mean
        var = m * running_var.astype(xc.dtype) + (1 - m) * batch_var
        mean = jnp.where(first, batch_mean, mean)
        var = jnp.where(first, batch_var, var)
        stored = (
            jax.lax.stop_gradient(mean).astype(running_mean.dtype),
            jax.lax.stop_gradient(var).astype(running_var.dtype),
        )
        state = state.set(self.ema_state_index, stored)
        state = state.set(self.ema_first_time_index, jnp.zeros_like(first))
        return mean, var, state
