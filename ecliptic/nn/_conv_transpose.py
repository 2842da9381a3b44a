"""Transposed convolutions: `ConvTranspose` and `ConvTranspose1d/2d/3d`.

A transposed convolution is computed as ONE ordinary convolution of the input dilated
by ``stride`` (``lhs_dilation``), padded by ``dilation * (kernel - 1) - padding`` on
each side (plus ``output_padding`` at the end). That convolution uses the weight as
stored, so the stored weight is the spatially flipped, per-group in/out-swapped version
of PyTorch's ``ConvTranspose`` weight; `conv_transpose_weight_from_torch` and
`conv_transpose_weight_to_torch` (exported by `ecliptic.nn`) convert.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, PRNGKeyArray

from .._module import Module, field
from ._arg_checks import as_tuple
from ._conv_options import (
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


def _flip_spatial(w: Any) -> Any:
    # Indexing rather than jnp.flip keeps NumPy inputs NumPy.
    return w[(slice(None), slice(None)) + (slice(None, None, -1),) * (w.ndim - 2)]


def conv_transpose_weight_from_torch(weight: Any, groups: int = 1) -> Any:
    """Convert a PyTorch ``ConvTranspose`` weight to `ConvTranspose`'s layout.

    Within each group the two channel axes are swapped, then every spatial axis is
    flipped: ``(in, out // groups, *k)`` -> ``(out, in // groups, *k)``.

    **Arguments:**

    - `weight`: PyTorch's weight, a NumPy or JAX array.
    - `groups`: the layer's `groups`.

    **Returns:** the weight for `ConvTranspose.weight` (NumPy in, NumPy out).

    ```python
    layer = ecliptic.tree_at(lambda l: l.weight, layer,
                             ecliptic.nn.conv_transpose_weight_from_torch(torch_w, layer.groups))
    ```
    """
    cin, out_g, *k = weight.shape
    in_g = cin // groups
    w = weight.reshape(groups, in_g, out_g, *k).swapaxes(1, 2)
    return _flip_spatial(w.reshape(groups * out_g, in_g, *k))


def conv_transpose_weight_to_torch(weight: Any, groups: int = 1) -> Any:
    """Convert a `ConvTranspose` weight to PyTorch's ``ConvTranspose`` layout: the
    inverse of `conv_transpose_weight_from_torch`.

    **Arguments:** `weight`, of shape ``(out, in // groups, *k)``; `groups`, the
    layer's `groups`.

    **Returns:** the weight of shape ``(in, out // groups, *k)``.

    ```python
    torch_w = ecliptic.nn.conv_transpose_weight_to_torch(layer.weight, layer.groups)
    ```
    """
    cout, in_g, *k = weight.shape
    out_g = cout // groups
    w = weight.reshape(groups, out_g, in_g, *k).swapaxes(1, 2)
    return _flip_spatial(w.reshape(groups * in_g, out_g, *k))


def _fold_circular(y: jax.Array, axis: int, size: int, offset: int) -> jax.Array:
    """Sum ``y`` along ``axis`` onto ``size`` positions, position j going to
    ``(j - offset) mod size``: the adjoint of circular padding by ``offset`` at the start.
    Done with one pad and a reshape-sum, not a loop over positions."""
    shift = (-offset) % size
    total = shift + y.shape[axis]
    reps = -(-total // size)
    pad = [(0, 0)] * y.ndim
    pad[axis] = (shift, reps * size - total)
    y = jnp.pad(y, pad)
    y = y.reshape(y.shape[:axis] + (reps, size) + y.shape[axis + 1 :])
    return y.sum(axis=axis)


class ConvTranspose(Module):
    """An N-dimensional transposed convolution, as PyTorch's ``nn.ConvTransposeNd``.

    It is the adjoint (gradient) of a `Conv` with the same kernel size, stride, padding
    and dilation, mapping `in_channels` back to `out_channels`.

    **Arguments:**

    - `num_spatial_dims`: N. `in_channels`, `out_channels`: channel counts.
    - `kernel_size`, `stride`, `dilation`: an int or N ints, each >= 1.
    - `padding`: the padding of the corresponding forward convolution, which removes
      that much from each output side: an int, N ints, N `(low, high)` pairs, `"VALID"`
      (none), or `"SAME"`/`"SAME_LOWER"`: output size `stride * size - output_padding`
      (as in Equinox): the adjoint of the "SAME" convolution of an input that long (an
      odd total padding trims the extra element from the end for "SAME", from the start
      for "SAME_LOWER").
    - `output_padding`: extra size added at the end of each output dimension (to pick
      among the sizes a strided convolution maps to the same size; with "SAME" padding,
      the size taken off `stride * size` instead); an int or N ints,
      each smaller than the stride or the dilation (as PyTorch requires).
    - `groups`: must divide both channel counts. `use_bias`: whether to add a bias.
    - `padding_mode`: `"ZEROS"`, or `"CIRCULAR"` (the adjoint of a circularly padded
      convolution: what falls off one side wraps onto the other). PyTorch only has
      `"ZEROS"`; `"REFLECT"`/`"REPLICATE"` raise `NotImplementedError`.
    - `dtype`: parameter dtype (float32 by default). `key`: a PRNG key (keyword only).

    **Parameters:** `weight` of shape `(out_channels, in_channels // groups,
    *kernel_size)`, `bias` of shape `(out_channels, 1, ..., 1)` (or `None`), both from
    U(+-1/sqrt(fan_in)) with PyTorch's `fan_in = out_channels // groups *
    prod(kernel_size)`. The weight is in the flipped convention of a transposed
    convolution written as an input-dilated convolution. From PyTorch's weight `wt` of
    shape `(in, out // groups, *k)`: `weight = conv_transpose_weight_from_torch(wt,
    groups)`, i.e. `wt.reshape(g, in // g, out // g, *k).swapaxes(1, 2).reshape(out,
    in // g, *k)` flipped along every spatial axis; `conv_transpose_weight_to_torch` is
    the inverse. The bias is PyTorch's reshaped to `(out, 1, ..., 1)`.

    **Input:** `(in_channels, *spatial)`; **output:** `(out_channels, *new_spatial)` with
    `new = (size - 1) * stride - low - high + dilation * (kernel - 1) + 1 +
    output_padding`.

    ```python
    up = ecliptic.nn.ConvTranspose(2, 8, 3, kernel_size=2, stride=2, key=jax.random.key(0))
    y = up(jnp.ones((8, 5, 5)))  # shape (3, 10, 10)
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
    output_padding: tuple[int, ...] = field(static=True)
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
        output_padding: IntOrSeq = 0,
        dilation: IntOrSeq = 1,
        groups: int = 1,
        use_bias: bool = True,
        padding_mode: str = "ZEROS",
        dtype: Any = None,
        *,
        key: PRNGKeyArray,
    ):
        # The positional order is Equinox's: `padding` before `output_padding` here (as
        # in PyTorch), the other way round in ConvTranspose1d/2d/3d.
        set_conv_options(
            self, num_spatial_dims, in_channels, out_channels, kernel_size, stride, padding,
            dilation, groups, use_bias, padding_mode,
        )  # fmt: skip
        name = type(self).__name__
        n = self.num_spatial_dims
        self.output_padding = as_tuple(output_padding, n, f"{name}: output_padding", minimum=0)
        for a, s, d in zip(self.output_padding, self.stride, self.dilation):
            if a >= max(s, d):
                raise ValueError(
                    f"{name}: output_padding {self.output_padding} must be smaller than "
                    f"the stride {self.stride} or the dilation {self.dilation} "
                    "(elementwise)."
                )
        if self.padding_mode in ("REFLECT", "REPLICATE"):
            raise NotImplementedError(
                f"{name}: padding_mode={padding_mode!r} has no transposed counterpart; "
                "use 'ZEROS' or 'CIRCULAR'."
            )
        fan_in = out_channels // groups * math.prod(self.kernel_size)
        self.weight, self.bias = init_conv_params(self, key, fan_in, dtype)

    def _forward_pads(
        self, in_sizes: Sequence[int]
    ) -> tuple[tuple[tuple[int, int], ...], tuple[int, ...]]:
        """The padding (low, high) of the forward convolution this is the transpose of,
        and the extra size added at the end of each output dimension.

        For "SAME"/"SAME_LOWER" (as in Equinox) the forward convolution is the "SAME" one
        whose input has size ``stride * size - output_padding``: its padding, and the
        extra size that makes the output exactly that long."""
        n = self.num_spatial_dims
        if self.padding == "VALID":
            return ((0, 0),) * n, self.output_padding
        if not isinstance(self.padding, str):
            return self.padding, self.output_padding
        pads, extras = [], []
        spans = effective_kernel(self.kernel_size, self.dilation)
        for size, span, s, a in zip(in_sizes, spans, self.stride, self.output_padding):
            target = size * s - a
            total = max((size - 1) * s + span - target, 0)
            lo = (total + 1) // 2 if self.padding == "SAME_LOWER" else total // 2
            pads.append((lo, total - lo))
            extras.append(target - ((size - 1) * s - total + span))
        return tuple(pads), tuple(extras)

    @named_scope_call
    def __call__(self, x: Array, *, key: PRNGKeyArray | None = None) -> Array:
        """**Arguments:** `x` of shape `(in_channels, *spatial)`; `key` is ignored.
        **Returns:** shape `(out_channels, *new_spatial)`."""
        del key
        name = type(self).__name__
        x = jnp.asarray(x)
        n = self.num_spatial_dims
        check_input(x, n, self.in_channels, name)
        spans = effective_kernel(self.kernel_size, self.dilation)
        fwd, extras = self._forward_pads(x.shape[1:])
        sizes = tuple(
            (size - 1) * s - lo - hi + span + a
            for size, s, (lo, hi), span, a in zip(x.shape[1:], self.stride, fwd, spans, extras)
        )
        if any(size < 0 for size in sizes):
            raise ValueError(
                f"{name}: padding {fwd} leaves an empty output (spatial shape {sizes}) "
                f"for input shape {tuple(x.shape)}."
            )
        circular = self.padding_mode == "CIRCULAR"
        # Circular: compute the unpadded (full) transposed convolution, then wrap the
        # parts that correspond to the forward convolution's padding around.
        conv_fwd: Sequence[tuple[int, int]] = ((0, 0),) * n if circular else fwd
        pads = tuple(
            (span - 1 - lo, span - 1 - hi + a) for span, (lo, hi), a in zip(spans, conv_fwd, extras)
        )
        dtype = common_dtype(x, self.weight)
        y = lax.conv_general_dilated(
            x[None].astype(dtype),
            self.weight.astype(dtype),
            window_strides=(1,) * n,
            padding=pads,
            lhs_dilation=self.stride,
            rhs_dilation=self.dilation,
            feature_group_count=self.groups,
        )[0]
        if circular:
            for axis, (size, (lo, _)) in enumerate(zip(sizes, fwd), start=1):
                y = _fold_circular(y, axis, size, lo)
        if self.bias is not None:
            y = y + self.bias.astype(dtype)
        return y


class _FixedDimsConvTranspose(ConvTranspose):
    """`ConvTranspose` with `num_spatial_dims` fixed by the subclass (`ConvTranspose1d`,
    ...); `output_padding` comes before `padding` in the positional order, as in Equinox."""

    spatial_dims: ClassVar[int]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrSeq,
        stride: IntOrSeq = 1,
        output_padding: IntOrSeq = 0,
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
            output_padding, dilation, groups, use_bias, padding_mode, dtype, key=key,
        )  # fmt: skip


def _doc(n: int) -> str:
    note = """ and the weight layout (convert PyTorch weights with
    `conv_transpose_weight_from_torch`). As in Equinox, `output_padding` comes before
    `padding` when they are passed by position (pass them by name to be clear)."""
    args = "4, 2, kernel_size=2, stride=2"
    return fixed_dims_doc(n, f"ConvTranspose{n}d", "ConvTranspose", note, "up", args, (4, 5, 2, 10))


class ConvTranspose1d(_FixedDimsConvTranspose):
    __doc__ = _doc(1)
    spatial_dims = 1


class ConvTranspose2d(_FixedDimsConvTranspose):
    __doc__ = _doc(2)
    spatial_dims = 2


class ConvTranspose3d(_FixedDimsConvTranspose):
    __doc__ = _doc(3)
    spatial_dims = 3
