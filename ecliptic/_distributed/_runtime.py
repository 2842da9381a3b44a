"""Joining JAX's multi-controller runtime (`jax.distributed`) from a cluster's environment.

Launchers describe the job in environment variables. `initialize` reads the
`torchrun`-style ones (``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``, ``RANK``) that
`launch_local`, `torchrun` and many schedulers set; without them it leaves the detection
to `jax.distributed.initialize` (SLURM, Open MPI, TPU pods, Kubernetes ...).
"""

from __future__ import annotations

import os
from typing import Any

import jax

_TORCHRUN_VARS = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")


def _int_var(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"initialize: the environment variable {name} must be an integer; got {value!r}."
        ) from None


def cluster_from_env() -> dict[str, Any] | None:
    """The `jax.distributed.initialize` arguments that `torchrun`-style variables give.

    **Returns:** `{"coordinator_address", "num_processes", "process_id"}`, or `None` when
    none of ``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``, ``RANK`` is set.

    ```python
    os.environ.update(MASTER_ADDR="10.0.0.1", MASTER_PORT="1234", WORLD_SIZE="2", RANK="0")
    ecliptic.distributed.cluster_from_env()
    # {'coordinator_address': '10.0.0.1:1234', 'num_processes': 2, 'process_id': 0}
    ```
    """
    present = [name for name in _TORCHRUN_VARS if name in os.environ]
    if not present:
        return None
    missing = [name for name in _TORCHRUN_VARS if name not in os.environ]
    if missing:
        raise ValueError(
            "initialize: torchrun-style launch variables must all be set together; found "
            f"{present}, missing {missing}."
        )
    return {
        "coordinator_address": f"{os.environ['MASTER_ADDR']}:{_int_var('MASTER_PORT')}",
        "num_processes": _int_var("WORLD_SIZE"),
        "process_id": _int_var("RANK"),
    }


def initialize(*, cpu_collectives: str | None = "gloo", **kwargs: Any) -> None:
    """Join the job's other processes: `jax.distributed.initialize`, configured from the
    environment. Call it once per process, before anything else uses JAX.

    **Arguments:**

    - `cpu_collectives`: the implementation of cross-process collectives for CPU devices
        (`"gloo"` by default, what CPU-only clusters and local tests need; `None` leaves
        JAX's setting alone). It has no effect on GPU or TPU devices.
    - `**kwargs`: passed to `jax.distributed.initialize`; they override what the
        environment says (e.g. `local_device_ids=...`).

    **Returns:** nothing. Afterwards `jax.devices()` lists every process's devices and
    `jax.process_index()` is this process's rank.

    ```python
    import ecliptic as ec
    ec.distributed.initialize()   # torchrun / launch_local variables, else SLURM, MPI, ...
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    ```
    """
    if cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    env = cluster_from_env() or {}
    jax.distributed.initialize(**{**env, **kwargs})
