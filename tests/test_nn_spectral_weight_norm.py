"""SpectralNorm and WeightNorm against torch.nn.utils.parametrizations (goldens)."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ecliptic
from ecliptic import nn

GOLDENS = np.load(pathlib.Path(__file__).parent / "torch_goldens" / "stateful.npz")
TOL: dict[str, Any] = dict(rtol=1e-5, atol=1e-5)


def g(name: str) -> jax.Array:
    return jnp.asarray(GOLDENS[name])


def make_layer(case: str, key: jax.Array) -> nn.Linear | nn.Conv2d:
    if "linear" in case:
        return nn.Linear(5, 4, key=key)
    padding = 1 if case.startswith("sn") else 0
    return nn.Conv2d(3, 4, 3, padding=padding, key=key)


def with_weights(layer, weight: jax.Array, bias: jax.Array):
    return ecliptic.tree_at(
        lambda m: (m.weight, m.bias), layer, (weight, bias.reshape(layer.bias.shape))
    )


def per_example(fn):
    return ecliptic.filter_jit(
        ecliptic.filter_vmap(fn, in_axes=(None, 0, None), out_axes=(0, None))
    )


# ----------------------------------------------------------------------------------
# SpectralNorm
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["sn_linear", "sn_conv"])
def test_spectral_norm_matches_pytorch(case: str) -> None:
    cfg = json.loads(str(GOLDENS[f"{case}.cfg"]))
    layer = make_layer(case, jax.random.key(0))
    layer = with_weights(layer, g(f"{case}.weight"), g(f"{case}.bias"))
    sn, state = nn.make_with_state(nn.SpectralNorm)(
        layer, num_power_iterations=cfg["iterations"], key=jax.random.key(1)
    )
    state = state.set(sn.uv_index, (g(f"{case}.u0"), g(f"{case}.v0")))
    step = per_example(lambda m, x, s: m(x, s))

    # gradient of the first training call with respect to the unnormalised weight
    def loss(weight, x, state):
        model = ecliptic.tree_at(lambda m: m.layer.weight, sn, weight)
        out, _ = step(model, x, state)
        return jnp.sum(out * g(f"{case}.ct"))

    grad = jax.jit(jax.grad(loss))(sn.layer.weight, g(f"{case}.x0"), state)
    np.testing.assert_allclose(grad, g(f"{case}.grad.weight"), rtol=1e-4, atol=1e-5)

    for i in range(3):
        out, state = step(sn, g(f"{case}.x{i}"), state)
        np.testing.assert_allclose(out, g(f"{case}.out{i}"), **TOL)
        u, v = state.get(sn.uv_index)
        np.testing.assert_allclose(u, g(f"{case}.u{i + 1}"), **TOL)
        np.testing.assert_allclose(v, g(f"{case}.v{i + 1}"), **TOL)
    out, eval_state = step(nn.inference_mode(sn), g(f"{case}.xeval"), state)
    np.testing.assert_allclose(out, g(f"{case}.outeval"), **TOL)
    assert ecliptic.tree_equal(eval_state, state)


def test_spectral_norm_normalises_largest_singular_value() -> None:
    layer = nn.Linear(6, 4, key=jax.random.key(2))
    layer = ecliptic.tree_at(lambda m: m.weight, layer, layer.weight * 10)
    sn, state = nn.make_with_state(nn.SpectralNorm)(layer, key=jax.random.key(3))
    u, v = state.get(sn.uv_index)
    assert u.shape == (4,) and v.shape == (6,)
    # after PyTorch's 15 initial iterations, u^T W v is close to the top singular value
    sigma = float(u @ layer.weight @ v)
    np.testing.assert_allclose(sigma, np.linalg.svd(np.asarray(layer.weight))[1][0], rtol=1e-3)
    assert sn.is_stateful() and not sn.inference


def test_spectral_norm_errors() -> None:
    layer = nn.Linear(3, 2, key=jax.random.key(0))
    with pytest.raises(AttributeError, match="'kernel'"):
        nn.SpectralNorm(layer, "kernel", key=jax.random.key(1))
    with pytest.raises(TypeError, match="key"):
        nn.SpectralNorm(layer, key=None)
    with pytest.raises(ValueError, match="num_power_iterations"):
        nn.SpectralNorm(layer, num_power_iterations=-1, key=jax.random.key(1))
    sn, _ = nn.make_with_state(nn.SpectralNorm)(layer, key=jax.random.key(1))
    with pytest.raises(TypeError, match="stateful layer"):
        sn(jnp.ones(3))


# ----------------------------------------------------------------------------------
# WeightNorm
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["wn_linear", "wn_linear_dim1", "wn_linear_none", "wn_conv"])
def test_weight_norm_matches_pytorch(case: str) -> None:
    dim = json.loads(str(GOLDENS[f"{case}.cfg"]))["dim"]
    layer = with_weights(make_layer(case, jax.random.key(0)), g(f"{case}.v"), g(f"{case}.bias"))
    wn = nn.WeightNorm(layer, axis=dim)
    assert wn.g.shape == GOLDENS[f"{case}.g"].shape
    wn = ecliptic.tree_at(lambda m: m.g, wn, g(f"{case}.g"))

    def loss(v, gain, x):
        model = ecliptic.tree_at(lambda m: (m.layer.weight, m.g), wn, (v, gain))
        out = jax.vmap(model)(x)
        return jnp.sum(out * g(f"{case}.ct")), out

    (_, out), (grad_v, grad_g) = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(
        wn.layer.weight, wn.g, g(f"{case}.x")
    )
    np.testing.assert_allclose(out, g(f"{case}.out"), **TOL)
    np.testing.assert_allclose(grad_v, g(f"{case}.grad.v"), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grad_g, g(f"{case}.grad.g"), rtol=1e-4, atol=1e-5)


def test_weight_norm_starts_as_the_wrapped_layer() -> None:
    layer = nn.Conv2d(2, 3, 3, key=jax.random.key(4))
    wn = nn.WeightNorm(layer)
    assert wn.g.shape == (3, 1, 1, 1) and wn.axis == 0 and wn.weight_name == "weight"
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 5)), jnp.float32)
    f = ecliptic.filter_jit(lambda m, x: m(x))
    np.testing.assert_allclose(f(wn, x), f(layer, x), rtol=1e-5, atol=1e-6)
    assert nn.WeightNorm(layer, axis=-1).axis == 3


def test_weight_norm_errors() -> None:
    layer = nn.Linear(3, 2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="axis=2"):
        nn.WeightNorm(layer, axis=2)
    with pytest.raises(AttributeError, match="'w'"):
        nn.WeightNorm(layer, "w")
    with pytest.raises(TypeError, match="use_bias must be an array"):
        nn.WeightNorm(layer, "use_bias")
