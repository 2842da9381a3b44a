"""Train a small CNN on scikit-learn's handwritten digits, end to end.

The model (Conv2d, BatchNorm, Dropout, pooling, Linear) is an `ecliptic.Module`: a callable
pytree. Its layers act on one 1x8x8 image; `filter_vmap(..., axis_name="batch")` runs
them over a batch, and BatchNorm averages its statistics over that named axis. The
running statistics live in a `State` that goes in and out of the training step next to
the model, so the step stays a pure function for `filter_jit` to compile.

What it does: prints `ecliptic.summary(model)`; trains with a progress bar per epoch;
evaluates with `inference_mode` (running statistics, no dropout); saves a safetensors
checkpoint with `ecliptic.save`, loads it back with `ecliptic.load` and checks that the
reloaded model scores the same; draws the training curves and a grid of predictions.
The data (1,797 images) ships inside scikit-learn: nothing is downloaded.

Run: python examples/demo_digits.py [--epochs N] [--batch-size B] [--seed S] [--out DIR]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
from sklearn.datasets import load_digits
from tqdm import tqdm

import ecliptic as ec
from ecliptic import nn

matplotlib.use("Agg")  # files only, no window: works on a headless machine
import matplotlib.pyplot as plt  # noqa: E402

# --------------------------------------------------------------------------- data


def load_data(seed: int, test_fraction: float = 0.2) -> tuple[np.ndarray, ...]:
    """The digits as (N, 1, 8, 8) float32 images scaled to [0, 1] and int32 labels, split
    into train and test sets by a seeded shuffle (stratified: every digit in both)."""
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int32)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for digit in range(10):
        where = rng.permutation(np.flatnonzero(labels == digit))
        cut = round(len(where) * test_fraction)
        test.append(where[:cut])
        train.append(where[cut:])
    train_idx, test_idx = rng.permutation(np.concatenate(train)), np.sort(np.concatenate(test))
    return images[train_idx], labels[train_idx], images[test_idx], labels[test_idx]


# --------------------------------------------------------------------------- model


class DigitsCNN(ec.Module):
    """Two conv blocks and a classifier, for one (1, 8, 8) image.

    conv 3x3 (16) -> BN -> relu -> conv 3x3 (32) -> BN -> relu -> maxpool 2  [32, 4, 4]
    conv 3x3 (64) -> BN -> relu -> avgpool 2                                  [64, 2, 2]
    flatten -> dropout -> linear (10 logits)
    """

    conv1: nn.Conv2d
    bn1: nn.BatchNorm
    conv2: nn.Conv2d
    bn2: nn.BatchNorm
    conv3: nn.Conv2d
    bn3: nn.BatchNorm
    max_pool: nn.MaxPool2d
    avg_pool: nn.AvgPool2d
    dropout: nn.Dropout
    head: nn.Linear

    def __init__(self, *, key: jax.Array):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1, key=k1)
        self.bn1 = nn.BatchNorm(16, axis_name="batch", momentum=0.9, mode="torch")
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, key=k2)
        self.bn2 = nn.BatchNorm(32, axis_name="batch", momentum=0.9, mode="torch")
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1, key=k3)
        self.bn3 = nn.BatchNorm(64, axis_name="batch", momentum=0.9, mode="torch")
        self.max_pool = nn.MaxPool2d(2, stride=2)
        self.avg_pool = nn.AvgPool2d(2, stride=2)
        self.dropout = nn.Dropout(0.25)
        self.head = nn.Linear(64 * 2 * 2, 10, key=k4)

    def __call__(
        self, x: jax.Array, state: nn.State, *, key: jax.Array | None = None
    ) -> tuple[jax.Array, nn.State]:
        """One image (1, 8, 8) -> 10 logits, and the state with updated BatchNorm stats."""
        x, state = self.bn1(self.conv1(x), state)
        x, state = self.bn2(self.conv2(jax.nn.relu(x)), state)
        x = self.max_pool(jax.nn.relu(x))
        x, state = self.bn3(self.conv3(x), state)
        x = self.avg_pool(jax.nn.relu(x))
        x = self.dropout(x.reshape(-1), key=key)
        return self.head(x), state


def batched(
    model: DigitsCNN, images: jax.Array, state: nn.State, key: jax.Array | None
) -> tuple[jax.Array, nn.State]:
    """Apply the one-image model to a batch. The model and state are shared by the batch
    (in_axes None), each image gets its own dropout key, and the vmap axis is named
    "batch" so that BatchNorm can average over it."""
    keys = None if key is None else jax.random.split(key, images.shape[0])
    fn = ec.filter_vmap(
        lambda m, x, s, k: m(x, s, key=k),
        in_axes=(None, 0, None, None if keys is None else 0),
        out_axes=(0, None),
        axis_name="batch",
    )
    return fn(model, images, state, keys)


def loss_fn(model, state, images, labels, key):
    logits, state = batched(model, images, state, key)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
    return loss, (state, accuracy)


def make_step(optimiser: optax.GradientTransformation):
    grad_fn = ec.filter_value_and_grad(loss_fn, has_aux=True)

    @ec.filter_jit
    def step(model, state, opt_state, images, labels, key):
        (loss, (state, accuracy)), grads = grad_fn(model, state, images, labels, key)
        updates, opt_state = optimiser.update(
            grads, opt_state, ec.filter(model, ec.is_inexact_array)
        )
        return ec.apply_updates(model, updates), state, opt_state, loss, accuracy

    return step


@ec.filter_jit
def evaluate(model, state, images, labels):
    """Loss, accuracy and predictions in inference mode: BatchNorm uses its running
    statistics, Dropout is off, the state is left as it is."""
    logits, _ = batched(nn.inference_mode(model), images, state, None)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    predictions = jnp.argmax(logits, axis=-1)
    return loss, jnp.mean(predictions == labels), predictions


# --------------------------------------------------------------------------- plots


def plot_history(history: dict[str, list[float]], path: pathlib.Path) -> None:
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, history["train_loss"], "o-", label="train")
    ax_loss.plot(epochs, history["test_loss"], "s-", label="test")
    ax_loss.set(title="cross-entropy loss", xlabel="epoch", yscale="log")
    ax_acc.plot(epochs, history["train_acc"], "o-", label="train")
    ax_acc.plot(epochs, history["test_acc"], "s-", label="test")
    ax_acc.set(title="accuracy", xlabel="epoch", ylim=(min(0.8, *history["test_acc"]), 1.0))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("ecliptic: CNN on the 8x8 digits")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_predictions(
    images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, path: pathlib.Path
) -> None:
    """A 4x8 grid of test digits titled with the prediction; up to 12 mistakes come first,
    in red, with the true label."""
    wrong = np.flatnonzero(predictions != labels)
    right = np.flatnonzero(predictions == labels)
    chosen = np.concatenate([wrong[:12], right])[:32]
    fig, axes = plt.subplots(4, 8, figsize=(10, 5.6))
    for ax, i in zip(axes.flat, chosen):
        ax.imshow(images[i, 0], cmap="gray_r", vmin=0, vmax=1)
        ok = predictions[i] == labels[i]
        ax.set_title(
            f"{predictions[i]}" if ok else f"{predictions[i]} (true {labels[i]})",
            color="black" if ok else "red",
            fontsize=10,
        )
        ax.axis("off")
    for ax in list(axes.flat)[len(chosen) :]:
        ax.axis("off")
    fig.suptitle(f"test digits: predicted label ({len(wrong)} of {len(labels)} wrong, in red)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train a small CNN (Conv2d, BatchNorm, Dropout, pooling, Linear) on "
        "scikit-learn's 8x8 handwritten digits with ecliptic; print the model summary, "
        "save and reload a checkpoint, and plot the results.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--epochs", type=int, default=12, help="passes over the training set")
    parser.add_argument("--batch-size", type=int, default=64, help="images per training step")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (Adam)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split, init, dropout")
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path("demo-out"),
        help="output directory for the checkpoint and the PNGs",
    )
    parser.add_argument(
        "--train-size",
        type=int,
        default=None,
        help="use only this many training images (for quick smoke runs)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        parser.error("--epochs and --batch-size must be at least 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    start = time.perf_counter()
    x_train, y_train, x_test, y_test = load_data(args.seed)
    if args.train_size is not None:
        x_train, y_train = x_train[: args.train_size], y_train[: args.train_size]
    batch_size = min(args.batch_size, len(y_train))
    steps_per_epoch = len(y_train) // batch_size  # the ragged last batch is dropped

    model_key, train_key = jax.random.split(jax.random.key(args.seed))
    model, state = nn.make_with_state(DigitsCNN)(key=model_key)
    print(ec.summary(model))
    print(
        f"\n{len(y_train)} training and {len(y_test)} test images; "
        f"{args.epochs} epochs of {steps_per_epoch} steps\n"
    )

    schedule = optax.cosine_onecycle_schedule(args.epochs * steps_per_epoch, args.lr)
    optimiser = optax.adamw(schedule, weight_decay=1e-4)
    opt_state = optimiser.init(ec.filter(model, ec.is_inexact_array))
    step = make_step(optimiser)

    history: dict[str, list[float]] = {
        k: [] for k in ("train_loss", "train_acc", "test_loss", "test_acc")
    }
    rng = np.random.default_rng(args.seed)
    for epoch in range(args.epochs):
        order = rng.permutation(len(y_train))
        keys = jax.random.split(jax.random.fold_in(train_key, epoch), steps_per_epoch)
        bar = tqdm(
            total=steps_per_epoch,
            desc=f"epoch {epoch + 1:2d}/{args.epochs}",
            unit="step",
            disable=args.no_progress,
            file=sys.stdout,
        )
        losses, accuracies = [], []
        for i in range(steps_per_epoch):
            batch = order[i * batch_size : (i + 1) * batch_size]
            model, state, opt_state, loss, accuracy = step(
                model, state, opt_state, x_train[batch], y_train[batch], keys[i]
            )
            losses.append(float(loss))
            accuracies.append(float(accuracy))
            bar.set_postfix(
                {"loss": f"{np.mean(losses):.4f}", "acc": f"{np.mean(accuracies):.3f}"},
                refresh=False,
            )
            bar.update()
        test_loss, test_acc, _ = evaluate(model, state, x_test, y_test)
        bar.set_postfix(
            {
                "loss": f"{np.mean(losses):.4f}",
                "acc": f"{np.mean(accuracies):.3f}",
                "test_acc": f"{float(test_acc):.3f}",
            }
        )
        bar.close()
        for name, value in (
            ("train_loss", np.mean(losses)),
            ("train_acc", np.mean(accuracies)),
            ("test_loss", test_loss),
            ("test_acc", test_acc),
        ):
            history[name].append(float(value))
        if args.no_progress:
            print(
                f"epoch {epoch + 1}: loss {history['train_loss'][-1]:.4f}, "
                f"train acc {history['train_acc'][-1]:.3f}, test acc {float(test_acc):.3f}"
            )

    _, accuracy, predictions = evaluate(model, state, x_test, y_test)
    accuracy = float(accuracy)

    # A safe checkpoint: tensors only (no pickle), written atomically, checksummed.
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = args.out / "digits_cnn.safetensors"
    ec.save(
        checkpoint,
        (model, state),
        metadata={"epochs": str(args.epochs), "test_accuracy": f"{accuracy:.4f}"},
    )
    # Reload into a skeleton: `filter_eval_shape` builds the model's structure without
    # computing any arrays; `load` fills it from the file, checking every shape and dtype.
    like = ec.filter_eval_shape(nn.make_with_state(DigitsCNN), key=jax.random.key(0))
    model2, state2 = ec.load(checkpoint, like)
    _, reloaded, _ = evaluate(model2, state2, x_test, y_test)
    reloaded = float(reloaded)

    plot_history(history, args.out / "training.png")
    plot_predictions(x_test, y_test, np.asarray(predictions), args.out / "predictions.png")
    elapsed = time.perf_counter() - start
    print(
        f"\nwrote {checkpoint}, {args.out / 'training.png'}, {args.out / 'predictions.png'} "
        f"({elapsed:.0f} s)"
    )
    print(f"test accuracy {accuracy:.3f} (reloaded checkpoint: {reloaded:.3f})")
    return {
        "accuracy": accuracy,
        "reloaded_accuracy": reloaded,
        "history": history,
        "checkpoint": checkpoint,
        "seconds": elapsed,
    }


if __name__ == "__main__":
    main()
