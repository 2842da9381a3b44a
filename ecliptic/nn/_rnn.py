"""Recurrent cells: GRUCell and LSTMCell, one time step each (scan over time yourself,
e.g. with `jax.lax.scan`)."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from .._module import Module, field
from ._arg_checks import check_key, check_positive_int
from ._init_helpers import fan_in_bound, resolve_dtype, uniform_init
from ._scope import named_scope_call


def _check_vector(x: Any, size: int, layer: str, what: str) -> jax.Array:
    x = jnp.asarray(x)
    if x.shape != (size,):
        hint = (
            " Layers act on one unbatched example: batch with jax.vmap or ecliptic.filter_vmap."
            if x.ndim == 2 and x.shape[-1] == size
            else ""
        )
        raise ValueError(
            f"{layer} expects {what} of shape ({size},); got shape {tuple(x.shape)}.{hint}"
        )
    return x


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _init_params(
    key: Any, gates: int, n_in: int, h: int, dtype: Any, use_bias: bool
) -> tuple[jax.Array, ...]:
    """PyTorch's RNN-cell init, U(+-1/sqrt(hidden)) for the weights and both biases.

    Every parameter shares the bound, so all come from ONE uniform draw, sliced: one
    random-bits kernel to compile per cell configuration instead of one per parameter
    (XLA's PRNG is costly to compile on CPU, and eager slicing would compile too).

    Returns `(weight_ih, weight_hh)`, plus for an LSTM (4 gates) `bias_ih + bias_hh`, and
    for a GRU (3 gates) `bias_ih + [bias_hh_r, bias_hh_z, 0]` and `bias_hh_n`."""
    rows = gates * h
    sizes = [rows * n_in, rows * h] + ([rows, rows] if use_bias else [])
    flat = uniform_init(key, (sum(sizes),), dtype, fan_in_bound(h))
    parts = jnp.split(flat, np.cumsum(sizes)[:-1].tolist())
    weight_ih, weight_hh = parts[0].reshape(rows, n_in), parts[1].reshape(rows, h)
    if not use_bias:
        return weight_ih, weight_hh
    bias_ih, bias_hh = parts[2], parts[3]
    if gates == 4:
        return weight_ih, weight_hh, bias_ih + bias_hh
    bias = bias_ih.at[: 2 * h].add(bias_hh[: 2 * h])
    return weight_ih, weight_hh, bias, bias_hh[2 * h :]


class _RecurrentCell(Module):
    """The constructor GRUCell and LSTMCell share (Equinox's arguments): checks, sizes,
    and PyTorch's initialisation of `gates` gates, the biases set on `bias_fields`."""

    gates: ClassVar[int]
    bias_fields: ClassVar[tuple[str, ...]]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        use_bias: bool = True,
        dtype: Any = None,
        *,
        key: PRNGKeyArray | None = None,
    ):
        name = type(self).__name__
        check_key(key, name)
        self.input_size = check_positive_int(input_size, "input_size", name)
        self.hidden_size = check_positive_int(hidden_size, "hidden_size", name)
        self.use_bias = bool(use_bias)
        params = _init_params(
            key, self.gates, self.input_size, self.hidden_size, resolve_dtype(dtype), self.use_bias
        )
        self.weight_ih, self.weight_hh = params[0], params[1]
        biases = params[2:] or (None,) * len(self.bias_fields)
        for field_name, bias in zip(self.bias_fields, biases):
            setattr(self, field_name, bias)


class GRUCell(_RecurrentCell):
    """One step of a gated recurrent unit, as `torch.nn.GRUCell` (gate order r, z, n):

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h

    **Arguments:**

    - `input_size`, `hidden_size`: sizes of the input and hidden vectors.
    - `use_bias`: whether to have biases.
    - `dtype`: parameter dtype (default float32, float64 with x64 on).
    - `key`: PRNG key for the initialisation.

    **Parameters:** `weight_ih` `(3*hidden, input)`, `weight_hh` `(3*hidden, hidden)`,
    `bias` `(3*hidden,)` and `bias_n` `(hidden,)` (`None` without bias). PyTorch keeps two
    biases, `bias_ih` and `bias_hh`; only the hidden bias of the n gate cannot be merged
    (it sits inside `r * (...)`), so `bias = bias_ih + concat(bias_hh[:2h], 0)` and
    `bias_n = bias_hh[2h:]`. Back to PyTorch: `bias_ih = bias`,
    `bias_hh = concat(zeros(2h), bias_n)`. The weights are the same in both.

    **Initialisation:** as PyTorch, every weight and both of PyTorch's biases from
    U(-1/sqrt(hidden), 1/sqrt(hidden)); so `bias[:2h]` is distributed as a sum of two such
    uniforms, and `bias[2h:]` and `bias_n` as one.

    **Shapes:** `input` `(input_size,)`, `hidden` `(hidden_size,)`; returns the new hidden
    state `(hidden_size,)`.

    ```python
    cell = ecliptic.nn.GRUCell(8, 16, key=jax.random.key(0))
    h = cell(x, jnp.zeros(16))
    ```
    """

    weight_ih: Array
    weight_hh: Array
    bias: Array | None
    bias_n: Array | None
    input_size: int = field(static=True)
    hidden_size: int = field(static=True)
    use_bias: bool = field(static=True)

    gates = 3
    # What PyTorch's two biases make of r and z, folded into one; b_hn apart.
    bias_fields = ("bias", "bias_n")

    @named_scope_call
    def __call__(
        self, input: ArrayLike, hidden: ArrayLike, *, key: PRNGKeyArray | None = None
    ) -> Array:
        """**Arguments:**

        - `input`: `(input_size,)`.
        - `hidden`: the previous hidden state, `(hidden_size,)`.
        - `key`: ignored.

        **Returns:** the new hidden state, `(hidden_size,)`.
        """
        h = self.hidden_size
        x = _check_vector(input, self.input_size, "GRUCell", "an input")
        hidden = _check_vector(hidden, h, "GRUCell", "a hidden state")
        # Two matrix-vector products for all three gates at once.
        gi = self.weight_ih @ x
        gh = self.weight_hh @ hidden
        if self.use_bias:
            gi = gi + self.bias  # pyright: ignore[reportOperatorIssue]
            gh = gh.at[2 * h :].add(self.bias_n)
        rz = jax.nn.sigmoid(gi[: 2 * h] + gh[: 2 * h])
        r, z = rz[:h], rz[h:]
        n = jnp.tanh(gi[2 * h :] + r * gh[2 * h :])
        return (1 - z) * n + z * hidden


class LSTMCell(_RecurrentCell):
    """One step of a long short-term memory cell, as `torch.nn.LSTMCell` (gate order
    i, f, g, o):

        i, f, g, o = split(W_ih x + W_hh h + bias, 4)
        c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
        h' = sigmoid(o) * tanh(c')

    **Arguments:**

    - `input_size`, `hidden_size`: sizes of the input and hidden vectors.
    - `use_bias`: whether to have a bias.
    - `dtype`: parameter dtype (default float32, float64 with x64 on).
    - `key`: PRNG key for the initialisation.

    **Parameters:** `weight_ih` `(4*hidden, input)`, `weight_hh` `(4*hidden, hidden)`,
    `bias` `(4*hidden,)` (`None` without bias). PyTorch's two biases only ever appear
    summed: `bias = bias_ih + bias_hh`; back to PyTorch: `bias_ih = bias`,
    `bias_hh = 0`. The weights are the same in both.

    **Initialisation:** as PyTorch, the weights and both of PyTorch's biases from
    U(-1/sqrt(hidden), 1/sqrt(hidden)); `bias` is their sum.

    **Shapes:** `input` `(input_size,)`, hidden state `(h, c)` each `(hidden_size,)`;
    returns the new `(h, c)`.

    ```python
    cell = ecliptic.nn.LSTMCell(8, 16, key=jax.random.key(0))
    h, c = cell(x, (jnp.zeros(16), jnp.zeros(16)))
    ```
    """

    weight_ih: Array
    weight_hh: Array
    bias: Array | None
    input_size: int = field(static=True)
    hidden_size: int = field(static=True)
    use_bias: bool = field(static=True)

    gates = 4
    bias_fields = ("bias",)

    @named_scope_call
    def __call__(
        self,
        input: ArrayLike,
        hidden: tuple[ArrayLike, ArrayLike],
        *,
        key: PRNGKeyArray | None = None,
    ) -> tuple[Array, Array]:
        """**Arguments:**

        - `input`: `(input_size,)`.
        - `hidden`: the previous `(h, c)`, each `(hidden_size,)`.
        - `key`: ignored.

        **Returns:** the new `(h, c)`.
        """
        if not (isinstance(hidden, (tuple, list)) and len(hidden) == 2):
            raise TypeError(
                f"LSTMCell expects the hidden state as a pair (h, c); got {type(hidden).__name__}."
            )
        n = self.hidden_size
        x = _check_vector(input, self.input_size, "LSTMCell", "an input")
        h = _check_vector(hidden[0], n, "LSTMCell", "h")
        c = _check_vector(hidden[1], n, "LSTMCell", "c")
        gates = self.weight_ih @ x + self.weight_hh @ h
        if self.use_bias:
            gates = gates + self.bias  # pyright: ignore[reportOperatorIssue]
        i, f, g, o = jnp.split(gates, 4)
        i, f, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jax.nn.sigmoid(o)
        g = jnp.tanh(g)
        c_new = f * c + i * g
        h_new = o * jnp.tanh(c_new)
        return h_new, c_new
