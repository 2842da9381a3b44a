"""intermediates: captured outputs equal direct calls (float64 NumPy for a Linear), and the
capture works under filter_jit, filter_grad, filter_vmap and inside nn.Stacked."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ecliptic as ec
import ecliptic.nn as enn


class Net(ec.Module):
    first: enn.Linear
    norm: enn.LayerNorm
    second: enn.Linear
    unused: enn.Linear

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.first = enn.Linear(4, 6, key=k1)
        self.norm = enn.LayerNorm(6)
        self.second = enn.Linear(6, 2, key=k2)
        self.unused = enn.Linear(2, 2, key=k3)

    def __call__(self, x):
        return self.second(jax.nn.relu(self.norm(self.first(x))))


def test_captured_values_match_a_float64_reference(getkey):
    net = Net(getkey())
    x = jax.random.normal(getkey(), (4,))
    out, first = ec.intermediates(net, where=lambda m: m.first)(x)
    w, b, x64 = (np.asarray(v, np.float64) for v in (net.first.weight, net.first.bias, x))
    np.testing.assert_allclose(first, w @ x64 + b, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out, net(x))
    _, pair = ec.intermediates(net, where=lambda m: (m.first, m.norm))(x)
    assert isinstance(pair, tuple) and len(pair) == 2
    np.testing.assert_allclose(pair[1], net.norm(net.first(x)), rtol=1e-6)
    _, named = ec.intermediates(net, where=["norm", "second"])(x)
    assert list(named) == ["norm", "second"]
    np.testing.assert_array_equal(named["second"], out)


def test_names_follow_named_parameters(getkey):
    mlp = enn.MLP(3, 2, 5, 2, key=getkey())
    prefixes = {name.rsplit(".", 1)[0] for name, _ in ec.named_parameters(mlp)}
    assert prefixes == {"layers.0", "layers.1", "layers.2"}
    x = jax.random.normal(getkey(), (3,))
    _, captured = ec.intermediates(mlp, where=sorted(prefixes))(x)
    h = mlp.layers[0](x)
    np.testing.assert_allclose(captured["layers.0"], h, rtol=1e-6)
    np.testing.assert_allclose(captured["layers.1"], mlp.layers[1](jax.nn.relu(h)), rtol=1e-6)


def test_under_filter_jit_grad_and_vmap(getkey):
    net = Net(getkey())
    xs = jax.random.normal(getkey(), (5, 4))
    capture = ec.intermediates(net, where=lambda m: m.first)
    out, first = ec.filter_jit(lambda f, x: f(x))(capture, xs[0])
    np.testing.assert_allclose(first, net.first(xs[0]), rtol=1e-6)
    outs, firsts = ec.filter_vmap(lambda f, x: f(x), in_axes=(None, 0))(capture, xs)
    assert firsts.shape == (5, 6)
    np.testing.assert_allclose(firsts, jax.vmap(net.first)(xs), rtol=1e-6)

    # Gradients through a captured value: d/dx sum(W x + b) = W^T 1.
    def feature_sum(x):
        return jnp.sum(ec.intermediates(net, where=lambda m: m.first)(x)[1])

    grad = ec.filter_grad(feature_sum)(xs[0])
    np.testing.assert_allclose(grad, np.asarray(net.first.weight).sum(0), rtol=1e-5)

    # ... and into the model's parameters, with the capture built inside the transform.
    def loss(model, x):
        _, h = ec.intermediates(model, where=lambda m: m.first)(x)
        return jnp.sum(h**2)

    grads = ec.filter_jit(ec.filter_grad(loss))(net, xs[0])
    h = net.first(xs[0])
    np.testing.assert_allclose(grads.first.bias, 2 * h, rtol=1e-5)
    np.testing.assert_allclose(grads.first.weight, 2 * np.outer(h, xs[0]), rtol=1e-5)


def test_inside_stacked_one_value_per_layer(getkey):
    stack = enn.Stacked(
        lambda k: enn.Linear(4, 4, key=k),
        3,
        key=getkey(),
        apply=lambda layer, x: x + jnp.tanh(layer(x)),
    )
    x = jax.random.normal(getkey(), (4,))
    out, per_layer = ec.intermediates(stack, where=lambda s: s.layers)(x)
    assert per_layer.shape == (3, 4)
    h, expected = x, []
    for layer in stack.unstack():
        expected.append(layer(h))
        h = h + jnp.tanh(expected[-1])
    np.testing.assert_allclose(per_layer, np.stack(expected), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, h, rtol=1e-5, atol=1e-6)

    # Under jit and grad as well.
    def loss(s, x):
        return jnp.sum(ec.intermediates(s, where=lambda s: s.layers)(x)[1][1])

    grads = ec.filter_jit(ec.filter_grad(loss))(stack, x)
    assert grads.layers.bias.shape == (3, 4)
    np.testing.assert_allclose(grads.layers.bias[1], np.ones(4), rtol=1e-6)
    np.testing.assert_allclose(grads.layers.bias[2], np.zeros(4), atol=1e-7)


def test_inside_stateful_stacked(getkey):
    def block(k):
        return enn.Sequential([enn.Linear(3, 3, key=k), enn.BatchNorm(3, axis_name="batch")])

    stack, state = enn.make_with_state(enn.Stacked)(block, 2, key=getkey())
    capture = ec.intermediates(stack, where=lambda s: s.layers.layers[0])
    xs = jax.random.normal(getkey(), (6, 3))
    fn = ec.filter_vmap(
        lambda f, x, s: f(x, s), in_axes=(None, 0, None), out_axes=((0, None), 0), axis_name="batch"
    )
    (out, new_state), linear_out = fn(capture, xs, state)
    assert linear_out.shape == (6, 2, 3)
    first = jax.vmap(stack[0].layers[0])(xs)
    np.testing.assert_allclose(linear_out[:, 0], first, rtol=1e-5)
    plain = ec.filter_vmap(
        lambda m, x, s: m(x, s), in_axes=(None, 0, None), out_axes=(0, None), axis_name="batch"
    )(stack, xs, state)
    np.testing.assert_allclose(out, plain[0], rtol=1e-5, atol=1e-7)


def test_repeated_calls_give_a_tuple(getkey):
    layer = enn.Linear(3, 3, key=getkey())
    twice = enn.Sequential([layer, layer])
    x = jax.random.normal(getkey(), (3,))
    _, calls = ec.intermediates(twice, where="layers.1")(x)
    assert calls["layers.1"].shape == (3,)

    class Shared(ec.Module):
        layer: enn.Linear

        def __call__(self, x):
            return self.layer(self.layer(x))

    _, both = ec.intermediates(Shared(layer), where=lambda m: m.layer)(x)
    assert isinstance(both, tuple) and len(both) == 2
    np.testing.assert_allclose(both[1], layer(layer(x)), rtol=1e-6)


def test_clear_errors(getkey):
    net = Net(getkey())
    x = jnp.ones(4)
    with pytest.raises(ValueError, match=r"never called by the model: 'unused'"):
        ec.intermediates(net, where=lambda m: (m.first, m.unused))(x)
    with pytest.raises(ValueError, match=r"never called by the model: 'unused'"):
        ec.intermediates(net, where="unused")(x)
    with pytest.raises(ValueError, match=r"has no entry 'thrid'"):
        ec.intermediates(net, where="thrid")
    with pytest.raises(TypeError, match="must select callable submodules"):
        ec.intermediates(net, where=lambda m: m.first.weight)
    mha = enn.MultiheadAttention(2, 4, key=getkey())
    seq = jnp.ones((3, 4))
    with pytest.raises(ValueError, match="'query_proj' is called inside a JAX transformation"):
        ec.intermediates(mha, where=lambda m: m.query_proj)(seq, seq, seq)
    # The whole attention layer can be captured.
    out, whole = ec.intermediates(mha, where=lambda m: m)(seq, seq, seq)
    np.testing.assert_array_equal(whole, out)


def test_nothing_is_mutated(getkey):
    net = Net(getkey())
    before = jax.tree.leaves(ec.filter(net, ec.is_array))
    capture = ec.intermediates(net, where=lambda m: m.first)
    capture(jnp.ones(4))
    assert isinstance(net.first, enn.Linear)
    for a, b in zip(before, jax.tree.leaves(ec.filter(net, ec.is_array))):
        assert a is b
    # The capture can be reused, and the model called directly still returns one value.
    out1, c1 = capture(jnp.ones(4))
    out2, c2 = capture(jnp.ones(4))
    np.testing.assert_array_equal(c1, c2)
    assert net(jnp.ones(4)).shape == (2,)
