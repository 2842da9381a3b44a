"""One training loop, three layouts: a single device, data parallel, and FSDP on 8 devices.

The training step is an ordinary `filter_jit` function. Parallelism comes only from
where the arrays live: `shard_batch` splits each batch across the mesh's "data" axis,
`param_shardings` and `filter_shard` place the parameters (replicated for data
parallelism, split for FSDP) and Adam's moments like them (`sharded_training.py` holds
the step and the placement, shared with `multiprocess.py`). XLA's SPMD partitioner then
compiles one program for all devices, inserting the all-reduces (data parallel) and the
all-gathers / reduce-scatters (FSDP) itself. The losses match the single-device run.

On a machine without 8 accelerators the example runs on 8 virtual CPU devices.

Run: python examples/parallelism.py [--steps N]
"""

from __future__ import annotations

import argparse
import os
import sys

import jax

try:  # Must happen before JAX starts its backends; harmless on GPU/TPU machines.
    jax.config.update("jax_num_cpu_devices", 8)
except RuntimeError:  # Backends already started (e.g. imported by a test): use them.
    pass

import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType

import ecliptic as ec
from ecliptic import sharding

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # when imported, not run
from sharded_training import bytes_per_device, prepare  # noqa: E402

IN_SIZE, OUT_SIZE, WIDTH, DEPTH, BATCH = 32, 8, 128, 2, 256


def make_mesh() -> jax.sharding.Mesh:
    """A 1-D mesh of 8 devices named "data" (accelerators if there are 8, else CPUs)."""
    devices = jax.devices()
    if len(devices) < 8:
        devices = jax.devices("cpu")
    devices = devices[:8]
    # Auto axes: XLA decides where to gather the FSDP-sharded parameters.
    return jax.make_mesh((len(devices),), ("data",), (AxisType.Auto,), devices=devices)


def make_data(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    kx, kw = jax.random.split(key)
    x = jax.random.normal(kx, (BATCH, IN_SIZE))
    w = jax.random.normal(kw, (IN_SIZE, OUT_SIZE)) / IN_SIZE**0.5
    return x, jnp.sin(x @ w)


def train(model, data, steps: int, mesh=None, rules=None):
    """Train for `steps` steps; on `mesh` with parameters placed by `rules` if given."""
    model, opt_state, step, (x, y) = prepare(model, optax.adam(3e-3), data, mesh, rules)
    losses = []
    for _ in range(steps):
        model, opt_state, loss = step(model, opt_state, x, y)
        losses.append(loss)  # stays on device: no host round trip per step
    return np.array([float(v) for v in losses]), model


def main(steps: int = 30) -> dict[str, np.ndarray]:
    model = ec.nn.MLP(IN_SIZE, OUT_SIZE, WIDTH, DEPTH, key=jax.random.key(0))
    data = make_data(jax.random.key(1))
    mesh = make_mesh()
    layouts = {
        "1 device": (None, None),
        "data parallel": (mesh, sharding.replicate()),
        "FSDP": (mesh, sharding.fsdp("data", min_size=1024)),
    }
    losses = {}
    print(f"{mesh.size} devices: {mesh.devices.flat[0].platform}")
    for name, (where, rules) in layouts.items():
        losses[name], trained = train(model, data, steps, where, rules)
        print(
            f"{name:>14}: loss {losses[name][0]:.5f} -> {losses[name][-1]:.5f}, "
            f"parameter bytes per device: {max(bytes_per_device(trained).values())}"
        )
    for name in ("data parallel", "FSDP"):
        diff = np.max(np.abs(losses[name] - losses["1 device"]))
        print(f"max |loss difference| {name} vs 1 device over {steps} steps: {diff:.2e}")
        assert diff < 1e-5, f"{name} diverged from the single-device run"
    return losses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    main(parser.parse_args().steps)
