"""Sharding rules: which `PartitionSpec` each parameter of a model gets on a mesh.

A rule is any callable ``rule(name, leaf, mesh) -> PartitionSpec``: ``name`` is the
parameter's dotted name (``"layers.0.weight"``), ``leaf`` the array (or anything with
``.shape``), ``mesh`` the `jax.sharding.Mesh`. The builders here cover the usual cases:

- `replicate()`: every parameter whole on every device (data parallelism);
- `fsdp(axis, min_size)`: each large parameter split along its largest divisible
  dimension (fully sharded data parallelism, FSDP / ZeRO-3 style);
- `by_path({pattern: spec_or_rule}, default)`: per-name rules (tensor parallelism, or
  mixing the above), with `fnmatch` patterns on the dotted names.

`check_spec` validates what a rule returns, with errors naming the parameter.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Mapping
from typing import Any

from jax.sharding import Mesh, PartitionSpec

from .._messages import type_name

ShardingRule = Callable[[str, Any, Mesh], PartitionSpec]


def axis_names(entry: Any) -> tuple[str, ...]:
    """The mesh axis names one `PartitionSpec` entry refers to (`None`, a name, a tuple)."""
    return () if entry is None else entry if isinstance(entry, tuple) else (entry,)


def check_mesh_axes(axis: Any, mesh: Mesh, where: str) -> tuple[str, ...]:
    names = axis_names(axis)
    for name in names:
        if name not in mesh.shape:
            raise ValueError(
                f"{where}: mesh axis {name!r} is not in the mesh; expected one of "
                f"{tuple(mesh.axis_names)}, got {axis!r}."
            )
    return names


def axes_size(names: tuple[str, ...], mesh: Mesh) -> int:
    return math.prod(mesh.shape[name] for name in names)


def check_spec(spec: Any, name: str, shape: tuple[int, ...], mesh: Mesh, rule: Any) -> None:
    """Raise a clear error unless ``spec`` can shard an array of ``shape`` on ``mesh``."""
    where = f"sharding rule {rule!r} for parameter {name!r} (shape {shape})"
    if not isinstance(spec, PartitionSpec):
        raise TypeError(f"{where}: expected a jax.sharding.PartitionSpec, got {spec!r}.")
    if len(spec) > len(shape):
        raise ValueError(
            f"{where}: the spec {spec} has {len(spec)} entries but the parameter has only "
            f"{len(shape)} dimensions."
        )
    used: set[str] = set()
    for dim, entry in enumerate(spec):
        names = check_mesh_axes(entry, mesh, where)
        for axis_name in names:
            if axis_name in used:
                raise ValueError(f"{where}: mesh axis {axis_name!r} is used twice in {spec}.")
            used.add(axis_name)
        parts = axes_size(names, mesh)
        if shape[dim] % parts:
            raise ValueError(
                f"{where}: dimension {dim} has size {shape[dim]}, which is not divisible "
                f"by the {parts} devices of mesh axis {entry!r} (spec {spec}). Choose "
                "another dimension or mesh axis, or replicate it with PartitionSpec()."
            )


class _Replicate:
    def __call__(self, name: str, leaf: Any, mesh: Mesh) -> PartitionSpec:
        return PartitionSpec()

    def __repr__(self) -> str:
        return "replicate()"


def replicate() -> ShardingRule:
    """A rule that keeps every parameter whole on every device: data parallelism.

    **Returns:** the rule (a callable `(name, leaf, mesh) -> PartitionSpec`).

    ```python
    model = ecliptic.shard_params(model, mesh, sharding.replicate())
    ```
    """
    return _Replicate()


class _Fsdp:
    def __init__(self, axis: str | tuple[str, ...], min_size: int):
        self.axis = axis
        self.min_size = min_size

    def __call__(self, name: str, leaf: Any, mesh: Mesh) -> PartitionSpec:
        names = check_mesh_axes(self.axis, mesh, f"{self!r} (parameter {name!r})")
        shape = tuple(leaf.shape)
        if math.prod(shape) < self.min_size:
            return PartitionSpec()
        parts = axes_size(names, mesh)
        divisible = [dim for dim, size in enumerate(shape) if size % parts == 0]
        if not divisible:
            return PartitionSpec()
        # The largest divisible dimension; the first one on ties.
        dim = max(divisible, key=lambda d: (shape[d], -d))
        return PartitionSpec(*([None] * dim), self.axis)

    def __repr__(self) -> str:
        return f"fsdp(axis={self.axis!r}, min_size={self.min_size})"


def fsdp(axis: str | tuple[str, ...] = "data", min_size: int = 1024) -> ShardingRule:
    """A rule that splits each large parameter across the devices of a mesh axis (FSDP).

    Every parameter with at least `min_size` elements is split along its largest
    dimension whose size the mesh axis divides; smaller parameters, and those with no
    divisible dimension, are replicated. Each device then stores about `1/n` of the
    parameters (and of the optimizer state that follows them, see `shard_opt_state`);
    XLA gathers them where the computation needs them.

    **Arguments:**

    - `axis`: the mesh axis (or tuple of axes) to split over; usually the data axis.
    - `min_size`: parameters with fewer elements than this stay replicated.

    **Returns:** the rule (a callable `(name, leaf, mesh) -> PartitionSpec`).

    ```python
    mesh = jax.make_mesh((8,), ("data",))
    model = ecliptic.shard_params(model, mesh, sharding.fsdp("data", min_size=2**14))
    ```
    """
    if not isinstance(min_size, int) or min_size < 0:
        raise ValueError(f"fsdp(min_size=...) must be a non-negative int; got {min_size!r}.")
    if not (isinstance(axis, str) or (isinstance(axis, tuple) and axis)):
        raise TypeError(
            f"fsdp(axis=...) must be a mesh axis name or a tuple of them; got {axis!r}."
        )
    return _Fsdp(axis, min_size)


class _ByPath:
    def __init__(self, rules: dict[str, Any], default: ShardingRule):
        self.rules = rules
        self.default = default

    def __call__(self, name: str, leaf: Any, mesh: Mesh) -> PartitionSpec:
        for pattern, value in self.rules.items():
            if fnmatch.fnmatchcase(name, pattern):
                if isinstance(value, PartitionSpec):
                    check_spec(value, name, tuple(leaf.shape), mesh, f"{pattern!r}: {value}")
                    return value
                return value(name, leaf, mesh)
        return self.default(name, leaf, mesh)

    def __repr__(self) -> str:
        return f"by_path({self.rules!r}, default={self.default!r})"


def by_path(
    rules: Mapping[str, PartitionSpec | ShardingRule], default: ShardingRule | None = None
) -> ShardingRule:
    """A rule choosing each parameter's sharding from patterns on its dotted name.

    Names join attribute names, sequence indices and dict keys with dots, as PyTorch
    does: `"layers.0.weight"`. Patterns use `fnmatch` syntax (`*` matches any run of
    characters, dots included) and are tried in order; the first match wins. Parameters
    that no pattern matches get `default`.

    **Arguments:**

    - `rules`: a mapping from pattern to a `PartitionSpec` (checked against the
        parameter's shape and the mesh) or to another rule (e.g. `fsdp("data")`).
    - `default`: the rule for unmatched parameters; `replicate()` if omitted.

    **Returns:** the rule (a callable `(name, leaf, mesh) -> PartitionSpec`).

    ```python
    rules = sharding.by_path(
        {"*.attention.*.weight": P("model", None), "*.bias": P()},
        default=sharding.fsdp("data"),
    )
    ```
    """
    if not isinstance(rules, Mapping):
        raise TypeError(
            f"by_path(rules=...) must be a mapping from name pattern to PartitionSpec or "
            f"rule; got {type_name(rules)}."
        )
    for pattern, value in rules.items():
        if not isinstance(pattern, str):
            raise TypeError(f"by_path(rules=...): patterns must be strings; got {pattern!r}.")
        if not (isinstance(value, PartitionSpec) or callable(value)):
            raise TypeError(
                f"by_path(rules=...): the value for {pattern!r} must be a PartitionSpec or "
                f"a rule (name, leaf, mesh) -> PartitionSpec; got {value!r}."
            )
    return _ByPath(dict(rules), replicate() if default is None else as_rule(default))


def as_rule(rules: Any) -> ShardingRule:
    """Accept a rule, a mapping (as `by_path`) or `None` (as `replicate`)."""
    if rules is None:
        return replicate()
    if isinstance(rules, Mapping):
        return by_path(rules)
    if isinstance(rules, PartitionSpec) or not callable(rules):
        raise TypeError(
            "rules must be a sharding rule (e.g. sharding.replicate(), sharding.fsdp(...), "
            "a callable (name, leaf, mesh) -> PartitionSpec) or a mapping from name "
            f"pattern to PartitionSpec; got {rules!r}."
        )
    return rules  # pyright: ignore[reportReturnType]
