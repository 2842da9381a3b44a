"""Harness for the multi-process tests: launch the worker in N local processes, collect
what each wrote; and the models, data and training loop that the workers and the
single-process references share (so both sides compute with the same code).

The worker (`multiprocess_worker.py`) runs a whole scenario per launch and writes one
JSON file per rank (plus `.npz` arrays from rank 0), so one pair of processes serves many
checks and the JAX start-up cost is paid once per scenario.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import AxisType, Mesh

import ecliptic as ec
from ecliptic import distributed, sharding

# The training step and placement of the examples: the tests train with that very code.
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
sys.path.insert(0, EXAMPLES)
from sharded_training import make_step, place  # noqa: E402

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multiprocess_worker.py")
BATCH, IN, OUT, SEQ, WIDTH = 8, 8, 4, 4, 16
STEPS = 3
# Small enough to keep the tests fast, large enough that FSDP splits every weight.
RULES = {"replicate": sharding.replicate(), "fsdp": sharding.fsdp("data", min_size=64)}


def run_workers(
    scenario: str,
    out_dir: str,
    *,
    num_processes: int = 2,
    devices_per_process: int = 2,
    timeout: float = 420.0,
    check: bool = True,
    grace: float = 5.0,
) -> tuple[list[Any], list[dict[str, Any]]]:
    """Run `scenario` in `num_processes` processes; return (process results, JSON per rank).

    A rank that wrote no JSON file (it was killed, or failed) gets `{}`.
    """
    os.makedirs(out_dir, exist_ok=True)
    procs = distributed.launch_local(
        WORKER,
        [scenario, out_dir],
        num_processes=num_processes,
        devices_per_process=devices_per_process,
        timeout=timeout,
        grace=grace,
        check=check,
    )
    outputs = []
    for rank in range(num_processes):
        path = os.path.join(out_dir, f"{scenario}-{rank}.json")
        if os.path.exists(path):
            with open(path) as f:
                outputs.append(json.load(f))
        else:
            outputs.append({})
    return procs, outputs


# --------------------------------------------------------------------------- models


class Block(ec.Module):
    """A pre-norm transformer block: self-attention then an MLP, both residual."""

    norm1: ec.nn.LayerNorm
    attention: ec.nn.MultiheadAttention
    norm2: ec.nn.LayerNorm
    mlp: ec.nn.MLP

    def __init__(self, key: jax.Array):
        k1, k2 = jax.random.split(key)
        self.norm1 = ec.nn.LayerNorm(WIDTH)
        self.attention = ec.nn.MultiheadAttention(2, WIDTH, key=k1)
        self.norm2 = ec.nn.LayerNorm(WIDTH)
        self.mlp = ec.nn.MLP(WIDTH, WIDTH, 2 * WIDTH, 1, key=k2)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.vmap(self.norm1)(x)
        x = x + self.attention(h, h, h)
        return x + jax.vmap(self.mlp)(jax.vmap(self.norm2)(x))


class Transformer(ec.Module):
    """An input projection, a `Stacked` run of blocks, an output projection."""

    embed: ec.nn.Linear
    blocks: ec.nn.Stacked
    head: ec.nn.Linear

    def __init__(self, key: jax.Array):
        k1, k2, k3 = jax.random.split(key, 3)
        self.embed = ec.nn.Linear(IN, WIDTH, key=k1)
        self.blocks = ec.nn.Stacked(Block, 2, key=k2)
        self.head = ec.nn.Linear(WIDTH, OUT, key=k3)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.vmap(self.head)(self.blocks(jax.vmap(self.embed)(x)))


def make_model(kind: str, key: jax.Array) -> Any:
    if kind == "mlp":
        return ec.nn.MLP(IN, OUT, 4 * WIDTH, 2, key=key)
    return Transformer(key)


def make_batch(kind: str, step: int) -> tuple[np.ndarray, np.ndarray]:
    """The global batch of a step, in float32 NumPy (identical in every process)."""
    rng = np.random.default_rng(1000 + step)
    shape = (BATCH, IN) if kind == "mlp" else (BATCH, SEQ, IN)
    x = rng.standard_normal(shape).astype(np.float32)
    y = np.tanh(x[..., :OUT] * 1.5).astype(np.float32)
    return x, y


def make_mesh(devices: list[Any] | None = None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return jax.make_mesh((len(devices),), ("data",), (AxisType.Auto,), devices=devices)


OPTIMIZER = optax.adam(1e-2)


def feed(batch: tuple[np.ndarray, np.ndarray], mesh: Mesh, how: str) -> Any:
    """The global batch on `mesh`: given whole to every process ("global"), or assembled
    from each process's own rows ("local")."""
    if how == "global":
        return ec.shard_batch(batch, mesh, "data")
    sh = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    rows = sorted(
        {idx[0].start or 0 for d, idx in sh.addressable_devices_indices_map((BATCH,)).items()}  # pyright: ignore[reportOptionalSubscript]
    )
    per_device = BATCH // mesh.size
    local = [np.concatenate([b[r : r + per_device] for r in rows]) for b in batch]
    return tuple(jax.make_array_from_process_local_data(sh, a) for a in local)


def train(
    kind: str,
    model: Any,
    mesh: Mesh,
    rules: Any,
    how: str,
    steps: int = STEPS,
    first_step: int = 0,
    opt_state: Any = None,
):
    """Train `steps` steps; return (model, opt_state, losses as floats)."""
    if opt_state is None:
        model, opt_state, param_sh, opt_sh = place(model, OPTIMIZER, mesh, rules)
    else:
        param_sh = ec.param_shardings(model, mesh, rules)
        opt_sh = ec.opt_state_shardings(opt_state, param_sh)
    step = make_step(OPTIMIZER, param_sh, opt_sh)
    losses = []
    for i in range(first_step, first_step + steps):
        x, y = feed(make_batch(kind, i), mesh, how)
        model, opt_state, loss = step(model, opt_state, x, y)
        losses.append(float(loss))
    return model, opt_state, losses


def gather(tree: Any) -> dict[str, np.ndarray]:
    """Every array of `tree` as a whole NumPy array (collective: call in every process)."""
    from jax.experimental import multihost_utils

    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if ec.is_array(leaf):
            if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                leaf = jax.random.key_data(leaf)
            if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
                leaf = multihost_utils.process_allgather(leaf, tiled=True)
            out[jax.tree_util.keystr(path)] = np.asarray(leaf)
    return out


# --------------------------------------------------------------------------- checkpoints

KEY = 0


def checkpoint_tree_like() -> dict[str, Any]:
    """The abstract tree the checkpoint scenario saves: MLP, a BatchNorm `State`, Adam."""
    key = jax.random.key(KEY)

    def build(key):
        model = make_model("mlp", key)
        _, state = ec.nn.make_with_state(ec.nn.BatchNorm)(OUT, "batch")
        opt_state = OPTIMIZER.init(ec.filter(model, ec.is_inexact_array))
        return {"model": model, "state": state, "opt_state": opt_state}

    return ec.filter_eval_shape(build, key)


def restore_and_resume(directory: str, mesh: Mesh) -> dict[str, Any]:
    """Restore the latest step onto `mesh` under FSDP, gather it, train one more step."""
    manager = distributed.CheckpointManager(directory)
    steps = manager.all_steps()
    latest = manager.latest_step()
    tree = manager.restore(checkpoint_tree_like(), mesh=mesh, rules=RULES["fsdp"])
    values = gather(tree)
    specs = sorted(
        {str(x.sharding.spec) for x in jax.tree_util.tree_leaves(tree["model"]) if ec.is_array(x)}
    )
    param_sh = ec.param_shardings(tree["model"], mesh, RULES["fsdp"])
    opt_sh = ec.opt_state_shardings(tree["opt_state"], param_sh)
    step = make_step(OPTIMIZER, param_sh, opt_sh)
    x, y = feed(make_batch("mlp", latest), mesh, "global")  # pyright: ignore[reportArgumentType]
    _, _, loss = step(tree["model"], tree["opt_state"], x, y)
    manager.close()
    return {"steps": steps, "latest": latest, "values": values, "loss": float(loss), "specs": specs}
