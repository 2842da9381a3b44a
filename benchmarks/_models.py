"""The benchmark models, written once per framework with the same shapes and maths.

- MLP: 32 -> 64 x 3 -> 32, ReLU (the issue's anchor model).
- Wide: 50 blocks of `tanh(W x + b) * scale` on 8 features: 100 array leaves, plus a
  Python float and a function per block (non-array leaves) and static string fields.
- CNN: 28x28x1 -> conv3x3(32) -> relu -> maxpool2 -> conv3x3(64) -> relu -> maxpool2 ->
  linear(10), for the training-throughput benchmark.

Equinox and Flax NNX versions are only built when those packages are installed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from _timing import optional

import ecliptic as ec

eqx: Any = optional("equinox")
_flax: Any = optional("flax.nnx")
nnx: Any = _flax

MLP_SIZES = dict(in_size=32, out_size=32, width_size=64, depth=3)
WIDE_BLOCKS, WIDE_FEATURES = 50, 8


# -- MLP ---------------------------------------------------------------------------------


def ecliptic_mlp(key: jax.Array) -> Any:
    return ec.nn.MLP(**MLP_SIZES, key=key)


def equinox_mlp(key: jax.Array) -> Any:
    return eqx.nn.MLP(**MLP_SIZES, key=key)


def nnx_mlp(seed: int = 0) -> Any:
    class MLP(nnx.Module):
        def __init__(self, rngs: Any):
            sizes = [32, 64, 64, 64, 32]
            self.layers = nnx.List(
                [nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])]
            )

        def __call__(self, x: jax.Array) -> jax.Array:
            for layer in self.layers[:-1]:
                x = jax.nn.relu(layer(x))
            return self.layers[-1](x)

    return MLP(nnx.Rngs(seed))


# -- Wide: 100 array leaves, non-array leaves, static fields ------------------------------


def _wide_classes(base: type, static_field: Callable[..., Any]) -> tuple[type, type]:
    class Block(base):  # type: ignore[misc, valid-type]
        weight: jax.Array
        bias: jax.Array
        scale: float
        act: Callable[..., Any]
        name: str = static_field(static=True)

        def __call__(self, x: jax.Array) -> jax.Array:
            return self.act(self.weight @ x + self.bias) * self.scale

    class Wide(base):  # type: ignore[misc, valid-type]
        blocks: tuple[Any, ...]
        tag: str = static_field(static=True)

        def __call__(self, x: jax.Array) -> jax.Array:
            for block in self.blocks:
                x = block(x)
            return x

    return Block, Wide


def _wide_arrays(key: jax.Array, blocks: int) -> list[tuple[jax.Array, jax.Array]]:
    keys = jax.random.split(key, blocks)
    f = WIDE_FEATURES
    return [(jax.random.normal(k, (f, f)) / f**0.5, jnp.zeros(f)) for k in keys]


def _build_wide(base: type, static_field: Callable[..., Any], key: jax.Array, blocks: int) -> Any:
    Block, Wide = _wide_classes(base, static_field)
    arrays = _wide_arrays(key, blocks)
    return Wide(
        tuple(Block(w, b, 0.9, jnp.tanh, f"block{i}") for i, (w, b) in enumerate(arrays)),
        "wide",
    )


def ecliptic_wide(key: jax.Array, blocks: int = WIDE_BLOCKS) -> Any:
    return _build_wide(ec.Module, ec.field, key, blocks)


def equinox_wide(key: jax.Array, blocks: int = WIDE_BLOCKS) -> Any:
    return _build_wide(eqx.Module, eqx.field, key, blocks)


def nnx_wide(key: jax.Array, blocks: int = WIDE_BLOCKS) -> Any:
    class Block(nnx.Module):
        def __init__(self, w: jax.Array, b: jax.Array, name: str):
            self.weight = nnx.Param(w)
            self.bias = nnx.Param(b)
            self.scale = 0.9
            self.act = jnp.tanh
            self.name = name

        def __call__(self, x: jax.Array) -> jax.Array:
            return self.act(self.weight[...] @ x + self.bias[...]) * self.scale

    class Wide(nnx.Module):
        def __init__(self, blocks: list[Any]):
            self.blocks = nnx.List(blocks)
            self.tag = "wide"

        def __call__(self, x: jax.Array) -> jax.Array:
            for block in self.blocks:
                x = block(x)
            return x

    arrays = _wide_arrays(key, blocks)
    return Wide([Block(w, b, f"block{i}") for i, (w, b) in enumerate(arrays)])


# -- CNN ---------------------------------------------------------------------------------


CNN_FULL = (28, 32, 64)  # image size, channels of conv1 and conv2
CNN_SMOKE = (8, 2, 4)


class EclipticCNN(ec.Module):
    conv1: ec.nn.Conv2d
    conv2: ec.nn.Conv2d
    pool: ec.nn.MaxPool2d
    head: ec.nn.Linear

    def __init__(self, key: jax.Array, shape: tuple[int, int, int] = CNN_FULL):
        size, c1, c2 = shape
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv1 = ec.nn.Conv2d(1, c1, 3, padding=1, key=k1)
        self.conv2 = ec.nn.Conv2d(c1, c2, 3, padding=1, key=k2)
        self.pool = ec.nn.MaxPool2d(2, 2)
        self.head = ec.nn.Linear(c2 * (size // 4) ** 2, 10, key=k3)

    def __call__(self, x: jax.Array) -> jax.Array:  # x: (1, 28, 28)
        x = self.pool(jax.nn.relu(self.conv1(x)))
        x = self.pool(jax.nn.relu(self.conv2(x)))
        return self.head(x.reshape(-1))


def equinox_cnn(key: jax.Array, shape: tuple[int, int, int] = CNN_FULL) -> Any:
    size, c1, c2 = shape

    class CNN(eqx.Module):
        conv1: Any
        conv2: Any
        pool: Any
        head: Any

        def __init__(self, key: jax.Array):
            k1, k2, k3 = jax.random.split(key, 3)
            self.conv1 = eqx.nn.Conv2d(1, c1, 3, padding=1, key=k1)
            self.conv2 = eqx.nn.Conv2d(c1, c2, 3, padding=1, key=k2)
            self.pool = eqx.nn.MaxPool2d(2, 2)
            self.head = eqx.nn.Linear(c2 * (size // 4) ** 2, 10, key=k3)

        def __call__(self, x: jax.Array) -> jax.Array:
            x = self.pool(jax.nn.relu(self.conv1(x)))
            x = self.pool(jax.nn.relu(self.conv2(x)))
            return self.head(x.reshape(-1))

    return CNN(key)


def nnx_cnn(seed: int = 0, shape: tuple[int, int, int] = CNN_FULL) -> Any:
    size, c1, c2 = shape

    class CNN(nnx.Module):  # NHWC, batched: Flax's native layout
        def __init__(self, rngs: Any):
            self.conv1 = nnx.Conv(1, c1, (3, 3), padding="SAME", rngs=rngs)
            self.conv2 = nnx.Conv(c1, c2, (3, 3), padding="SAME", rngs=rngs)
            self.head = nnx.Linear(c2 * (size // 4) ** 2, 10, rngs=rngs)

        def __call__(self, x: jax.Array) -> jax.Array:  # x: (batch, 28, 28, 1)
            pool = lambda y: nnx.max_pool(y, (2, 2), strides=(2, 2))
            x = pool(jax.nn.relu(self.conv1(x)))
            x = pool(jax.nn.relu(self.conv2(x)))
            return self.head(x.reshape(x.shape[0], -1))

    return CNN(nnx.Rngs(seed))


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
    return jnp.mean((pred - target) ** 2)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))
