"""`MLP`: a stack of `Linear` layers with activations in between."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, PRNGKeyArray

from .._checks import is_int
from .._filters import combine, is_array, partition
from .._module import Module, field
from ._arg_checks import check_feature_size, check_key
from ._linear import Linear, Size
from ._scope import named_scope_call


def _identity(x: jax.Array) -> jax.Array:
    return x


def _has_arrays(tree: Any) -> bool:
    return any(is_array(leaf) for leaf in jtu.tree_leaves(tree))


def _per_neuron(activation: Any, shape: tuple[int, ...]) -> Any:
    """A learnable activation with every array leaf repeated along new leading axes
    ``shape``, so that each neuron learns its own copy (Equinox's parameter layout).
    Activations without arrays are returned unchanged."""
    if not _has_arrays(activation):
        return activation
    return jtu.tree_map(
        lambda leaf: jnp.broadcast_to(leaf, shape + leaf.shape) if is_array(leaf) else leaf,
        activation,
    )


def _apply(activation: Any, x: jax.Array) -> jax.Array:
    """Apply an activation to the vector ``x``. With per-neuron parameters (array leaves
    carrying a leading axis of size ``len(x)``) each neuron uses its own copy."""
    if not _has_arrays(activation):
        return activation(x)
    params, rest = partition(activation, is_array)
    return jax.vmap(lambda p, xi: combine(p, rest)(xi))(params, x)


def _activate(activation: Any, i: int | jax.Array, x: jax.Array) -> jax.Array:
    """The activation after hidden layer `i` (its own copy, if learnable)."""
    if _has_arrays(activation):
        activation = jtu.tree_map(lambda leaf: leaf[i] if is_array(leaf) else leaf, activation)
    return _apply(activation, x)


class MLP(Module):
    """A multi-layer perceptron: `depth` hidden layers of `width_size` units.

    **Arguments:**

    - `in_size`, `out_size`: input/output sizes, or `"scalar"` for shape `()`.
    - `width_size`: units per hidden layer. `depth`: number of hidden layers (0 gives a
      single `Linear(in_size, out_size)`).
    - `activation`: applied after each hidden layer (default `jax.nn.relu`).
    - `final_activation`: applied after the output layer (default the identity).
    - `use_bias`, `use_final_bias`: biases of the hidden / output layers.
    - `dtype`: parameter dtype (float32 by default, float64 in x64 mode).
    - `scan`: if `True`, the `depth - 1` hidden-to-hidden layers are stored as one
      `Linear` whose arrays have a leading axis of size `depth - 1`, and run with
      `jax.lax.scan`, so that a deep MLP compiles one hidden layer instead of all of
      them (Equinox's layout for the same option). Same initial values and outputs as
      `scan=False`.
    - `key`: a PRNG key (keyword only).

    Activations act on the whole vector of a layer's outputs (so `final_activation=
    jax.nn.softmax` is a real softmax). An activation holding arrays (a learnable one,
    such as `PReLU`) is copied once per neuron, as in Equinox: its array leaves gain
    leading axes `(depth, width_size)` in `activation` and `(out_size,)` in
    `final_activation` (none when `out_size="scalar"`), and each neuron uses its copy.

    **Parameters:** `layers`, a tuple of `depth + 1` `Linear` layers (see `Linear`); with
    `scan=True` and `depth >= 1`, of three: input, stacked hidden, output. Plus those of
    learnable activations.

    **Input:** shape `(in_size,)` (or `()`); **output:** shape `(out_size,)` (or `()`).

    ```python
    mlp = ecliptic.nn.MLP(2, 1, width_size=8, depth=2, key=jax.random.key(0))
    y = mlp(jnp.ones(2))  # shape (1,)
    ```
    """

    layers: tuple[Linear, ...]
    activation: Callable[..., Any]
    final_activation: Callable[..., Any]
    use_bias: bool = field(static=True)
    use_final_bias: bool = field(static=True)
    in_size: Size = field(static=True)
    out_size: Size = field(static=True)
    width_size: int = field(static=True)
    depth: int = field(static=True)
    scan: bool = field(static=True, default=False)

    def __init__(
        self,
        in_size: Size,
        out_size: Size,
        width_size: int,
        depth: int,
        activation: Callable[..., Any] = jax.nn.relu,
        final_activation: Callable[..., Any] = _identity,
        use_bias: bool = True,
        use_final_bias: bool = True,
        dtype: Any = None,
        scan: bool = False,
        *,
        key: PRNGKeyArray,
    ):
        check_feature_size(in_size, "in_size", "MLP")
        if not isinstance(scan, bool):
            raise TypeError(f"MLP: scan must be a bool; got {type(scan).__name__}.")
        n_out = check_feature_size(out_size, "out_size", "MLP")
        if not is_int(depth) or depth < 0:
            raise ValueError(f"MLP: depth must be an int >= 0; got {depth!r}.")
        if depth > 0:
            check_feature_size(width_size, "width_size", "MLP")
            if width_size == "scalar":
                raise ValueError("MLP: width_size must be a positive int, not 'scalar'.")
        if not callable(activation) or not callable(final_activation):
            raise TypeError("MLP: activation and final_activation must be callable.")
        check_key(key, "MLP")
        keys = jax.random.split(key, depth + 1)
        sizes = [in_size] + [width_size] * depth + [out_size]
        biases = [use_bias] * depth + [use_final_bias]
        if scan and depth > 0:
            hidden = jax.vmap(lambda k: Linear(width_size, width_size, use_bias, dtype, key=k))
            self.layers = (
                Linear(in_size, width_size, use_bias, dtype, key=keys[0]),
                hidden(keys[1:depth]),
                Linear(width_size, out_size, use_final_bias, dtype, key=keys[depth]),
            )
        else:
            self.layers = tuple(
                Linear(sizes[i], sizes[i + 1], biases[i], dtype, key=keys[i])
                for i in range(depth + 1)
            )
        self.activation = _per_neuron(
            activation, (depth, width_size if isinstance(width_size, int) else 0)
        )
        self.final_activation = (
            final_activation if out_size == "scalar" else _per_neuron(final_activation, (n_out,))
        )
        self.use_bias = bool(use_bias)
        self.use_final_bias = bool(use_final_bias)
        self.in_size = in_size
        self.out_size = out_size
        self.width_size = width_size
        self.depth = depth
        self.scan = scan

    @named_scope_call
    def __call__(self, x: Array, *, key: PRNGKeyArray | None = None) -> Array:
        """**Arguments:** `x` of shape `(in_size,)` (or `()`); `key` is ignored.
        **Returns:** shape `(out_size,)` (or `()`)."""
        del key
        if self.scan and self.depth > 0:
            first, hidden, last = self.layers
            x = _activate(self.activation, 0, first(x))

            def step(h: jax.Array, layer_and_index: Any) -> tuple[jax.Array, None]:
                layer, i = layer_and_index
                return _activate(self.activation, i, layer(h)), None

            x, _ = jax.lax.scan(step, x, (hidden, jnp.arange(1, self.depth)))
        else:
            for i, layer in enumerate(self.layers[:-1]):
                x = _activate(self.activation, i, layer(x))
        x = self.layers[-1](x)
        if self.out_size == "scalar":
            return self.final_activation(x)
        return _apply(self.final_activation, x)
