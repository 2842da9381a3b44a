"""The bad-input catalogue: nn normalisation layers, recurrent cells, PRNG keys and
replaced parameters. See bad_input_helpers.py for what each row asserts."""

# Each row passes a wrong type on purpose to check the error: argument types are not checked.
# pyright: reportArgumentType=false, reportCallIssue=false

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bad_input_helpers import check_misuse, misuse
from bad_input_layers import KEY, VMAP_HINT, call, concrete, layer, replaced

import ecliptic as ec
from ecliptic import nn

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

CASES = NORM_RNN_CASES + KEY_AND_PARAMETER_CASES


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
