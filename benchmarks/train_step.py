"""A full training step (value_and_grad + optax Adam + apply_updates, all inside one jit)
on the MLP, batch 8: ecliptic's filtered step against the hand-written raw `jax.jit` step
on the partitioned parameters, Equinox's filtered step and Flax NNX's `nnx.jit` step.
Goal: ecliptic <= 1.1x raw.

Run: python benchmarks/train_step.py [--smoke]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import _models as models
import jax
import optax
from _timing import Row, interleaved, machine, print_rows, rows_from_stats, smoke_flag

import ecliptic as ec


def _loss(model: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    return models.mse(jax.vmap(model)(x), y)


def raw_step(static: Any, opt: optax.GradientTransformation) -> Callable[..., Any]:
    """The hand-written step: `jax.jit` over the partitioned arrays."""

    @jax.jit
    def step(params: Any, opt_state: Any, x: jax.Array, y: jax.Array) -> Any:
        loss, grads = jax.value_and_grad(lambda p: _loss(ec.combine(p, static), x, y))(params)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def filtered_step(lib: Any, opt: optax.GradientTransformation) -> Callable[..., Any]:
    """The idiomatic filtered step, for ecliptic or Equinox (`lib`)."""

    @lib.filter_jit
    def step(model: Any, opt_state: Any, x: jax.Array, y: jax.Array) -> Any:
        loss, grads = lib.filter_value_and_grad(_loss)(model, x, y)
        updates, opt_state = opt.update(grads, opt_state)
        return lib.apply_updates(model, updates), opt_state, loss

    return step


def _stepper(step: Callable[..., Any], model: Any, opt_state: Any, *data: Any) -> Any:
    carry = [model, opt_state]

    def run() -> Any:
        carry[0], carry[1], loss = step(carry[0], carry[1], *data)
        return loss

    return run


def contenders(x: jax.Array, y: jax.Array) -> dict[str, Callable[[], Any]]:
    key = jax.random.key(0)
    opt = optax.adam(1e-3)
    model = models.ecliptic_mlp(key)
    params, static = ec.partition(model, ec.is_inexact_array)
    fns = {
        "raw jax.jit step": _stepper(raw_step(static, opt), params, opt.init(params), x, y),
        "ecliptic filtered step": _stepper(filtered_step(ec, opt), model, opt.init(params), x, y),
    }
    if models.eqx is not None:
        eqx = models.eqx
        eqx_model = models.equinox_mlp(key)
        eqx_state = opt.init(eqx.filter(eqx_model, eqx.is_inexact_array))
        fns["equinox filtered step"] = _stepper(filtered_step(eqx, opt), eqx_model, eqx_state, x, y)
    if models.nnx is not None:
        nnx = models.nnx
        nnx_model = models.nnx_mlp()
        optimizer = nnx.Optimizer(nnx_model, opt, wrt=nnx.Param)

        @nnx.jit
        def nnx_step(model: Any, optimizer: Any, x: jax.Array, y: jax.Array) -> Any:
            loss, grads = nnx.value_and_grad(lambda m: models.mse(m(x), y))(model)
            optimizer.update(model, grads)
            return loss

        fns["flax nnx.jit step"] = lambda: nnx_step(nnx_model, optimizer, x, y)
    return fns


def main(smoke: bool = False) -> list[Row]:
    """Time every contender; return the table rows (`smoke`: a few calls only)."""
    kx, ky = jax.random.split(jax.random.key(1))
    x, y = jax.random.normal(kx, (8, 32)), jax.random.normal(ky, (8, 32))
    stats = interleaved(
        contenders(x, y),
        number=2 if smoke else 200,
        rounds=1 if smoke else 61,
        warmup=1 if smoke else 5,
    )
    return rows_from_stats(
        "train step MLP (adam)",
        stats,
        "raw jax.jit step",
        goals={"ecliptic filtered step": "<=1.1x"},
    )


if __name__ == "__main__":
    print(f"# train step ({machine()})")
    print_rows(main(smoke_flag()))
