"""The bad-input catalogue: nn linear layers (Linear, MLP, Identity, Lambda, ...),
convolutions and pooling. See bad_input_helpers.py for what each row asserts."""

# Each row passes a wrong type on purpose to check the error: argument types are not checked.
# pyright: reportArgumentType=false, reportCallIssue=false

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import pytest
from bad_input_helpers import check_misuse, misuse
from bad_input_layers import KEY, VMAP_HINT, call, layer

import ecliptic as ec
from ecliptic import nn

LINEAR_CASES = [
    misuse(
        "Linear/wrong-features",
        call("linear", jnp.ones(5)),
        ValueError,
        r"Linear expects an input of shape \(3,\); got shape \(5,\)" + VMAP_HINT,
    ),
    misuse(
        "Linear/batched-input",
        call("linear", jnp.ones((2, 3))),
        ValueError,
        r"Linear expects an input of rank 1 .*got shape \(2, 3\)" + VMAP_HINT,
    ),
    misuse(
        "Linear/scalar-input",
        call("linear", jnp.ones(())),
        ValueError,
        r"Linear expects an input of rank 1 \(\(in_features,\) = \(3,\)\); got shape \(\)",
    ),
    misuse(
        "Linear/vector-into-scalar-layer",
        lambda: ec.filter_eval_shape(nn.Linear, "scalar", 2, key=KEY)(jnp.ones(3)),
        ValueError,
        r"Linear expects an input of rank 0 \(a scalar, as in_features='scalar'\)",
    ),
    misuse(
        "Linear/negative-features",
        lambda: nn.Linear(-1, 2, key=KEY),
        ValueError,
        r"Linear: in_features must be >= 0 \(or 'scalar'\); got -1",
    ),
    misuse(
        "Linear/float-features",
        lambda: nn.Linear(2.5, 2, key=KEY),
        TypeError,
        r"Linear: in_features must be an int >= 0 or 'scalar'; got 2\.5",
    ),
    misuse(
        "Linear/no-key",
        lambda: nn.Linear(2, 2),
        TypeError,
        r"missing 1 required keyword-only argument: 'key'",
    ),
    misuse(
        "Linear/int-key",
        lambda: nn.Linear(2, 2, key=0),
        TypeError,
        r"Linear: key must be a JAX PRNG key; got int",
    ),
    misuse(
        "Linear/float-array-key",
        lambda: nn.Linear(2, 2, key=jnp.ones(2)),
        TypeError,
        r"Linear: key must be a JAX PRNG key .*dtype float32 and shape \(2,\)",
    ),
    misuse(
        "Linear/int-dtype",
        lambda: nn.Linear(2, 2, dtype=jnp.int32, key=KEY),
        TypeError,
        r"dtype must be a floating-point or complex dtype; got int32",
    ),
    misuse(
        "MLP/negative-depth",
        lambda: nn.MLP(2, 2, 4, -1, key=KEY),
        ValueError,
        r"MLP: depth must be an int >= 0; got -1",
    ),
    misuse(
        "MLP/wrong-input-size",
        call("mlp", jnp.ones(3)),
        ValueError,
        r"Linear expects an input of shape \(2,\); got shape \(3,\)",
    ),
    misuse(
        "MLP/activation-a-string",
        lambda: nn.MLP(2, 2, 4, 1, activation="relu", key=KEY),
        TypeError,
        r"MLP: activation and final_activation must be callable",
    ),
    misuse(
        "MLP/scalar-width",
        lambda: nn.MLP(2, 2, "scalar", 1, key=KEY),
        ValueError,
        r"MLP: width_size must be a positive int, not 'scalar'",
    ),
    misuse(
        "Sequential/not-a-list",
        lambda: nn.Sequential(layer("linear")),
        TypeError,
        r"Sequential\(layers\) takes a list or tuple of layers; got Linear",
    ),
    misuse(
        "Sequential/non-callable-layer",
        lambda: nn.Sequential([layer("linear"), 3]),
        TypeError,
        r"Sequential: layers\[1\] is not callable: 3",
    ),
    misuse(
        "Sequential/index-out-of-range",
        lambda: nn.Sequential([layer("linear")])[3],
        IndexError,
        r"Sequential index 3 is out of range for its 1 layer\(s\)",
    ),
    misuse(
        "Lambda/not-callable",
        lambda: nn.Lambda(3),
        TypeError,
        r"Lambda\(fn\): fn must be callable; got 3",
    ),
]

CONV_CASES = [
    misuse(
        "Conv2d/wrong-channels",
        call("conv", jnp.ones((2, 8, 8))),
        ValueError,
        r"Conv2d expects 3 input channels \(input shape \(channels, \*spatial\), channels "
        r"first\); got shape \(2, 8, 8\)",
    ),
    misuse(
        "Conv2d/batched-input",
        call("conv", jnp.ones((5, 3, 8, 8))),
        ValueError,
        r"Conv2d expects an input of rank 3 .*got shape \(5, 3, 8, 8\)" + VMAP_HINT,
    ),
    misuse(
        "Conv2d/missing-channel-axis",
        call("conv", jnp.ones((8, 8))),
        ValueError,
        r"Conv2d expects an input of rank 3 \(\(channels, 2 spatial dims\)\); got shape "
        r"\(8, 8\)",
    ),
    misuse(
        "Conv2d/input-smaller-than-kernel",
        call("conv", jnp.ones((3, 2, 2))),
        ValueError,
        r"Conv2d: the kernel \(3, 3\) .*more than the padded input's spatial shape \(2, 2\)",
    ),
    misuse(
        "Conv2d/groups-do-not-divide",
        lambda: nn.Conv2d(3, 4, 3, groups=2, key=KEY),
        ValueError,
        r"Conv2d: groups=2 must divide in_channels=3",
    ),
    misuse(
        "Conv2d/kernel-wrong-length",
        lambda: nn.Conv2d(3, 4, (3, 3, 3), key=KEY),
        ValueError,
        r"Conv2d: kernel_size must be an int or a sequence of 2 ints; got "
        r"\(3, 3, 3\)",
    ),
    misuse(
        "Conv2d/zero-kernel",
        lambda: nn.Conv2d(3, 4, 0, key=KEY),
        ValueError,
        r"Conv2d: kernel_size must be >= 1; got 0",
    ),
    misuse(
        "Conv2d/float-kernel",
        lambda: nn.Conv2d(3, 4, 2.5, key=KEY),
        TypeError,
        r"Conv2d: kernel_size must be an int or a sequence of 2 ints; got 2\.5",
    ),
    misuse(
        "Conv2d/zero-stride",
        lambda: nn.Conv2d(3, 4, 3, stride=0, key=KEY),
        ValueError,
        r"Conv2d: stride must be >= 1; got 0",
    ),
    misuse(
        "Conv2d/zero-dilation",
        lambda: nn.Conv2d(3, 4, 3, dilation=0, key=KEY),
        ValueError,
        r"Conv2d: dilation must be >= 1; got 0",
    ),
    misuse(
        "Conv2d/unknown-padding-string",
        lambda: nn.Conv2d(3, 4, 3, padding="FULL", key=KEY),
        ValueError,
        r"Conv2d: padding string must be one of 'SAME', 'SAME_LOWER', 'VALID'; "
        r"got 'FULL'",
    ),
    misuse(
        "Conv2d/negative-padding",
        lambda: nn.Conv2d(3, 4, 3, padding=-1, key=KEY),
        ValueError,
        r"Conv2d: padding must be >= 0; got -1",
    ),
    misuse(
        "Conv2d/too-few-padding-pairs",
        lambda: nn.Conv2d(3, 4, 3, padding=((1, 1),), key=KEY),
        ValueError,
        r"Conv2d: padding must be an int, 2 ints, or 2 \(low, high\) pairs of ints",
    ),
    misuse(
        "Conv2d/unknown-padding_mode",
        lambda: nn.Conv2d(3, 4, 3, padding_mode="MIRROR", key=KEY),
        ValueError,
        r"Conv2d: padding_mode must be one of \['CIRCULAR', 'REFLECT', 'REPLICATE', "
        r"'ZEROS'\]; got 'MIRROR'",
    ),
    misuse(
        "Conv/zero-spatial-dims",
        lambda: nn.Conv(0, 3, 4, 3, key=KEY),
        ValueError,
        r"Conv: num_spatial_dims must be an int >= 1; got 0",
    ),
    misuse(
        "ConvTranspose1d/wrong-channels",
        call("convT", jnp.ones((2, 8))),
        ValueError,
        r"ConvTranspose1d expects 3 input channels.*got shape \(2, 8\)",
    ),
    misuse(
        "ConvTranspose1d/batched-input",
        call("convT", jnp.ones((2, 3, 8))),
        ValueError,
        r"ConvTranspose1d expects an input of rank 2 .*got shape \(2, 3, 8\)" + VMAP_HINT,
    ),
    misuse(
        "ConvTranspose2d/output_padding-too-large",
        lambda: nn.ConvTranspose2d(3, 4, 3, output_padding=1, key=KEY),
        ValueError,
        r"ConvTranspose2d: output_padding \(1, 1\) must be smaller than the stride",
    ),
    misuse(
        "ConvTranspose2d/reflect-padding",
        lambda: nn.ConvTranspose2d(3, 4, 3, padding_mode="REFLECT", key=KEY),
        NotImplementedError,
        r"ConvTranspose2d: padding_mode='REFLECT' has no transposed "
        r"counterpart; use 'ZEROS' or 'CIRCULAR'",
    ),
    misuse(
        "MaxPool2d/missing-channel-axis",
        lambda: nn.MaxPool2d(2)(jnp.ones((8, 8))),
        ValueError,
        r"MaxPool2d expects an input of rank 3 \(\(channels, 2 spatial dims\)\)",
    ),
    misuse(
        "MaxPool2d/zero-kernel",
        lambda: nn.MaxPool2d(0),
        ValueError,
        r"MaxPool2d: kernel_size must be >= 1; got 0",
    ),
    misuse(
        "MaxPool2d/input-smaller-than-kernel",
        lambda: nn.MaxPool2d(3)(jnp.ones((1, 2, 2))),
        ValueError,
        r"MaxPool2d: the kernel \(3, 3\) is larger than the padded input",
    ),
    misuse(
        "AvgPool1d/padding-not-smaller-than-kernel",
        lambda: nn.AvgPool1d(2, padding=2),
        ValueError,
        r"AvgPool1d: padding \(\(2, 2\),\) must be smaller than the kernel "
        r"size \(2,\)",
    ),
    misuse(
        "Pool/operation-not-callable",
        lambda: nn.Pool(-jnp.inf, 3, 1, 2),
        TypeError,
        r"Pool: operation must be callable; got 3",
    ),
    misuse(
        "AdaptiveAvgPool2d/zero-target",
        lambda: nn.AdaptiveAvgPool2d(0),
        ValueError,
        r"AdaptiveAvgPool2d: target_shape must be >= 1; got 0",
    ),
    misuse(
        "AdaptiveAvgPool2d/target-wrong-length",
        lambda: nn.AdaptiveAvgPool2d((2, 2, 2)),
        ValueError,
        r"AdaptiveAvgPool2d: target_shape must be an int or a sequence of 2 "
        r"ints",
    ),
    misuse(
        "AdaptiveMaxPool2d/wrong-rank",
        lambda: nn.AdaptiveMaxPool2d(2)(jnp.ones(8)),
        ValueError,
        r"AdaptiveMaxPool2d expects an input of rank 3.*got shape \(8,\)",
    ),
]

CASES = LINEAR_CASES + CONV_CASES


@pytest.mark.parametrize("fn, exception, regex", CASES)
def test_misuse(fn: Any, exception: type[BaseException], regex: str) -> None:
    check_misuse(fn, exception, regex)
