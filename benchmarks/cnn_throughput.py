"""Steady-state training throughput of a small CNN on 28x28x1 inputs, batch 128 (Adam):
raw `jax.jit` over the partitioned arrays, ecliptic's filtered step, Equinox's filtered
step and Flax NNX's `nnx.jit` step (NHWC, Flax's native layout). Reported per step, with
images per second in the notes.

Run: python benchmarks/cnn_throughput.py [--smoke]
"""

from __future__ import annotations

from typing import Any

import _models as models
import jax
import optax
from _timing import Row, interleaved, machine, print_rows, smoke_flag
from train_step import _stepper

import ecliptic as ec


def _loss(model: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    return models.cross_entropy(jax.vmap(model)(x), y)


def contenders(x: jax.Array, y: jax.Array, shape: tuple[int, int, int]) -> dict[str, Any]:
    key = jax.random.key(0)
    opt = optax.adam(1e-3)
    model = models.EclipticCNN(key, shape)
    params, static = ec.partition(model, ec.is_inexact_array)

    @jax.jit
    def raw(params: Any, opt_state: Any, x: jax.Array, y: jax.Array) -> Any:
        loss, grads = jax.value_and_grad(lambda p: _loss(ec.combine(p, static), x, y))(params)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    def filtered(lib: Any) -> Any:
        @lib.filter_jit
        def step(model: Any, opt_state: Any, x: jax.Array, y: jax.Array) -> Any:
            loss, grads = lib.filter_value_and_grad(_loss)(model, x, y)
            updates, opt_state = opt.update(grads, opt_state)
            return lib.apply_updates(model, updates), opt_state, loss

        return step

    fns = {
        "raw jax.jit step": _stepper(raw, params, opt.init(params), x, y),
        "ecliptic filtered step": _stepper(filtered(ec), model, opt.init(params), x, y),
    }
    if models.eqx is not None:
        eqx = models.eqx
        eqx_model = models.equinox_cnn(key, shape)
        eqx_state = opt.init(eqx.filter(eqx_model, eqx.is_inexact_array))
        fns["equinox filtered step"] = _stepper(filtered(eqx), eqx_model, eqx_state, x, y)
    if models.nnx is not None and shape != models.CNN_SMOKE:
        # (Not in smoke runs: NNX's initialisers alone compile for seconds there.)
        nnx = models.nnx
        nnx_model = models.nnx_cnn(0, shape)
        optimizer = nnx.Optimizer(nnx_model, opt, wrt=nnx.Param)
        x_nhwc = x.transpose(0, 2, 3, 1)

        @nnx.jit
        def nnx_step(model: Any, optimizer: Any, x: jax.Array, y: jax.Array) -> Any:
            grad_fn = nnx.value_and_grad(lambda m: models.cross_entropy(m(x), y))
            loss, grads = grad_fn(model)
            optimizer.update(model, grads)
            return loss

        fns["flax nnx.jit step"] = lambda: nnx_step(nnx_model, optimizer, x_nhwc, y)
    return fns


def main(smoke: bool = False) -> list[Row]:
    """Time every contender; return the table rows (`smoke`: a tiny CNN, one step)."""
    batch = 1 if smoke else 128
    shape = models.CNN_SMOKE if smoke else models.CNN_FULL
    kx, ky = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (batch, 1, shape[0], shape[0]))
    y = jax.random.randint(ky, (batch,), 0, 10)
    stats = interleaved(
        contenders(x, y, shape),
        number=1 if smoke else 5,
        rounds=1 if smoke else 15,
        warmup=1 if smoke else 3,
        batch_seconds=0.1,
    )
    base = stats["raw jax.jit step"]
    return [
        Row(
            f"CNN train step {shape[0]}x{shape[0]}, batch {batch}",
            name,
            s.median / 1e3,
            "ms/step",
            None if name == "raw jax.jit step" else s.median / base.median,
            "",
            f"{batch / (s.median * 1e-6):.0f} img/s; min {s.min / 1e3:.3g} ms",
        )
        for name, s in stats.items()
    ]


if __name__ == "__main__":
    print(f"# CNN training throughput ({machine()})")
    print_rows(main(smoke_flag()))
