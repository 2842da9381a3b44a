"""Filtered transformations used outside jit (eager, op by op), against their JAX
counterparts doing the same work: `filter_vmap(model)(x)` vs `jax.vmap(model)(x)`, and
`filter_grad(loss)(model, x, y)` vs `jax.grad` over the partitioned arrays. Equinox's
versions are timed alongside when installed. Goal: ecliptic <= 1.2x JAX.

Run: python benchmarks/eager_transforms.py [--smoke]
"""

from __future__ import annotations

from typing import Any

import _models as models
import jax
from _timing import Row, interleaved, machine, print_rows, rows_from_stats, smoke_flag

import ecliptic as ec


def _loss(model: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    return models.mse(jax.vmap(model)(x), y)


def main(smoke: bool = False) -> list[Row]:
    """Time every contender; return the table rows (`smoke`: a few calls only)."""
    key = jax.random.key(0)
    kx, ky = jax.random.split(jax.random.key(1))
    x, y = jax.random.normal(kx, (8, 32)), jax.random.normal(ky, (8, 32))
    model = models.ecliptic_mlp(key)
    params, static = ec.partition(model, ec.is_inexact_array)
    eqx = models.eqx
    eqx_model = models.equinox_mlp(key) if eqx is not None else None

    vmaps = {
        "jax.vmap": lambda: jax.vmap(model)(x),
        "ecliptic.filter_vmap": lambda: ec.filter_vmap(model)(x),
    }
    grads = {
        "jax.grad (partitioned)": lambda: jax.grad(lambda p: _loss(ec.combine(p, static), x, y))(
            params
        ),
        "ecliptic.filter_grad": lambda: ec.filter_grad(_loss)(model, x, y),
    }
    if eqx is not None:
        vmaps["equinox.filter_vmap"] = lambda: eqx.filter_vmap(eqx_model)(x)
        grads["equinox.filter_grad"] = lambda: eqx.filter_grad(_loss)(eqx_model, x, y)
    options: dict[str, Any] = dict(
        number=1 if smoke else 20,
        rounds=1 if smoke else 21,
        warmup=1 if smoke else 3,
        batch_seconds=0.05,
    )
    rows = rows_from_stats(
        "vmap outside jit (MLP, batch 8)",
        interleaved(vmaps, **options),
        "jax.vmap",
        goals={"ecliptic.filter_vmap": "<=1.2x"},
    )
    rows += rows_from_stats(
        "grad outside jit (MLP, batch 8)",
        interleaved(grads, **options),
        "jax.grad (partitioned)",
        goals={"ecliptic.filter_grad": "<=1.2x"},
    )
    return rows


if __name__ == "__main__":
    print(f"# transformations outside jit ({machine()})")
    print_rows(main(smoke_flag()))
