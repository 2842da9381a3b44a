"""Tests for apply_updates."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ecliptic as ec


class Affine(ec.Module):
    weight: jax.Array
    bias: object
    activation: Callable
    name: str = ec.field(static=True, default="affine")

    def __call__(self, x):
        out = self.weight @ x
        return self.activation(out if self.bias is None else out + self.bias)


def make_affine():
    return Affine(jnp.ones((2, 3)), jnp.zeros(2), jax.nn.relu)


def test_apply_updates_adds_leafwise_and_returns_a_module():
    model = make_affine()
    updates = Affine(jnp.full((2, 3), 0.5), jnp.ones(2), None)
    new = ec.apply_updates(model, updates)
    assert type(new) is Affine and new.name == "affine"
    np.testing.assert_array_equal(new.weight, 1.5)
    np.testing.assert_array_equal(new.bias, 1.0)
    assert new.activation is jax.nn.relu
    np.testing.assert_array_equal(model.weight, 1.0)  # out of place


def test_apply_updates_skips_none_updates_and_none_leaves():
    model = Affine(jnp.ones((2, 3)), None, jax.nn.relu)
    updates = Affine(jnp.ones((2, 3)), None, None)
    new = ec.apply_updates(model, updates)
    assert new.bias is None
    np.testing.assert_array_equal(new.weight, 2.0)


def test_apply_updates_none_for_a_whole_subtree():
    model = {"a": jnp.ones(2), "frozen": (jnp.ones(3), make_affine())}
    new = ec.apply_updates(model, {"a": jnp.ones(2), "frozen": None})
    assert new["frozen"] is model["frozen"]
    np.testing.assert_array_equal(new["a"], 2.0)
    assert ec.apply_updates(model, None) is model


def test_apply_updates_with_filter_partition_and_optax():
    model = make_affine()
    params, static = ec.partition(model, ec.is_inexact_array)

    def loss(p):
        m = ec.combine(p, static)
        return jnp.sum(m(jnp.ones(3)) ** 2)

    grads = jax.grad(loss)(params)
    optim = optax.sgd(0.1)
    opt_state = optim.init(params)
    updates, opt_state = optim.update(grads, opt_state)
    new = ec.apply_updates(model, updates)
    assert type(new) is Affine and new.activation is jax.nn.relu
    np.testing.assert_allclose(new.weight, model.weight - 0.1 * grads.weight, rtol=1e-6)
    assert loss(ec.filter(new, ec.is_inexact_array)) < loss(params)


def test_apply_updates_under_jit():
    model = make_affine()
    updates = Affine(jnp.ones((2, 3)), jnp.ones(2), None)
    params, static = ec.partition(model, ec.is_array)
    new_params = jax.jit(ec.apply_updates)(params, updates)
    new = ec.combine(new_params, static)
    np.testing.assert_array_equal(new.weight, 2.0)


def test_apply_updates_structure_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="structure of `model`"):
        ec.apply_updates({"a": jnp.ones(2)}, {"b": jnp.ones(2)})
    with pytest.raises(ValueError, match="structure of `model`"):
        ec.apply_updates([jnp.ones(2)], [jnp.ones(2), jnp.ones(2)])


def test_apply_updates_unaddable_leaf_names_the_path():
    model = Affine(jnp.ones((2, 3)), None, jax.nn.relu)
    updates = Affine(jnp.ones((2, 3)), jnp.ones(2), None)
    with pytest.raises(TypeError, match=r"\.bias"):
        ec.apply_updates(model, updates)
