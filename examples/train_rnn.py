"""Classify spirals as clockwise or anticlockwise with a GRU run by `lax.scan`.

Each example is a sequence of 2-D points along a noisy spiral; the GRU reads it one point
at a time and a linear head predicts the direction from the final hidden state.

Run: python examples/train_rnn.py [--steps N]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax

import ecliptic as ec


def make_spirals(key: jax.Array, n: int, length: int = 16) -> tuple[jax.Array, jax.Array]:
    """`n` spirals of `length` points each, and their labels (1 = anticlockwise)."""
    phase_key, label_key, noise_key = jax.random.split(key, 3)
    t = jnp.linspace(0.0, 2 * jnp.pi, length)
    phase = jax.random.uniform(phase_key, (n, 1), maxval=2 * jnp.pi)
    labels = jax.random.bernoulli(label_key, 0.5, (n,))
    direction = jnp.where(labels, 1.0, -1.0)[:, None]
    angle = phase + direction * t
    radius = 1.0 - 0.5 * t / (2 * jnp.pi)
    points = jnp.stack([radius * jnp.cos(angle), radius * jnp.sin(angle)], axis=-1)
    points = points + 0.05 * jax.random.normal(noise_key, points.shape)
    return points, labels.astype(jnp.float32)


class RNNClassifier(ec.Module):
    cell: ec.nn.GRUCell
    head: ec.nn.Linear

    def __init__(self, hidden_size: int, *, key: jax.Array):
        cell_key, head_key = jax.random.split(key)
        self.cell = ec.nn.GRUCell(2, hidden_size, key=cell_key)
        self.head = ec.nn.Linear(hidden_size, "scalar", key=head_key)

    def __call__(self, sequence: jax.Array) -> jax.Array:
        def step(hidden, point):
            return self.cell(point, hidden), None

        hidden = jnp.zeros(self.cell.hidden_size)
        hidden, _ = jax.lax.scan(step, hidden, sequence)
        return self.head(hidden)  # a logit


def loss_fn(model: RNNClassifier, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    logits = jax.vmap(model)(x)
    loss = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y))
    accuracy = jnp.mean((logits > 0) == (y > 0.5))
    return loss, accuracy


def main(steps: int = 400, seed: int = 0, batch_size: int = 64) -> float:
    data_key, model_key, test_key = jax.random.split(jax.random.key(seed), 3)
    model = RNNClassifier(hidden_size=16, key=model_key)
    optimiser = optax.adam(1e-2)
    opt_state = optimiser.init(ec.filter(model, ec.is_inexact_array))
    grad_fn = ec.value_and_grad_f(loss_fn, filter_fn=ec.is_inexact_array, has_aux=True)

    @ec.filter_jit
    def step(model, opt_state, key):
        x, y = make_spirals(key, batch_size)
        (loss, accuracy), grads = grad_fn(model, x, y)
        updates, opt_state = optimiser.update(grads, opt_state)
        return ec.apply_updates(model, updates), opt_state, loss, accuracy

    for i, key in enumerate(jax.random.split(data_key, steps)):
        model, opt_state, loss, accuracy = step(model, opt_state, key)
        if i % max(1, steps // 5) == 0 or i == steps - 1:
            print(f"step {i:5d}  loss {float(loss):.4f}  batch accuracy {float(accuracy):.3f}")
    x_test, y_test = make_spirals(test_key, 1000)
    _, test_accuracy = ec.filter_jit(loss_fn)(model, x_test, y_test)
    print(f"test accuracy {float(test_accuracy):.4f}")
    return float(test_accuracy)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="training steps")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args()
    main(args.steps, args.seed)
