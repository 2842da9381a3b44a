"""Placing pytrees on devices: `filter_shard`, and the model/batch/optimizer helpers.

Everything here only *describes* shardings (`jax.sharding.NamedSharding` on a `Mesh`)
and hands them to JAX: `jax.device_put` outside a trace, `jax.lax.with_sharding_constraint`
inside one. The parallel computation itself is XLA's SPMD partitioner.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.tree_util as jtu
from jax.sharding import Mesh, NamedSharding, PartitionSpec, Sharding, SingleDeviceSharding

from .._filters import combine, is_array, partition
from .._paths import dotted
from ._rules import as_rule, axes_size, axis_names, check_mesh_axes, check_spec


def _is_none(x: Any) -> bool:
    return x is None


def _is_sharding_like(x: Any) -> bool:
    return isinstance(x, (Sharding, jax.Device, PartitionSpec))


def _to_sharding(x: Any) -> Any:
    return SingleDeviceSharding(x) if isinstance(x, jax.Device) else x


def filter_shard(x: Any, device_or_shardings: Any) -> Any:
    """Place the array leaves of a pytree on devices; leave everything else alone.

    Outside a JAX trace this moves (or reshards) the arrays with `jax.device_put`; inside
    `filter_jit`/`jax.jit` it constrains them with `jax.lax.with_sharding_constraint`, so
    XLA lays the computation out accordingly (with `jax.sharding.reshard` for shardings
    over Explicit mesh axes).

    **Arguments:**

    - `x`: any pytree.
    - `device_or_shardings`: a `jax.Device`, a `jax.sharding.Sharding`, or a pytree prefix
        of `x` with those at its leaves (as `param_shardings` returns: `None` where `x` has
        no array).

    **Returns:** `x` with its arrays placed; non-array leaves are returned as they were.

    ```python
    mesh = jax.make_mesh((8,), ("data",))
    x = ecliptic.filter_shard(x, NamedSharding(mesh, P("data")))
    ```
    """
    shardings = jtu.tree_map(_to_sharding, device_or_shardings, is_leaf=_is_sharding_like)
    for path, leaf in jtu.tree_flatten_with_path(shardings, is_leaf=_is_sharding_like)[0]:
        if not _is_sharding_like(leaf):
            where = f" at {jtu.keystr(path)}" if path else ""
            raise TypeError(
                "filter_shard(x, device_or_shardings): device_or_shardings must hold "
                f"jax.Device or jax.sharding.Sharding objects (or None); got {leaf!r}{where}."
            )
    arrays, rest = partition(x, is_array)
    if not _is_sharding_like(shardings):
        _check_prefix(shardings, arrays)
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jtu.tree_leaves(arrays)):  # pyright: ignore[reportAttributeAccessIssue]
        arrays = jtu.tree_map(_constrain_subtree, shardings, arrays, is_leaf=_is_sharding_like)
    else:
        arrays = jax.device_put(arrays, shardings)
    return combine(arrays, rest)


def _uses_explicit_axes(sharding: Any) -> bool:
    """Whether a sharding names a mesh axis of type Explicit (then `reshard` is needed)."""
    if isinstance(sharding, NamedSharding):
        mesh, spec = sharding.mesh, sharding.spec
    elif isinstance(sharding, PartitionSpec):
        mesh, spec = jax.sharding.get_abstract_mesh(), sharding
    else:
        return False
    types = dict(zip(mesh.axis_names, mesh.axis_types))
    explicit = jax.sharding.AxisType.Explicit
    return any(types.get(name) == explicit for entry in spec for name in axis_names(entry))


def _constrain_subtree(sharding: Any, subtree: Any) -> Any:
    if sharding is None:
        return subtree
    if _uses_explicit_axes(sharding):
        # Explicit mesh axes put shardings in the types: change them with `reshard`.
        return jax.sharding.reshard(subtree, sharding)
    return jax.lax.with_sharding_constraint(subtree, sharding)


def _check_prefix(shardings: Any, arrays: Any) -> None:
    try:
        jtu.tree_map(lambda *_: None, shardings, arrays, is_leaf=_is_sharding_like)
    except ValueError as e:
        raise ValueError(
            "filter_shard(x, device_or_shardings): device_or_shardings must be a device, a "
            "sharding, or a pytree prefix of x (with None where x has no arrays); got "
            f"structure {jtu.tree_structure(shardings, is_leaf=_is_sharding_like)} for x "
            f"with array structure {jtu.tree_structure(arrays)}."
        ) from e


def param_shardings(model: Any, mesh: Mesh, rules: Any = None) -> Any:
    """The `NamedSharding` that `rules` give each array of a model on `mesh`.

    **Arguments:**

    - `model`: any pytree (a Module, or a tree of parameters). `jax.ShapeDtypeStruct`
        leaves (e.g. from `filter_eval_shape`) count as arrays.
    - `mesh`: the `jax.sharding.Mesh`.
    - `rules`: `sharding.replicate()` (the default, also for `None`), `sharding.fsdp(...)`,
        `sharding.by_path(...)` or a plain mapping `{pattern: PartitionSpec}`, or any
        callable `(name, leaf, mesh) -> PartitionSpec`. `name` is the parameter's dotted
        name, e.g. `"layers.0.weight"`.

    **Returns:** a pytree like `ecliptic.filter(model, ecliptic.is_array)`: a
    `NamedSharding` at each array leaf, `None` everywhere else. Use it with
    `filter_shard`, `shard_opt_state` or as `jax.jit(..., out_shardings=...)`.

    ```python
    shardings = ecliptic.param_shardings(model, mesh, sharding.fsdp("data"))
    ```
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"param_shardings(mesh=...) must be a jax.sharding.Mesh; got {mesh!r}.")
    rule = as_rule(rules)

    def one(path: tuple[Any, ...], leaf: Any) -> Any:
        if not (is_array(leaf) or isinstance(leaf, jax.ShapeDtypeStruct)):
            return None
        name = dotted(path)
        spec = rule(name, leaf, mesh)
        check_spec(spec, name, tuple(leaf.shape), mesh, rule)
        return NamedSharding(mesh, spec)

    return jtu.tree_map_with_path(one, model)


def shard_params(model: Any, mesh: Mesh, rules: Any = None) -> Any:
    """Place a model's arrays on `mesh` as `rules` say (see `param_shardings`).

    Works outside `filter_jit` (moves the arrays) and inside it (constrains them, e.g. to
    keep the updated parameters of a training step where they were).

    **Arguments:** as for `param_shardings`.

    **Returns:** the model with its arrays placed; non-array leaves are unchanged.

    ```python
    mesh = jax.make_mesh((8,), ("data",))
    model = ecliptic.shard_params(model, mesh)                          # data parallel
    model = ecliptic.shard_params(model, mesh, sharding.fsdp("data"))   # FSDP
    ```
    """
    return filter_shard(model, param_shardings(model, mesh, rules))


def shard_batch(batch: Any, mesh: Mesh, axis: str | tuple[str, ...] = "data") -> Any:
    """Split the leading dimension of every array in a batch across a mesh axis.

    **Arguments:**

    - `batch`: any pytree (e.g. `(inputs, targets)`); non-arrays are left alone, and
        0-dimensional arrays are replicated.
    - `mesh`: the `jax.sharding.Mesh`.
    - `axis`: the mesh axis (or tuple of axes) holding the data-parallel devices.

    **Returns:** the batch with its arrays placed (or constrained, inside a trace).

    ```python
    x, y = ecliptic.shard_batch((x, y), mesh, "data")
    ```
    """
    names = check_mesh_axes(axis, mesh, "shard_batch(axis=...)")
    parts = axes_size(names, mesh)

    def one(path: tuple[Any, ...], leaf: Any) -> Any:
        if not is_array(leaf):
            return None
        if leaf.ndim == 0:
            return NamedSharding(mesh, PartitionSpec())
        if leaf.shape[0] % parts:
            raise ValueError(
                f"shard_batch: the leading dimension of batch{jtu.keystr(path)} (shape "
                f"{tuple(leaf.shape)}) must be divisible by the {parts} devices of mesh "
                f"axis {axis!r}; got {leaf.shape[0]}."
            )
        return NamedSharding(mesh, PartitionSpec(axis))

    return filter_shard(batch, jtu.tree_map_with_path(one, batch))


def _sharding_of(x: Any) -> Any:
    if isinstance(x, Sharding):
        return x
    if isinstance(x, jax.core.Tracer):  # pyright: ignore[reportAttributeAccessIssue]
        raise ValueError(
            "opt_state_shardings/shard_opt_state(params=...): got traced parameters, which "
            "carry no concrete sharding. Inside filter_jit/jax.jit pass the parameters' "
            "shardings instead (ecliptic.param_shardings(model, mesh, rules))."
        )
    if is_array(x):
        return x.sharding
    return None


def _fits(sharding: Any, shape: tuple[int, ...]) -> bool:
    if sharding is None:
        return False
    try:
        sharding.shard_shape(shape)
    except Exception:
        return False
    if isinstance(sharding, NamedSharding):
        return len(sharding.spec) <= len(shape)
    return True


def opt_state_shardings(opt_state: Any, params: Any, mesh: Mesh | None = None) -> Any:
    """Shardings for an optimizer state that follow the parameters' shardings.

    Every subtree of `opt_state` with the tree structure of `params` (as Optax's moment
    estimates, e.g. `mu`/`nu` of Adam, have; `None` in either counts as a leaf) takes the
    parameters' shardings leaf by leaf. Every other array (step counts, scalars) is
    replicated over the mesh.

    **Arguments:**

    - `opt_state`: the optimizer state, e.g. from `optimizer.init(params)`.
    - `params`: the placed parameters, or their shardings (as `param_shardings` gives;
        needed inside a trace, where arrays carry no concrete sharding).
    - `mesh`: the mesh to replicate the other arrays over; by default the mesh of the
        first `NamedSharding` among the parameters.

    **Returns:** a pytree like `ecliptic.filter(opt_state, ecliptic.is_array)` with a
    sharding at each array leaf.

    ```python
    shardings = ecliptic.opt_state_shardings(opt_state, model)
    ```
    """
    param_tree = jtu.tree_map(_sharding_of, params, is_leaf=lambda x: isinstance(x, Sharding))
    flat_params = jtu.tree_leaves(param_tree, is_leaf=_is_none)
    replicated = _replicated(flat_params, mesh)
    target = jtu.tree_structure(params, is_leaf=_is_none_or_sharding)
    target_type = type(params)

    def mirrors_params(node: Any) -> bool:
        return (
            type(node) is target_type
            and not jtu.treedef_is_leaf(target)
            and jtu.tree_structure(node, is_leaf=_is_none_or_sharding) == target
        )

    def assign(node: Any) -> Any:
        if mirrors_params(node):
            leaves = jtu.tree_leaves(node, is_leaf=_is_none)
            chosen = [
                (sh if _fits(sh, tuple(leaf.shape)) else replicated) if is_array(leaf) else None
                for leaf, sh in zip(leaves, flat_params)
            ]
            return jtu.tree_structure(node, is_leaf=_is_none).unflatten(chosen)
        return replicated if is_array(node) else None

    return jtu.tree_map(assign, opt_state, is_leaf=mirrors_params)


def _is_none_or_sharding(x: Any) -> bool:
    return x is None or isinstance(x, Sharding)


def _replicated(flat_params: list[Any], mesh: Mesh | None) -> Sharding:
    if mesh is not None:
        return NamedSharding(mesh, PartitionSpec())
    for sharding in flat_params:
        if isinstance(sharding, NamedSharding):
            return NamedSharding(sharding.mesh, PartitionSpec())
    for sharding in flat_params:
        if isinstance(sharding, SingleDeviceSharding):
            return sharding
    raise ValueError(
        "opt_state_shardings/shard_opt_state: cannot tell which devices to replicate the "
        "optimizer state over: no parameter carries a NamedSharding. Pass mesh=..."
    )


def shard_opt_state(opt_state: Any, params: Any, mesh: Mesh | None = None) -> Any:
    """Place an optimizer state like the parameters it mirrors (see `opt_state_shardings`).

    Moment estimates shaped like the parameters get the parameters' shardings (so with
    FSDP they are split too); counts and other scalars are replicated.

    **Arguments:** as for `opt_state_shardings`.

    **Returns:** the optimizer state with its arrays placed (or constrained, inside a
    trace).

    ```python
    opt_state = ecliptic.shard_opt_state(optimizer.init(params), params)
    ```
    """
    return filter_shard(opt_state, opt_state_shardings(opt_state, params, mesh))
