"""``ecliptic.sharding``: parameter sharding rules and placement helpers for a device mesh.

```python
from jax.sharding import PartitionSpec as P
from ecliptic import sharding

mesh = jax.make_mesh((8,), ("data",))
model = sharding.shard_params(model, mesh, sharding.fsdp("data"))
opt_state = sharding.shard_opt_state(optimizer.init(model), model)
x, y = sharding.shard_batch((x, y), mesh, "data")
```

The helpers are also available at the top level (`ecliptic.shard_params`, ...); the rule
builders (`replicate`, `fsdp`, `by_path`) and `sharded_init` (also
`ecliptic.distributed.sharded_init`) live here.
"""

from ._distributed._sharded_init import sharded_init
from ._sharding._placement import (
    filter_shard,
    opt_state_shardings,
    param_shardings,
    shard_batch,
    shard_opt_state,
    shard_params,
)
from ._sharding._rules import ShardingRule, by_path, fsdp, replicate

__all__ = [
    "ShardingRule",
    "by_path",
    "filter_shard",
    "fsdp",
    "opt_state_shardings",
    "param_shardings",
    "replicate",
    "shard_batch",
    "shard_opt_state",
    "shard_params",
    "sharded_init",
]
