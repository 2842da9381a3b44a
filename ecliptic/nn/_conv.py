"""Convolutions: `Conv` and `Conv1d/2d/3d`, plus helpers shared with `_conv_transpose`.

Every call is one ``lax.conv_general_dilated`` on the example with a batch axis of 1
added; weights already have the (out, in/groups, *kernel) layout XLA expects (and that
PyTorch uses), so no transposes are needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Union

import jax
import jax.numpy as jnp
from jax import lax

from .._checks import is_int
from .._module import Module, field
from ._arg_checks import as_padding, as_tuple, check_key, check_rank, explain_parameter_shapes
from ._init_helpers import fan_in_bound, resolve_dtype, uniform_init

IntOrSeq = Union[int, Sequence[int]]
PaddingSpec = Union[str, int, Sequence[int], Sequence[tuple[int, int]]]

# jnp.pad modes implementing PyTorch's padding modes.
PADDING_MODES = {"ZEROS": "constant", "REFLECT": "reflect", "REPLICATE": "edge", "CIRCULAR": "wrap"}
PADDING_STRINGS = ("SAME", "SAME_LOWER", "VALID")


def check_num_spatial_dims(n: Any, layer: str) -> int:
    if not is_int(n) or n < 1:
        raise ValueError(f"{layer}: num_spatial_dims must be an int >= 1; got {n!r}.")
    return n


def check_channels(in_channels: Any, out_channels: Any, groups: Any, layer: str) -> None:
    """Positive channel counts and a group count dividing both (as PyTorch requires)."""
    for name, value in (
        ("in_channels", in_channels),
        ("out_channels", out_channels),
        ("groups", groups),
    ):
        if not is_int(value) or value < 1:
            raise ValueError(f"{layer}: {name} must be an int >= 1; got {value!r}.")
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if value % groups:
            raise ValueError(
                f"{layer}: groups={groups} must divide {name}={value} (each group "
                "convolves an equal share of the channels)."
            )


def check_padding_mode(padding_mode: Any, layer: str) -> str:
    mode = padding_mode.upper() if isinstance(padding_mode, str) else padding_mode
    if mode not in PADDING_MODES:
        raise ValueError(
            f"{layer}: padding_mode must be one of {sorted(PADDING_MODES)}; got {padding_mode!r}."
        )
    return mode


def check_input(x: jax.Array, n: int, channels: int, layer: str) -> None:
    """An unbatched, channels-first input with the expected number of channels."""
    check_rank(x, n + 1, layer, f"(channels, {n} spatial dims)")
    if x.shape[0] != channels:
        raise ValueError(
            f"{layer} expects {channels} input channels (input shape (channels, *spatial), "
            f"channels first); got shape {tuple(x.shape)}. Layers act on one unbatched "
            "example: batch with jax.vmap."
        )


def effective_kernel(kernel_size: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
    """How many input positions a dilated kernel spans."""
    return tuple(d * (k - 1) + 1 for k, d in zip(kernel_size, dilation))


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


def init_params(
    key: jax.Array,
    weight_shape: tuple[int, ...],
    fan_in: int,
    out_channels: int,
    n: int,
    use_bias: bool,
    dtype: Any,
) -> tuple[jax.Array, jax.Array | None]:
    """PyTorch's default: weight and bias from U(+-1/sqrt(fan_in))."""
    wkey, bkey = jax.random.split(key)
    bound = fan_in_bound(fan_in)
    weight = uniform_init(wkey, weight_shape, dtype, bound)
    bias = uniform_init(bkey, (out_channels,) + (1,) * n, dtype, bound) if use_bias else None
    return weight, bias


def common_dtype(x: jax.Array, weight: jax.Array) -> Any:
    return jnp.result_type(x.dtype, weight.dtype)


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
    weight: jax.Array
    bias: jax.Array | None
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
        key: jax.Array,
    ):
        name = type(self).__name__
        n = check_num_spatial_dims(num_spatial_dims, name)
        check_channels(in_channels, out_channels, groups, name)
        self.num_spatial_dims = n
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = as_tuple(kernel_size, n, f"{name}: kernel_size")
        self.stride = as_tuple(stride, n, f"{name}: stride")
        self.padding = as_padding(padding, n, f"{name}: padding", PADDING_STRINGS)
        self.dilation = as_tuple(dilation, n, f"{name}: dilation")
        self.groups = groups
        self.use_bias = bool(use_bias)
        self.padding_mode = check_padding_mode(padding_mode, name)
        check_key(key, name)
        fan_in = in_channels // groups * math.prod(self.kernel_size)
        self.weight, self.bias = init_params(
            key,
            (out_channels, in_channels // groups) + self.kernel_size,
            fan_in,
            out_channels,
            n,
            use_bias,
            resolve_dtype(dtype),
        )

    def _pads(self, sizes: Sequence[int]) -> tuple[tuple[int, int], ...]:
        if self.padding == "VALID":
            return ((0, 0),) * self.num_spatial_dims
        if isinstance(self.padding, str):
            spans = effective_kernel(self.kernel_size, self.dilation)
            return same_pads(sizes, spans, self.stride, self.padding == "SAME_LOWER")
        return self.padding

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
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


def _fixed_dims(n: int, cls_name: str) -> str:
    return f"""A {n}-dimensional `Conv` (`num_spatial_dims={n}`); see `Conv` for the arguments.

    **Parameters:** `weight` of shape `(out_channels, in_channels // groups, *kernel)` with
    {n} kernel dims, `bias` of shape `(out_channels{", 1" * n})`.

    **Input:** `(in_channels{", L" * n})`; **output:** `(out_channels{", L'" * n})`.

    ```python
    conv = ecliptic.nn.{cls_name}(4, 8, kernel_size=3, key=jax.random.key(0))
    y = conv(jnp.ones((4{", 10" * n})))  # shape (8{", 8" * n})
    ```
    """


class Conv1d(Conv):
    __doc__ = _fixed_dims(1, "Conv1d")

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
        key: jax.Array,
    ):
        super().__init__(
            1,
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            use_bias,
            padding_mode,
            dtype,
            key=key,
        )


class Conv2d(Conv):
    __doc__ = _fixed_dims(2, "Conv2d")

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
        key: jax.Array,
    ):
        super().__init__(
            2,
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            use_bias,
            padding_mode,
            dtype,
            key=key,
        )


class Conv3d(Conv):
    __doc__ = _fixed_dims(3, "Conv3d")

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
        key: jax.Array,
    ):
        super().__init__(
            3,
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            use_bias,
            padding_mode,
            dtype,
            key=key,
        )
