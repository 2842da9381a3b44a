"""Plot the feature maps of a small digits CNN, captured with `ecliptic.intermediates`.

The CNN is trained for a few hundred steps; then `intermediates(model, where=[...])`
returns, next to the logits, the outputs of its two convolutions for a batch of images
(under `filter_jit` and `filter_vmap`, without touching the model's forward pass). The
first eight channels of each are drawn for four test digits.

Run: python examples/feature_maps.py [--steps N] [--out DIR]
"""

from __future__ import annotations

import argparse
import pathlib

import jax
import matplotlib
import numpy as np
import optax
from sklearn.datasets import load_digits

import ecliptic as ec
from ecliptic import nn

matplotlib.use("Agg")  # files only, no window
import matplotlib.pyplot as plt  # noqa: E402


class CNN(ec.Module):
    conv1: nn.Conv2d
    conv2: nn.Conv2d
    pool: nn.MaxPool2d
    head: nn.Linear

    def __init__(self, *, key: jax.Array):
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, key=k1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, key=k2)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.head = nn.Linear(16 * 4 * 4, 10, key=k3)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.relu(self.conv1(x))
        x = self.pool(jax.nn.relu(self.conv2(x)))
        return self.head(x.reshape(-1))


def train(model: CNN, images: np.ndarray, labels: np.ndarray, steps: int) -> CNN:
    opt = optax.adam(3e-3)
    opt_state = opt.init(ec.filter(model, ec.is_array))

    @ec.filter_jit
    def step(model, opt_state, x, y):
        def loss(m):
            logits = jax.vmap(m)(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads = ec.filter_grad(loss)(model)
        updates, opt_state = opt.update(grads, opt_state)
        return ec.apply_updates(model, updates), opt_state

    rng = np.random.default_rng(0)
    for _ in range(steps):
        batch = rng.choice(len(images), 64, replace=False)
        model, opt_state = step(model, opt_state, images[batch], labels[batch])
    return model


def main(steps: int = 300, out: pathlib.Path | None = None) -> dict[str, np.ndarray]:
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int32)
    model = train(CNN(key=jax.random.key(0)), images[:1500], labels[:1500], steps)

    capture = ec.intermediates(model, where=["conv1", "conv2"])
    batched = ec.filter_jit(ec.filter_vmap(lambda f, x: f(x), in_axes=(None, 0)))
    examples = images[1500:1504]
    logits, maps = batched(capture, examples)
    maps = {name: np.asarray(value) for name, value in maps.items()}
    for name, value in maps.items():
        print(f"{name}: captured {value.shape} (batch, channels, height, width)")
    print("predicted", np.asarray(logits.argmax(-1)), "true", labels[1500:1504])

    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        fig, axes = plt.subplots(len(examples), 17, figsize=(17, len(examples) * 1.1))
        for row, image in enumerate(examples):
            axes[row, 0].imshow(image[0], cmap="gray_r")
            for c in range(8):
                axes[row, 1 + c].imshow(maps["conv1"][row, c], cmap="viridis")
                axes[row, 9 + c].imshow(maps["conv2"][row, c], cmap="magma")
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, 0].set_title("input")
        axes[0, 1].set_title("conv1 channels 0-7", loc="left")
        axes[0, 9].set_title("conv2 channels 0-7", loc="left")
        fig.tight_layout()
        fig.savefig(out / "feature_maps.png", dpi=80)
        plt.close(fig)
        print(f"wrote {out / 'feature_maps.png'}")
    return maps


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("feature-maps-out"))
    args = parser.parse_args()
    main(args.steps, args.out)
