"""``ecliptic.distributed``: training on many processes (JAX's multi-controller runtime).

```python
import ecliptic as ec

ec.distributed.initialize()          # torchrun-style variables, else SLURM, MPI, TPU ...
mesh = jax.make_mesh((jax.device_count(),), ("data",), (AxisType.Auto,))
model = ec.distributed.sharded_init(MyModel, key=key, mesh=mesh, rules=ec.sharding.fsdp())
manager = ec.distributed.CheckpointManager("/shared/ckpt", max_to_keep=3)
manager.save(step, {"model": model, "opt_state": opt_state})
```

- `initialize` joins the job (`jax.distributed.initialize` configured from the
  environment); `launch_local` starts N processes on this machine, as `torchrun` would.
- `sharded_init` builds a model directly in its sharded layout (`sharded_init_memory`
  reports the per-device memory that takes).
- `CheckpointManager` saves and restores through Orbax (the `ecliptic[distributed]`
  extra): every process writes its own shards, asynchronously, atomically, keeping the
  latest K; restoring re-shards onto any mesh and process count.

`ecliptic.save` / `ecliptic.load` stay the single-file (safetensors) format for arrays
that one process can read whole; see `docs/parallelism.md` for when to use which.
"""

from ._distributed._checkpoint_manager import CheckpointManager
from ._distributed._launch import LaunchError, ProcessResult, free_port, launch_local
from ._distributed._runtime import cluster_from_env, initialize
from ._distributed._sharded_init import sharded_init, sharded_init_memory

__all__ = [
    "CheckpointManager",
    "LaunchError",
    "ProcessResult",
    "cluster_from_env",
    "free_port",
    "initialize",
    "launch_local",
    "sharded_init",
    "sharded_init_memory",
]
