"""Layer names in traced programs: every layer's `__call__` runs in a `jax.named_scope`
of its class name, so profiles and HLO metadata say which layer an op belongs to."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np

import ecliptic
from ecliptic import nn


def _lowered_text(layer, *args):
    return ecliptic.filter_jit(lambda m, *a: m(*a)).lower(layer, *args).as_text(debug_info=True)  # pyright: ignore[reportFunctionMemberAccess]


def test_hlo_names_nested_layers():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    model = nn.Sequential(
        [nn.Linear(3, 4, key=k1), nn.Lambda(jax.nn.relu), nn.MLP(4, 2, 5, 1, key=k2)]
    )
    text = _lowered_text(model, jnp.ones(3))
    assert "/Sequential/Linear/" in text
    assert "Sequential/Lambda" in text
    assert "Sequential/MLP/Linear" in text
    conv = nn.Conv2d(2, 3, kernel_size=3, key=k3)
    assert "/Conv2d/" in _lowered_text(conv, jnp.ones((2, 5, 5)))


def test_stacked_and_stateful_layers_are_named():
    stack = nn.Stacked(lambda k: nn.Linear(4, 4, key=k), 3, key=jax.random.key(1))
    assert "/Stacked/scan" in _lowered_text(stack, jnp.ones(4))
    bn, state = nn.make_with_state(nn.BatchNorm)(4, "batch", mode="batch")
    batched = jax.vmap(bn, axis_name="batch", in_axes=(0, None), out_axes=(0, None))
    text = jax.jit(batched).lower(jnp.ones((2, 4)), state).as_text(debug_info=True)
    assert "(BatchNorm)/" in text  # vmap(BatchNorm)/mul, ...


def test_scope_changes_neither_signature_nor_numbers():
    layer = nn.Linear(3, 2, key=jax.random.key(2))
    params = inspect.signature(nn.Linear.__call__).parameters
    assert list(params) == ["self", "x", "key"]
    assert nn.Linear.__call__.__doc__ and "Arguments" in nn.Linear.__call__.__doc__
    x = np.arange(3.0, dtype=np.float32)
    expected = np.asarray(layer.weight, np.float64) @ x + np.asarray(layer.bias, np.float64)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-6)
    np.testing.assert_allclose(ecliptic.filter_jit(layer)(x), expected, rtol=1e-6)
