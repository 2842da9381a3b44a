"""The bad-input catalogue: State / StateIndex / BatchNorm, Shared weights and stacked
layers. See bad_input_helpers.py for what each row asserts."""

# Each row passes a wrong type on purpose to check the error: argument types are not checked.
# pyright: reportArgumentType=false, reportCallIssue=false

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import pytest
from bad_input_helpers import check_misuse, misuse
from bad_input_layers import KEY, linear

import ecliptic as ec
from ecliptic import nn


@functools.cache
def batch_norm() -> Any:
    return nn.make_with_state(nn.BatchNorm)(3, "batch", mode="torch")


def bn_vmapped(x: Any, state: Any = None, axis_name: str = "batch") -> Any:
    def run() -> Any:
        bn, own_state = batch_norm()
        return jax.vmap(bn, in_axes=(0, None), out_axes=(0, None), axis_name=axis_name)(
            x, own_state if state is None else state()
        )

    return run


def other_models_state() -> Any:
    layers = [nn.Identity(), nn.BatchNorm(3, "batch", mode="torch")]
    return nn.make_with_state(nn.Sequential)(layers)[1]


def bn_call(*args: Any, **kwargs: Any) -> Any:
    return lambda: batch_norm()[0](*args, **kwargs)


def state_call(method: str, *args: Any) -> Any:
    return lambda: getattr(batch_norm()[1], method)(*args)


def set_state_attribute() -> None:
    batch_norm()[1].values = {}


STATS = lambda: batch_norm()[0].batch_state_index  # noqa: E731
STATE_CASES = [
    misuse(
        "BatchNorm/outside-vmap",
        bn_call(jnp.ones((3, 4)), batch_norm()[1]),
        NameError,
        r"BatchNorm\(axis_name='batch'\) computes statistics over the batch, so it must run "
        r"inside jax\.vmap",
    ),
    misuse(
        "BatchNorm/vmap-with-other-axis-name",
        bn_vmapped(jnp.ones((2, 3)), axis_name="b"),
        NameError,
        r"BatchNorm\(axis_name='batch'\).*unbound axis name: batch",
    ),
    misuse(
        "BatchNorm/no-state",
        bn_call(jnp.ones(3)),
        TypeError,
        r"BatchNorm is a stateful layer: call it as `y, state = layer\(x, state\)`",
    ),
    misuse(
        "BatchNorm/state-a-dict",
        bn_call(jnp.ones(3), {}),
        TypeError,
        r"BatchNorm\(x, state\): state must be an ecliptic\.nn\.State; got dict",
    ),
    misuse(
        "BatchNorm/wrong-channels",
        bn_vmapped(jnp.ones((2, 4))),
        ValueError,
        r"BatchNorm expects an input of shape \(input_size, \*spatial\) = \(3, \.\.\.\); "
        r"got shape \(4,\)",
    ),
    misuse(
        "BatchNorm/batched-input",
        bn_call(jnp.ones((8, 3)), batch_norm()[1]),
        ValueError,
        r"got shape \(8, 3\)\. BatchNorm acts on one example: batch with jax\.vmap",
    ),
    misuse(
        "BatchNorm/batch-of-one",
        bn_vmapped(jnp.ones((1, 3))),
        ValueError,
        r"BatchNorm: training needs more than one value per channel",
    ),
    misuse(
        "BatchNorm/momentum-above-one",
        lambda: nn.BatchNorm(3, "batch", momentum=1.5, mode="torch"),
        ValueError,
        r"BatchNorm: momentum must be in \[0, 1\].*got 1\.5",
    ),
    misuse(
        "BatchNorm/axis_name-a-list",
        lambda: nn.BatchNorm(3, ["batch"], mode="torch"),
        TypeError,
        r"BatchNorm: axis_name must be the name given to the batching vmap",
    ),
    misuse(
        "BatchNorm/unknown-mode",
        lambda: nn.BatchNorm(3, "batch", mode="running"),
        ValueError,
        r"BatchNorm: mode must be one of \('ema', 'batch', 'torch'\); got 'running'",
    ),
    misuse(
        "BatchNorm/state-of-another-model",
        bn_vmapped(jnp.ones((2, 3)), state=other_models_state),
        ValueError,
        r"State\.get: this state has no entry for the StateIndex .*belongs to another "
        r"model",
    ),
    misuse(
        "State/get-foreign-index",
        lambda: batch_norm()[1].get(nn.StateIndex(jnp.zeros(2))),
        ValueError,
        r"State\.get: this state has no entry for the StateIndex",
    ),
    misuse(
        "State/get-a-string",
        state_call("get", "mean"),
        TypeError,
        r"State\.get\(index, \.\.\.\): index must be a StateIndex; got str",
    ),
    misuse(
        "State/set-wrong-shape",
        lambda: batch_norm()[1].set(STATS(), (jnp.zeros(4), jnp.zeros(3))),
        ValueError,
        r"State\.set: the new value for '\.batch_state_index' is \('float32\[4\]', "
        r"'float32\[3\]'\), but the state holds \('float32\[3\]', 'float32\[3\]'\)",
    ),
    misuse(
        "State/set-wrong-structure",
        lambda: batch_norm()[1].set(STATS(), jnp.zeros(3)),
        ValueError,
        r"State\.set: the new value for '\.batch_state_index' has structure",
    ),
    misuse(
        "State/update-with-a-dict",
        state_call("update", {}),
        TypeError,
        r"State\.update\(substate\): substate must be a State; got dict",
    ),
    misuse(
        "State/update-foreign-substate",
        lambda: batch_norm()[1].update(other_models_state()),
        ValueError,
        r"State\.update: the substate has entries .* that this state does not have",
    ),
    misuse(
        "State/assign-attribute",
        set_state_attribute,
        AttributeError,
        r"cannot set State\.values: a State is immutable.*state\.set\(index, value\)",
    ),
    misuse(
        "State/from-stripped-model",
        lambda: nn.State(batch_norm()[0]),
        ValueError,
        r"State\(model\): the model's initial state values were removed",
    ),
    misuse(
        "StateIndex/string-init",
        lambda: nn.StateIndex("abc"),
        TypeError,
        r"StateIndex\(init\): init must be an array or a pytree of arrays; got a leaf of "
        r"type str",
    ),
    misuse(
        "make_with_state/not-callable",
        lambda: nn.make_with_state(3),
        TypeError,
        r"make_with_state\(make_model\): must be callable; got 3",
    ),
    misuse(
        "Sequential/stateful-layer-without-state",
        lambda: nn.Sequential([nn.Identity(), batch_norm()[0]])(jnp.ones(3)),
        TypeError,
        r"Sequential: layers\[1\] \(BatchNorm\) is stateful, so the Sequential needs a state",
    ),
]


def tie(where: Any, get: Any, second: Any = None) -> Any:
    return lambda: nn.Shared((linear(), second() if second else linear()), where, get)


def stack(*layers: Any) -> Any:
    return lambda: nn.stack_layers([make() for make in layers])


def make_linear(k: Any) -> Any:
    return nn.Linear(2, 2, key=k)


SHARED_STACKED_CASES = [
    misuse(
        "Shared/mismatched-shapes",
        tie(lambda p: p[1].weight, lambda p: p[0].weight, lambda: linear(4, 3)),
        ValueError,
        r"Every node being shared together must have the same pytree structure.*Shared\("
        r"pytree, where, get\), `where` selected \(\(3, 4\), 'float32'\) but `get` selected "
        r"\(\(4, 3\)",
    ),
    misuse(
        "Shared/mismatched-count",
        tie(lambda p: (p[1].weight, p[1].bias), lambda p: p[0].weight),
        ValueError,
        r"Every node being shared together must have the same pytree structure",
    ),
    misuse(
        "Shared/mismatched-dtypes",
        tie(lambda p: p[1].weight, lambda p: p[0].weight, lambda: linear(dtype=jnp.float16)),
        ValueError,
        r"`where` selected \(\(4, 3\), 'float16'\) but `get` selected "
        r"\(\(4, 3\), 'float32'\)",
    ),
    misuse(
        "Shared/where-not-callable",
        lambda: nn.Shared((1,), 3, lambda p: p),
        TypeError,
        r"Shared\(pytree, where, get\): where must be a function pytree -> node\(s\); got 3",
    ),
    misuse(
        "Shared/get-inside-where",
        lambda: nn.Shared(linear(), lambda p: p, lambda p: p),
        ValueError,
        r"Shared: `get` selects \(part of\) a node that `where` selects",
    ),
    misuse(
        "Stacked/zero-layers",
        lambda: nn.Stacked(make_linear, 0, key=KEY),
        ValueError,
        r"Stacked: n \(the number of layers\) must be an int >= 1; got 0",
    ),
    misuse(
        "Stacked/make_layer-not-callable",
        lambda: nn.Stacked(3, 2, key=KEY),
        TypeError,
        r"Stacked\(make_layer, n\): make_layer must be a callable key -> layer; got 3",
    ),
    misuse(
        "Stacked/make_layer-returns-non-layer",
        lambda: nn.Stacked(lambda k: 3, 2, key=KEY),
        TypeError,
        r"Stacked: make_layer\(key\) must return a callable layer; got 3",
    ),
    misuse(
        "Stacked/zero-unroll",
        lambda: nn.Stacked(make_linear, 2, key=KEY, unroll=0),
        ValueError,
        r"Stacked: unroll must be an int >= 1; got 0",
    ),
    misuse(
        "Stacked/index-out-of-range",
        lambda: ec.filter_eval_shape(nn.Stacked, make_linear, 2, key=KEY)[5],
        IndexError,
        r"Stacked index 5 is out of range for n=2 layers",
    ),
    misuse(
        "stack_layers/static-field-differs",
        stack(lambda: linear(), lambda: linear(use_bias=False)),
        ValueError,
        r"stack_layers: every layer must have the same structure.*layers\[0\] and "
        r"layers\[1\] differ at \.use_bias \(static field\): True vs False",
    ),
    misuse(
        "stack_layers/shapes-differ",
        stack(lambda: linear(), lambda: linear(3, 5)),
        ValueError,
        r"layers\[0\] and layers\[1\] differ at \.out_features \(static "
        r"field\): 4 vs 5",
    ),
    misuse(
        "stack_layers/types-differ",
        stack(lambda: linear(), nn.Identity),
        ValueError,
        r"layers\[0\] and layers\[1\] differ at the layer itself",
    ),
    misuse(
        "stack_layers/empty",
        lambda: nn.stack_layers([]),
        ValueError,
        r"stack_layers: n \(the number of layers\) must be an int >= 1; got 0",
    ),
    misuse(
        "stack_layers/a-single-layer",
        lambda: nn.stack_layers(linear()),
        TypeError,
        r"stack_layers\(layers\): layers must be a list or tuple of layers",
    ),
]

CASES = STATE_CASES + SHARED_STACKED_CASES


@pytest.mark.parametrize("fn, exception, regex", CASES)
def test_misuse(fn: Any, exception: type[BaseException], regex: str) -> None:
    check_misuse(fn, exception, regex)
