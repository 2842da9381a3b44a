"""Fine-tune a small digits CNN to new classes with LoRA adapters.

A CNN is trained on the digits 0-4 only. The digits 5-9 are then learnt by training
nothing but low-rank adapters on its Linear layers (`ecliptic.lora`, `lora_filter`):
the convolution weights and the base Linear weights stay frozen (only the head's bias
is trained with them). The adapters are saved
in PEFT's layout (`lora_state_dict`), merged back into plain layers (`merge_lora`), and
the merged model is checked to score the same.

Run: python examples/lora_finetune.py [--steps N] [--rank R] [--out DIR]
"""

from __future__ import annotations

import argparse
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import ecliptic as ec
from ecliptic import nn


def load_split(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Digits as (N, 1, 8, 8) float32 in [0, 1]; 'old' = classes 0-4, 'new' = 5-9, each
    split 80/20 into train and test."""
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int32)
    rng = np.random.default_rng(seed)
    out = {}
    for name, classes in (("old", range(5)), ("new", range(5, 10))):
        idx = rng.permutation(np.flatnonzero(np.isin(labels, list(classes))))
        cut = int(0.8 * len(idx))
        out[f"{name}_train"] = (images[idx[:cut]], labels[idx[:cut]])
        out[f"{name}_test"] = (images[idx[cut:]], labels[idx[cut:]])
    return out


class SmallCNN(ec.Module):
    """conv 3x3 (16) -> relu -> conv 3x3 (32) -> relu -> maxpool 2 -> linear 512->64 ->
    relu -> linear 64->10, for one (1, 8, 8) image."""

    conv1: nn.Conv2d
    conv2: nn.Conv2d
    pool: nn.MaxPool2d
    hidden: nn.Linear
    head: nn.Linear

    def __init__(self, *, key: jax.Array):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1, key=k1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, key=k2)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.hidden = nn.Linear(32 * 4 * 4, 64, key=k3)
        self.head = nn.Linear(64, 10, key=k4)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.relu(self.conv1(x))
        x = self.pool(jax.nn.relu(self.conv2(x)))
        return self.head(jax.nn.relu(self.hidden(x.reshape(-1))))


def loss_fn(model, images, labels):
    logits = jax.vmap(model)(images)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def accuracy(model, images, labels) -> float:
    return float(jnp.mean(jnp.argmax(jax.vmap(model)(images), -1) == labels))


def train(trainable, frozen, data, steps, lr, seed):
    """Adam on `trainable` (combined with `frozen` for the loss), minibatches of 64."""
    opt = optax.adam(lr)
    opt_state = opt.init(trainable)

    @ec.filter_jit
    def step(trainable, opt_state, images, labels):
        def loss(t):
            return loss_fn(ec.combine(t, frozen), images, labels)

        value, grads = ec.filter_value_and_grad(loss)(trainable)
        updates, opt_state = opt.update(grads, opt_state)
        return ec.apply_updates(trainable, updates), opt_state, value

    images, labels = data
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        batch = rng.choice(len(images), 64, replace=False)
        trainable, opt_state, _ = step(trainable, opt_state, images[batch], labels[batch])
    return ec.combine(trainable, frozen)


def main(
    steps: int = 400, rank: int = 8, seed: int = 0, out: pathlib.Path | None = None
) -> dict[str, float]:
    data = load_split(seed)
    model_key, lora_key = jax.random.split(jax.random.key(seed))
    model = SmallCNN(key=model_key)
    params, static = ec.partition(model, ec.is_array)
    model = train(params, static, data["old_train"], steps, 3e-3, seed)
    results = {
        "pretrained on 0-4, acc 0-4": accuracy(model, *data["old_test"]),
        "pretrained on 0-4, acc 5-9": accuracy(model, *data["new_test"]),
    }

    adapted = ec.lora(model, rank=rank, alpha=2 * rank, key=lora_key)
    # Train the adapters, and the head's bias (the new classes' logits start far below
    # the old ones, and a low-rank update of the weights cannot move a bias).
    spec = ec.tree_at(lambda m: m.head.base.bias, ec.lora_filter(adapted), True)
    adapters, frozen = ec.partition(adapted, spec)
    n_adapter = sum(x.size for x in jax.tree.leaves(adapters))
    n_total = sum(x.size for x in jax.tree.leaves(ec.filter(adapted, ec.is_array)))
    adapted = train(adapters, frozen, data["new_train"], steps, 1e-2, seed + 1)
    results["LoRA on 5-9, acc 5-9"] = accuracy(adapted, *data["new_test"])

    merged = ec.merge_lora(adapted)
    results["merged, acc 5-9"] = accuracy(merged, *data["new_test"])
    for name, value in results.items():
        print(f"{name:32s} {value:.3f}")
    print(f"trained {n_adapter} adapter values out of {n_total} ({n_adapter / n_total:.1%})")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        sd = ec.lora_state_dict(adapted)
        np.savez(out / "adapter_model.npz", **sd)
        print(f"wrote {out / 'adapter_model.npz'} ({len(sd)} PEFT-named arrays)")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("lora-out"))
    args = parser.parse_args()
    main(args.steps, args.rank, args.seed, args.out)
