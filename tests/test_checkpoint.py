"""filter_checkpoint."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import ecliptic as ec


class Block(ec.Module):
    weight: jax.Array
    activation: Callable = ec.field(static=True, default=jnp.tanh)

    def __call__(self, x, repeat):
        for _ in range(repeat):
            x = self.activation(self.weight @ x)
        return x, "done"

    @ec.filter_checkpoint
    def checkpointed(self, x, repeat):
        return self(x, repeat)


BLOCK = Block(jnp.array([[0.5, -0.3], [0.2, 0.8]]))
X = jnp.array([1.0, -2.0])


def loss(block, x):
    y, tag = block(x, 3)
    assert tag == "done"
    return jnp.sum(y**2)


def test_values_and_gradients_unchanged():
    ref_grads = ec.filter_grad(loss)(BLOCK, X)
    ck = ec.filter_checkpoint(BLOCK)  # a Module is a pytree: its arrays are inputs
    out, tag = ck(X, 3)
    np.testing.assert_allclose(out, BLOCK(X, 3)[0])
    assert tag == "done"
    grads = ec.filter_grad(lambda b, x: loss(ec.filter_checkpoint(b), x))(BLOCK, X)
    np.testing.assert_allclose(grads.weight, ref_grads.weight, rtol=1e-6)
    # the method decorator binds the instance
    g2 = ec.filter_grad(lambda b, x: jnp.sum(b.checkpointed(x, 3)[0] ** 2))(BLOCK, X)
    np.testing.assert_allclose(g2.weight, ref_grads.weight, rtol=1e-6)


def test_recomputation_is_in_the_jaxpr():
    ck = ec.filter_checkpoint(lambda x: jnp.sin(jnp.sin(x)))
    jaxpr = jax.make_jaxpr(jax.grad(lambda x: ck(x)))(1.0)
    assert "checkpoint" in str(jaxpr) or "remat" in str(jaxpr)


def test_decorator_with_arguments_policy_and_unhashable_static():
    @ec.filter_checkpoint(prevent_cse=False, policy=jax.checkpoint_policies.nothing_saveable)
    def f(x, options):
        return jnp.sum(jnp.sin(x) * options["scale"])

    x = jnp.array([0.3, 0.7])
    np.testing.assert_allclose(ec.filter_grad(f)(x, {"scale": 2.0}), 2.0 * jnp.cos(x), rtol=1e-6)

    class Unhashable:
        __hash__ = None  # pyright: ignore[reportAssignmentType]
        scale = 3.0

    g = ec.filter_grad(ec.filter_checkpoint(lambda x, o: jnp.sum(x * o.scale)))(x, Unhashable())
    np.testing.assert_allclose(g, 3.0)
