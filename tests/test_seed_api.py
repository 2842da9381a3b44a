import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ecliptic as ec


class Model(ec.Module):
    weight: jax.Array
    bias: jax.Array
    steps: jax.Array  # integer array: never differentiated
    activation: object = jnp.tanh


def make_model():
    return Model(jnp.arange(6.0).reshape(2, 3) / 6, jnp.ones(2), jnp.array(3), jnp.tanh)


def loss(model, x):
    return jnp.sum(model.activation(model.weight @ x + model.bias) ** 2)


def test_jitf_with_filter_fn_traces_selected_leaves_only():
    traces = []

    def f(model, x):
        traces.append(type(model.steps))
        return loss(model, x)

    jitted = ec.jitf(f, filter_fn=ec.is_inexact_array)
    model = make_model()
    np.testing.assert_allclose(jitted(model, jnp.ones(3)), loss(model, jnp.ones(3)), rtol=1e-6)
    # the integer array was not selected: it is static (a concrete value at trace time)
    assert not issubclass(traces[0], jax.core.Tracer)  # pyright: ignore[reportAttributeAccessIssue]


def test_jitf_with_filter_tree_and_static_argnums():
    jitted = ec.jitf(lambda a, b, n: a * b * n, filter_tree=(True, False, False), static_argnums=2)
    assert jitted(jnp.array(2.0), jnp.array(3.0), 4) == 24.0


def test_jitf_filter_validation():
    with pytest.raises(TypeError, match="exactly one.*both"):
        ec.jitf(lambda x: x, filter_fn=ec.is_array, filter_tree=True)
    with pytest.raises(TypeError, match="exactly one.*neither"):
        ec.jitf(lambda x: x)
    with pytest.raises(ValueError, match="filter_tree.*prefix"):
        ec.jitf(lambda x, y: x, filter_tree=(True, True, True))(jnp.ones(1), jnp.ones(1))


def test_gradf_matches_jax_grad_on_partitioned_tree():
    model = make_model()
    x = jnp.array([0.5, -1.0, 2.0])
    grads = ec.gradf(loss, filter_fn=ec.is_inexact_array)(model, x)
    params, static = ec.partition(model, ec.is_inexact_array)
    expected = jax.grad(lambda p: loss(ec.combine(p, static), x))(params)
    np.testing.assert_allclose(grads.weight, expected.weight, rtol=1e-6)
    np.testing.assert_allclose(grads.bias, expected.bias, rtol=1e-6)
    assert grads.steps is None and grads.activation is None


def test_gradf_with_filter_tree_freezes_leaves():
    model = make_model()
    filter_tree = jax.tree_util.tree_map(lambda _: False, model)
    filter_tree = ec.tree_at(lambda t: t.bias, filter_tree, True)
    grads = ec.gradf(loss, filter_tree=filter_tree)(model, jnp.ones(3))
    assert grads.weight is None and grads.bias is not None


def test_value_and_grad_f_with_argnums_and_aux():
    f = lambda a, b: (jnp.sum(a * b), "aux")
    (value, aux), grads = ec.value_and_grad_f(
        f, filter_fn=ec.is_inexact_array, argnums=(0, 1), has_aux=True
    )(jnp.array([1.0, 2.0]), jnp.array([3.0, 4.0]))
    assert value == 11.0 and aux == "aux"
    np.testing.assert_allclose(grads[0], [3.0, 4.0])
    np.testing.assert_allclose(grads[1], [1.0, 2.0])


def test_gradf_rejects_non_float_selection():
    with pytest.raises(TypeError, match="steps.*floating-point"):
        ec.gradf(loss, filter_fn=ec.is_array)(make_model(), jnp.ones(3))
    with pytest.raises(ValueError, match="argnums"):
        ec.gradf(loss, filter_fn=ec.is_inexact_array, argnums=3)(make_model(), jnp.ones(3))
