"""StateIndex, State, make_with_state, delete_init_state, StatefulLayer, and state through
the transformations (filter_jit, filter_grad with state as aux, lax.scan, filter_vmap)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import pytest

import ecliptic
from ecliptic import nn


class Counter(nn.StatefulLayer):
    """Adds how many times it has been called, and a learnt offset."""

    index: nn.StateIndex
    offset: jax.Array

    def __init__(self, size: int = 3):
        self.index = nn.StateIndex(jnp.array(0.0))
        self.offset = jnp.zeros(size)

    def __call__(self, x, state, *, key=None):
        count = state.get(self.index)
        return x + count + self.offset, state.set(self.index, count + 1)


class TwoCounters(ecliptic.Module):
    first: Counter
    second: Counter

    def __init__(self):
        self.first = Counter()
        self.second = Counter()

    def __call__(self, x, state):
        x, state = self.first(x, state)
        return self.second(x, state)


def value_and_grad_aux(fn):
    """filter_value_and_grad(fn, has_aux=True), or its jax.value_and_grad equivalent
    on the model's floating-point arrays if ecliptic does not export it yet."""
    if hasattr(ecliptic, "filter_value_and_grad"):
        return ecliptic.filter_value_and_grad(fn, has_aux=True)

    def wrapped(model, *args):
        params, static = ecliptic.partition(model, ecliptic.is_inexact_array)
        return jax.value_and_grad(lambda p: fn(ecliptic.combine(p, static), *args), has_aux=True)(
            params
        )

    return wrapped


# ----------------------------------------------------------------------------------
# State basics
# ----------------------------------------------------------------------------------


def test_state_index_and_state_basics() -> None:
    index = nn.StateIndex((jnp.zeros(2), 1))
    assert isinstance(index.init[1], jax.Array)  # Python numbers become arrays
    model = {"a": index, "b": [index]}  # the same index twice: one entry
    state = nn.State(model)
    assert len(state) == 1
    value = state.get(index)
    np.testing.assert_array_equal(value[0], np.zeros(2))
    new = state.set(index, (jnp.ones(2), jnp.array(5)))
    np.testing.assert_array_equal(new.get(index)[0], np.ones(2))
    np.testing.assert_array_equal(state.get(index)[0], np.zeros(2))  # old one unchanged
    assert int(state.set(index, (jnp.ones(2), 7)).get(index)[1]) == 7  # scalar cast
    assert "State(" in repr(state)


def test_state_is_a_pytree() -> None:
    model, state = nn.make_with_state(TwoCounters)()
    leaves, treedef = jtu.tree_flatten(state)
    assert len(leaves) == 2
    rebuilt = jtu.tree_unflatten(treedef, [x + 1 for x in leaves])
    assert isinstance(rebuilt, nn.State)
    assert float(rebuilt.get(model.first.index)) == 1.0
    paths = [jtu.keystr(p) for p, _ in jtu.tree_flatten_with_path(state)[0]]
    assert any("first" in p for p in paths)


def test_make_with_state_and_delete_init_state() -> None:
    model, state = nn.make_with_state(TwoCounters)()
    assert not jtu.tree_leaves(model.first.index)  # the init value was dropped
    assert model.first.index.marker == ".first.index"
    # two builds give interchangeable models and states (same tree structure)
    model2, state2 = nn.make_with_state(TwoCounters)()
    assert jtu.tree_structure(model) == jtu.tree_structure(model2)
    assert jtu.tree_structure(state) == jtu.tree_structure(state2)
    y, _ = model2(jnp.ones(3), state)
    np.testing.assert_array_equal(y, np.ones(3))
    with pytest.raises(ValueError, match="initial state values were removed"):
        nn.State(model)
    fresh = TwoCounters()
    assert len(jtu.tree_leaves(nn.delete_init_state(fresh))) == 2  # just the offsets
    assert len(jtu.tree_leaves(fresh)) == 4  # the original is untouched
    bn, bn_state = nn.make_with_state(nn.BatchNorm)(2, "batch", mode="torch")
    assert len(bn_state) == 2


def test_stateful_layer_call() -> None:
    model, state = nn.make_with_state(TwoCounters)()
    y, state = model(jnp.ones(3), state)
    np.testing.assert_array_equal(y, np.ones(3))  # both counts start at 0
    y, state = model(jnp.ones(3), state)
    np.testing.assert_array_equal(y, np.full(3, 3.0))  # 1 + 1 + 1
    assert float(state.get(model.first.index)) == 2.0
    assert Counter().is_stateful()


def test_substate_and_update() -> None:
    model, state = nn.make_with_state(TwoCounters)()
    sub = state.substate(model.second)
    assert len(sub) == 1
    _, sub = model.second(jnp.zeros(3), sub)
    state = state.update(sub)
    assert float(state.get(model.second.index)) == 1.0
    assert float(state.get(model.first.index)) == 0.0
    _, other = nn.make_with_state(Counter)()
    with pytest.raises(ValueError, match="belongs to another model"):
        state.update(other)
    with pytest.raises(TypeError, match="must be a State"):
        state.update({"a": 1})  # pyright: ignore[reportArgumentType]


# ----------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------


def test_error_missing_index() -> None:
    model, state = nn.make_with_state(TwoCounters)()
    stranger = Counter()  # its index has a fresh marker
    with pytest.raises(ValueError, match="belongs to another model"):
        state.get(stranger.index)
    with pytest.raises(ValueError, match="belongs to another model"):
        stranger(jnp.zeros(3), state)
    with pytest.raises(ValueError, match="belongs to another model"):
        state.substate(stranger)
    with pytest.raises(TypeError, match="must be a StateIndex"):
        state.get("first")  # pyright: ignore[reportArgumentType]


def test_error_set_mismatched_shape_or_dtype() -> None:
    index = nn.StateIndex(jnp.zeros((2, 3)))
    state = nn.State(index)
    with pytest.raises(ValueError, match=r"float32\[3\].*float32\[2, 3\]"):
        state.set(index, jnp.zeros(3))
    with pytest.raises(ValueError, match="dtypes must stay the same"):
        state.set(index, jnp.zeros((2, 3), jnp.int32))
    with pytest.raises(ValueError, match="structure"):
        state.set(index, (jnp.zeros((2, 3)),))
    with pytest.raises(TypeError, match="must be arrays"):
        state.set(index, "hello")


def test_error_bad_init() -> None:
    with pytest.raises(TypeError, match="pytree of arrays"):
        nn.StateIndex("not an array")
    with pytest.raises(TypeError, match="callable"):
        nn.make_with_state(3)  # pyright: ignore[reportArgumentType]


# ----------------------------------------------------------------------------------
# Transformations
# ----------------------------------------------------------------------------------


def test_state_through_filter_jit() -> None:
    model, state = nn.make_with_state(TwoCounters)()
    step = ecliptic.filter_jit(lambda m, x, s: m(x, s))
    for _ in range(3):
        y, state = step(model, jnp.zeros(3), state)
    np.testing.assert_array_equal(y, np.full(3, 4.0))  # third call: 0 + 2 + 2  # pyright: ignore[reportPossiblyUnboundVariable]
    assert isinstance(state, nn.State)


def test_state_as_aux_of_grad() -> None:
    model, state = nn.make_with_state(TwoCounters)()

    def loss(model, x, state):
        y, state = model(x, state)
        return jnp.sum(y**2), state

    @ecliptic.filter_jit
    def step(model, x, state):
        (value, state), grads = value_and_grad_aux(loss)(model, x, state)
        return value, grads, state

    value, grads, state = step(model, jnp.ones(3), state)
    # y = x + count1 + offset1 + count2 + offset2 = 1, so d(sum y^2)/d offset = 2
    np.testing.assert_allclose(grads.first.offset, np.full(3, 2.0))
    np.testing.assert_allclose(grads.second.offset, np.full(3, 2.0))
    assert float(value) == 3.0
    assert float(state.get(model.second.index)) == 1.0


def test_state_through_scan() -> None:
    model, state = nn.make_with_state(TwoCounters)()

    @jax.jit
    def run(state, xs):
        def body(state, x):
            y, state = model(x, state)
            return state, y

        return jax.lax.scan(body, state, xs)

    state, ys = run(state, jnp.zeros((4, 3)))
    np.testing.assert_array_equal(ys[:, 0], [0.0, 2.0, 4.0, 6.0])
    assert float(state.get(model.first.index)) == 4.0


def test_state_through_filter_vmap_ensemble() -> None:
    class Scaled(nn.StatefulLayer):
        index: nn.StateIndex
        scale: jax.Array

        def __init__(self, key):
            self.scale = jax.random.normal(key, ())
            self.index = nn.StateIndex(jnp.zeros(()))

        def __call__(self, x, state, *, key=None):
            total = state.get(self.index) + jnp.sum(x)
            return self.scale * x, state.set(self.index, total)

    keys = jax.random.split(jax.random.key(0), 4)
    models, states = ecliptic.filter_vmap(nn.make_with_state(Scaled))(keys)
    assert models.scale.shape == (4,) and states.get(models.index).shape == (4,)

    @ecliptic.filter_jit
    @ecliptic.filter_vmap(in_axes=(0, None, 0))
    def apply(model, x, state):
        return model(x, state)

    ys, states = apply(models, jnp.ones(2), states)
    assert ys.shape == (4, 2)
    np.testing.assert_allclose(ys[:, 0], models.scale)
    np.testing.assert_array_equal(states.get(models.index), np.full(4, 2.0))


# ----------------------------------------------------------------------------------
# Sequential threads the state
# ----------------------------------------------------------------------------------


def test_sequential_threads_state() -> None:
    k1, k2 = jax.random.split(jax.random.key(0))
    make = nn.make_with_state(nn.Sequential)
    model, state = make(
        [
            nn.Linear(3, 4, key=k1),
            nn.BatchNorm(4, "batch", momentum=0.5, mode="torch"),
            jax.nn.relu,
            nn.Sequential([Counter(4), nn.Dropout(0.5, inference=True)]),
            nn.Linear(4, 2, key=k2),
        ]
    )
    assert model.is_stateful() and model[3].is_stateful()
    assert not nn.Sequential([nn.Linear(2, 2, key=k1), jax.nn.relu]).is_stateful()
    assert len(state) == 3  # BatchNorm's counter and statistics, Counter's count

    run = ecliptic.filter_jit(
        ecliptic.filter_vmap(
            lambda m, x, s: m(x, s),
            in_axes=(None, 0, None),
            out_axes=(0, None),
            axis_name="batch",
        )
    )
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    y, state = run(model, x, state)
    y2, state = run(model, x, state)
    assert y.shape == (5, 2)
    # the counter adds 1 on the second call: output moves by head.weight @ ones
    np.testing.assert_allclose(y2 - y, np.broadcast_to(model[4].weight.sum(1), (5, 2)), atol=1e-5)
    assert float(state.get(model[3][0].index)) == 2.0
    assert int(state.get(model[1].batch_counter)) == 2


def test_sequential_without_state() -> None:
    model, state = nn.make_with_state(nn.Sequential)([Counter(), jnp.tanh])
    with pytest.raises(TypeError, match=r"layers\[0\] \(Counter\) is stateful"):
        model(jnp.ones(3))
    plain = nn.Sequential([jnp.tanh, nn.Lambda(jnp.negative)])
    np.testing.assert_allclose(plain(jnp.ones(2)), -np.tanh(np.ones(2)), rtol=1e-6)
    y, same = plain(jnp.ones(2), state)  # a state passed to plain layers comes back
    assert same is state and y.shape == (2,)
