"""Many processes: the step time while an asynchronous checkpoint is being written, and
the per-device parameter bytes under FSDP, measured in 2 local processes x 2 CPU devices
(launched with `ecliptic.distributed.launch_local`; JAX's gloo CPU collectives).

- "async save": an FSDP training step (MLP) timed in rounds; in every other round a
  `CheckpointManager.save` (asynchronous) of the model and Adam state is started just
  before the round's steps, and waited for after them. Reported: the median step time
  with a save in flight over the median without (goal <= 1.2x), and how long `save`
  blocked the caller.
- "FSDP bytes": the model built by `sharded_init` with `sharding.fsdp` on the 4-device
  mesh; the parameter bytes each device holds over the model's bytes (goal 1/4 plus the
  small replicated parameters), and XLA's compiled peak for the initialisation program
  (outputs plus temporaries; goal: that, plus three shards of the largest parameter for
  the random bits), also relative to the same figure for a replicated build.

Run: python benchmarks/distributed.py [--smoke]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
# The examples' training step and placement (examples/sharded_training.py).
sys.path.insert(0, os.path.join(os.path.dirname(_HERE), "examples"))

from _timing import Row, format_table  # noqa: E402

_WIDTH, _DEPTH, _BATCH = 1024, 4, 64


def _worker(out_dir: str, smoke: bool) -> None:
    from ecliptic import distributed

    distributed.initialize()
    import jax
    import jax.numpy as jnp
    import optax
    from jax.sharding import AxisType, NamedSharding, PartitionSpec
    from sharded_training import bytes_per_device, make_step, place

    import ecliptic as ec
    from ecliptic import sharding

    width = 128 if smoke else _WIDTH
    mesh = jax.make_mesh((jax.device_count(),), ("data",), (AxisType.Auto,))
    rules = sharding.fsdp("data")
    make = lambda key: ec.nn.MLP(width, width, width, _DEPTH, key=key)
    key = jax.random.key(0)
    model = distributed.sharded_init(make, key, mesh=mesh, rules=rules)
    arrays = [x for x in jax.tree_util.tree_leaves(model) if ec.is_array(x)]
    total = sum(x.size * x.dtype.itemsize for x in arrays)
    largest = max(x.size * x.dtype.itemsize for x in arrays)
    small = sum(x.size * x.dtype.itemsize for x in arrays if x.sharding.is_fully_replicated)
    per_device = {str(d.id): n for d, n in bytes_per_device(model).items()}
    memory = distributed.sharded_init_memory(make, key, mesh=mesh, rules=rules)
    replicated = distributed.sharded_init_memory(make, key, mesh=mesh, rules=sharding.replicate())

    optimizer = optax.adam(1e-3)
    model, opt_state, param_sh, opt_sh = place(model, optimizer, mesh, rules)
    step = make_step(optimizer, param_sh, opt_sh)
    batch_sh = NamedSharding(mesh, PartitionSpec("data"))
    x = jax.make_array_from_callback(
        (_BATCH, width), batch_sh, lambda idx: jnp.ones((_BATCH, width))[idx]
    )

    model, opt_state, loss = step(model, opt_state, x, x)
    loss.block_until_ready()
    manager = distributed.CheckpointManager(os.path.join(out_dir, "ckpt"), max_to_keep=1)
    rounds, steps = (2, 2) if smoke else (8, 5)
    plain: list[float] = []
    saving: list[float] = []
    blocked: list[float] = []
    for r in range(2 * rounds):
        with_save = r % 2 == 1
        if with_save:
            start = time.perf_counter()
            manager.save(r, {"model": model, "opt_state": opt_state})
            blocked.append(time.perf_counter() - start)
        for _ in range(steps):
            start = time.perf_counter()
            model, opt_state, loss = step(model, opt_state, x, x)
            loss.block_until_ready()
            (saving if with_save else plain).append(time.perf_counter() - start)
        if with_save:
            manager.wait()
    manager.close()
    if jax.process_index() == 0:
        with open(os.path.join(out_dir, "result.json"), "w") as f:
            json.dump(
                {
                    "plain": plain,
                    "saving": saving,
                    "blocked": blocked,
                    "total": total,
                    "largest": largest,
                    "small": small,
                    "per_device": per_device,
                    "memory": memory,
                    "replicated": replicated,
                },
                f,
            )


def main(smoke: bool = False) -> list[Row]:
    from ecliptic import distributed

    with tempfile.TemporaryDirectory() as out_dir:
        args = ["--worker", out_dir] + (["--smoke"] if smoke else [])
        distributed.launch_local(os.path.abspath(__file__), args, timeout=600)
        with open(os.path.join(out_dir, "result.json")) as f:
            r = json.load(f)
    plain, saving = statistics.median(r["plain"]), statistics.median(r["saving"])
    per_device = max(r["per_device"].values())
    peak, replicated = r["memory"]["peak_bytes"], r["replicated"]["peak_bytes"]
    n, total = 4, r["total"]
    # Goals: 1/n of the model plus the small parameters FSDP leaves replicated; for the
    # initialisation, plus the random-number temporaries of the largest parameter
    # (threefry on CPU loops over three 32-bit buffers of its shard size) and 4 KiB of
    # scalars (keys, loop counters).
    params_goal = (total / n + r["small"]) / total
    init_goal = (total / n + r["small"] + 3 * r["largest"] / n + 4096) / total
    return [
        Row("async save (2 processes)", "step, no save", plain * 1e3, "ms/step"),
        Row(
            "async save (2 processes)",
            "step, save in flight",
            saving * 1e3,
            "ms/step",
            saving / plain,
            "<=1.2x",
            f"min {min(r['saving']) / min(r['plain']):.2f}x; save() blocked "
            f"{statistics.median(r['blocked']) * 1e3:.1f} ms",
            min(r["saving"]) / min(r["plain"]),
        ),
        Row("FSDP bytes (2 processes)", "model bytes", r["total"] / 2**20, "MiB"),
        Row(
            "FSDP bytes (2 processes)",
            "params per device",
            per_device / 2**20,
            "MiB",
            per_device / total,
            f"<={params_goal:.3f}x",
            f"1/{n} = {1 / n:.3f}, plus {r['small'] / total:.3f} replicated",
        ),
        Row(
            "FSDP bytes (2 processes)",
            "init peak per device",
            peak / 2**20,
            "MiB",
            peak / total,
            f"<={init_goal:.3f}x",
            f"XLA's compiled peak (outputs + temporaries); {peak / replicated:.2f}x the "
            "replicated build's",
        ),
    ]


if __name__ == "__main__":
    if "--worker" in sys.argv:
        _worker(sys.argv[sys.argv.index("--worker") + 1], "--smoke" in sys.argv)
    else:
        print(format_table(main("--smoke" in sys.argv)))
