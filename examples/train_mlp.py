"""Train an MLP on a toy regression problem with the original filtered API.

`jitf` compiles the training step, tracing only the leaves `filter_fn` selects (here the
floating-point arrays); `gradf` differentiates with respect to the leaves its filter
selects. Everything else in the model (activation functions, sizes) is static.

Run: python examples/train_mlp.py [--steps N]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax

import ecliptic as ec


def make_data(key: jax.Array, n: int = 256) -> tuple[jax.Array, jax.Array]:
    x = jax.random.uniform(key, (n, 1), minval=-3.0, maxval=3.0)
    return x, jnp.sin(x) + 0.3 * x


def main(steps: int = 1000, seed: int = 0) -> float:
    data_key, model_key = jax.random.split(jax.random.key(seed))
    x, y = make_data(data_key)
    model = ec.nn.MLP(1, 1, width_size=32, depth=2, activation=jnp.tanh, key=model_key)
    optimiser = optax.adam(3e-3)
    opt_state = optimiser.init(ec.filter(model, ec.is_inexact_array))

    def loss(model: ec.nn.MLP, x: jax.Array, y: jax.Array) -> jax.Array:
        return jnp.mean((jax.vmap(model)(x) - y) ** 2)

    grad_loss = ec.value_and_grad_f(loss, filter_fn=ec.is_inexact_array)

    def step(model, opt_state, x, y):
        value, grads = grad_loss(model, x, y)
        updates, opt_state = optimiser.update(grads, opt_state)
        return ec.apply_updates(model, updates), opt_state, value

    step = ec.jitf(step, filter_fn=ec.is_array)
    value = jnp.inf
    for i in range(steps):
        model, opt_state, value = step(model, opt_state, x, y)
        if i % max(1, steps // 5) == 0 or i == steps - 1:
            print(f"step {i:5d}  loss {float(value):.5f}")
    return float(value)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="training steps")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args()
    main(args.steps, args.seed)
