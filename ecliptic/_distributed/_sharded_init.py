"""`sharded_init`: the constructor is traced abstractly (`filter_eval_shape`), the rules
give each array its `NamedSharding`, and the constructor runs once under `jax.jit` with
those `out_shardings`: each device computes only its own shards (JAX's partitionable
random numbers do not depend on the layout), so no device or host holds the whole model.

On CPU the program uses XLA's memory-optimised scheduler. The default one holds many
parameters' random-number temporaries at once (a peak of ~2.4/N of the model, measured);
one at a time, the peak is 1/N plus three shards of the largest parameter (JAX's threefry
on CPU is a loop over three 32-bit buffers the size of the shard).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.tree_util as jtu
from jax.sharding import Mesh

from .._checks import check_callable
from .._eval_shape import filter_eval_shape
from .._filters import is_array
from .._sharding._placement import param_shardings

# An XLA:CPU option (other backends do not know it).
CPU_MEMORY_SCHEDULER = {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}


def _init_program(make: Callable[..., Any], args: Any, kwargs: Any, mesh: Mesh, rules: Any):
    skeleton = filter_eval_shape(make, *args, **kwargs)
    shardings = param_shardings(skeleton, mesh, rules)
    leaves, treedef = jtu.tree_flatten(skeleton)
    out_shardings = [
        sh for sh in jtu.tree_leaves(shardings, is_leaf=lambda x: x is None) if sh is not None
    ]

    def build() -> list[Any]:
        return [leaf for leaf in jtu.tree_leaves(make(*args, **kwargs)) if is_array(leaf)]

    options = CPU_MEMORY_SCHEDULER if {d.platform for d in mesh.devices.flat} == {"cpu"} else None
    program = jax.jit(build, out_shardings=out_shardings, compiler_options=options)
    return program, leaves, treedef


def sharded_init(
    make: Callable[..., Any], *args: Any, mesh: Mesh, rules: Any = None, **kwargs: Any
) -> Any:
    """Build `make(*args, **kwargs)` with every array created where `rules` place it.

    Each device computes only its own shards, so a model larger than any one device (or
    host) can be created: under `sharding.fsdp` each device holds about `1/n` of the
    parameters from the start. The values are those of an ordinary (unsharded) call with
    the same arguments. Works with many processes (`jax.distributed`): each process
    computes the shards of its own devices.

    **Arguments:**

    - `make`: the constructor, e.g. a Module class or `lambda key: MyModel(..., key=key)`.
    - `*args`, `**kwargs`: its arguments (e.g. `key=jax.random.key(0)`); the same in every
        process.
    - `mesh`: the `jax.sharding.Mesh` to place the arrays on.
    - `rules`: the sharding rules, as for `ecliptic.param_shardings` (`None`:
        replicate).

    **Returns:** the model, its arrays placed as `ecliptic.param_shardings(model, mesh,
    rules)` says.

    ```python
    mesh = jax.make_mesh((jax.device_count(),), ("data",), (AxisType.Auto,))
    model = ecliptic.sharding.sharded_init(
        ecliptic.nn.MLP, 512, 10, 4096, 8, key=jax.random.key(0),
        mesh=mesh, rules=ecliptic.sharding.fsdp("data"),
    )
    ```
    """
    check_callable(make, "sharded_init(make, ...): make")
    if not isinstance(mesh, Mesh):
        raise TypeError(f"sharded_init(mesh=...) must be a jax.sharding.Mesh; got {mesh!r}.")
    program, leaves, treedef = _init_program(make, args, kwargs, mesh, rules)
    arrays = iter(program())
    return treedef.unflatten(
        [next(arrays) if isinstance(x, jax.ShapeDtypeStruct) else x for x in leaves]
    )


def sharded_init_memory(
    make: Callable[..., Any], *args: Any, mesh: Mesh, rules: Any = None, **kwargs: Any
) -> dict[str, int]:
    """The per-device memory that `sharded_init` with these arguments needs, as XLA's
    compiler reports it for the initialisation program (nothing is run).

    **Arguments:** as for `sharded_init`.

    **Returns:** `{"output_bytes", "temp_bytes", "peak_bytes"}` per device, where
    `peak_bytes` is the output plus temporaries (an upper bound on the live memory).

    ```python
    ecliptic.sharding.sharded_init_memory(MyModel, key=key, mesh=mesh, rules=rules)
    ```
    """
    program, _, _ = _init_program(make, args, kwargs, mesh, rules)
    analysis = program.lower().compile().memory_analysis()
    if analysis is None:
        raise RuntimeError("sharded_init_memory: this backend reports no memory analysis.")
    out = int(analysis.output_size_in_bytes)
    temp = int(analysis.temp_size_in_bytes)
    return {"output_bytes": out, "temp_bytes": temp, "peak_bytes": out + temp}
