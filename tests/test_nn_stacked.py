"""Stacked / stack_layers: construction, equivalence with a Python loop over the layers,
per-layer keys, per-layer state, checkpointing, indexing, conversions and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ecliptic as ec
import ecliptic.nn as nn

KEY = jax.random.key(0)
N = 4


def make_mlp(k):
    return nn.MLP(6, 6, 12, 1, key=k)


def residual(layer, x):
    return x + layer(x)


def loop(layers, x, apply=residual):
    for layer in layers:
        x = apply(layer, x)
    return x


def separate(make=make_mlp, n=N, key=KEY):
    return [make(k) for k in jax.random.split(key, n)]


def make_linear(k):
    return nn.Linear(3, 3, key=k)


# Built once: eager construction compiles every random op for its shapes.
STACKED = nn.Stacked(make_mlp, N, key=KEY, apply=residual)
LAYERS = separate()


class Block(nn.StatefulLayer):
    """A residual block with a BatchNorm: stateful."""

    linear: nn.Linear
    norm: nn.BatchNorm

    def __init__(self, key):
        self.linear = nn.Linear(3, 3, key=key)
        self.norm = nn.BatchNorm(3, "batch", mode="torch")

    def __call__(self, x, state, *, key=None):
        y, state = self.norm(self.linear(x), state)
        return x + jax.nn.relu(y), state


def batched(model):
    return jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))


# -- construction and structure ----------------------------------------------------------


def test_stacked_builds_the_same_layers_as_separate_construction():
    stacked = STACKED
    assert len(stacked) == N
    assert stacked.layers.layers[0].weight.shape == (N, 12, 6)
    assert stacked.layers.layers[1].bias.shape == (N, 6)
    # vmap over keys gives exactly the weights of building each layer with its own key.
    assert ec.tree_equal(stacked.layers, nn.stack_layers(LAYERS).layers)
    assert ec.tree_equal(stacked.unstack(), LAYERS)


def test_stacked_works_with_raw_uint32_keys():
    stacked = nn.Stacked(make_linear, 2, key=jax.random.PRNGKey(3))
    assert stacked.layers.weight.shape == (2, 3, 3)


def test_constructor_needing_concrete_values_falls_back_to_a_loop():
    def make(k):
        layer = make_linear(k)
        return layer if float(layer.weight[0, 0]) < 10 else None  # needs a concrete value

    stacked = nn.Stacked(make, 3, key=KEY)
    assert ec.tree_equal(stacked.unstack(), separate(make, 3))


# -- calling ------------------------------------------------------------------------------


@pytest.mark.parametrize("unroll", [1, 2])
def test_call_matches_python_loop(unroll):
    stacked = nn.stack_layers(LAYERS, apply=residual, unroll=unroll)
    x = jnp.linspace(-1.0, 1.0, 6)
    expected = loop(LAYERS, x)
    np.testing.assert_allclose(stacked(x), expected, rtol=1e-5, atol=1e-6)
    jitted = ec.filter_jit(lambda m, x: jax.vmap(m)(x))(stacked, jnp.stack([x, 2 * x]))
    np.testing.assert_allclose(jitted[0], expected, rtol=1e-5, atol=1e-6)


def test_default_apply_chains_layers():
    stacked = nn.Stacked(make_linear, 3, key=KEY)
    x = jnp.arange(3.0)
    expected = loop(separate(make_linear, 3), x, lambda layer, x: layer(x))
    np.testing.assert_allclose(stacked(x), expected, rtol=1e-5, atol=1e-6)


def test_gradients_match_python_loop():
    x = jnp.linspace(-1.0, 1.0, 6)
    grads = ec.filter_grad(lambda m: jnp.sum(m(x) ** 2))(STACKED)
    loop_grads = ec.filter_grad(lambda ls: jnp.sum(loop(ls, x) ** 2))(LAYERS)
    assert ec.tree_equal(grads.layers, nn.stack_layers(loop_grads).layers, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("checkpoint", [True, "auto", jax.checkpoint_policies.dots_saveable])
def test_checkpoint_keeps_values_and_gradients(checkpoint):
    plain = nn.stack_layers(LAYERS, apply=residual, checkpoint=False)
    remat = nn.stack_layers(LAYERS, apply=residual, checkpoint=checkpoint)
    x = jnp.linspace(-1.0, 1.0, 6)
    loss = lambda m: jnp.sum(m(x) ** 2)
    grads, remat_grads = ec.filter_grad(loss)(plain), ec.filter_grad(loss)(remat)
    assert ec.tree_equal(grads.layers, remat_grads.layers, rtol=1e-6)
    jaxpr = str(jax.make_jaxpr(lambda x: ec.filter_grad(loss)(remat))(x))
    assert "remat" in jaxpr or "checkpoint" in jaxpr


def test_default_checkpoint_keeps_products_and_recomputes_the_rest():
    assert STACKED.checkpoint == "auto"
    x = jnp.linspace(-1.0, 1.0, 6)
    loss = lambda m: jnp.sum(m(x) ** 2)
    plain = nn.stack_layers(LAYERS, apply=residual, checkpoint=False)
    auto_jaxpr = str(jax.make_jaxpr(lambda x: ec.filter_grad(loss)(STACKED))(x))
    plain_jaxpr = str(jax.make_jaxpr(lambda x: ec.filter_grad(loss)(plain))(x))
    assert "remat" in auto_jaxpr or "checkpoint" in auto_jaxpr
    assert "remat" not in plain_jaxpr and "checkpoint" not in plain_jaxpr


def test_each_layer_gets_its_own_key_and_no_key_means_no_randomness():
    stacked = nn.Stacked(lambda k: nn.Dropout(0.5), 3, key=KEY)
    x = jnp.ones(64)
    keys = jax.random.split(KEY, 3)
    expected = x
    for k in keys:
        expected = nn.Dropout(0.5)(expected, key=k)
    np.testing.assert_allclose(stacked(x, key=KEY), expected)
    with pytest.raises(ValueError, match="Dropout needs a PRNG key"):
        stacked(x)
    np.testing.assert_allclose(stacked(x, inference=True), x)  # kwargs reach every layer
    with_key = lambda k, x: stacked(x, key=k)
    assert "random" not in str(jax.make_jaxpr(lambda x: stacked(x, inference=True))(x))
    assert "random_bits" in str(jax.make_jaxpr(with_key)(KEY, x))


def test_custom_apply_receives_key_and_extra_keywords():
    seen = []

    def apply(layer, x, *, key, scale):
        seen.append((key is not None, scale))
        return x + scale * layer(x)

    stacked = nn.Stacked(make_linear, 2, key=KEY, apply=apply)
    stacked(jnp.ones(3), key=KEY, scale=0.5)
    assert seen == [(True, 0.5)]  # traced once, for all layers


def test_stacked_inside_sequential_and_filter_vmap_ensemble():
    stacked = STACKED
    seq = nn.Sequential([stacked, nn.Lambda(jnp.tanh)])
    x = jnp.ones(6)
    # Sequential passes key=...; an apply without a `key` parameter is called without it.
    np.testing.assert_allclose(seq(x, key=KEY), jnp.tanh(stacked(x)), rtol=1e-6)
    ensemble = ec.filter_vmap(lambda k: nn.Stacked(make_linear, 2, key=k))(jax.random.split(KEY, 3))
    assert ensemble.layers.weight.shape == (3, 2, 3, 3)
    out = ec.filter_vmap(lambda m, x: m(x), in_axes=(ec.if_array(0), None))(ensemble, x[:3])
    assert out.shape == (3, 3)


# -- state ---------------------------------------------------------------------------------


def test_stateful_layers_thread_a_stacked_state():
    model, state = nn.make_with_state(nn.Stacked)(Block, 3, key=KEY)
    assert model.is_stateful()
    assert all(leaf.shape[0] == 3 for leaf in jax.tree.leaves(state))
    x = jax.random.normal(KEY, (8, 3))
    y, new_state = batched(model)(x, state)
    h, per_layer = x, []
    for i, layer in enumerate(model.unstack()):
        sub = jax.tree.map(lambda v, i=i: v[i], state.substate(model))
        h, sub = batched(layer)(h, sub)
        per_layer.append(sub)
    np.testing.assert_allclose(y, h, rtol=1e-5, atol=1e-6)
    expected = jax.tree.map(lambda *v: jnp.stack(v), *per_layer)
    assert ec.tree_equal(new_state.substate(model), expected, rtol=1e-5, atol=1e-6)
    # Running statistics moved, counters advanced once per layer.
    assert not ec.tree_equal(new_state, state)


def test_stack_layers_of_separately_built_stateful_layers():
    layers = [Block(k) for k in jax.random.split(KEY, 2)]
    stacked = nn.stack_layers(layers)
    state = nn.State(stacked)
    assert len(state) == 2  # one entry per StateIndex, values stacked along axis 0
    y, _ = batched(stacked)(jnp.ones((4, 3)), state)
    assert y.shape == (4, 3)


def test_state_errors():
    model, state = nn.make_with_state(nn.Stacked)(Block, 2, key=KEY)
    with pytest.raises(TypeError, match="stateful layer"):
        model(jnp.ones(3))
    plain = STACKED
    assert not plain.is_stateful()
    with pytest.raises(TypeError, match="not stateful"):
        plain(jnp.ones(6), state)


# -- indexing and conversions ----------------------------------------------------------------


def test_indexing_slicing_iteration_and_round_trip():
    stacked = nn.stack_layers(LAYERS, apply=residual, unroll=2)
    layers = LAYERS
    assert ec.tree_equal(stacked[1], layers[1])
    assert ec.tree_equal(stacked[-1], layers[-1])
    assert ec.tree_equal(stacked[np.int64(2)], layers[2])  # pyright: ignore[reportArgumentType]
    assert ec.tree_equal(list(stacked), layers)
    part = stacked[1:3]
    assert isinstance(part, nn.Stacked) and len(part) == 2
    assert part.apply is residual and part.unroll == 2
    assert ec.tree_equal(part.unstack(), layers[1:3])
    again = nn.stack_layers(stacked.unstack(), apply=residual)
    assert ec.tree_equal(again.layers, stacked.layers)
    np.testing.assert_allclose(again(jnp.ones(6)), stacked(jnp.ones(6)))
    with pytest.raises(IndexError, match="out of range"):
        stacked[N]
    with pytest.raises(IndexError, match="selects no layers"):
        stacked[3:1]
    with pytest.raises(TypeError, match="ints or slices"):
        stacked["0"]  # pyright: ignore[reportArgumentType]


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layers, match",
    [
        ([nn.Linear(2, 3, key=KEY), nn.Linear(2, 4, key=KEY)], r"\.out_features \(static"),
        ([nn.Linear(2, 3, key=KEY), nn.Linear(2, 3, use_bias=False, key=KEY)], r"\.use_bias"),
        ([nn.LayerNorm(3), nn.LayerNorm(3, eps=1e-3)], r"\.eps .*1e-05 vs 0\.001"),
        (
            [nn.MLP(2, 2, 3, 1, key=KEY), nn.MLP(2, 2, 3, 1, activation=jnp.tanh, key=KEY)],
            r"\.activation: function relu .*vs function tanh",
        ),
        ([nn.Linear(2, 3, key=KEY), nn.Identity()], "Linear.*Identity"),
        (
            [nn.Linear(2, 3, key=KEY), nn.Linear(2, 3, dtype=jnp.float16, key=KEY)],
            r"\.weight: float32\[3, 2\] vs float16\[3, 2\]",
        ),
    ],
)
def test_stack_layers_names_the_differing_field(layers, match):
    with pytest.raises(ValueError, match=match):
        nn.stack_layers(layers)


def test_argument_errors():
    with pytest.raises(ValueError, match="n .* must be an int >= 1; got 0"):
        nn.Stacked(make_mlp, 0, key=KEY)
    with pytest.raises(ValueError, match="got True"):
        nn.Stacked(make_mlp, True, key=KEY)
    with pytest.raises(ValueError, match="must be an int >= 1"):
        nn.stack_layers([])
    with pytest.raises(TypeError, match="list or tuple"):
        nn.stack_layers(nn.Linear(2, 2, key=KEY))
    with pytest.raises(TypeError, match="make_layer must be a callable"):
        nn.Stacked(3, 2, key=KEY)
    with pytest.raises(TypeError, match="PRNG key"):
        nn.Stacked(make_mlp, 2, key=None)
    with pytest.raises(TypeError, match="apply must be a callable"):
        nn.Stacked(make_mlp, 2, key=KEY, apply=1)
    with pytest.raises(TypeError, match='checkpoint must be "auto", a bool'):
        nn.Stacked(make_mlp, 2, key=KEY, checkpoint="yes")
    with pytest.raises(ValueError, match="unroll must be an int >= 1"):
        nn.Stacked(make_mlp, 2, key=KEY, unroll=0)
    with pytest.raises(TypeError, match="must return a callable layer"):
        nn.Stacked(lambda k: jnp.zeros(3), 2, key=KEY)


def test_output_that_changes_shape_is_a_clear_error():
    stacked = nn.Stacked(lambda k: nn.Linear(2, 3, key=k), 2, key=KEY)
    with pytest.raises(TypeError, match="next layer's input.*same pytree structure"):
        stacked(jnp.ones(2))


def test_unstacked_layers_replaced_in_layers_is_a_clear_error():
    broken = ec.tree_at(lambda s: s.layers, STACKED, LAYERS[0])
    with pytest.raises(ValueError, match="leading axis of size n=4"):
        broken(jnp.ones(6))
