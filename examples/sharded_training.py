"""The training step and placement that the parallelism examples share: a filtered step
whose parameters and optimizer state stay where the sharding rules put them.

Not a script: `parallelism.py` and `multiprocess.py` import it, and so do the
multi-process tests and `benchmarks/distributed.py`, so that all of them train with this
one definition. Importing it has no side effects (no JAX configuration).

```python
from sharded_training import prepare

model, opt_state, step, (x, y) = prepare(model, optimizer, (x, y), mesh, sharding.fsdp())
model, opt_state, loss = step(model, opt_state, x, y)
```
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import jax
import jax.numpy as jnp
import optax

import ecliptic as ec


def make_step(optimizer: optax.GradientTransformation, param_sh: Any = None, opt_sh: Any = None):
    """A `filter_jit` training step on the mean squared error of `jax.vmap(model)(x)`.

    **Arguments:**

    - `optimizer`: the Optax transformation.
    - `param_sh`, `opt_sh`: the shardings of the parameters and of the optimizer state
        (`ecliptic.param_shardings`, `ecliptic.opt_state_shardings`); `None` (both): no
        constraint, for a single device.

    **Returns:** `step(model, opt_state, x, y) -> (model, opt_state, loss)`; with
    shardings, the new model and state are kept exactly where the old ones were.
    """

    @ec.filter_jit
    def step(model, opt_state, x, y):
        def loss_fn(model):
            return jnp.mean((jax.vmap(model)(x) - y) ** 2)

        loss, grads = ec.filter_value_and_grad(loss_fn)(model)
        params = ec.filter(model, ec.is_inexact_array)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        model = ec.apply_updates(model, updates)
        if param_sh is not None:
            model = ec.filter_shard(model, param_sh)
            opt_state = ec.filter_shard(opt_state, opt_sh)
        return model, opt_state, loss

    return step


def place(
    model: Any, optimizer: optax.GradientTransformation, mesh: jax.sharding.Mesh, rules: Any
) -> tuple[Any, Any, Any, Any]:
    """Place `model` on `mesh` by `rules` and make a fresh optimizer state placed like it.

    **Returns:** `(model, opt_state, param_sh, opt_sh)`, the last two for `make_step`.
    """
    param_sh = ec.param_shardings(model, mesh, rules)
    model = ec.filter_shard(model, param_sh)
    opt_state = optimizer.init(ec.filter(model, ec.is_inexact_array))
    opt_sh = ec.opt_state_shardings(opt_state, param_sh)
    return model, ec.filter_shard(opt_state, opt_sh), param_sh, opt_sh


def prepare(
    model: Any,
    optimizer: optax.GradientTransformation,
    data: tuple[Any, Any],
    mesh: jax.sharding.Mesh | None = None,
    rules: Any = None,
) -> tuple[Any, Any, Any, tuple[Any, Any]]:
    """Everything a training loop needs, on one device (`mesh=None`) or on `mesh`.

    **Returns:** `(model, opt_state, step, (x, y))`: with a mesh, the model and optimizer
    state placed by `rules` (as `place`) and the batch `data = (x, y)` split along the
    mesh's "data" axis; `step` from `make_step`.
    """
    x, y = data
    param_sh = opt_sh = None
    if mesh is None:
        opt_state = optimizer.init(ec.filter(model, ec.is_inexact_array))
    else:
        model, opt_state, param_sh, opt_sh = place(model, optimizer, mesh, rules)
        x, y = ec.shard_batch((x, y), mesh, "data")
    return model, opt_state, make_step(optimizer, param_sh, opt_sh), (x, y)


def bytes_per_device(tree: Any) -> Counter:
    """The bytes of `tree`'s arrays that each (addressable) device stores, by device."""
    totals: Counter = Counter()
    for leaf in jax.tree.leaves(ec.filter(tree, ec.is_array)):
        for shard in leaf.addressable_shards:
            totals[shard.device] += shard.data.nbytes
    return totals
