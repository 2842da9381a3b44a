"""The bad-input catalogue, part 3: the layers of ecliptic.nn (wrong shapes and ranks,
batched inputs where one example is expected, bad hyperparameters, missing keys).
See test_bad_input.py for what each row asserts."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bad_input_helpers import check_misuse, misuse

import ecliptic as ec
from ecliptic import nn

KEY = jax.random.key(0)
VMAP_HINT = r".*batch with jax\.vmap"


@functools.cache
def layer(name: str) -> Any:
    """Tiny layers, built once on first use, abstractly (ShapeDtypeStruct parameters:
    no random initialisation to compile; the checks under test run before any math)."""
    make = {
        "linear": lambda: nn.Linear(3, 4, key=KEY),
        "mlp": lambda: nn.MLP(2, 2, 4, 1, key=KEY),
        "conv": lambda: nn.Conv2d(3, 4, 3, key=KEY),
        "convT": lambda: nn.ConvTranspose1d(3, 4, 3, key=KEY),
        "embedding": lambda: nn.Embedding(10, 4, key=KEY),
        "mha": lambda: nn.MultiheadAttention(2, 4, key=KEY),
        "mha_dropout": lambda: nn.MultiheadAttention(2, 4, dropout_p=0.5, key=KEY),
        "gru": lambda: nn.GRUCell(3, 4, key=KEY),
        "lstm": lambda: nn.LSTMCell(3, 4, key=KEY),
    }[name]
    return ec.filter_eval_shape(make)


@functools.cache
def concrete(name: str) -> Any:
    """`layer(name)` with zero parameters, for checks that run after some math."""
    is_struct = lambda x: isinstance(x, jax.ShapeDtypeStruct)  # noqa: E731
    return jax.tree.map(
        lambda x: jnp.zeros(x.shape, x.dtype) if is_struct(x) else x, layer(name), is_leaf=is_struct
    )


def call(name: str, *args: Any, **kwargs: Any) -> Any:
    return lambda: layer(name)(*args, **kwargs)


def attend(q: Any, k: Any, v: Any, name: str = "mha", **kwargs: Any) -> Any:
    # Traced, not run: the checks under test happen at trace time, after the projections.
    return lambda: ec.filter_eval_shape(
        layer(name), jnp.ones(q), jnp.ones(k), jnp.ones(v), **kwargs
    )


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

DROPOUT_EMBEDDING_CASES = [
    misuse(
        "Dropout/inference-a-string",
        lambda: nn.Dropout(0.5, inference="no"),
        TypeError,
        r"Dropout: inference must be True or False; got 'no'",
    ),
    misuse(
        "Dropout/p-above-one",
        lambda: nn.Dropout(1.5),
        ValueError,
        r"Dropout: p must be in \[0, 1\]; got 1\.5",
    ),
    misuse(
        "Dropout/negative-p",
        lambda: nn.Dropout(-0.1),
        ValueError,
        r"Dropout: p must be in \[0, 1\]; got -0\.1",
    ),
    misuse(
        "Dropout/p-a-string",
        lambda: nn.Dropout("0.5"),
        TypeError,
        r"Dropout: p must be a float in \[0, 1\]; got '0\.5'",
    ),
    misuse(
        "Dropout/traced-p",
        lambda: jax.jit(lambda p: nn.Dropout(p))(0.5),
        TypeError,
        r"Dropout: p must be a float in \[0, 1\]; got .*Tracer",
    ),
    misuse(
        "Dropout/missing-key",
        lambda: nn.Dropout(0.5)(jnp.ones(3)),
        ValueError,
        r"Dropout needs a PRNG key when it is not in inference mode: pass key=",
    ),
    misuse(
        "Dropout/int-key",
        lambda: nn.Dropout(0.5)(jnp.ones(3), key=0),
        TypeError,
        r"Dropout: key must be a JAX PRNG key; got int",
    ),
    misuse(
        "Dropout/inference-and-deterministic-disagree",
        lambda: nn.Dropout(0.5)(jnp.ones(3), inference=True, deterministic=False),
        ValueError,
        r"inference=True and deterministic=False disagree",
    ),
    misuse(
        "Dropout/int-input",
        lambda: nn.Dropout(0.5)(jnp.ones(3, jnp.int32), key=KEY),
        TypeError,
        r"Dropout expects a floating-point input; got dtype int32",
    ),
    misuse(
        "Embedding/float-index",
        call("embedding", jnp.array(1.0)),
        TypeError,
        r"Embedding expects integer indices; got an array of dtype float32.*astype",
    ),
    misuse(
        "Embedding/python-float-index",
        call("embedding", 1.5),
        TypeError,
        r"Embedding expects an integer index .*got float 1\.5",
    ),
    misuse(
        "Embedding/index-too-large",
        call("embedding", 12),
        IndexError,
        r"Embedding: index 12 is out of range for num_embeddings=10; indices must be in "
        r"\[0, 9\]",
    ),
    misuse(
        "Embedding/negative-index",
        call("embedding", np.array([3, -1])),
        IndexError,
        r"Embedding: index -1 is out of range for num_embeddings=10",
    ),
    misuse(
        "Embedding/weight-shape-disagrees",
        lambda: nn.Embedding(10, 4, weight=jnp.ones((3, 4))),
        ValueError,
        r"Embedding: num_embeddings=10 does not match the weight of shape \(3, 4\)",
    ),
    misuse(
        "Embedding/zero-embeddings",
        lambda: nn.Embedding(0, 4, key=KEY),
        ValueError,
        r"Embedding: num_embeddings must be >= 1; got 0",
    ),
    misuse(
        "RotaryPositionalEmbedding/odd-size",
        lambda: nn.RotaryPositionalEmbedding(3),
        ValueError,
        r"RotaryPositionalEmbedding: embedding_size must be even",
    ),
    misuse(
        "RotaryPositionalEmbedding/wrong-size",
        lambda: nn.RotaryPositionalEmbedding(4)(jnp.ones((5, 6))),
        ValueError,
        r"RotaryPositionalEmbedding expects an input of shape \(seq_len, 4\).*got shape "
        r"\(5, 6\)",
    ),
]

ATTENTION_CASES = [
    misuse(
        "MultiheadAttention/heads-do-not-divide",
        lambda: nn.MultiheadAttention(3, 4, key=KEY),
        ValueError,
        r"MultiheadAttention: query_size \(4\) must be divisible by num_heads \(3\)",
    ),
    misuse(
        "MultiheadAttention/zero-heads",
        lambda: nn.MultiheadAttention(0, 4, key=KEY),
        ValueError,
        r"MultiheadAttention: num_heads must be >= 1; got 0",
    ),
    misuse(
        "MultiheadAttention/dropout_p-above-one",
        lambda: ec.filter_eval_shape(nn.MultiheadAttention, 2, 4, dropout_p=2.0, key=KEY),
        ValueError,
        r"p must be in \[0, 1\]; got 2\.0",
    ),
    misuse(
        "MultiheadAttention/query-wrong-size",
        attend((5, 3), (5, 4), (5, 4)),
        ValueError,
        r"MultiheadAttention expects query of shape \(q_seq, 4\); got shape \(5, 3\)",
    ),
    misuse(
        "MultiheadAttention/key-value-lengths-differ",
        attend((5, 4), (6, 4), (7, 4)),
        ValueError,
        r"key_ and value must have the same sequence length; got shapes "
        r"\(6, 4\) and \(7, 4\)",
    ),
    misuse(
        "MultiheadAttention/unsequenced-input",
        attend((4,), (4,), (4,)),
        ValueError,
        r"MultiheadAttention expects query of shape \(q_seq, 4\); got shape \(4,\)",
    ),
    misuse(
        "MultiheadAttention/batched-input",
        attend((2, 5, 4), (2, 5, 4), (2, 5, 4)),
        ValueError,
        r"expects query of shape \(q_seq, 4\); got shape \(2, 5, 4\)" + VMAP_HINT,
    ),
    misuse(
        "MultiheadAttention/mask-transposed",
        attend((5, 4), (6, 4), (6, 4), mask=jnp.ones((6, 5), bool)),
        ValueError,
        r"mask must have shape \(q_seq, kv_seq\) = \(5, 6\) or \(num_heads, q_seq, "
        r"kv_seq\) = \(2, 5, 6\); got shape \(6, 5\)",
    ),
    misuse(
        "MultiheadAttention/float-mask",
        attend((5, 4), (6, 4), (6, 4), mask=jnp.ones((5, 6))),
        TypeError,
        r"MultiheadAttention: mask must be boolean \(True = may attend\); got "
        r"dtype float32",
    ),
    misuse(
        "MultiheadAttention/process_heads-not-callable",
        attend((5, 4), (5, 4), (5, 4), process_heads=3),
        TypeError,
        r"MultiheadAttention: process_heads must be a function \(q, k, v\) -> \(q, k, v\); "
        r"got 3",
    ),
    misuse(
        "MultiheadAttention/process_heads-returns-one-array",
        attend((5, 4), (5, 4), (5, 4), process_heads=lambda q, k, v: q),
        TypeError,
        r"process_heads must return a tuple of three arrays \(q, k, v\)",
    ),
    misuse(
        "MultiheadAttention/process_heads-changes-head-count",
        attend((5, 4), (5, 4), (5, 4), process_heads=lambda q, k, v: (q[:, :1], k, v)),
        ValueError,
        r"process_heads must return heads of shapes \(q_seq, 2, d_qk\)",
    ),
    misuse(
        "MultiheadAttention/dropout-without-key",
        attend((5, 4), (5, 4), (5, 4), name="mha_dropout"),
        ValueError,
        r"MultiheadAttention\(dropout_p=0\.5\) needs a PRNG key",
    ),
]

NORM_RNN_CASES = [
    misuse(
        "LayerNorm/wrong-trailing-shape",
        lambda: nn.LayerNorm(4)(jnp.ones(5)),
        ValueError,
        r"LayerNorm: the input's trailing dimensions must be \(4,\).*shape \(5,\)",
    ),
    misuse(
        "LayerNorm/int-input",
        lambda: nn.LayerNorm(4)(jnp.ones(4, jnp.int32)),
        TypeError,
        r"LayerNorm expects a floating-point input; got dtype int32",
    ),
    misuse(
        "LayerNorm/zero-shape",
        lambda: nn.LayerNorm(0),
        ValueError,
        r"LayerNorm: every entry of shape must be >= 1; got \(0,\)",
    ),
    misuse(
        "LayerNorm/negative-eps",
        lambda: nn.LayerNorm(4, eps=-1.0),
        ValueError,
        r"LayerNorm: eps must be a float >= 0; got -1\.0",
    ),
    misuse(
        "LayerNorm/eps-a-string",
        lambda: nn.LayerNorm(4, eps="a"),
        TypeError,
        r"LayerNorm: eps must be a float >= 0; got 'a'",
    ),
    misuse(
        "GroupNorm/groups-do-not-divide",
        lambda: nn.GroupNorm(3, 4),
        ValueError,
        r"GroupNorm: channels \(4\) must be a positive multiple of groups \(3\)",
    ),
    misuse(
        "GroupNorm/wrong-channels",
        lambda: nn.GroupNorm(2, 4)(jnp.ones((6, 3))),
        ValueError,
        r"GroupNorm expects 4 channels \(input shape \(channels, \*spatial\)\)",
    ),
    misuse(
        "GroupNorm/affine-without-channels",
        lambda: nn.GroupNorm(2),
        ValueError,
        r"GroupNorm\(channelwise_affine=True\) needs channels=\.\.\.",
    ),
    misuse(
        "RMSNorm/wrong-trailing-shape",
        lambda: nn.RMSNorm(4)(jnp.ones(5)),
        ValueError,
        r"RMSNorm: the input's trailing dimensions must be \(4,\)",
    ),
    misuse(
        "RMSNorm/nan-eps",
        lambda: nn.RMSNorm(4, eps=float("nan")),
        ValueError,
        r"RMSNorm: eps must be a float >= 0; got nan",
    ),
    misuse(
        "PReLU/wrong-channels",
        lambda: nn.PReLU(num_parameters=3)(jnp.ones((4, 2))),
        ValueError,
        r"PReLU has 3 per-channel slopes and expects an input of shape "
        r"\(3, \*spatial\); got shape \(4, 2\)",
    ),
    misuse(
        "GRUCell/wrong-input-size",
        call("gru", jnp.ones(2), jnp.zeros(4)),
        ValueError,
        r"GRUCell expects an input of shape \(3,\); got shape \(2,\)",
    ),
    misuse(
        "GRUCell/wrong-hidden-size",
        call("gru", jnp.ones(3), jnp.zeros(5)),
        ValueError,
        r"GRUCell expects a hidden state of shape \(4,\); got shape \(5,\)",
    ),
    misuse(
        "GRUCell/batched-input",
        call("gru", jnp.ones((2, 3)), jnp.zeros((2, 4))),
        ValueError,
        r"GRUCell expects an input of shape \(3,\); got shape \(2, 3\)" + VMAP_HINT,
    ),
    misuse(
        "LSTMCell/hidden-not-a-pair",
        call("lstm", jnp.ones(3), jnp.zeros(4)),
        TypeError,
        r"LSTMCell expects the hidden state as a pair \(h, c\); got ArrayImpl",
    ),
    misuse(
        "LSTMCell/wrong-c-size",
        call("lstm", jnp.ones(3), (jnp.zeros(4), jnp.zeros(3))),
        ValueError,
        r"LSTMCell expects c of shape \(4,\); got shape \(3,\)",
    ),
    misuse(
        "SpectralNorm/unknown-weight_name",
        lambda: nn.SpectralNorm(layer("linear"), "weights", key=KEY),
        AttributeError,
        r"SpectralNorm: the Linear has no attribute 'weights' \(weight_name\)",
    ),
    misuse(
        "SpectralNorm/negative-iterations",
        lambda: nn.SpectralNorm(concrete("linear"), "weight", num_power_iterations=-1, key=KEY),
        ValueError,
        r"SpectralNorm: num_power_iterations must be an int >= 0; got -1",
    ),
    misuse(
        "WeightNorm/axis-out-of-range",
        lambda: nn.WeightNorm(concrete("linear"), axis=3),
        ValueError,
        r"WeightNorm: axis=3 is out of range for Linear\.weight of shape \(4, 3\)",
    ),
    misuse(
        "WeightNorm/numpy-weight",
        lambda: nn.WeightNorm(
            ec.tree_at(lambda m: m.weight, concrete("linear"), np.zeros((4, 3), np.float32))
        ),
        TypeError,
        r"WeightNorm: Linear\.weight must be an array \(a jax\.Array\) .*got "
        r"numpy\.ndarray \(convert it with jnp\.asarray\)",
    ),
    misuse(
        "WeightNorm/not-a-module",
        lambda: nn.WeightNorm(abs),
        TypeError,
        r"WeightNorm\(layer, \.\.\.\): layer must be a Module",
    ),
]


def replaced(name: str, field: str, value: Any) -> Any:
    """`concrete(name)` with one parameter swapped for `value` (as tree_at would)."""
    return ec.tree_at(lambda m: getattr(m, field), concrete(name), value)


BATCH_OF_KEYS = r"key must be a single PRNG key \(shape {}\); got a batch of keys of shape {}"
RAW_KEY = jax.random.PRNGKey(0)
WRONG_SHAPE = r"{}\.{} has shape {}, expected {} .*replaced \(e\.g\. with tree_at\)"

KEY_AND_PARAMETER_CASES = [
    misuse(
        "Linear/batch-of-keys",
        lambda: nn.Linear(3, 2, key=jax.random.split(KEY, 2)),
        ValueError,
        "Linear: " + BATCH_OF_KEYS.format(r"\(\)", r"\(2,\)"),
    ),
    misuse(
        "Linear/batch-of-raw-keys",
        lambda: nn.Linear(3, 2, key=jax.random.split(RAW_KEY, 2)),
        ValueError,
        "Linear: " + BATCH_OF_KEYS.format(r"\(2,\)", r"\(2, 2\)"),
    ),
    misuse(
        "Dropout/batch-of-keys",
        lambda: nn.Dropout(0.5)(jnp.ones(4), key=jax.random.split(KEY, 4)),
        ValueError,
        "Dropout: " + BATCH_OF_KEYS.format(r"\(\)", r"\(4,\)"),
    ),
    misuse(
        "Dropout/positional-key",
        lambda: nn.Dropout(0.5)(jnp.ones(4), KEY),
        TypeError,
        r"Dropout takes one positional argument, x; got 2\. key .* keyword-only: call "
        r"dropout\(x, key=key\)",
    ),
    misuse(
        "Sequential/batch-of-keys",
        lambda: nn.Sequential([nn.Dropout(0.5)])(jnp.ones(4), key=jax.random.split(KEY, 2)),
        ValueError,
        "Sequential: " + BATCH_OF_KEYS.format(r"\(\)", r"\(2,\)"),
    ),
    misuse(
        "Stacked/factory-takes-no-key",
        lambda: nn.Stacked(lambda: nn.Linear(3, 3, key=KEY), 2, key=KEY),
        TypeError,
        r"Stacked\(make_layer, n\): make_layer must take one argument, a PRNG key .*"
        r"signature \(\)",
    ),
    misuse(
        "Stacked/call-with-batch-of-keys",
        lambda: ec.filter_eval_shape(
            lambda: nn.Stacked(lambda k: nn.Linear(3, 3, key=k), 2, key=KEY)(
                jnp.ones(3), key=jax.random.split(KEY, 2)
            )
        ),
        ValueError,
        "Stacked: " + BATCH_OF_KEYS.format(r"\(\)", r"\(2,\)"),
    ),
    misuse(
        "Linear/weight-replaced-with-wrong-shape",
        lambda: replaced("linear", "weight", jnp.ones((3, 3)))(jnp.ones(3)),
        ValueError,
        WRONG_SHAPE.format("Linear", "weight", r"\(3, 3\)", r"\(4, 3\)"),
    ),
    misuse(
        "Linear/wrong-weight-under-filter_jit",
        lambda: ec.filter_jit(replaced("linear", "weight", jnp.ones((3, 3))))(jnp.ones(3)),
        TypeError,
        WRONG_SHAPE.format("Linear", "weight", r"\(3, 3\)", r"\(4, 3\)"),
    ),
    misuse(
        "Conv2d/weight-replaced-with-wrong-shape",
        lambda: replaced("conv", "weight", jnp.ones((4, 2, 3, 3)))(jnp.ones((3, 5, 5))),
        ValueError,
        WRONG_SHAPE.format("Conv2d", "weight", r"\(4, 2, 3, 3\)", r"\(4, 3, 3, 3\)"),
    ),
    misuse(
        "LayerNorm/weight-replaced-with-wrong-shape",
        lambda: ec.tree_at(lambda m: m.weight, nn.LayerNorm(4), jnp.ones(3))(jnp.ones(4)),
        ValueError,
        WRONG_SHAPE.format("LayerNorm", "weight", r"\(3,\)", r"\(4,\)"),
    ),
    misuse(
        "RMSNorm/bias-replaced-with-wrong-shape",
        lambda: ec.tree_at(lambda m: m.bias, nn.RMSNorm(4, use_bias=True), jnp.ones(2))(
            jnp.ones(4)
        ),
        ValueError,
        WRONG_SHAPE.format("RMSNorm", "bias", r"\(2,\)", r"\(4,\)"),
    ),
    misuse(
        "GroupNorm/weight-replaced-with-wrong-shape",
        lambda: ec.tree_at(lambda m: m.weight, nn.GroupNorm(2, 4), jnp.ones(3))(jnp.ones((4, 5))),
        ValueError,
        WRONG_SHAPE.format("GroupNorm", "weight", r"\(3,\)", r"\(4,\)"),
    ),
    misuse(
        "filter_vmap/one-unbatched-example-to-a-layer",
        lambda: ec.filter_vmap(concrete("linear"))(jnp.ones(3)),
        ValueError,
        r"Linear expects an input of rank 1 .*got shape \(\)\. Under jax\.vmap / "
        r"ecliptic\.filter_vmap the mapped axis is removed: was one unbatched example",
    ),
]

CASES = (
    LINEAR_CASES
    + CONV_CASES
    + DROPOUT_EMBEDDING_CASES
    + ATTENTION_CASES
    + NORM_RNN_CASES
    + KEY_AND_PARAMETER_CASES
)


@pytest.mark.parametrize("fn, exception, regex", CASES)
def test_misuse(fn: Any, exception: type[BaseException], regex: str) -> None:
    check_misuse(fn, exception, regex)


def test_valid_edge_inputs_are_still_accepted() -> None:
    # The checks above must not reject what is legitimate.
    raw = jax.random.PRNGKey(0)  # a raw uint32[2] key; traced only (no init to compile)
    assert ec.filter_eval_shape(nn.Linear, 2, 2, key=raw).weight.shape == (2, 2)
    ensemble = ec.filter_vmap(lambda k: nn.Linear(2, 2, key=k))
    stacked = ec.filter_eval_shape(ensemble, jax.random.split(raw, 3))
    assert stacked.weight.shape == (3, 2, 2)
    embedding = concrete("embedding")
    assert embedding(np.array([0, 9])).shape == (2, 4)
    assert embedding(np.int64(9)).shape == (4,)
    assert nn.LayerNorm(4, eps=0).eps == 0.0
    assert nn.Sequential([nn.Identity()])[-1] is not None
    # A bias that broadcasts is what the maths accepts (as in Equinox): no shape error.
    assert replaced("linear", "bias", jnp.ones(1))(jnp.ones(3)).shape == (4,)
    # One key per example under vmap; no key needed in inference mode.
    keys = jax.random.split(KEY, 2)
    dropped = jax.vmap(lambda x, k: nn.Dropout(0.5)(x, key=k))(jnp.ones((2, 4)), keys)
    assert dropped.shape == (2, 4)
    assert nn.Dropout(0.5, inference=True)(jnp.ones(2), key=keys).shape == (2,)
    # The (model, state) pair is a plain tuple, as in Equinox: a scan carry or tree_map
    # partner built as an ordinary tuple has the same structure.
    pair = nn.make_with_state(nn.BatchNorm)(3, "batch", mode="batch")
    model, state = pair
    assert type(pair) is tuple
    assert jax.tree.structure(pair) == jax.tree.structure((model, state))
