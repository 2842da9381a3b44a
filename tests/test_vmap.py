from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ecliptic as ec


class Affine(ec.Module):
    weight: jax.Array
    bias: jax.Array
    activation: Callable = ec.field(static=True, default=jnp.tanh)

    def __call__(self, x):
        return self.activation(self.weight @ x + self.bias)


def make(key):
    wkey, bkey = jax.random.split(key)
    return Affine(jax.random.normal(wkey, (2, 3)), jax.random.normal(bkey, (2,)))


def test_matches_jax_vmap_on_arrays():
    x = jnp.arange(12.0).reshape(4, 3)
    f = lambda x, y: jnp.sin(x) * y
    np.testing.assert_allclose(
        ec.filter_vmap(f, in_axes=(0, None))(x, 2.0), jax.vmap(f, in_axes=(0, None))(x, 2.0)
    )


def test_wrapping_a_module_batches_inputs_not_parameters():
    model = make(jax.random.key(0))
    xs = jnp.ones((5, 3))
    np.testing.assert_allclose(ec.filter_vmap(model)(xs), jax.vmap(model)(xs))


def test_ensemble_from_model_factory():
    keys = jax.random.split(jax.random.key(1), 4)
    ensemble = ec.filter_vmap(make)(keys)
    assert ensemble.weight.shape == (4, 2, 3) and ensemble.activation is jnp.tanh
    x = jnp.ones(3)
    outputs = ec.filter_vmap(lambda m, x: m(x), in_axes=(0, None))(ensemble, x)
    expected = np.stack([make(k)(x) for k in keys])
    np.testing.assert_allclose(outputs, expected, rtol=1e-6)


def test_callable_and_prefix_axes():
    tree = {"a": jnp.ones((3, 2)), "b": jnp.ones((2, 3))}
    out = ec.filter_vmap(lambda t: t["a"].sum() + t["b"].sum(), in_axes=({"a": 0, "b": 1},))(tree)
    assert out.shape == (3,)
    out = ec.filter_vmap(lambda x, n: x * n, in_axes=ec.if_array(1))(jnp.ones((2, 3)), 3)
    assert out.shape == (3, 2)


def test_out_axes_and_non_array_outputs():
    fn = lambda x: (x, "label", jnp.zeros(2))
    a, label, z = ec.filter_vmap(fn, out_axes=(1, None, None))(jnp.ones((4, 3)))
    assert a.shape == (3, 4) and label == "label" and z.shape == (2,)


def test_axis_name_and_axis_size():
    out = ec.filter_vmap(lambda x: x - jax.lax.pmean(x, "b"), axis_name="b")(jnp.arange(4.0))
    np.testing.assert_allclose(out, jnp.arange(4.0) - 1.5)
    assert ec.filter_vmap(lambda: jnp.ones(2), axis_size=3)().shape == (3, 2)


def test_named_in_axes():
    f = ec.filter_vmap(lambda x, y: x * y, in_axes={"y": None})
    np.testing.assert_allclose(f(jnp.arange(3.0), jnp.array(2.0)), 2 * jnp.arange(3.0))
    with pytest.raises(ValueError, match="zzz"):
        ec.filter_vmap(lambda x: x, in_axes={"zzz": 0})(jnp.ones(2))


def test_inside_filter_jit_and_grad():
    ensemble = ec.filter_vmap(make)(jax.random.split(jax.random.key(2), 3))

    @ec.filter_jit
    def loss(models, x):
        return ec.filter_vmap(lambda m: m(x))(models).sum()

    params, static = ec.partition(ensemble, ec.is_array)
    grads = jax.grad(lambda p: loss(ec.combine(p, static), jnp.ones(3)))(params)
    assert grads.weight.shape == (3, 2, 3)


def test_errors():
    with pytest.raises(ValueError, match=r"inconsistent sizes.*args\[0\]: 3.*args\[1\]: 4"):
        ec.filter_vmap(lambda a, b: a)(jnp.ones(3), jnp.ones(4))
    with pytest.raises(ValueError, match="prefix"):
        ec.filter_vmap(lambda a: a, in_axes=(0, 0))(jnp.ones(3))
    with pytest.raises(ValueError, match="no input is batched"):
        ec.filter_vmap(lambda a: a, in_axes=None)(jnp.ones(3))
    with pytest.raises(ValueError, match="axis 2"):
        ec.filter_vmap(lambda a: a, in_axes=2)(jnp.ones(3))
    with pytest.raises(ValueError, match="non-array"):
        ec.filter_vmap(lambda a: a, in_axes=0)(3.0)
    for kind in (TypeError, RuntimeError):  # ours, and the type Equinox raises
        with pytest.raises(kind, match="positional"):
            ec.filter_vmap(lambda a: a)(a=jnp.ones(3))
    with pytest.raises(ValueError, match="unbatched"):
        ec.filter_vmap(lambda a: a, out_axes=None)(jnp.ones(3))


def test_wrapper_keeps_function_metadata():
    def described(x):
        """Doubles."""
        return 2 * x

    wrapped = ec.filter_vmap(described)
    assert wrapped.__name__ == "described" and wrapped.__doc__ == "Doubles."
    assert wrapped.__wrapped__ is described  # pyright: ignore[reportFunctionMemberAccess]


def test_python_number_output_with_an_output_axis_is_batched():
    out = ec.filter_vmap(lambda: (2.5, "label"), out_axes=0, axis_size=3)()
    assert isinstance(out[0], jax.Array)
    np.testing.assert_array_equal(out[0], np.full(3, 2.5, np.float32))
    assert out[1] == "label"  # non-numbers stay as they are
    assert ec.filter_vmap(lambda: 2.5, axis_size=3)() == 2.5  # default out_axes: unbatched


def test_if_array_is_a_pytree_leaf():
    spec = (ec.if_array(0), None, {"a": ec.if_array(1)})
    assert jax.tree_util.tree_leaves(spec) == [ec.if_array(0), ec.if_array(1)]
    # A spec can be mapped over against the inputs it describes.
    described = jax.tree_util.tree_map(
        lambda s, x: s(x), (ec.if_array(0), ec.if_array(1)), (jnp.ones(2), "name")
    )
    assert described == (0, None)
    assert ec.if_array(2) == ec.if_array(2) and hash(ec.if_array(2)) == hash(ec.if_array(2))
    out = ec.filter_vmap(lambda x, y: x * y, in_axes=(ec.if_array(0), None))(jnp.arange(3.0), 2)
    np.testing.assert_array_equal(out, [0.0, 2.0, 4.0])
