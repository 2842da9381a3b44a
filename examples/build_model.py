"""Write an MLP from scratch as a Module and pass it straight to `jax.jit` and `jax.grad`.

A Module is a pytree: its array fields are leaves, and fields marked `static=True` live
in the tree structure. With every leaf an array, plain JAX transformations just work.

Run: python examples/build_model.py [--steps N]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import jax
import jax.numpy as jnp

import ecliptic as ec


class Dense(ec.Module):
    weight: jax.Array
    bias: jax.Array

    def __init__(self, in_size: int, out_size: int, *, key: jax.Array):
        bound = 1.0 / in_size**0.5
        wkey, bkey = jax.random.split(key)
        self.weight = jax.random.uniform(wkey, (out_size, in_size), minval=-bound, maxval=bound)
        self.bias = jax.random.uniform(bkey, (out_size,), minval=-bound, maxval=bound)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.weight @ x + self.bias


class MyMLP(ec.Module):
    layers: tuple[Dense, ...]
    activation: Callable[[jax.Array], jax.Array] = ec.field(static=True)

    def __init__(self, sizes: list[int], activation=jax.nn.relu, *, key: jax.Array):
        keys = jax.random.split(key, len(sizes) - 1)
        self.layers = tuple(Dense(i, o, key=k) for i, o, k in zip(sizes[:-1], sizes[1:], keys))
        self.activation = activation

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x)


def main(steps: int = 300, seed: int = 0) -> float:
    data_key, model_key = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(data_key, (64, 3))
    y = jnp.stack([x[:, 0] * x[:, 1], jnp.cos(x[:, 2])], axis=1)
    model = MyMLP([3, 32, 32, 2], key=model_key)
    print(model)

    @jax.jit
    def step(model: MyMLP, x: jax.Array, y: jax.Array) -> tuple[MyMLP, jax.Array]:
        def loss(model: MyMLP) -> jax.Array:
            return jnp.mean((jax.vmap(model)(x) - y) ** 2)

        value, grads = jax.value_and_grad(loss)(model)
        model = jax.tree_util.tree_map(lambda p, g: p - 0.05 * g, model, grads)
        return model, value

    value = jnp.inf
    for i in range(steps):
        model, value = step(model, x, y)
        if i % max(1, steps // 5) == 0 or i == steps - 1:
            print(f"step {i:5d}  loss {float(value):.5f}")
    return float(value)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args()
    main(args.steps, args.seed)
