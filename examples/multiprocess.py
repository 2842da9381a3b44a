"""Training on two processes, a checkpoint, and a restart on a different mesh.

This script plays both roles. Run without arguments, it is the launcher: it starts the
job twice on this machine with `ecliptic.distributed.launch_local` (as `torchrun` or
SLURM would on a cluster):

1. 2 processes x 2 CPU devices: build an MLP directly in its FSDP layout
   (`sharded_init`), train a few steps with each process feeding only its own rows of
   every batch, save the model and Adam state with `CheckpointManager` (asynchronously,
   while training goes on), and record the loss of the step after the checkpoint;
2. 2 processes x 1 device: restore the checkpoint onto the smaller mesh (Orbax re-shards
   it) and run that same step: the loss must be the one recorded in phase 1.

Run: python examples/multiprocess.py [--steps N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

IN_SIZE, OUT_SIZE, WIDTH, DEPTH, BATCH = 16, 4, 64, 2, 32


def _batch(step: int):
    import numpy as np

    rng = np.random.default_rng(step)
    x = rng.standard_normal((BATCH, IN_SIZE)).astype(np.float32)
    return x, np.sin(x[:, :OUT_SIZE])


def _worker(phase: str, directory: str, steps: int) -> None:
    from ecliptic import distributed

    distributed.initialize()  # reads the launcher's MASTER_ADDR, RANK, ... variables
    import jax
    import optax
    from jax.sharding import AxisType, NamedSharding, PartitionSpec
    from sharded_training import make_step, place  # beside this script

    import ecliptic as ec
    from ecliptic import sharding

    mesh = jax.make_mesh((jax.device_count(),), ("data",), (AxisType.Auto,))
    rules = sharding.fsdp("data", min_size=256)
    optimizer = optax.adam(1e-2)
    make = lambda key: ec.nn.MLP(IN_SIZE, OUT_SIZE, WIDTH, DEPTH, key=key)

    def batch_on_mesh(step: int):
        # Each process contributes the rows that its own devices hold.
        sh = NamedSharding(mesh, PartitionSpec("data"))
        n = BATCH // jax.process_count()
        rows = slice(jax.process_index() * n, (jax.process_index() + 1) * n)
        return tuple(jax.make_array_from_process_local_data(sh, a[rows]) for a in _batch(step))

    manager = distributed.CheckpointManager(directory, max_to_keep=2)
    if phase == "train":
        model = distributed.sharded_init(make, jax.random.key(0), mesh=mesh, rules=rules)
        model, opt_state, param_sh, opt_sh = place(model, optimizer, mesh, rules)
        step = make_step(optimizer, param_sh, opt_sh)
        losses = []
        for i in range(steps):
            model, opt_state, loss = step(model, opt_state, *batch_on_mesh(i))
            losses.append(float(loss))
            manager.save(i + 1, {"model": model, "opt_state": opt_state})  # asynchronous
        manager.wait()
        _, _, next_loss = step(model, opt_state, *batch_on_mesh(steps))
        result = {"losses": losses, "next_loss": float(next_loss)}
    else:
        # The template is abstract: nothing is built whole before the restore.
        like = ec.filter_eval_shape(
            lambda key: {
                "model": make(key),
                "opt_state": optimizer.init(ec.filter(make(key), ec.is_inexact_array)),
            },
            jax.random.key(0),
        )
        tree = manager.restore(like, mesh=mesh, rules=rules)
        param_sh = ec.param_shardings(tree["model"], mesh, rules)
        opt_sh = ec.opt_state_shardings(tree["opt_state"], param_sh)
        step = make_step(optimizer, param_sh, opt_sh)
        latest = manager.latest_step()
        _, _, loss = step(tree["model"], tree["opt_state"], *batch_on_mesh(latest))
        result = {"step": latest, "loss": float(loss)}
    manager.close()
    if jax.process_index() == 0:
        print("RESULT " + json.dumps(result), flush=True)


def _result(results) -> dict:
    for line in results[0].stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError("the worker printed no result:\n" + results[0].stderr[-3000:])


def main(steps: int = 4) -> tuple[float, float]:
    """Run both phases; return (loss after the checkpoint in phase 1, the same in phase 2)."""
    from ecliptic import distributed

    here = os.path.abspath(__file__)
    with tempfile.TemporaryDirectory() as directory:
        ckpt = os.path.join(directory, "ckpt")
        args = [ckpt, str(steps)]
        trained = _result(
            distributed.launch_local(
                here, ["--worker", "train", *args], num_processes=2, devices_per_process=2
            )
        )
        print(f"2 processes x 2 devices: losses {[round(v, 5) for v in trained['losses']]}")
        resumed = _result(
            distributed.launch_local(
                here, ["--worker", "resume", *args], num_processes=2, devices_per_process=1
            )
        )
    print(
        f"step {steps + 1}: loss {trained['next_loss']:.6f} (2x2, continuing), "
        f"{resumed['loss']:.6f} (2x1, restored from step {resumed['step']})"
    )
    if resumed["step"] != steps or abs(trained["next_loss"] - resumed["loss"]) > 1e-5:
        raise SystemExit("the restored run does not continue from the same loss")
    return trained["next_loss"], resumed["loss"]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--steps", type=int, default=4)
        main(parser.parse_args().steps)
