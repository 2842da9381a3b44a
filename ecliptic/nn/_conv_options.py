"""What `Conv` and `ConvTranspose` share: the options they take, checked and normalised
in one place, the input check, the parameter initialisation, and the generic
constructor of their fixed-dimension classes (`Conv2d`, `ConvTranspose1d`, ...)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import jax
import jax.numpy as jnp

from .._checks import is_int
from ._arg_checks import as_padding, as_tuple, check_key, check_num_spatial_dims, check_rank
from ._init_helpers import fan_in_bound, resolve_dtype, uniform_init

IntOrSeq = Union[int, Sequence[int]]
PaddingSpec = Union[str, int, Sequence[int], Sequence[tuple[int, int]]]

# jnp.pad modes implementing PyTorch's padding modes.
PADDING_MODES = {"ZEROS": "constant", "REFLECT": "reflect", "REPLICATE": "edge", "CIRCULAR": "wrap"}
PADDING_STRINGS = ("SAME", "SAME_LOWER", "VALID")


def set_conv_options(
    layer: Any,
    num_spatial_dims: Any,
    in_channels: Any,
    out_channels: Any,
    kernel_size: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: Any,
    use_bias: Any,
    padding_mode: Any,
) -> None:
    """Check and normalise the options every convolution takes, and set them on `layer`
    (inside its `__init__`; its class name is used in messages): N-tuples for `kernel_size`,
    `stride` and `dilation`, a string or N `(low, high)` pairs for `padding`, and the
    upper-cased `padding_mode`. Raises `ValueError` naming the first bad argument."""
    name = type(layer).__name__
    n = check_num_spatial_dims(num_spatial_dims, name)
    for arg, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if not is_int(value) or value < 1:
            raise ValueError(f"{name}: {arg} must be an int >= 1; got {value!r}.")
    if not is_int(groups) or groups < 1:
        raise ValueError(f"{name}: groups must be an int >= 1; got {groups!r}.")
    for arg, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if value % groups:
            raise ValueError(
                f"{name}: groups={groups} must divide {arg}={value} (each group "
                "convolves an equal share of the channels)."
            )
    layer.num_spatial_dims = n
    layer.in_channels = in_channels
    layer.out_channels = out_channels
    layer.kernel_size = as_tuple(kernel_size, n, f"{name}: kernel_size")
    layer.stride = as_tuple(stride, n, f"{name}: stride")
    layer.padding = as_padding(padding, n, f"{name}: padding", PADDING_STRINGS)
    layer.dilation = as_tuple(dilation, n, f"{name}: dilation")
    layer.groups = groups
    layer.use_bias = bool(use_bias)
    mode = padding_mode.upper() if isinstance(padding_mode, str) else padding_mode
    if mode not in PADDING_MODES:
        raise ValueError(
            f"{name}: padding_mode must be one of {sorted(PADDING_MODES)}; got {padding_mode!r}."
        )
    layer.padding_mode = mode


def check_input(x: jax.Array, n: int, channels: int, layer: str) -> None:
    """Raise a clear error unless `x` is one unbatched, channels-first input with
    `channels` channels and `n` spatial dimensions."""
    check_rank(x, n + 1, layer, f"(channels, {n} spatial dims)")
    if x.shape[0] != channels:
        raise ValueError(
            f"{layer} expects {channels} input channels (input shape (channels, *spatial), "
            f"channels first); got shape {tuple(x.shape)}. Layers act on one unbatched "
            "example: batch with jax.vmap."
        )


def effective_kernel(kernel_size: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
    """How many input positions a dilated kernel spans, per dimension: `(3,), (2,)` -> `(5,)`."""
    return tuple(d * (k - 1) + 1 for k, d in zip(kernel_size, dilation))


def init_conv_params(
    layer: Any, key: jax.Array, fan_in: int, dtype: Any
) -> tuple[jax.Array, jax.Array | None]:
    """PyTorch's default initialisation of a convolution built by `set_conv_options`: weight
    `(out, in // groups, *kernel)` and bias `(out, 1, ..., 1)` (or `None`), both from
    U(+-1/sqrt(fan_in))."""
    check_key(key, type(layer).__name__)
    dtype = resolve_dtype(dtype)
    wkey, bkey = jax.random.split(key)
    bound = fan_in_bound(fan_in)
    out, groups, n = layer.out_channels, layer.groups, layer.num_spatial_dims
    shape = (out, layer.in_channels // groups) + layer.kernel_size
    weight = uniform_init(wkey, shape, dtype, bound)
    bias = uniform_init(bkey, (out,) + (1,) * n, dtype, bound) if layer.use_bias else None
    return weight, bias


def common_dtype(x: jax.Array, weight: jax.Array) -> Any:
    """The dtype a convolution computes in: the promotion of the input's and the weight's."""
    return jnp.result_type(x.dtype, weight.dtype)


def fixed_dims_doc(
    n: int, cls_name: str, base: str, note: str, var: str, args: str, shapes: tuple[int, ...]
) -> str:
    """The docstring of a fixed-dimension convolution class (`Conv2d`, ...): `note` ends the first
    sentence; `var`, `args` and `shapes` (channels and size in, then out) make the example."""
    c_in, s_in, c_out, s_out = shapes
    return f"""A {n}-dimensional `{base}` (`num_spatial_dims={n}`); see `{base}` for the
    arguments{note}

    **Parameters:** `weight` of shape `(out_channels, in_channels // groups, *kernel)` with
    {n} kernel dims, `bias` of shape `(out_channels{", 1" * n})`.

    **Input:** `(in_channels{", L" * n})`; **output:** `(out_channels{", L'" * n})`.

    ```python
    {var} = ecliptic.nn.{cls_name}({args}, key=jax.random.key(0))
    y = {var}(jnp.ones(({c_in}{f", {s_in}" * n})))  # shape ({c_out}{f", {s_out}" * n})
    ```
    """
