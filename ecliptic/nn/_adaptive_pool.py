"""Adaptive pooling: `AdaptivePool`, `AdaptiveAvgPool1d/2d/3d`, `AdaptiveMaxPool1d/2d/3d`.

By default (as in Equinox) a dimension of size L pooled to `out` is cut into `out`
contiguous bins, the first ``L % out`` of length ``ceil(L / out)`` and the rest of
length ``floor(L / out)``. With ``bins="torch"``, bin i covers
``[floor(i * L / out), ceil((i + 1) * L / out))``, as in PyTorch; those bins overlap
and differ in length when `out` does not divide L. The two agree when `out` divides L.
The bins are static, so index and mask
arrays are built with NumPy at trace time and each call is a single gather and a single
reduction (a reshape and a reduction when every size divides).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal, Union

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from .._module import Module, field
from ._arg_checks import as_tuple, check_num_spatial_dims, check_rank
from ._scope import named_scope_call

# Reductions recognised by identity: they run as one masked reduction over the padded
# windows. Any other operation is applied to each window's values as a vector.
_KNOWN_REDUCTIONS: tuple[tuple[Any, str], ...] = (
    (jnp.max, "max"),
    (jnp.amax, "max"),
    (jnp.min, "min"),
    (jnp.amin, "min"),
    (jnp.mean, "mean"),
    (jnp.sum, "sum"),
)


_BIN_STYLES = ("equinox", "torch")


def _bins(size: int, out: int, style: str) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of each of the ``out`` bins over ``size`` positions."""
    if style == "torch":
        i = np.arange(out)
        starts = (i * size) // out
        ends = -((-(i + 1) * size) // out)
        return starts, ends - starts
    short, extra = divmod(size, out)
    lengths = np.full(out, short) + (np.arange(out) < extra)
    return np.cumsum(lengths) - lengths, lengths


def _gather_windows(x: jax.Array, starts: Sequence[np.ndarray], width: Sequence[int]) -> jax.Array:
    """``x[c, s1 + k1, s2 + k2, ...]`` for bins' starts ``s`` and offsets ``k <
    width``, laid out as (C, o1, K1, o2, K2, ...); indices past the end are clamped (the
    caller masks them). One gather."""
    n = len(starts)
    index = []
    for j, (s, w, size) in enumerate(zip(starts, width, x.shape[1:])):
        idx = np.minimum(s[:, None] + np.arange(w)[None, :], size - 1)
        shape = [1] * (2 * n)
        shape[2 * j], shape[2 * j + 1] = idx.shape
        index.append(idx.reshape(shape))
    return x[(slice(None), *index)]


def _fill_value(kind: str, dtype: Any) -> Any:
    if kind == "max":
        return -np.inf if jnp.issubdtype(dtype, jnp.inexact) else jnp.iinfo(dtype).min
    if kind == "min":
        return np.inf if jnp.issubdtype(dtype, jnp.inexact) else jnp.iinfo(dtype).max
    return 0


def _apply_known(
    kind: str,
    windows: jax.Array,
    axes: tuple[int, ...],
    mask: np.ndarray | None,
    lengths: Sequence[np.ndarray],
) -> jax.Array:
    if mask is not None:
        windows = jnp.where(
            mask, windows, np.array(_fill_value(kind, windows.dtype), windows.dtype)
        )
    if kind == "max":
        return jnp.max(windows, axis=axes)
    if kind == "min":
        return jnp.min(windows, axis=axes)
    total = jnp.sum(windows, axis=axes)
    if kind == "sum":
        return total
    counts = lengths[0]
    for c in lengths[1:]:
        counts = np.multiply.outer(counts, c)
    return total / counts.astype(total.dtype)[None]


def _apply_generic(
    operation: Callable[[jax.Array], jax.Array], windows: jax.Array, n: int
) -> jax.Array:
    """``operation`` on each window's values flattened to a vector."""
    perm = (0,) + tuple(range(1, 2 * n, 2)) + tuple(range(2, 2 * n + 1, 2))
    windows = jnp.transpose(windows, perm)
    windows = windows.reshape(windows.shape[: n + 1] + (-1,))
    return jnp.vectorize(operation, signature="(k)->()")(windows)


class AdaptivePool(Module):
    """N-dimensional adaptive pooling to a fixed output shape.

    **Arguments:**

    - `target_shape`: an int or N ints, the output's spatial shape (each >= 1).
    - `num_spatial_dims`: N.
    - `operation`: the reduction over a bin. `jnp.max`, `jnp.min`, `jnp.mean` and
      `jnp.sum` run as one vectorised masked reduction; any other function is called
      on each bin's values as one 1-D vector and must return a scalar.
    - `bins`: how a dimension of size L is cut into `out` bins (keyword only).
      `"equinox"` (default, as Equinox): contiguous bins, the first `L % out` of length
      `ceil(L / out)`, the others `floor(L / out)`; needs `L >= out`. `"torch"` (as
      PyTorch's `AdaptiveAvgPool`/`AdaptiveMaxPool`): bin i covers
      `[floor(i L / out), ceil((i + 1) L / out))`, so neighbouring bins may overlap.
      Both give the same bins when `out` divides L.

    **Parameters:** none. **Input:** `(channels, *spatial)`; **output:**
    `(channels, *target_shape)`.

    ```python
    pool = ecliptic.nn.AdaptivePool((2, 3), 2, jnp.max)
    y = pool(jnp.ones((4, 7, 10)))  # shape (4, 2, 3)
    ```
    """

    target_shape: tuple[int, ...] = field(static=True)
    operation: Callable[[jax.Array], jax.Array] = field(static=True)
    bins: str = field(static=True)

    def __init__(
        self,
        target_shape: Union[int, Sequence[int]],
        num_spatial_dims: int,
        operation: Callable[[jax.Array], jax.Array],
        *,
        bins: Literal["equinox", "torch"] = "equinox",
    ):
        name = type(self).__name__
        n = check_num_spatial_dims(num_spatial_dims, name)
        if not callable(operation):
            raise TypeError(f"{name}: operation must be callable; got {operation!r}.")
        if bins not in _BIN_STYLES:
            raise ValueError(f"{name}: bins must be one of {_BIN_STYLES}; got {bins!r}.")
        self.target_shape = as_tuple(target_shape, n, f"{name}: target_shape")
        self.operation = operation
        self.bins = bins

    @named_scope_call
    def __call__(self, x: Array, *, key: PRNGKeyArray | None = None) -> Array:
        """**Arguments:** `x` of shape `(channels, *spatial)`; `key` is ignored.
        **Returns:** shape `(channels, *target_shape)`."""
        del key
        name = type(self).__name__
        n = len(self.target_shape)
        x = jnp.asarray(x)
        check_rank(x, n + 1, name, f"(channels, {n} spatial dims)")
        sizes = x.shape[1:]
        if any(s < 1 for s in sizes):
            raise ValueError(f"{name}: empty spatial dimension in input shape {x.shape}.")
        if self.bins == "equinox" and any(s < o for s, o in zip(sizes, self.target_shape)):
            raise ValueError(
                f"{name}: input spatial shape {tuple(sizes)} is smaller than target_shape "
                f"{self.target_shape}; Equinox's bins need at least one value each. Pass "
                "bins='torch' for PyTorch's (overlapping) bins."
            )
        # By identity: an operation need not be hashable or comparable.
        kind = next((k for f, k in _KNOWN_REDUCTIONS if f is self.operation), None)
        if kind == "mean" and not jnp.issubdtype(x.dtype, jnp.inexact):
            x = x.astype(jnp.result_type(float))
        axes = tuple(range(2, 2 * n + 1, 2))
        bins = [_bins(s, o, self.bins) for s, o in zip(sizes, self.target_shape)]
        lengths = [length for _, length in bins]

        if all(s % o == 0 for s, o in zip(sizes, self.target_shape)):
            # Equal, contiguous, non-overlapping bins: a free reshape replaces the gather.
            shape = (x.shape[0],)
            for s, o in zip(sizes, self.target_shape):
                shape += (o, s // o)
            windows = x.reshape(shape)
            if kind is not None:
                return _apply_known(kind, windows, axes, None, lengths)
            return _apply_generic(self.operation, windows, n)

        if kind is not None:
            width = [int(length.max()) for length in lengths]
            windows = _gather_windows(x, [s for s, _ in bins], width)
            mask = None
            if any((length != w).any() for length, w in zip(lengths, width)):
                mask = np.ones((1,) * (2 * n), bool)
                for j, (length, w) in enumerate(zip(lengths, width)):
                    shape = [1] * (2 * n)
                    shape[2 * j], shape[2 * j + 1] = len(length), w
                    mask = mask & (np.arange(w)[None, :] < length[:, None]).reshape(shape)
            return _apply_known(kind, windows, axes, mask, lengths)

        # An arbitrary operation needs exact windows: group each dimension's bins by
        # length (at most two lengths occur) and handle each combination of groups.
        groups = []
        for length in lengths:
            groups.append([np.flatnonzero(length == w) for w in np.unique(length)])
        combos = list(itertools.product(*groups))
        if len(combos) == 1:  # equal lengths everywhere: the gather is already in order
            return _apply_generic(
                self.operation,
                _gather_windows(x, [s for s, _ in bins], [int(ln[0]) for ln in lengths]),
                n,
            )
        out = None
        for combo in combos:
            starts = [s[sel] for (s, _), sel in zip(bins, combo)]
            width = [int(length[sel[0]]) for length, sel in zip(lengths, combo)]
            part = _apply_generic(self.operation, _gather_windows(x, starts, width), n)
            if out is None:
                out = jnp.zeros((x.shape[0],) + self.target_shape, part.dtype)
            out = out.at[(slice(None), *np.ix_(*combo))].set(part)
        assert out is not None
        return out


def _doc(kind: str, n: int) -> str:
    op = "jnp.mean" if kind == "Avg" else "jnp.max"
    return f"""{n}-dimensional adaptive {"average" if kind == "Avg" else "max"} pooling:
    `AdaptivePool(target_shape, {n}, {op}, bins=bins)`.

    **Arguments:** `target_shape`, an int or {n} ints; `bins` (keyword only),
    `"equinox"` (default: Equinox's contiguous bins) or `"torch"` (PyTorch's
    `nn.Adaptive{kind}Pool{n}d` bins, which may overlap). **Parameters:** none.

    **Input:** `(channels{", L" * n})`; **output:** `(channels, *target_shape)`.

    ```python
    pool = ecliptic.nn.Adaptive{kind}Pool{n}d(3)
    y = pool(jnp.ones((2{", 7" * n})))  # shape (2{", 3" * n})
    ```
    """


class _FixedDimsAdaptivePool(AdaptivePool):
    """An `AdaptivePool` with the number of spatial dims and the operation fixed by the
    subclass (`AdaptiveAvgPool2d`, ...)."""

    spatial_dims: ClassVar[int]
    reduction: ClassVar[tuple[Callable[..., Any]]]

    def __init__(
        self,
        target_shape: Union[int, Sequence[int]],
        *,
        bins: Literal["equinox", "torch"] = "equinox",
    ):
        n, (op,) = type(self).spatial_dims, type(self).reduction
        super().__init__(target_shape, n, op, bins=bins)


class _AdaptiveAvgPool(_FixedDimsAdaptivePool):
    reduction = (jnp.mean,)


class _AdaptiveMaxPool(_FixedDimsAdaptivePool):
    reduction = (jnp.max,)


class AdaptiveAvgPool1d(_AdaptiveAvgPool):
    __doc__ = _doc("Avg", 1)
    spatial_dims = 1


class AdaptiveAvgPool2d(_AdaptiveAvgPool):
    __doc__ = _doc("Avg", 2)
    spatial_dims = 2


class AdaptiveAvgPool3d(_AdaptiveAvgPool):
    __doc__ = _doc("Avg", 3)
    spatial_dims = 3


class AdaptiveMaxPool1d(_AdaptiveMaxPool):
    __doc__ = _doc("Max", 1)
    spatial_dims = 1


class AdaptiveMaxPool2d(_AdaptiveMaxPool):
    __doc__ = _doc("Max", 2)
    spatial_dims = 2


class AdaptiveMaxPool3d(_AdaptiveMaxPool):
    __doc__ = _doc("Max", 3)
    spatial_dims = 3
