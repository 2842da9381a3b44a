"""`backward_nan`: find where NaNs enter the backward pass."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Hashable
from typing import Any

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax import lax

from .._errors import batch_positions_text, unvmap_any
from .._exceptions import EclipticRuntimeError, mark_message, reraise_runtime_error
from .._filters import is_inexact_array
from .._messages import array_text
from .._pretty_print import tree_pformat


@dataclasses.dataclass(frozen=True)
class _Spec:
    name: Hashable | None
    terminate: bool
    treedef: Any  # of `x`, to print the watched leaves in their place
    positions: tuple[int, ...]  # the leaves of `x` that are watched
    shapes: tuple[tuple[int, ...], ...] = ()  # per-example shapes of the cotangents


def _as_tree(spec: _Spec, watched: list[np.ndarray]) -> Any:
    leaves: list[Any] = [None] * spec.treedef.num_leaves
    for position, value in zip(spec.positions, watched):
        leaves[position] = value
    return jtu.tree_unflatten(spec.treedef, leaves)


def _report_text(spec: _Spec, primals: list[np.ndarray], cts: list[np.ndarray]) -> str:
    """One report, in Equinox's layout: an optional ``name:`` line, then the primals and
    the cotangents (leaves of `x` that are not watched show as None)."""
    header = "" if spec.name is None else f"{spec.name}:\n"
    return (
        f"{header}   primals={tree_pformat(_as_tree(spec, primals), short_arrays=False)}\n"
        f"cotangents={tree_pformat(_as_tree(spec, cts), short_arrays=False)}\n"
    )


def _summary(spec: _Spec, has_nan: np.ndarray, cts: list[np.ndarray]) -> str:
    parts = []
    for i, ct in enumerate(cts):
        count = int(np.isnan(ct).sum())
        if count:
            parts.append(f"leaf {i} ({array_text(ct.dtype, spec.shapes[i])}): {count} NaN")
    label = "" if spec.name is None else f" {spec.name!r}"
    text = f"backward_nan{label}: the cotangent contains NaN ({'; '.join(parts)})"
    if has_nan.shape:
        text = f"{text}\n{batch_positions_text(has_nan)}"
    return text


def _report_on_host(spec: _Spec, has_nan: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    has_nan = np.asarray(has_nan)
    batch = has_nan.shape  # has_nan is a scalar per example: its shape is the batch shape
    count = len(spec.shapes)
    primals = [np.broadcast_to(np.asarray(a), batch + s) for a, s in zip(arrays, spec.shapes)]
    cts = [np.broadcast_to(np.asarray(a), batch + s) for a, s in zip(arrays[count:], spec.shapes)]
    reports = []
    for index in np.ndindex(batch):
        if has_nan[index]:
            text = _report_text(
                spec, [np.asarray(p[index]) for p in primals], [np.asarray(c[index]) for c in cts]
            )
            reports.append(f"(batch position {index})\n{text}" if batch else text)
    if spec.terminate:
        raise EclipticRuntimeError(
            mark_message(f"Encountered NaN: {_summary(spec, has_nan, cts)}\n{''.join(reports)}")
        ) from None
    print("".join(reports), end="")
    return cts


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _watch(spec: _Spec, arrays: list[Any]) -> list[Any]:
    return arrays


def _watch_fwd(spec: _Spec, arrays: list[Any]) -> tuple[list[Any], list[Any]]:
    return arrays, arrays  # the primals are kept to be shown in a report


def _watch_bwd(spec: _Spec, primals: list[Any], cts: list[Any]) -> tuple[list[Any]]:
    # A custom rule upstream may hand back Python scalars (e.g. `jnp.nan`) as cotangents.
    cts = [
        jnp.broadcast_to(jnp.asarray(ct, dtype=jnp.result_type(p)), jnp.shape(p))
        for ct, p in zip(cts, primals)
    ]
    has_nan = jnp.any(jnp.stack([jnp.isnan(ct).any() for ct in cts]))
    spec = dataclasses.replace(spec, shapes=tuple(tuple(ct.shape) for ct in cts))

    def report(cts: list[Any], has_nan: Any) -> list[Any]:
        structs = [jax.ShapeDtypeStruct(ct.shape, ct.dtype) for ct in cts]
        return jax.pure_callback(
            functools.partial(_report_on_host, spec),
            structs,
            has_nan,
            *primals,
            *cts,
            vmap_method="expand_dims",
        )

    try:
        out = lax.cond(unvmap_any(has_nan), report, lambda cts, _: list(cts), cts, has_nan)
    except Exception as e:  # an eager backward pass raises right here
        reraise_runtime_error(e, compiled=False)
        raise
    return (out,)


_watch.defvjp(_watch_fwd, _watch_bwd)


def backward_nan(x: Any, name: Hashable | None = None, terminate: bool = True) -> Any:
    """Identity in the forward pass; in the backward pass, report NaNs in the cotangent.

    Place it on intermediate values to find the first point (going backwards) at which
    a gradient becomes NaN. Costs nothing in the forward pass, and one reduction plus a
    conditional in the backward pass; the host is only involved when a NaN is found.
    Reverse mode only (`grad`, `vjp`); `jvp` through it is not supported.

    **Arguments:**

    - `x`: any pytree; its floating-point array leaves are watched.
    - `name`: optional label included in the report.
    - `terminate`: if True (default), raise an `EclipticRuntimeError` with the report
        (under plain `jax.jit`: a `JaxRuntimeError` containing it); if False, print the
        report and continue.

    The report is laid out as Equinox's: a `name:` line (when named), then
    `   primals=...` and `cotangents=...` (the watched leaves of `x`, in its structure);
    under `vmap`, one such report per batch position that has a NaN.

    **Returns:** `x`, unchanged.

    ```python
    def loss(x):
        h = ecliptic.debug.backward_nan(jnp.sqrt(x), name="sqrt")
        return jnp.sum(h)
    jax.grad(loss)(jnp.array([0.0, 1.0]))  # fine: sqrt'(0) is inf, not NaN
    ```
    """
    leaves, treedef = jtu.tree_flatten(x)
    positions = [i for i, leaf in enumerate(leaves) if is_inexact_array(leaf)]
    if not positions:
        return x
    spec = _Spec(name, bool(terminate), treedef, tuple(positions))
    out = _watch(spec, [leaves[i] for i in positions])
    for i, leaf in zip(positions, out):  # pyright: ignore[reportArgumentType]
        leaves[i] = leaf
    return jtu.tree_unflatten(treedef, leaves)
