"""One process of a multi-process test scenario (run by `multiprocess_harness.run_workers`).

Usage: python multiprocess_worker.py SCENARIO OUT_DIR  (launched by `launch_local`).

- ``main`` (2 processes x 2 devices): data-parallel and FSDP training of an MLP and of a
  `Stacked` transformer with batches fed globally and per process; sharded
  initialisation; Orbax checkpoints (async, keep 2); then rank 1 kills itself during an
  asynchronous save of one more step (the fault test).
- ``restore`` (2 processes x 1 device): restore the checkpoint on a 2-device mesh and
  train one more step.

Each rank writes ``SCENARIO-RANK.json``; rank 0 also writes the gathered arrays as
``.npz`` files for the test to compare with its single-process references.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from ecliptic import distributed

distributed.initialize()

import jax  # noqa: E402
import multiprocess_harness as h  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402
from sharded_training import bytes_per_device  # noqa: E402  (on the path: the harness)

import ecliptic as ec  # noqa: E402

TRAINING = [
    ("mlp", "replicate", "local"),
    ("mlp", "fsdp", "global"),
    ("transformer", "replicate", "global"),
    ("transformer", "fsdp", "local"),
]


def write(out_dir: str, scenario: str, results: dict) -> None:
    path = os.path.join(out_dir, f"{scenario}-{jax.process_index()}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(results, f)
    os.replace(path + ".tmp", path)


def save_npz(out_dir: str, name: str, values: dict) -> None:
    if jax.process_index() == 0:
        np.savez(os.path.join(out_dir, name), **values)


def main_scenario(out_dir: str) -> None:
    results: dict = {"process_count": jax.process_count(), "devices": jax.device_count()}
    mesh = h.make_mesh()
    key = jax.random.key(h.KEY)

    # Training across processes.
    for kind, rules, how in TRAINING:
        model = h.make_model(kind, key)
        model, _, losses = h.train(kind, model, mesh, h.RULES[rules], how)
        results[f"train-{kind}-{rules}-{how}"] = losses
        save_npz(out_dir, f"train-{kind}-{rules}-{how}.npz", h.gather(model))

    # Sharded initialisation.
    model = distributed.sharded_init(
        h.make_model, "transformer", key, mesh=mesh, rules=h.RULES["fsdp"]
    )
    results["init_bytes_per_device"] = {str(d.id): n for d, n in bytes_per_device(model).items()}
    results["init_specs"] = sorted(
        {str(x.sharding.spec) for x in jax.tree_util.tree_leaves(model) if ec.is_array(x)}
    )
    results["init_memory"] = {
        name: distributed.sharded_init_memory(
            h.make_model, "transformer", key, mesh=mesh, rules=h.RULES[name]
        )
        for name in ("fsdp", "replicate")
    }
    save_npz(out_dir, "init.npz", h.gather(model))
    try:  # the single-host checkpoint cannot hold arrays of other processes: a clear error
        ec.save(os.path.join(out_dir, f"single-{jax.process_index()}.safetensors"), model)
        results["single_host_save_error"] = None
    except ec.CheckpointError as e:
        results["single_host_save_error"] = str(e)

    # Checkpoints: model, State, optimizer state; asynchronous; keep the latest 2.
    ckpt = os.path.join(out_dir, "ckpt")
    manager = distributed.CheckpointManager(ckpt, max_to_keep=2)
    _, state = ec.nn.make_with_state(ec.nn.BatchNorm)(h.OUT, "batch")
    state = ec.filter_shard(state, NamedSharding(mesh, PartitionSpec()))
    model, opt_state, param_sh, opt_sh = h.place(
        h.make_model("mlp", key), h.OPTIMIZER, mesh, h.RULES["fsdp"]
    )
    step = h.make_step(h.OPTIMIZER, param_sh, opt_sh)
    losses = []
    for i in range(3):
        x, y = h.feed(h.make_batch("mlp", i), mesh, "local")
        model, opt_state, loss = step(model, opt_state, x, y)
        losses.append(float(loss))
        manager.save(
            i + 1,
            {"model": model, "state": state, "opt_state": opt_state},
            metadata={"loss": losses[-1]},
        )
        if i == 0:
            manager.wait()
            results["steps_after_first"] = manager.all_steps()
    manager.wait()
    results["steps"] = manager.all_steps()
    results["ckpt_losses"] = losses
    results["metadata"] = manager.metadata()["metadata"]
    tree = {"model": model, "state": state, "opt_state": opt_state}
    save_npz(out_dir, "ckpt-3.npz", h.gather(tree))
    x, y = h.feed(h.make_batch("mlp", 3), mesh, "global")
    results["resume_loss"] = float(step(model, opt_state, x, y)[2])

    # The fault: an asynchronous save of step 4, and rank 1 dies before it is committed.
    model, opt_state, _ = step(model, opt_state, x, y)
    manager.save(4, {"model": model, "state": state, "opt_state": opt_state})
    results["fault_save_started"] = True
    write(out_dir, "main", results)
    if jax.process_index() == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(120)  # rank 0 waits to be killed by the launcher


def restore_scenario(out_dir: str) -> None:
    mesh = h.make_mesh()
    out = h.restore_and_resume(os.path.join(out_dir, "ckpt"), mesh)
    save_npz(out_dir, "restore.npz", out.pop("values"))
    write(
        out_dir, "restore", dict(out, devices=jax.device_count(), process_count=jax.process_count())
    )


if __name__ == "__main__":
    scenario, out_dir = sys.argv[1], sys.argv[2]
    {"main": main_scenario, "restore": restore_scenario}[scenario](out_dir)
