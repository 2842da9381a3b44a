"""Sliding-window pooling: `Pool`, `MaxPool1d/2d/3d` and `AvgPool1d/2d/3d`, with
PyTorch's output sizes (floor and ceil modes) and averaging divisors.

Each call is one ``lax.reduce_window`` over the (channels, *spatial) example, with a
window of 1 over the channels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, PRNGKeyArray

from .._module import Module, field
from ._arg_checks import as_padding, as_tuple, check_num_spatial_dims, check_rank
from ._scope import named_scope_call

IntOrSeq = Union[int, Sequence[int]]
PaddingSpec = Union[int, Sequence[int], Sequence[tuple[int, int]]]


def _pool_geometry(
    sizes: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[tuple[int, int]],
    use_ceil: bool,
    layer: str,
    shape: tuple[int, ...],
) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
    """Output sizes and the padding that realises them.

    Ceil mode follows PyTorch: ``ceil((size + low + high - kernel) / stride) + 1``
    windows, dropping the last one if it would start past the input and its low
    padding; the high padding grows so that the last window fits."""
    outs, pads = [], []
    for size, k, s, (lo, hi) in zip(sizes, kernel, stride, padding):
        span = size + lo + hi
        if span < k:
            raise ValueError(
                f"{layer}: the kernel {tuple(kernel)} is larger than the padded input "
                f"(input shape {shape}, padding {tuple(padding)})."
            )
        if use_ceil:
            out = -(-(span - k) // s) + 1
            if (out - 1) * s >= size + lo:
                out -= 1
        else:
            out = (span - k) // s + 1
        outs.append(out)
        pads.append((lo, hi + max((out - 1) * s + k - span, 0)))
    return tuple(outs), tuple(pads)


class Pool(Module):
    """N-dimensional pooling: reduces each (strided, padded) window with `operation`.

    **Arguments:**

    - `init`: the reduction's initial value, also the value of padding; it must be the
      identity of `operation` (e.g. `-inf` for `lax.max`, `0` for `lax.add`), which also
      makes the pool differentiable.
    - `operation`: a binary, associative function such as `lax.max` or `lax.add`.
    - `num_spatial_dims`: N.
    - `kernel_size`, `stride`: an int or N ints, each >= 1. The default stride is 1 (as
      in Equinox); PyTorch's pools default to `stride=kernel_size`.
    - `padding`: an int, N ints, or N `(low, high)` pairs; each smaller than the kernel.
    - `use_ceil`: round the number of windows up rather than down, with PyTorch's rule
      (the last window must start inside the input or its low padding).

    **Parameters:** none. **Input:** `(channels, *spatial)`; **output:** `(channels,
    *new_spatial)` with `new = (size + low + high - kernel) // stride + 1` (floor mode).

    ```python
    pool = ecliptic.nn.Pool(-jnp.inf, jax.lax.max, 2, kernel_size=2, stride=2)
    y = pool(jnp.ones((3, 8, 8)))  # shape (3, 4, 4)
    ```
    """

    init: int | float | jax.Array
    operation: Callable[[jax.Array, jax.Array], jax.Array] = field(static=True)
    num_spatial_dims: int = field(static=True)
    kernel_size: tuple[int, ...] = field(static=True)
    stride: tuple[int, ...] = field(static=True)
    padding: tuple[tuple[int, int], ...] = field(static=True)
    use_ceil: bool = field(static=True)

    def __init__(
        self,
        init: int | float | jax.Array,
        operation: Callable[[jax.Array, jax.Array], jax.Array],
        num_spatial_dims: int,
        kernel_size: IntOrSeq,
        stride: IntOrSeq = 1,
        padding: PaddingSpec = 0,
        use_ceil: bool = False,
    ):
        name = type(self).__name__
        n = check_num_spatial_dims(num_spatial_dims, name)
        if not callable(operation):
            raise TypeError(f"{name}: operation must be callable; got {operation!r}.")
        self.init = init
        self.operation = operation
        self.num_spatial_dims = n
        self.kernel_size = as_tuple(kernel_size, n, f"{name}: kernel_size")
        self.stride = as_tuple(stride, n, f"{name}: stride")
        padding = as_padding(padding, n, f"{name}: padding")  # pyright: ignore[reportAssignmentType]
        assert not isinstance(padding, str)  # no strings allowed above
        for k, (lo, hi) in zip(self.kernel_size, padding):  # pyright: ignore[reportArgumentType]
            if lo >= k or hi >= k:
                raise ValueError(
                    f"{name}: padding {padding} must be smaller than the kernel size "
                    f"{self.kernel_size} (else some windows would hold only padding)."
                )
        self.padding = padding  # pyright: ignore[reportAttributeAccessIssue]
        self.use_ceil = bool(use_ceil)

    def _init_value(self, dtype: Any) -> Any:
        return jnp.asarray(self.init, dtype)

    def _reduce(self, x: jax.Array) -> tuple[jax.Array, tuple[tuple[int, int], ...]]:
        name = type(self).__name__
        x = jnp.asarray(x)
        check_rank(
            x, self.num_spatial_dims + 1, name, f"(channels, {self.num_spatial_dims} spatial dims)"
        )
        _, pads = _pool_geometry(
            x.shape[1:],
            self.kernel_size,
            self.stride,
            self.padding,
            self.use_ceil,
            name,
            tuple(x.shape),
        )
        y = lax.reduce_window(
            x,
            self._init_value(x.dtype),
            self.operation,
            (1,) + self.kernel_size,
            (1,) + self.stride,
            ((0, 0),) + pads,
        )
        return y, pads

    @named_scope_call
    def __call__(self, x: Array, *, key: PRNGKeyArray | None = None) -> Array:
        """**Arguments:** `x` of shape `(channels, *spatial)`; `key` is ignored.
        **Returns:** shape `(channels, *new_spatial)`."""
        del key
        return self._reduce(x)[0]


class _FixedDimsPool(Pool):
    """A `Pool` with Equinox's `MaxPool2d`-style constructor: the number of spatial
    dims, the initial value and the operation are fixed by the subclass."""

    spatial_dims: ClassVar[int]
    init_and_operation: ClassVar[tuple[Any, Any]]

    def __init__(
        self,
        kernel_size: IntOrSeq,
        stride: IntOrSeq = 1,
        padding: PaddingSpec = 0,
        use_ceil: bool = False,
    ):
        init, op = type(self).init_and_operation
        n = type(self).spatial_dims
        super().__init__(init, op, n, kernel_size, stride, padding, use_ceil)


class _MaxPool(_FixedDimsPool):
    init_and_operation = (-jnp.inf, lax.max)

    def _init_value(self, dtype: Any) -> Any:
        # The identity of max for this dtype, concrete even if `init` is traced, so that
        # JAX recognises a max-pool and differentiates it.
        if jnp.issubdtype(dtype, jnp.integer):
            return np.array(jnp.iinfo(dtype).min, dtype)
        return np.array(-np.inf, dtype)


class _AvgPool(_FixedDimsPool):
    init_and_operation = (0, lax.add)

    def _init_value(self, dtype: Any) -> Any:
        return np.array(0, dtype)

    @named_scope_call
    def __call__(self, x: Array, *, key: PRNGKeyArray | None = None) -> Array:
        """**Arguments:** `x` of shape `(channels, *spatial)`; `key` is ignored.
        **Returns:** shape `(channels, *new_spatial)`."""
        del key
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            x = x.astype(jnp.result_type(float))
        total, pads = self._reduce(x)
        # PyTorch (count_include_pad=True) divides by the window's size clipped to the
        # padded input: the whole kernel, except for windows that ceil mode adds past
        # the high padding.
        counts = []
        for size, k, s, (lo, _), (_, hi), out in zip(
            x.shape[1:], self.kernel_size, self.stride, pads, self.padding, total.shape[1:]
        ):
            starts = np.arange(out) * s - lo
            counts.append(np.minimum(starts + k, size + hi) - starts)
        if all((c == k).all() for c, k in zip(counts, self.kernel_size)):
            return total / np.array(math.prod(self.kernel_size), total.dtype)
        divisor = counts[0]
        for c in counts[1:]:
            divisor = np.multiply.outer(divisor, c)
        return total / divisor.astype(total.dtype)


_POOL_ARGS = """
    **Arguments:**

    - `kernel_size`, `stride`: an int or {n} ints. The default stride is 1 (Equinox's
      convention); PyTorch's default is `stride=kernel_size`, so pass it explicitly
      when porting.
    - `padding`: an int, {n} ints, or {n} `(low, high)` pairs, each smaller than the
      kernel.
    - `use_ceil`: PyTorch's `ceil_mode`.

    **Parameters:** none. **Input:** `(channels{dims})`; **output:** `(channels{outs})`."""


def _max_doc(n: int) -> str:
    return f"""{n}-dimensional max pooling, as PyTorch's `nn.MaxPool{n}d`; padding never wins
    the max.
{_POOL_ARGS.format(n=n, dims=", L" * n, outs=", L'" * n)}

    ```python
    pool = ecliptic.nn.MaxPool{n}d(kernel_size=2, stride=2)
    y = pool(jnp.ones((3{", 8" * n})))  # shape (3{", 4" * n})
    ```
    """


def _avg_doc(n: int) -> str:
    return f"""{n}-dimensional average pooling, as PyTorch's `nn.AvgPool{n}d` with
    `count_include_pad=True`: padding counts as zeros and every window is divided by the
    full kernel size (windows that ceil mode adds past the padding by their clipped size,
    as PyTorch does).
{_POOL_ARGS.format(n=n, dims=", L" * n, outs=", L'" * n)}

    ```python
    pool = ecliptic.nn.AvgPool{n}d(kernel_size=2, stride=2)
    y = pool(jnp.ones((3{", 8" * n})))  # shape (3{", 4" * n})
    ```
    """


class MaxPool1d(_MaxPool):
    __doc__ = _max_doc(1)
    spatial_dims = 1


class MaxPool2d(_MaxPool):
    __doc__ = _max_doc(2)
    spatial_dims = 2


class MaxPool3d(_MaxPool):
    __doc__ = _max_doc(3)
    spatial_dims = 3


class AvgPool1d(_AvgPool):
    __doc__ = _avg_doc(1)
    spatial_dims = 1


class AvgPool2d(_AvgPool):
    __doc__ = _avg_doc(2)
    spatial_dims = 2


class AvgPool3d(_AvgPool):
    __doc__ = _avg_doc(3)
    spatial_dims = 3
