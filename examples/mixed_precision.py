"""Train a small digits CNN in bfloat16 mixed precision, and in float16 with dynamic loss
scaling, next to a float32 run.

The model is unchanged: `ecliptic.mixed_precision(model, dtype)` wraps it inside the loss,
so the parameters (and the optimiser's state) stay float32 while convolutions and matrix
products run in 16 bits; GroupNorm is kept in float32. The float16 run carries an
`ecliptic.DynamicLossScale` through the step and skips steps whose gradients overflow.
Prints each run's final test loss and accuracy, and the loss scale's history.

Run: python examples/mixed_precision.py [--steps N]
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
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int32)
    idx = np.random.default_rng(seed).permutation(len(labels))
    cut = int(0.8 * len(idx))
    return images[idx[:cut]], labels[idx[:cut]], images[idx[cut:]], labels[idx[cut:]]


def make_cnn(key: jax.Array) -> nn.Sequential:
    k1, k2, k3 = jax.random.split(key, 3)
    return nn.Sequential(
        [
            nn.Conv2d(1, 16, 3, padding=1, key=k1),
            nn.GroupNorm(4, 16),
            nn.Lambda(jax.nn.relu),
            nn.Conv2d(16, 32, 3, padding=1, key=k2),
            nn.Lambda(jax.nn.relu),
            nn.MaxPool2d(2, stride=2),
            nn.Lambda(lambda x: x.reshape(-1)),
            nn.Linear(32 * 4 * 4, 10, key=k3),
        ]
    )


def loss_fn(model, images, labels):
    logits = jax.vmap(model)(images)  # float32 logits (the policy's output dtype)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def run(dtype, data, steps: int, seed: int) -> tuple[float, float, list[float]]:
    x_train, y_train, x_test, y_test = data
    model = make_cnn(jax.random.key(seed))
    opt = optax.adam(3e-3)
    opt_state = opt.init(ec.filter(model, ec.is_array))
    scale = ec.DynamicLossScale(2.0**15, growth_interval=50)

    def wrap(m):
        return m if dtype == jnp.float32 else ec.mixed_precision(m, dtype)

    @ec.filter_jit
    def step(model, opt_state, scale, images, labels):
        def scaled_loss(m):
            return scale.scale(loss_fn(wrap(m), images, labels))

        grads = scale.unscale(ec.filter_grad(scaled_loss)(model))
        finite = ec.all_finite(grads)
        updates, new_opt_state = opt.update(grads, opt_state)
        model = ec.select_tree(finite, ec.apply_updates(model, updates), model)
        opt_state = ec.select_tree(finite, new_opt_state, opt_state)
        return model, opt_state, scale.adjust(finite)

    rng = np.random.default_rng(seed)
    scales = []
    for _ in range(steps):
        batch = rng.choice(len(x_train), 64, replace=False)
        model, opt_state, scale = step(model, opt_state, scale, x_train[batch], y_train[batch])
        scales.append(float(scale.scale_value))
    test_loss = float(loss_fn(wrap(model), x_test, y_test))
    logits = jax.vmap(wrap(model))(x_test)
    acc = float(jnp.mean(jnp.argmax(logits, -1) == y_test))
    return test_loss, acc, scales


def main(steps: int = 300, seed: int = 0) -> dict[str, tuple[float, float]]:
    data = load_data(seed)
    results = {}
    for name, dtype in (
        ("float32", jnp.float32),
        ("bfloat16", jnp.bfloat16),
        ("float16", jnp.float16),
    ):
        loss, acc, scales = run(dtype, data, steps, seed)
        results[name] = (loss, acc)
        print(f"{name:9s} test loss {loss:.4f}  accuracy {acc:.3f}")
        if name == "float16":
            changes = [s for i, s in enumerate(scales) if i == 0 or s != scales[i - 1]]
            print(f"          loss scale went {' -> '.join(f'{s:g}' for s in changes[:8])}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.steps, args.seed)
