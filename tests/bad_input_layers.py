"""Tiny modules and layers shared by the bad-input catalogue files (tests/test_bad_input*.py).

Layers are built abstractly where possible (ShapeDtypeStruct parameters: no random
initialisation to compile), since most checks under test run before any math.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import ecliptic as ec
from ecliptic import nn

KEY = jax.random.key(0)
VMAP_HINT = r".*batch with jax\.vmap"


class Point(ec.Module):
    w: jax.Array
    tag: Any = ec.field(static=True, default="p")

    def __call__(self, x: Any) -> Any:
        return self.w * x


POINT = Point(jnp.ones(3))


@functools.cache
def layer(name: str) -> Any:
    """Tiny layers, built once on first use, abstractly (ShapeDtypeStruct parameters:
    no random initialisation to compile; the checks under test run before any math)."""
    make = {
        "linear": lambda: nn.Linear(3, 4, key=KEY),
        "mlp": lambda: nn.MLP(2, 2, 4, 1, key=KEY),
        "conv": lambda: nn.Conv2d(3, 4, 3, key=KEY),
        "convT": lambda: nn.ConvTranspose1d(3, 4, 3, key=KEY),
        "embedding": lambda: nn.Embedding(10, 4, key=KEY),
        "mha": lambda: nn.MultiheadAttention(2, 4, key=KEY),
        "mha_dropout": lambda: nn.MultiheadAttention(2, 4, dropout_p=0.5, key=KEY),
        "gru": lambda: nn.GRUCell(3, 4, key=KEY),
        "lstm": lambda: nn.LSTMCell(3, 4, key=KEY),
    }[name]
    return ec.filter_eval_shape(make)


@functools.cache
def concrete(name: str) -> Any:
    """`layer(name)` with zero parameters, for checks that run after some math."""
    is_struct = lambda x: isinstance(x, jax.ShapeDtypeStruct)  # noqa: E731
    return jax.tree.map(
        lambda x: jnp.zeros(x.shape, x.dtype) if is_struct(x) else x, layer(name), is_leaf=is_struct
    )


def call(name: str, *args: Any, **kwargs: Any) -> Any:
    return lambda: layer(name)(*args, **kwargs)


def attend(q: Any, k: Any, v: Any, name: str = "mha", **kwargs: Any) -> Any:
    # Traced, not run: the checks under test happen at trace time, after the projections.
    return lambda: ec.filter_eval_shape(
        layer(name), jnp.ones(q), jnp.ones(k), jnp.ones(v), **kwargs
    )


def replaced(name: str, field: str, value: Any) -> Any:
    """`concrete(name)` with one parameter swapped for `value` (as tree_at would)."""
    return ec.tree_at(lambda m: getattr(m, field), concrete(name), value)


def _is_struct(x: Any) -> bool:
    return isinstance(x, jax.ShapeDtypeStruct)


@functools.cache
def abstract(in_size: int = 3, out_size: int = 4, **kwargs: Any) -> nn.Linear:
    """A Linear skeleton (ShapeDtypeStruct leaves): no random initialisation to compile."""
    return ec.filter_eval_shape(nn.Linear, in_size, out_size, key=KEY, **kwargs)


@functools.cache
def linear(in_size: int = 3, out_size: int = 4, **kwargs: Any) -> nn.Linear:
    """A Linear with zero NumPy parameters (cheap to build, save and compare)."""
    return jax.tree.map(
        lambda x: np.zeros(x.shape, x.dtype) if _is_struct(x) else x,
        abstract(in_size, out_size, **kwargs),
        is_leaf=_is_struct,
    )


def identity(x: Any) -> Any:
    return x


def total(x: Any) -> Any:
    return jnp.sum(x)
