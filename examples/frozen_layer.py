"""Train some parameters while others stay frozen, everything JIT-traced.

A *filter tree* (a pytree of bools with the model's structure, built with `tree_at`)
tells `gradf` which leaves to differentiate: here everything except the last layer.
`jitf` still traces all arrays, so changing the frozen values never recompiles.

Run: python examples/frozen_layer.py [--steps N]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

import ecliptic as ec


def main(steps: int = 500, seed: int = 0) -> None:
    data_key, model_key = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(data_key, (128, 2))
    y = jnp.sum(x**2, axis=1, keepdims=True)
    model = ec.nn.MLP(2, 1, width_size=16, depth=2, key=model_key)

    # True = train, False = frozen. Arrays are trainable except the last layer's.
    filter_tree = jax.tree_util.tree_map(ec.is_inexact_array, model)
    filter_tree = ec.tree_at(
        lambda tree: (tree.layers[-1].weight, tree.layers[-1].bias),
        filter_tree,
        replace=(False, False),
    )

    def loss(model, x, y):
        return jnp.mean((jax.vmap(model)(x) - y) ** 2)

    grad_loss = ec.value_and_grad_f(loss, filter_tree=filter_tree)
    optimiser = optax.sgd(1e-2)
    opt_state = optimiser.init(ec.filter(model, filter_tree))

    def step(model, opt_state, x, y):
        value, grads = grad_loss(model, x, y)
        updates, opt_state = optimiser.update(grads, opt_state)
        return ec.apply_updates(model, updates), opt_state, value

    step = ec.jitf(step, filter_fn=ec.is_array)
    frozen_before = np.asarray(model.layers[-1].weight)
    trained_before = np.asarray(model.layers[0].weight)
    for i in range(steps):
        model, opt_state, value = step(model, opt_state, x, y)
        if i % max(1, steps // 5) == 0 or i == steps - 1:
            print(f"step {i:5d}  loss {float(value):.5f}")
    assert np.array_equal(frozen_before, model.layers[-1].weight), "frozen layer changed"
    assert not np.array_equal(trained_before, model.layers[0].weight), "nothing trained"
    print("last layer unchanged; the others trained")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="training steps")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args()
    main(args.steps, args.seed)
