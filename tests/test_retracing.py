"""Compile-time hygiene: the common training loop traces once, and models called without
a key add no random-number operations to the program."""

import jax
import jax.numpy as jnp
import optax
import pytest

import ecliptic as ec
import ecliptic.nn as nn
from ecliptic.debug import assert_max_traces, get_num_traces

KEY = jax.random.key(0)


def _residual(layer, x):
    return x + layer(x)


def _model(name):
    k1, k2, k3 = jax.random.split(KEY, 3)
    if name == "MLP":
        return nn.MLP(4, 4, 8, 2, key=k1)
    if name == "Stacked":
        return nn.Stacked(lambda k: nn.MLP(4, 4, 8, 1, key=k), 3, key=k2, apply=_residual)
    return nn.Sequential(
        [
            nn.Linear(4, 8, key=k3),
            nn.Dropout(0.1, inference=True),
            jax.nn.relu,
            nn.Linear(8, 4, key=k3),
        ]
    )


@pytest.mark.parametrize("name", ["MLP", "Stacked"])
def test_training_loop_traces_once(name):
    model = _model(name)
    opt = optax.sgd(1e-2)
    opt_state = opt.init(ec.filter(model, ec.is_inexact_array))

    @assert_max_traces(max_traces=1)
    def loss_fn(model, x, y):
        return jnp.mean((jax.vmap(model)(x) - y) ** 2)

    @ec.filter_jit
    @assert_max_traces(max_traces=1)
    def step(model, opt_state, x, y):
        loss, grads = ec.filter_value_and_grad(loss_fn)(model, x, y)
        updates, opt_state = opt.update(grads, opt_state)
        return ec.apply_updates(model, updates), opt_state, loss

    @ec.filter_jit
    @assert_max_traces(max_traces=1)
    def evaluate(model, x):
        return jax.vmap(model)(x)

    kx, ky = jax.random.split(KEY)
    data_x, data_y = jax.random.normal(kx, (8, 4)), jax.random.normal(ky, (8, 4))
    losses = []
    for i in range(4):  # new array objects, new model and optimiser state every step
        x, y = data_x + 0.0 * i, data_y + 0.0 * i
        model, opt_state, loss = step(model, opt_state, x, y)
        evaluate(model, x)
        losses.append(float(loss))
    assert get_num_traces(step) == 1
    assert get_num_traces(evaluate) == 1
    assert get_num_traces(loss_fn) == 1  # traced inside the single trace of `step`
    assert losses[-1] < losses[0]


def test_retrace_counter_catches_a_changing_static_argument():
    @ec.filter_jit
    @assert_max_traces(max_traces=1)
    def scale(x, factor):
        return x * factor

    scale(jnp.ones(2), 2.0)
    scale(jnp.zeros(2), 2.0)
    with pytest.raises(AssertionError, match="traced 2 times"):
        scale(jnp.ones(2), 3.0)  # a new Python float is a new static value


@pytest.mark.parametrize("name", ["MLP", "Stacked", "Sequential"])
def test_no_key_means_no_random_ops(name):
    model = _model(name)
    jaxpr = str(jax.make_jaxpr(lambda x: model(x))(jnp.ones(4)))
    assert "random" not in jaxpr and "threefry" not in jaxpr
    jaxpr = str(jax.make_jaxpr(lambda x: model(x, key=None))(jnp.ones(4)))
    assert "random" not in jaxpr and "threefry" not in jaxpr


def test_key_adds_random_ops_only_where_used():
    model = _model("Stacked")
    # The residual apply takes no key, so even with a key no key is split per layer.
    jaxpr = str(jax.make_jaxpr(lambda x, k: model(x, key=k))(jnp.ones(4), KEY))
    assert "random_split" not in jaxpr
    dropouts = nn.Stacked(lambda k: nn.Dropout(0.5), 2, key=KEY)
    jaxpr = str(jax.make_jaxpr(lambda x, k: dropouts(x, key=k))(jnp.ones(4), KEY))
    assert "random_split" in jaxpr and "random_bits" in jaxpr
