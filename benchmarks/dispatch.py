"""Dispatch overhead: µs per call of `filter_jit` against raw `jax.jit`, Equinox's
`filter_jit` and Flax NNX's `nnx.jit`, on the MLP and on the 100-leaf "Wide" model.

Raw JAX gets the fairest possible setup: the model is partitioned once, outside the timed
loop, into its arrays and static parts, and `jax.jit` is called on the arrays only.
Goals: ecliptic <= 1.15x raw on the MLP, <= 1.3x on the 100-leaf model.

Run: python benchmarks/dispatch.py [--smoke]
"""

from __future__ import annotations

from typing import Any

import _models as models
import jax
import jax.numpy as jnp
from _timing import Row, interleaved, machine, print_rows, rows_from_stats, smoke_flag

import ecliptic as ec


def _forward(model: Any, x: jax.Array) -> jax.Array:
    return jax.vmap(model)(x)


def _contenders(name: str, key: jax.Array, x: jax.Array, smoke: bool) -> dict[str, Any]:
    blocks = 3 if smoke else models.WIDE_BLOCKS
    model = models.ecliptic_mlp(key) if name == "MLP" else models.ecliptic_wide(key, blocks)
    params, static = ec.partition(model, ec.is_array)
    raw = jax.jit(lambda params, x: _forward(ec.combine(params, static), x))
    filtered = ec.filter_jit(_forward)
    fns = {
        "raw jax.jit": lambda: raw(params, x),
        "ecliptic.filter_jit": lambda: filtered(model, x),
    }
    if models.eqx is not None:
        eqx_model = models.equinox_mlp(key) if name == "MLP" else models.equinox_wide(key, blocks)
        eqx_jit = models.eqx.filter_jit(_forward)
        fns["equinox.filter_jit"] = lambda: eqx_jit(eqx_model, x)
    if models.nnx is not None:
        nnx_model = models.nnx_mlp() if name == "MLP" else models.nnx_wide(key, blocks)
        nnx_jit = models.nnx.jit(lambda m, x: jax.vmap(m)(x) if name == "Wide" else m(x))
        fns["flax nnx.jit"] = lambda: nnx_jit(nnx_model, x)
    return fns


def main(smoke: bool = False) -> list[Row]:
    """Time every contender; return the table rows (`smoke`: a few calls only)."""
    key = jax.random.key(0)
    rows: list[Row] = []
    for name, features, goal in (("MLP", 32, "<=1.15x"), ("Wide", 8, "<=1.3x")):
        x = jnp.ones((8, features))
        fns = _contenders(name, key, x, smoke)
        stats = interleaved(
            fns, number=2 if smoke else 300, rounds=1 if smoke else 31, warmup=1 if smoke else 5
        )
        label = {"MLP": "dispatch MLP 32-64x3-32", "Wide": "dispatch 100-leaf model"}[name]
        rows += rows_from_stats(label, stats, "raw jax.jit", goals={"ecliptic.filter_jit": goal})
    return rows


if __name__ == "__main__":
    smoke = smoke_flag()
    print(f"# dispatch ({machine()})")
    print_rows(main(smoke))
