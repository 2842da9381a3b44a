"""`register_torch_layout`: a user's layer with its own PyTorch layout, looked up like the
built-in layers (by class, then base classes)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ecliptic
import ecliptic.nn as enn


class Dense(ecliptic.Module):
    """y = x @ w + b with w of shape (in, out): PyTorch's Linear keeps w.T."""

    w: jax.Array
    b: jax.Array

    def __call__(self, x, *, key=None):
        return x @ self.w + self.b


class DenseNoBias(Dense):
    pass


def _export(layer, state):
    return {"weight": np.asarray(layer.w).T, "bias": np.asarray(layer.b)}


def _load(layer, entries, state):
    w = entries.get("weight", layer.w.shape[::-1], layer.w.dtype)
    b = entries.get("bias", layer.b.shape, layer.b.dtype)
    fields = {}
    if w is not None:
        fields["w"] = w.T
    if b is not None:
        fields["b"] = b
    return entries.replace(layer, **fields), state


@pytest.fixture
def registered():
    # Dense exists only in this file: its layout cannot affect other tests.
    ecliptic.register_torch_layout(Dense, export=_export, load=_load)


def _model(seed):
    rng = np.random.default_rng(seed)
    dense = Dense(
        jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
        jnp.asarray(rng.normal(size=2), jnp.float32),
    )
    return enn.Sequential([dense, enn.Lambda(jax.nn.relu)])


def test_user_layer_round_trips_in_torch_layout(registered):
    model = _model(0)
    sd = ecliptic.state_dict(model, format="torch")
    assert set(sd) == {"0.weight", "0.bias"}
    w = np.asarray(model.layers[0].w, np.float64)
    np.testing.assert_array_equal(sd["0.weight"], w.T)  # PyTorch's (out, in)
    # What PyTorch's Linear computes from these entries equals what the layer computes.
    x = np.random.default_rng(1).normal(size=(5, 3))
    torch_like = np.maximum(x @ sd["0.weight"].astype(np.float64).T + sd["0.bias"], 0)
    np.testing.assert_allclose(jax.vmap(model)(jnp.asarray(x, jnp.float32)), torch_like, rtol=1e-5)
    out = ecliptic.load_state_dict(_model(2), sd, format="torch")
    np.testing.assert_array_equal(out.layers[0].w, model.layers[0].w)
    np.testing.assert_array_equal(out.layers[0].b, model.layers[0].b)
    assert isinstance(out.layers[0].w, jax.Array)


def test_subclasses_use_the_layout_and_shapes_are_checked(registered):
    layer = DenseNoBias(jnp.ones((3, 2)), jnp.zeros(2))
    assert ecliptic.state_dict(layer, format="torch")["weight"].shape == (2, 3)
    report = ecliptic.check_state_dict(
        layer, {"weight": np.ones((3, 2)), "bias": np.zeros(2)}, format="torch"
    )
    assert report.mismatched and "weight: expected f32[2,3], got f64[3,2]" in report.mismatched[0]


class Plain(ecliptic.Module):
    w: jax.Array
    b: jax.Array


def test_without_registration_the_native_names_are_used():
    layer = Plain(jnp.ones((3, 2)), jnp.zeros(2))
    assert set(ecliptic.state_dict(layer, format="torch")) == {"w", "b"}


def test_errors_name_the_layer_and_bad_arguments():
    def refuse(layer, state):
        raise ecliptic.CheckpointError("no PyTorch counterpart")

    class Refused(Dense):
        pass

    ecliptic.register_torch_layout(Refused, export=refuse, load=_load)
    model = enn.Sequential([Refused(jnp.ones((3, 2)), jnp.zeros(2))])
    with pytest.raises(ecliptic.CheckpointError, match="^0: no PyTorch counterpart"):
        ecliptic.state_dict(model, format="torch")
    with pytest.raises(TypeError, match="layer_type must be a class; got str"):
        ecliptic.register_torch_layout("Dense", export=_export, load=_load)  # pyright: ignore[reportArgumentType]
    with pytest.raises(TypeError, match="load must be a callable; got NoneType"):
        ecliptic.register_torch_layout(Dense, export=_export, load=None)  # pyright: ignore[reportArgumentType]
