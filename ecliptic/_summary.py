"""`summary`: a table of a model's submodules and their parameters."""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PyTree

from ._io._arrays import is_key_dtype
from ._messages import array_text
from ._module import Module
from ._paths import children_with_names, display, join
from .nn import State, StateIndex

__all__ = ["Summary", "SummaryRow", "summary"]

_ARRAYS = (jax.Array, np.ndarray, np.generic, jax.ShapeDtypeStruct)
_PARAMS_WIDTH = 44


@dataclass(frozen=True)
class SummaryRow:
    """One submodule: its dotted `path` (``""`` for the root), `type` name, its own
    arrays as `params` (``("weight f32[64,32]", ...)``, not those of its submodules),
    and their element `count` and `bytes` (arrays seen earlier in the table, i.e.
    shared ones, are listed with ``(shared with ...)`` and not counted again)."""

    path: str
    type: str
    params: tuple[str, ...]
    count: int
    bytes: int


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


class Summary:
    """The table `summary` returns; `print` it, or read its attributes.

    **Attributes:** `rows` (a tuple of `SummaryRow`, depth first), `trainable_count` and
    `trainable_bytes` (floating-point and complex arrays), `other_count` and
    `other_bytes` (integer, boolean and PRNG-key arrays), `total_count`, `total_bytes`.
    """

    def __init__(self, rows: list[SummaryRow], trainable: tuple[int, int], other: tuple[int, int]):
        self.rows = tuple(rows)
        self.trainable_count, self.trainable_bytes = trainable
        self.other_count, self.other_bytes = other
        self.total_count = self.trainable_count + self.other_count
        self.total_bytes = self.trainable_bytes + self.other_bytes

    def __str__(self) -> str:
        header = ("path", "type", "params", "count", "bytes")
        table = []
        for row in self.rows:
            lines = textwrap.wrap(", ".join(row.params), _PARAMS_WIDTH) or [""]
            table.append((display(row.path), row.type, lines, f"{row.count:,}", f"{row.bytes:,}"))
        widths = [
            max([len(header[0])] + [len(r[0]) for r in table]),
            max([len(header[1])] + [len(r[1]) for r in table]),
            max([len(header[2])] + [len(line) for r in table for line in r[2]]),
            max([len(header[3])] + [len(r[3]) for r in table]),
            max([len(header[4])] + [len(r[4]) for r in table]),
        ]

        def line(cells: tuple[str, ...]) -> str:
            parts = [
                c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
            ]
            return "  ".join(parts).rstrip()

        out = [line(header), line(tuple("-" * w for w in widths))]
        for path, kind, params, count, size in table:
            out.append(line((path, kind, params[0], count, size)))
            out += [line(("", "", more, "", "")) for more in params[1:]]
        out.append("")
        for label, count, size in (
            ("Trainable (floating-point) arrays", self.trainable_count, self.trainable_bytes),
            ("Other arrays", self.other_count, self.other_bytes),
            ("Total", self.total_count, self.total_bytes),
        ):
            out.append(f"{label}: {count:,} elements, {_human(size)}")
        return "\n".join(out)

    def __repr__(self) -> str:
        return str(self)


def _is_row(node: Any) -> bool:
    # A StateIndex (and its initial value) belongs to the layer holding it.
    return isinstance(node, (Module, State)) and not isinstance(node, StateIndex)


def _array_info(leaf: Any) -> tuple[int, int, bool]:
    """(element count, bytes, trainable)."""
    shape, dtype = tuple(leaf.shape), leaf.dtype
    count = math.prod(shape)
    if is_key_dtype(dtype):
        return count, count * dtype.itemsize, False
    return count, count * np.dtype(dtype).itemsize, bool(jnp.issubdtype(dtype, jnp.inexact))


def summary(pytree: PyTree) -> Summary:
    """A table of a model: one row per submodule, with its parameters.

    **Arguments:**

    - `pytree`: a model, or any pytree (e.g. `(model, state)`; a `State` gets a row of
      its own). `jax.ShapeDtypeStruct` leaves (from `filter_eval_shape`) count as arrays.

    **Returns:** a `Summary`: printing it shows, for the root and every Module below it,
    the path, type, own arrays (`weight f32[64,32]`), their element count and bytes;
    then the totals, split into trainable (floating-point) arrays and other arrays.
    Static fields are not shown. An array object that appears more than once (shared
    weights) is counted once.

    ```python
    print(ecliptic.summary(model))
    ```
    """
    rows: list[dict[str, Any]] = []
    first_seen: dict[int, str] = {}
    totals = {True: [0, 0], False: [0, 0]}

    def visit(node: Any, name: str, row: dict[str, Any], within: str, inside: bool) -> None:
        inside = inside or isinstance(node, StateIndex)
        if (_is_row(node) and not inside) or not rows:
            row = {"path": name, "type": type(node).__name__, "params": [], "count": 0, "bytes": 0}
            rows.append(row)
            within = name
        if isinstance(node, _ARRAYS):
            local = name[len(within) + 1 :] if within else name
            text = f"{local or display(name)} {array_text(node.dtype, node.shape)}"
            if id(node) in first_seen and not isinstance(node, np.generic):
                row["params"].append(f"{text} (shared with {display(first_seen[id(node)])})")
                return
            first_seen[id(node)] = name
            count, size, trainable = _array_info(node)
            row["params"].append(text)
            row["count"] += count
            row["bytes"] += size
            totals[trainable][0] += count
            totals[trainable][1] += size
            return
        children, treedef = children_with_names(node)
        if treedef.num_nodes == 1 and treedef.num_leaves == 1:
            return  # a non-array leaf
        for key, child in children:
            visit(child, join(name, key), row, within, inside)

    visit(pytree, "", {}, "", False)
    return Summary(
        [
            SummaryRow(r["path"], r["type"], tuple(r["params"]), r["count"], r["bytes"])
            for r in rows
        ],
        tuple(totals[True]),  # type: ignore[arg-type]
        tuple(totals[False]),  # type: ignore[arg-type]
    )
