"""Sequential, Lambda and MLP: composition, key threading, indexing, learnable
activations, dtypes, transforms, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from goldens_linear_conv_pool import abstract, materialise

import ecliptic as ecl
import ecliptic.nn as enn

KEY = jax.random.key(0)


class KeyRecorder(ecl.Module):
    """Returns the key it was given (as raw data), to check key threading."""

    def __call__(self, x, *, key=None):
        return x if key is None else x + jax.random.key_data(key).sum().astype(jnp.float32)


def test_sequential_applies_in_order_and_threads_keys():
    seq = enn.Sequential([enn.Lambda(lambda x: x + 1), jax.nn.relu, enn.Lambda(lambda x: 2 * x)])
    np.testing.assert_allclose(seq(jnp.array([-3.0, 1.0])), [0.0, 4.0])
    rec = enn.Sequential([KeyRecorder(), KeyRecorder()])
    assert float(rec(jnp.zeros(()))) == 0.0  # no key: every layer gets key=None
    k1, k2 = jax.random.split(KEY)
    expected = sum(float(jax.random.key_data(k).sum()) for k in (k1, k2))
    assert float(rec(jnp.zeros(()), key=KEY)) == pytest.approx(expected)


def test_sequential_container_protocol():
    layers = [enn.Identity(), enn.Lambda(jnp.sin), enn.Lambda(jnp.cos)]
    seq = enn.Sequential(layers)
    assert len(seq) == 3 and seq[1] is layers[1] and seq[-1] is layers[2]
    assert list(seq) == layers
    sub = seq[1:]
    assert isinstance(sub, enn.Sequential) and len(sub) == 2
    np.testing.assert_allclose(sub(0.5), np.cos(np.sin(0.5)), rtol=1e-6)
    assert isinstance(seq.layers, tuple)
    with pytest.raises(TypeError, match="ints or slices"):
        seq["a"]


def test_sequential_jit_vmap_grad():
    k1, k2 = jax.random.split(KEY)
    model = enn.Sequential([enn.Linear(3, 4, key=k1), jax.nn.tanh, enn.Linear(4, 2, key=k2)])
    xs = jnp.asarray(np.random.default_rng(0).standard_normal((5, 3)), jnp.float32)

    @ecl.filter_jit  # jax.nn.tanh is a non-array leaf: static under filter_jit
    def run(model, xs):
        loss = lambda m: jnp.sum(jax.vmap(m)(xs) ** 2)
        return jax.vmap(model)(xs), ecl.filter_grad(loss)(model)

    ys, grads = run(model, xs)
    l1, l2 = model.layers[0], model.layers[2]
    expected = np.tanh(xs @ l1.weight.T + l1.bias) @ l2.weight.T + l2.bias
    np.testing.assert_allclose(ys, expected, rtol=1e-5, atol=1e-6)
    assert grads.layers[0].weight.shape == (4, 3) and grads.layers[2].bias.shape == (2,)


def test_lambda():
    lam = enn.Lambda(jnp.exp)
    np.testing.assert_allclose(lam(jnp.zeros(2), key=KEY), [1.0, 1.0])
    assert jax.tree_util.tree_leaves(lam) == [jnp.exp]
    # A Module as fn keeps its parameters visible (a normal field).
    inner = enn.Linear(2, 2, key=KEY)
    wrapped = enn.Lambda(inner)
    assert len([x for x in jax.tree_util.tree_leaves(wrapped) if ecl.is_array(x)]) == 2
    with pytest.raises(TypeError, match="callable"):
        enn.Lambda(3)


def test_sequential_errors():
    with pytest.raises(TypeError, match="list or tuple"):
        enn.Sequential(enn.Identity())
    with pytest.raises(TypeError, match=r"layers\[1\] is not callable"):
        enn.Sequential([enn.Identity(), 3])


def test_mlp_structure_and_forward():
    mlp = materialise(lambda: enn.MLP(3, 2, width_size=5, depth=2, key=KEY))
    assert [(la.in_features, la.out_features) for la in mlp.layers] == [(3, 5), (5, 5), (5, 2)]
    assert mlp.in_size == 3 and mlp.out_size == 2 and mlp.width_size == 5 and mlp.depth == 2
    x = jnp.array([0.1, -0.4, 0.7])
    h = x
    for layer in mlp.layers[:-1]:
        h = jax.nn.relu(layer.weight @ h + layer.bias)
    expected = mlp.layers[-1].weight @ h + mlp.layers[-1].bias
    np.testing.assert_allclose(ecl.filter_jit(mlp)(x), expected, rtol=1e-5, atol=1e-6)
    # Only the six Linear parameters are leaves (relu and identity carry none).
    assert len([x for x in jax.tree_util.tree_leaves(mlp) if ecl.is_array(x)]) == 6


def test_mlp_options():
    scalar = materialise(
        lambda: enn.MLP(
            "scalar",
            "scalar",
            4,
            1,
            activation=jnp.tanh,
            final_activation=jax.nn.sigmoid,
            use_bias=False,
            use_final_bias=True,
            key=KEY,
        )
    )
    assert scalar.layers[0].bias is None and scalar.layers[1].bias is not None
    assert scalar.layers[0].weight.shape == (4, 1) and scalar.layers[1].weight.shape == (1, 4)
    single = materialise(lambda: enn.MLP(3, 2, 7, 0, key=KEY))
    assert len(single.layers) == 1 and single.layers[0].weight.shape == (2, 3)
    # The final activation acts on the whole output vector: softmax sums to one.
    soft = materialise(lambda: enn.MLP(3, 4, 5, 1, final_activation=jax.nn.softmax, key=KEY))

    @ecl.filter_jit
    def run(scalar, single, soft):
        return scalar(jnp.array(0.3)), single(jnp.ones(3)), soft(jnp.ones(3))

    y_scalar, y_single, y_soft = run(scalar, single, soft)
    assert y_scalar.shape == () and 0.0 < float(y_scalar) < 1.0
    np.testing.assert_allclose(
        y_single, single.layers[0].weight.sum(1) + single.layers[0].bias, rtol=1e-5
    )
    assert float(y_soft.sum()) == pytest.approx(1.0, rel=1e-5)


class Slope(ecl.Module):
    """A learnable leaky ReLU (kept local so that this test needs no other layer file)."""

    alpha: jax.Array

    def __call__(self, x):
        return jnp.where(x > 0, x, self.alpha * x)


def test_mlp_learnable_activation_is_per_neuron():
    prelu = Slope(jnp.array(0.25))
    make = lambda: enn.MLP(3, 2, 4, 2, activation=prelu, final_activation=prelu, key=KEY)
    mlp = materialise(make)
    (alpha,) = [x for x in jax.tree_util.tree_leaves(mlp.activation) if ecl.is_array(x)]
    (final,) = [x for x in jax.tree_util.tree_leaves(mlp.final_activation) if ecl.is_array(x)]
    leaf_shape = next(x for x in jax.tree_util.tree_leaves(prelu) if ecl.is_array(x)).shape
    assert alpha.shape == (2, 4) + leaf_shape and final.shape == (2,) + leaf_shape
    # Every slope 0.25: the same as leaky_relu(0.25) applied everywhere.
    quarter = lambda tree: jax.tree_util.tree_map(lambda a: jnp.full_like(a, 0.25), tree)
    mlp = ecl.tree_at(
        lambda m: (m.activation, m.final_activation),
        mlp,
        (quarter(mlp.activation), quarter(mlp.final_activation)),
    )
    leaky = lambda v: jax.nn.leaky_relu(v, 0.25)
    plain = abstract(lambda: enn.MLP(3, 2, 4, 2, activation=leaky, final_activation=leaky, key=KEY))
    plain = ecl.tree_at(lambda m: m.layers, plain, mlp.layers)
    x = jnp.array([0.5, -1.0, 2.0])

    @ecl.filter_jit
    def run(mlp, plain):
        return mlp(x), plain(x), jax.grad(lambda m: jnp.sum(m(x) ** 2))(mlp)

    y, y_plain, grads = run(mlp, plain)
    np.testing.assert_allclose(y, y_plain, rtol=1e-5, atol=1e-6)
    g_alpha = next(x for x in jax.tree_util.tree_leaves(grads.activation) if ecl.is_array(x))
    assert g_alpha.shape == alpha.shape


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_mlp_scan_stacks_hidden_layers_with_the_same_values(depth):
    prelu = Slope(jnp.array(0.25))
    make = lambda scan: enn.MLP(3, 2, 4, depth, activation=prelu, scan=scan, key=KEY)
    looped, scanned = make(False), make(True)  # real initialisation, to compare values
    first, hidden, last = scanned.layers
    assert hidden.weight.shape == (depth - 1, 4, 4) and hidden.bias.shape == (depth - 1, 4)
    # Layer i of the stack is the loop's layer i + 1: same key, same initial values.
    for i in range(depth - 1):
        np.testing.assert_array_equal(hidden.weight[i], looped.layers[i + 1].weight)
    np.testing.assert_array_equal(first.weight, looped.layers[0].weight)
    np.testing.assert_array_equal(last.weight, looped.layers[-1].weight)
    # Distinct per-layer activation slopes, to see that layer i uses its own.
    slopes = jnp.linspace(0.1, 0.9, depth * 4).reshape(depth, 4)
    looped, scanned = (
        ecl.tree_at(lambda m: m.activation.alpha, m, slopes) for m in (looped, scanned)
    )
    x = jnp.array([0.5, -1.0, 2.0])

    @ecl.filter_jit
    def run(model):
        return model(x), ecl.filter_grad(lambda m: jnp.sum(m(x) ** 2))(model)

    (y_loop, g_loop), (y_scan, g_scan) = run(looped), run(scanned)
    np.testing.assert_allclose(y_scan, y_loop, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g_scan.activation.alpha, g_loop.activation.alpha, rtol=1e-5)
    for i, layer in enumerate(g_loop.layers[1:-1]):
        np.testing.assert_allclose(g_scan.layers[1].weight[i], layer.weight, rtol=1e-5, atol=1e-7)
    assert "scan=True" in repr(scanned) and "scan" not in repr(looped)
    with pytest.raises(TypeError, match="scan must be a bool"):
        enn.MLP(3, 2, 4, depth, scan=1, key=KEY)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_mlp_low_precision(dtype):
    mlp = materialise(lambda: enn.MLP(3, 2, 4, 1, dtype=dtype, key=KEY))
    assert all(la.weight.dtype == dtype for la in mlp.layers)
    y = ecl.filter_jit(lambda m, x: m(x))(mlp, jnp.ones(3, dtype))
    assert y.dtype == dtype


def test_mlp_errors():
    with pytest.raises(ValueError, match="depth"):
        enn.MLP(2, 2, 3, -1, key=KEY)
    with pytest.raises(ValueError, match="width_size"):
        enn.MLP(2, 2, -1, 1, key=KEY)
    with pytest.raises(TypeError, match="callable"):
        enn.MLP(2, 2, 3, 1, activation="relu", key=KEY)
    with pytest.raises(ValueError, match=r"shape \(2,\); got shape \(3,\)"):
        enn.MLP(2, 2, 3, 1, key=KEY)(jnp.ones(3))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_composition_dtypes_jit_vmap_grad(dtype):
    model = materialise(
        lambda: enn.Sequential(
            [
                enn.Linear(3, 4, dtype=dtype, key=KEY),
                enn.Lambda(jax.nn.gelu),
                enn.MLP(4, "scalar", 5, 2, dtype=dtype, key=KEY),
                enn.Identity(),
            ]
        )
    )
    xs = jnp.asarray(np.random.default_rng(3).standard_normal((6, 3)), dtype)

    @ecl.filter_jit
    def run(model, xs):
        loss = lambda m: jnp.sum(jax.vmap(m)(xs).astype(jnp.float32) ** 2)
        return jax.vmap(model)(xs), model(xs[2]), ecl.filter_grad(loss)(model)

    ys, y2, grads = run(model, xs)
    assert ys.shape == (6,) and ys.dtype == dtype
    np.testing.assert_array_equal(ys[2], y2)
    assert grads.layers[2].layers[1].weight.dtype == dtype
    assert grads.layers[0].weight.shape == (4, 3)
