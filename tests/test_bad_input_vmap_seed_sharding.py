"""The bad-input catalogue: filter_vmap / filter_pmap, the seed API, and the sharding
helpers. See bad_input_helpers.py for what each row asserts."""

# Each row passes a wrong type on purpose to check the error: argument types are not checked.
# pyright: reportArgumentType=false, reportCallIssue=false

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import pytest
from bad_input_helpers import check_misuse, misuse
from bad_input_layers import KEY, identity, total
from jax.sharding import PartitionSpec as P

import ecliptic as ec
from ecliptic import nn

X3, I3 = jnp.ones(3), jnp.arange(3)

VMAP_CASES = [
    misuse(
        "filter_vmap/inconsistent-sizes",
        lambda: ec.filter_vmap(lambda a, b: a + b)(X3, jnp.ones(4)),
        ValueError,
        r"filter_vmap: inconsistent sizes along the batch axes \(args\[0\]: 3, args\[1\]: 4\)",
    ),
    misuse(
        "filter_vmap/in_axes-not-a-prefix",
        lambda: ec.filter_vmap(lambda a: a, in_axes=([0, 0, 0],))([X3, X3]),
        ValueError,
        r"filter_vmap\(in_axes=\.\.\.\) must be a pytree prefix of the values",
    ),
    misuse(
        "filter_vmap/in_axes-out-of-range",
        lambda: ec.filter_vmap(identity, in_axes=2)(X3),
        ValueError,
        r"filter_vmap: cannot batch the input args\[0\] of shape \(3,\) along axis 2",
    ),
    misuse(
        "filter_vmap/scalar-input",
        lambda: ec.filter_vmap(identity)(jnp.array(1.0)),
        ValueError,
        r"filter_vmap: cannot batch the input args\[0\] of shape \(\)",
    ),
    misuse(
        "filter_vmap/nothing-batched",
        lambda: ec.filter_vmap(identity)(1),
        ValueError,
        r"filter_vmap: no input is batched.*axis_size=\.\.\.",
    ),
    misuse(
        "filter_vmap/in_axes-a-string",
        lambda: ec.filter_vmap(identity, in_axes="x")(X3),
        TypeError,
        r"filter_vmap\(in_axes=\.\.\.\) leaves must be an int, None or a "
        r"callable.*got 'x'",
    ),
    misuse(
        "filter_vmap/axis_size-disagrees",
        lambda: ec.filter_vmap(identity, axis_size=4)(X3),
        ValueError,
        r"inconsistent sizes along the batch axes \(args\[0\]: 3 and axis_size=4\)",
    ),
    misuse(
        "filter_vmap/negative-axis_size",
        lambda: ec.filter_vmap(identity, axis_size=-1),
        ValueError,
        r"filter_vmap\(axis_size=\.\.\.\) must be a positive int; got -1",
    ),
    misuse(
        "filter_vmap/out_axes-out-of-range",
        lambda: ec.filter_vmap(lambda a: {"y": a}, out_axes=3)(X3),
        ValueError,
        r"filter_vmap\(out_axes=\.\.\.\): cannot put the batch axis of output\['y'\] at "
        r"axis 3.*must be in \[-1, 0\]",
    ),
    misuse(
        "filter_vmap/out_axes-not-a-prefix",
        lambda: ec.filter_vmap(lambda a: (a, a), out_axes=(0, 0, 0))(X3),
        ValueError,
        r"out_axes must be a pytree prefix of the values it describes",
    ),
    misuse(
        "filter_vmap/unbatched-output-depends-on-batch",
        lambda: ec.filter_vmap(identity, out_axes=None)(X3),
        ValueError,
        r"filter_vmap: an output that out_axes marks as unbatched \(None\) depends on",
    ),
    misuse(
        "filter_vmap/keyword-arguments",
        lambda: ec.filter_vmap(identity)(a=X3),
        TypeError,
        r"filter_vmap takes positional arguments only \(got keywords \['a'\]\)",
    ),
    misuse(
        "filter_vmap/in_axes-names-unknown-arg",
        lambda: ec.filter_vmap(identity, in_axes=dict(y=0))(X3),
        ValueError,
        r"in_axes names \['y'\] that are not among the positional arguments",
    ),
    misuse(
        "filter_vmap/not-callable",
        lambda: ec.filter_vmap(3),
        TypeError,
        r"filter_vmap\(fun\): fun must be callable; got 3",
    ),
    misuse(
        "filter_vmap/int-keys-for-a-layer",
        lambda: ec.filter_vmap(lambda k: nn.Linear(2, 2, key=k))(I3),
        TypeError,
        r"Linear: key must be a JAX PRNG key such as jax\.random\.key\(0\); got an array "
        r"of dtype int32",
    ),
    misuse(
        "filter_pmap/more-slices-than-devices",
        lambda: ec.filter_pmap(identity)(jnp.ones(64)),
        ValueError,
        r"filter_pmap: the mapped axis has size 64, but only \d+ device\(s\)",
    ),
    misuse(
        "filter_pmap/inconsistent-sizes",
        lambda: ec.filter_pmap(lambda a, b: a)(jnp.ones(2), X3),
        ValueError,
        r"filter_pmap: inconsistent sizes along the batch axes",
    ),
]

SEED_API_CASES = [
    misuse(
        "jitf/both-filters",
        lambda: ec.jitf(identity, filter_fn=ec.is_array, filter_tree=True),
        TypeError,
        r"jitf needs exactly one of filter_fn .* or filter_tree .*; both was given",
    ),
    misuse(
        "jitf/neither-filter",
        lambda: ec.jitf(identity),
        TypeError,
        r"jitf needs exactly one of filter_fn .* or filter_tree.*neither was given",
    ),
    misuse(
        "jitf/filter_fn-not-callable",
        lambda: ec.jitf(identity, filter_fn=3),
        TypeError,
        r"jitf\(filter_fn=\.\.\.\) must be callable leaf -> bool; got 3",
    ),
    misuse(
        "jitf/filter_tree-mismatch",
        lambda: ec.jitf(lambda x, y: x, filter_tree=(True,))(X3, X3),
        ValueError,
        r"jitf\(filter_tree=\.\.\.\) must be a pytree prefix of the positional arguments",
    ),
    misuse(
        "gradf/both-filters",
        lambda: ec.gradf(identity, filter_fn=ec.is_array, filter_tree=True),
        TypeError,
        r"gradf needs exactly one of filter_fn .* or filter_tree.*both was given",
    ),
    misuse(
        "gradf/neither-filter",
        lambda: ec.gradf(identity),
        TypeError,
        r"gradf needs exactly one of filter_fn.*neither was given",
    ),
    misuse(
        "gradf/int-leaf-selected",
        lambda: ec.gradf(total, filter_fn=lambda x: True)(I3),
        TypeError,
        r"gradf: the filter selects the leaf at <root> for differentiation, but it is "
        r".*int32.*filter_fn=ecliptic\.is_inexact_array",
    ),
    misuse(
        "gradf/argnums-a-string",
        lambda: ec.gradf(total, filter_fn=ec.is_array, argnums="a"),
        TypeError,
        r"gradf\(argnums=\.\.\.\) must be an int or a non-empty tuple of ints",
    ),
    misuse(
        "value_and_grad_f/neither-filter",
        lambda: ec.value_and_grad_f(identity),
        TypeError,
        r"value_and_grad_f needs exactly one of filter_fn.*neither was given",
    ),
]

MESH = jax.make_mesh((8,), ("data",))
LINEAR = nn.Linear(8, 8, key=KEY)


def shard(rules: Any, model: Any = LINEAR, mesh: Any = MESH) -> Any:
    return lambda: ec.shard_params(model, mesh, rules)


SHARDING_CASES = [
    misuse(
        "filter_shard/string-device",
        lambda: ec.filter_shard(X3, "cpu"),
        TypeError,
        r"filter_shard\(x, device_or_shardings\): device_or_shardings must hold "
        r"jax\.Device or jax\.sharding\.Sharding objects.*got 'cpu'",
    ),
    misuse(
        "filter_shard/not-a-prefix",
        lambda: ec.filter_shard([X3], [jax.devices()[0]] * 2),
        ValueError,
        r"filter_shard\(x, device_or_shardings\): device_or_shardings must be .*prefix",
    ),
    misuse(
        "param_shardings/mesh-not-a-mesh",
        lambda: ec.param_shardings(LINEAR, "mesh"),
        TypeError,
        r"param_shardings\(mesh=\.\.\.\) must be a jax\.sharding\.Mesh; got "
        r"'mesh'",
    ),
    misuse(
        "sharding/fsdp-missing-mesh-axis",
        shard(ec.sharding.fsdp("model", min_size=1)),
        ValueError,
        r"fsdp\(axis='model'.*parameter 'weight'.*mesh axis 'model' is not in "
        r"the mesh; expected one of \('data',\)",
    ),
    misuse(
        "sharding/by_path-missing-mesh-axis",
        shard(ec.sharding.by_path({"weight": P("model")})),
        ValueError,
        r"parameter 'weight'.*mesh axis 'model' is not in the mesh",
    ),
    misuse(
        "sharding/spec-longer-than-rank",
        shard(ec.sharding.by_path({"bias": P(None, "data")})),
        ValueError,
        r"parameter 'bias' \(shape \(8,\)\).*has 2 entries but the parameter has only 1",
    ),
    misuse(
        "sharding/indivisible-dimension",
        shard(ec.sharding.by_path({"weight": P("data")}), nn.Linear(3, 3, key=KEY)),
        ValueError,
        r"parameter 'weight' \(shape \(3, 3\)\): dimension 0 has size 3, which "
        r"is not divisible by the 8 devices of mesh axis 'data'",
    ),
    misuse(
        "sharding/mesh-axis-used-twice",
        shard(ec.sharding.by_path({"weight": P("a", "a")}), mesh=jax.make_mesh((2, 4), ("a", "b"))),
        ValueError,
        r"parameter 'weight'.*mesh axis 'a' is used twice",
    ),
    misuse(
        "sharding/rule-returns-a-string",
        shard(lambda name, leaf, mesh: "data"),
        TypeError,
        r"for parameter 'weight'.*expected a jax\.sharding\.PartitionSpec, got "
        r"'data'",
    ),
    misuse("sharding/rules-an-int", shard(3), TypeError, r"rules must be a sharding rule .*got 3"),
    misuse(
        "sharding/fsdp-negative-min_size",
        lambda: ec.sharding.fsdp("data", min_size=-1),
        ValueError,
        r"fsdp\(min_size=\.\.\.\) must be a non-negative int; got -1",
    ),
    misuse(
        "sharding/fsdp-axis-an-int",
        lambda: ec.sharding.fsdp(3),
        TypeError,
        r"fsdp\(axis=\.\.\.\) must be a mesh axis name or a tuple of them; got 3",
    ),
    misuse(
        "sharding/by_path-a-list",
        lambda: ec.sharding.by_path(["weight"]),
        TypeError,
        r"by_path\(rules=\.\.\.\) must be a mapping from name pattern to PartitionSpec",
    ),
    misuse(
        "sharding/by_path-bad-value",
        lambda: ec.sharding.by_path({"w": 3}),
        TypeError,
        r"by_path\(rules=\.\.\.\): the value for 'w' must be a PartitionSpec or a rule",
    ),
    misuse(
        "shard_batch/missing-mesh-axis",
        lambda: ec.shard_batch(jnp.ones((8, 2)), MESH, "batch"),
        ValueError,
        r"shard_batch\(axis=\.\.\.\): mesh axis 'batch' is not in the mesh",
    ),
    misuse(
        "shard_batch/indivisible-batch",
        lambda: ec.shard_batch(jnp.ones((5, 2)), MESH, "data"),
        ValueError,
        r"shard_batch: the leading dimension of batch \(shape \(5, 2\)\) must be divisible "
        r"by the 8 devices of mesh axis 'data'",
    ),
]

CASES = VMAP_CASES + SEED_API_CASES + SHARDING_CASES


@pytest.mark.parametrize("fn, exception, regex", CASES)
def test_misuse(fn: Any, exception: type[BaseException], regex: str) -> None:
    check_misuse(fn, exception, regex)
