"""Train a small CNN with BatchNorm and Dropout on scikit-learn's 8x8 digits.

BatchNorm keeps running statistics: they live in a `State` that is passed in and
returned alongside the model, so the training step stays a pure function that
`filter_jit` compiles and `filter_value_and_grad` differentiates (the state comes back as
auxiliary output). For evaluation, `inference_mode` switches BatchNorm to its running
statistics and turns Dropout off.

Run: python examples/stateful.py [--steps N]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import ecliptic as ec
from ecliptic import nn


def load_data(seed: int) -> tuple[np.ndarray, ...]:
    """Digits as (N, 1, 8, 8) float32 images in [0, 1] and int labels; 80/20 split."""
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(labels))
    cut = int(0.8 * len(labels))
    train, test = order[:cut], order[cut:]
    return images[train], labels[train], images[test], labels[test]


class CNN(ec.Module):
    """conv -> BN -> relu -> pool, twice; then dropout and a linear classifier."""

    conv1: nn.Conv2d
    bn1: nn.BatchNorm
    conv2: nn.Conv2d
    bn2: nn.BatchNorm
    pool: nn.MaxPool2d
    dropout: nn.Dropout
    head: nn.Linear

    def __init__(self, *, key: jax.Array):
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1, key=k1)
        self.bn1 = nn.BatchNorm(16, axis_name="batch", momentum=0.9, mode="torch")
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, key=k2)
        self.bn2 = nn.BatchNorm(32, axis_name="batch", momentum=0.9, mode="torch")
        self.pool = nn.MaxPool2d(2, stride=2)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(32 * 2 * 2, 10, key=k3)

    def __call__(
        self, x: jax.Array, state: nn.State, *, key: jax.Array | None = None
    ) -> tuple[jax.Array, nn.State]:
        """One image (1, 8, 8) -> logits (10,), and the updated state."""
        x, state = self.bn1(self.conv1(x), state)
        x = self.pool(jax.nn.relu(x))
        x, state = self.bn2(self.conv2(x), state)
        x = self.pool(jax.nn.relu(x))
        x = self.dropout(x.reshape(-1), key=key)
        return self.head(x), state


def batched_call(
    model: CNN, x: jax.Array, state: nn.State, key: jax.Array | None
) -> tuple[jax.Array, nn.State]:
    """Run the per-example model on a batch; BatchNorm averages over the axis "batch".
    The state is shared by the batch (in_axes/out_axes None); each example gets its own
    dropout key."""
    keys = None if key is None else jax.random.split(key, x.shape[0])
    fn = ec.filter_vmap(
        lambda m, x, s, k: m(x, s, key=k),
        in_axes=(None, 0, None, None if keys is None else 0),
        out_axes=(0, None),
        axis_name="batch",
    )
    return fn(model, x, state, keys)


def loss_fn(
    model: CNN, x: jax.Array, y: jax.Array, state: nn.State, key: jax.Array
) -> tuple[jax.Array, nn.State]:
    logits, state = batched_call(model, x, state, key)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, state


def main(steps: int = 200, seed: int = 0, batch_size: int = 64) -> float:
    x_train, y_train, x_test, y_test = load_data(seed)
    model_key, data_key = jax.random.split(jax.random.key(seed))
    model, state = nn.make_with_state(CNN)(key=model_key)
    optimiser = optax.adam(3e-3)
    opt_state = optimiser.init(ec.filter(model, ec.is_inexact_array))
    grad_fn = ec.filter_value_and_grad(loss_fn, has_aux=True)

    @ec.filter_jit
    def step(model, state, opt_state, x, y, key):
        (loss, state), grads = grad_fn(model, x, y, state, key)
        updates, opt_state = optimiser.update(grads, opt_state)
        return ec.apply_updates(model, updates), state, opt_state, loss

    rng = np.random.default_rng(seed)
    for i, key in enumerate(jax.random.split(data_key, steps)):
        batch = rng.choice(len(y_train), batch_size, replace=False)
        model, state, opt_state, loss = step(
            model, state, opt_state, x_train[batch], y_train[batch], key
        )
        if i % max(1, steps // 5) == 0 or i == steps - 1:
            print(f"step {i:4d}  loss {float(loss):.4f}")

    # Evaluation: running statistics instead of batch statistics, and no dropout.
    eval_model = nn.inference_mode(model)
    logits, _ = ec.filter_jit(batched_call)(eval_model, x_test, state, None)
    accuracy = float(jnp.mean(jnp.argmax(logits, axis=1) == y_test))
    print(f"test accuracy {accuracy:.4f} on {len(y_test)} held-out digits")
    return accuracy


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    main(steps=parser.parse_args().steps)
