"""Spectral normalisation of a wrapped layer's weight, with power-iteration vectors in State."""

from __future__ import annotations

import functools
from typing import Any, Generic, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from .._messages import type_name
from .._module import Module, field
from .._tree import tree_at
from ._arg_checks import check_key
from ._init_helpers import resolve_dtype
from ._scope import named_scope_call
from ._stateful import MISSING_STATE, State, StatefulLayer, StateIndex, check_state

_Layer = TypeVar("_Layer")
_INIT_ITERATIONS = 15  # as PyTorch: settle u and v before the first call


def get_weight(layer: Any, weight_name: str, wrapper: str) -> jax.Array:
    """``layer.<weight_name>``, checked to be an array with at least one dimension."""
    if not isinstance(weight_name, str):
        raise TypeError(f"{wrapper}: weight_name must be a str; got {weight_name!r}.")
    if not isinstance(layer, Module):
        raise TypeError(f"{wrapper}(layer, ...): layer must be a Module; got {layer!r}.")
    try:
        weight = getattr(layer, weight_name)
    except AttributeError:
        raise AttributeError(
            f"{wrapper}: the {type(layer).__name__} has no attribute {weight_name!r} "
            "(weight_name) to normalise."
        ) from None
    where = f"{wrapper}: {type(layer).__name__}.{weight_name}"
    if not isinstance(weight, jax.Array):
        hint = " (convert it with jnp.asarray)" if isinstance(weight, np.ndarray) else ""
        raise TypeError(
            f"{where} must be an array (a jax.Array) with at least one dimension; got "
            f"{type_name(weight)}{hint}."
        )
    if weight.ndim < 1:
        raise TypeError(f"{where} must have at least one dimension; got shape {weight.shape}.")
    return weight


def _normalise(v: jax.Array, eps: float) -> jax.Array:
    return v / jnp.maximum(jnp.linalg.norm(v), eps)


def _power_iteration(
    matrix: jax.Array, u: jax.Array, v: jax.Array, eps: float, steps: int
) -> tuple[jax.Array, jax.Array]:
    for _ in range(steps):
        u = _normalise(matrix @ v, eps)
        v = _normalise(matrix.conj().T @ u, eps)
    return u, v


@functools.partial(jax.jit, static_argnums=2)
def _initial_vectors(matrix: jax.Array, key: jax.Array, eps: float) -> tuple[jax.Array, jax.Array]:
    """Random unit ``u``, ``v`` refined by PyTorch's initial power iterations; compiled
    once per shape (rather than dispatching some hundred small operations)."""
    ukey, vkey = jax.random.split(key)
    u = _normalise(jax.random.normal(ukey, (matrix.shape[0],), matrix.dtype), eps)
    v = _normalise(jax.random.normal(vkey, (matrix.shape[1],), matrix.dtype), eps)
    return _power_iteration(matrix, u, v, eps, _INIT_ITERATIONS)


class SpectralNorm(StatefulLayer, Generic[_Layer]):
    """Wraps a layer so that its weight is divided by its largest singular value, as
    `torch.nn.utils.parametrizations.spectral_norm`.

    The weight is viewed as a matrix of shape `(weight.shape[0], -1)` (the output
    dimension first, which is PyTorch's `dim=0` for every ecliptic layout, transposed
    convolutions included). Its spectral norm `sigma = u^T W v` is estimated by power
    iteration; the vectors `u`, `v` live in the `State` and are refined by
    `num_power_iterations` steps at every training call (with `u` updated before `v`,
    as PyTorch), without gradient. At inference they are used as they are.

    **Arguments:**

    - `layer`: the layer to wrap (`Linear`, `Conv2d`, ...).
    - `weight_name`: the attribute of `layer` holding the weight.
    - `num_power_iterations`: power-iteration steps per training call.
    - `eps`: lower bound on norms when normalising `u` and `v`.
    - `inference`: if `True`, skip the power iteration and leave the state unchanged.
        Toggle with `ecliptic.nn.inference_mode`.
    - `dtype`: dtype of `u` and `v`; the weight's dtype by default.
    - `key`: PRNG key for the random start of `u` and `v` (keyword only); like PyTorch,
        15 power iterations follow at construction.

    **Fields:** `layer` (holding the unnormalised weight), `uv_index` (a `StateIndex` of
    `(u, v)`, of shapes `(weight.shape[0],)` and `(weight[0].size,)`), and the static
    options.

    **Shapes:** those of `layer`.

    ```python
    make = ecliptic.nn.make_with_state(ecliptic.nn.SpectralNorm)
    sn, state = make(ecliptic.nn.Linear(4, 3, key=k1), key=k2)
    y, state = sn(jnp.ones(4), state)  # y: (3,)
    ```
    """

    layer: _Layer
    uv_index: StateIndex[tuple[jax.Array, jax.Array]]
    weight_name: str = field(static=True)
    num_power_iterations: int = field(static=True)
    eps: float = field(static=True)
    inference: bool  # a Python-bool leaf, as in Equinox (filter_jit keeps it static)

    def __init__(
        self,
        layer: _Layer,
        weight_name: str = "weight",
        num_power_iterations: int = 1,
        eps: float = 1e-12,
        inference: bool = False,
        dtype: Any = None,
        *,
        key: PRNGKeyArray,
    ):
        weight = get_weight(layer, weight_name, "SpectralNorm")
        if (
            isinstance(num_power_iterations, bool)
            or not isinstance(num_power_iterations, int)
            or num_power_iterations < 0
        ):
            raise ValueError(
                "SpectralNorm: num_power_iterations must be an int >= 0; got "
                f"{num_power_iterations!r}."
            )
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps > 0:
            raise ValueError(f"SpectralNorm: eps must be a float > 0; got {eps!r}.")
        check_key(key, "SpectralNorm")
        dtype = weight.dtype if dtype is None else resolve_dtype(dtype)
        matrix = jax.lax.stop_gradient(weight).reshape(weight.shape[0], -1).astype(dtype)
        u, v = _initial_vectors(matrix, key, float(eps))
        self.layer = layer
        self.uv_index = StateIndex((u, v))
        self.weight_name = weight_name
        self.num_power_iterations = num_power_iterations
        self.eps = float(eps)
        self.inference = bool(inference)

    @named_scope_call
    def __call__(
        self,
        x: Any,
        state: State = MISSING_STATE,
        *,
        key: PRNGKeyArray | None = None,
        inference: bool | None = None,
    ) -> tuple[Any, State]:
        """**Arguments:**

        - `x`: the wrapped layer's input.
        - `state`: the model's `State` (holding `u` and `v`).
        - `key`: passed on to the wrapped layer.
        - `inference`: overrides `self.inference` for this call.

        **Returns:** `(y, state)`: the wrapped layer's output computed with the
        normalised weight, and the state with the refined `u`, `v`.
        """
        state = check_state(state, "SpectralNorm")
        inference = self.inference if inference is None else bool(inference)
        weight = getattr(self.layer, self.weight_name)
        matrix = weight.reshape(weight.shape[0], -1)
        u, v = state.get(self.uv_index)
        if not inference:
            frozen = jax.lax.stop_gradient(matrix).astype(u.dtype)
            u, v = _power_iteration(frozen, u, v, self.eps, self.num_power_iterations)
            state = state.set(self.uv_index, (u, v))
        sigma = jnp.vdot(u, matrix.astype(u.dtype) @ v)
        normalised = (weight / sigma).astype(weight.dtype)
        layer = tree_at(lambda m: getattr(m, self.weight_name), self.layer, normalised)
        return layer(x, key=key), state  # type: ignore[operator]
