"""Convolutions: `Conv` and `Conv1d/2d/3d` (options shared with `ConvTranspose` live in
`_conv_options`).

Every call is one ``lax.conv_general_dilated`` on the example with a batch axis of 1
added; weights already have the (out, in/groups, *kernel) layout XLA expects (and that
PyTorch uses), so no transposes are needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, PRNGKeyArray

from .._module import Module, field
from ._arg_checks import explain_parameter_shapes
from ._conv_options import (
    PADDING_MODES,
    IntOrSeq,
    PaddingSpec,
    check_input,
    common_dtype,
    effective_kernel,
    fixed_dims_doc,
    init_conv_params,
    set_conv_options,
)
from ._scope import named_scope_call


def same_pads(
    sizes: Sequence[int], spans: Sequence[int], strides: Sequence[int], lower: bool
) -> tuple[tuple[int, int], ...]:
    """The padding giving ``ceil(size / stride)`` outputs; an odd total puts the extra
    element at the end ("SAME", as PyTorch's padding="same" does for stride 1) or at the
    start ("SAME_LOWER")."""
    pads = []
    for size, span, stride in zip(sizes, spans, strides):
        out = -(-size // stride)
        total = max((out - 1) * stride + span - size, 0)
        lo = (total + 1) // 2 if lower else total // 2
        pads.append((lo, total - lo))
    return tuple(pads)


class Conv(Module):
    """An N-dimensional convolution (cross-correlation), as PyTorch's ``nn.ConvNd``.

    **Arguments:**

    - `num_spatial_dims`: N, the number of spatial dimensions.
    - `in_channels`, `out_channels`: channel counts.
    - `kernel_size`, `stride`, `dilation`: an int or N ints, each >= 1.
    - `padding`: an int or N ints (the same before and after), N `(low, high)` pairs,
      `"VALID"` (none), `"SAME"` (output size `ceil(size / stride)`; an odd total puts
      the extra element at the end, as PyTorch's `padding="same"` does for stride 1) or
      `"SAME_LOWER"` (the extra element at the start).
    - `groups`: splits the channels into groups convolved separately; must divide
      `in_channels` and `out_channels`.
    - `use_bias`: whether to add a bias.
    - `padding_mode`: `"ZEROS"`, `"REFLECT"`, `"REPLICATE"` or `"CIRCULAR"` (PyTorch's
      `zeros`, `reflect`, `replicate`, `circular`).
    - `dtype`: parameter dtype (float32 by default, float64 in x64 mode).
    - `key`: a PRNG key (keyword only).

    **Parameters:** `weight` of shape `(out_channels, in_channels // groups, *kernel_size)`
    (PyTorch's layout) and `bias` of shape `(out_channels, 1, ..., 1)` (or `None`), both
    from U(+-1/sqrt(fan_in)) with `fan_in = in_channels // groups * prod(kernel_size)`.
    From PyTorch: `weight = torch_weight`, `bias = torch_bias.reshape(-1, *[1] * N)`.

    **Input:** `(in_channels, *spatial)`; **output:** `(out_channels, *new_spatial)` with
    `new = (size + low + high - dilation * (kernel - 1) - 1) // stride + 1`.

    ```python
    conv = ecliptic.nn.Conv(2, 3, 8, kernel_size=3, padding=1, key=jax.random.key(0))
    y = conv(jnp.ones((3, 16, 16)))  # shape (8, 16, 16)
    ```
    """

    num_spatial_dims: int = field(static=True)
    weight: Array
    bias: Array | None
    in_channels: int = field(static=True)
    out_channels: int = field(static=True)
    kernel_size: tuple[int, ...] = field(static=True)
    stride: tuple[int, ...] = field(static=True)
    padding: str | tuple[tuple[int, int], ...] = field(static=True)
    dilation: tuple[int, ...] = field(static=True)
    groups: int = field(static=True)
    use_bias: bool = field(static=True)
    padding_mode: str = field(static=True)

    def __init__(
        self,
        num_spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrSeq,
        stride: IntOrSeq = 1,
        padding: PaddingSpec = 0,
        dilation: IntOrSeq = 1,
        groups: int = 1,
        use_bias: bool = True,
        padding_mode: str = "ZEROS",
        dtype: Any = None,
        *,
        key: PRNGKeyArray,
    ):
        set_conv_options(
            self, num_spatial_dims, in_channels, out_channels, kernel_size, stride, padding,
            dilation, groups, use_bias, padding_mode,
        )  # fmt: skip
        fan_in = in_channels // groups * math.prod(self.kernel_size)
        self.weight, self.bias = init_conv_params(self, key, fan_in, dtype)

    def _pads(self, sizes: Sequence[int]) -> tuple[tuple[int, int], ...]:
        if self.padding == "VALID":
            return ((0, 0),) * self.num_spatial_dims
        if isinstance(self.padding, str):
            spans = effective_kernel(self.kernel_size, self.dilation)
            return same_pads(sizes, spans, self.stride, self.padding == "SAME_LOWER")
        return self.padding

    @named_scope_call
    def __call__(self, x: Array, *, key: PRNGKeyArray | None = None) -> Array:
        """**Arguments:** `x` of shape `(in_channels, *spatial)`; `key` is ignored.
        **Returns:** shape `(out_channels, *new_spatial)`."""
        del key
        name = type(self).__name__
        x = jnp.asarray(x)
        n = self.num_spatial_dims
        check_input(x, n, self.in_channels, name)
        pads = self._pads(x.shape[1:])
        spans = effective_kernel(self.kernel_size, self.dilation)
        padded = tuple(s + lo + hi for s, (lo, hi) in zip(x.shape[1:], pads))
        if any(p < span for p, span in zip(padded, spans)):
            raise ValueError(
                f"{name}: the kernel {self.kernel_size} (dilation {self.dilation}) spans "
                f"{spans} positions, more than the padded input's spatial shape {padded} "
                f"(input shape {tuple(x.shape)}, padding {pads})."
            )
        if self.padding_mode != "ZEROS" and any(p != (0, 0) for p in pads):
            # Non-zero modes pad explicitly, then convolve without padding.
            x = jnp.pad(x, ((0, 0),) + tuple(pads), mode=PADDING_MODES[self.padding_mode])
            pads = ((0, 0),) * n
        dtype = common_dtype(x, self.weight)
        try:
            y = lax.conv_general_dilated(
                x[None].astype(dtype),
                self.weight.astype(dtype),
                window_strides=self.stride,
                padding=pads,
                rhs_dilation=self.dilation,
                feature_group_count=self.groups,
            )[0]
            if self.bias is not None:
                y = y + self.bias.astype(dtype)
        except (TypeError, ValueError) as error:
            out, kernel = self.out_channels, tuple(self.kernel_size)
            expected = [
                ("weight", self.weight, (out, self.in_channels // self.groups, *kernel)),
                ("bias", self.bias, (out,) + (1,) * n),
            ]
            explain_parameter_shapes(name, expected, error)
            raise
        return y


class _FixedDimsConv(Conv):
    """`Conv` with `num_spatial_dims` fixed by the subclass (`Conv1d`, ...)."""

    spatial_dims: ClassVar[int]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrSeq,
        stride: IntOrSeq = 1,
        padding: PaddingSpec = 0,
        dilation: IntOrSeq = 1,
        groups: int = 1,
        use_bias: bool = True,
        padding_mode: str = "ZEROS",
        dtype: Any = None,
        *,
        key: PRNGKeyArray,
    ):
        super().__init__(
            type(self).spatial_dims, in_channels, out_channels, kernel_size, stride, padding,
            dilation, groups, use_bias, padding_mode, dtype, key=key,
        )  # fmt: skip


def _doc(n: int) -> str:
    return fixed_dims_doc(n, f"Conv{n}d", "Conv", ".", "conv", "4, 8, kernel_size=3", (4, 10, 8, 8))


class Conv1d(_FixedDimsConv):
    __doc__ = _doc(1)
    spatial_dims = 1


class Conv2d(_FixedDimsConv):
    __doc__ = _doc(2)
    spatial_dims = 2


class Conv3d(_FixedDimsConv):
    __doc__ = _doc(3)
    spatial_dims = 3
