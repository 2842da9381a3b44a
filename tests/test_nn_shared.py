"""Shared: weight tying keeps one copy, gradients from every use add up in it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optax
import pytest

import ecliptic
from ecliptic import nn


class TiedLM(ecliptic.Module):
    """Embedding -> linear mixing -> output projection tied to the embedding."""

    shared: nn.Shared
    mix: nn.Linear

    def __init__(self, vocab: int, size: int, key: jax.Array):
        k1, k2, k3 = jax.random.split(key, 3)
        embedding = nn.Embedding(vocab, size, key=k1)
        head = nn.Linear(size, vocab, use_bias=False, key=k2)
        self.shared = nn.Shared(
            (embedding, head), lambda pair: pair[1].weight, lambda pair: pair[0].weight
        )
        self.mix = nn.Linear(size, size, key=k3)

    def __call__(self, token: jax.Array) -> jax.Array:
        embedding, head = self.shared()
        return head(jnp.tanh(self.mix(embedding(token))))


def test_tied_model_trains_and_stays_tied() -> None:
    model = TiedLM(7, 4, jax.random.key(0))
    embedding, head = model.shared()
    assert head.weight is embedding.weight
    # one copy only: the head's weight is not a leaf of the stored pytree
    stored = jtu.tree_leaves(ecliptic.filter(model, ecliptic.is_array))
    assert len(stored) == 1 + 2  # embedding weight, mix weight and bias

    tokens = jnp.arange(7)
    targets = (tokens + 1) % 7
    optim = optax.adam(5e-2)
    opt_state = optim.init(ecliptic.filter(model, ecliptic.is_inexact_array))

    def loss_fn(params, static):
        m = ecliptic.combine(params, static)
        logits = jax.vmap(m)(tokens)
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    @ecliptic.filter_jit
    def step(model, opt_state):
        params, static = ecliptic.partition(model, ecliptic.is_inexact_array)
        loss, grads = jax.value_and_grad(loss_fn)(params, static)
        updates, opt_state = optim.update(grads, opt_state, params)
        return ecliptic.apply_updates(model, updates), opt_state, loss

    first = None
    for _ in range(40):
        model, opt_state, loss = step(model, opt_state)
        first = float(loss) if first is None else first
    assert float(loss) < 0.5 * first  # pyright: ignore[reportOperatorIssue, reportPossiblyUnboundVariable]
    embedding, head = model.shared()
    np.testing.assert_array_equal(head.weight, embedding.weight)


def test_gradient_is_the_sum_of_both_uses() -> None:
    embedding = nn.Embedding(5, 5, key=jax.random.key(1))
    head = nn.Linear(5, 5, use_bias=False, key=jax.random.key(2))
    tied = nn.Shared((embedding, head), lambda p: p[1].weight, lambda p: p[0].weight)

    def through_shared(weight):
        shared = ecliptic.tree_at(lambda s: s.pytree[0].weight, tied, weight)
        e, h = shared()
        return jnp.sum(h(e(jnp.array(2))) ** 2)

    def untied(w_embed, w_head):
        return jnp.sum((w_head @ w_embed[2]) ** 2)

    w = embedding.weight
    grad = jax.jit(jax.grad(through_shared))(w)
    ge, gh = jax.jit(jax.grad(untied, (0, 1)))(w, w)
    np.testing.assert_allclose(grad, ge + gh, rtol=1e-5, atol=1e-6)


def test_several_nodes_and_subtrees() -> None:
    a = nn.Linear(3, 3, key=jax.random.key(3))
    b = nn.Linear(3, 3, key=jax.random.key(4))
    # tie a whole layer (a subtree) and check structure is restored
    shared = nn.Shared({"a": a, "b": b}, lambda t: t["b"], lambda t: t["a"])
    full = shared()
    assert full["b"] is full["a"]
    # several nodes at once, as tuples
    shared = nn.Shared(
        (a, b), lambda t: (t[1].weight, t[1].bias), lambda t: (t[0].weight, t[0].bias)
    )
    x, y = shared()
    assert y.weight is x.weight and y.bias is x.bias
    out = ecliptic.filter_jit(lambda s, v: s()[1](v))(shared, jnp.ones(3))
    np.testing.assert_allclose(out, a(jnp.ones(3)), rtol=1e-6)


def test_error_different_shapes() -> None:
    a = nn.Linear(3, 4, key=jax.random.key(5))
    b = nn.Linear(4, 3, key=jax.random.key(6))
    # Equinox's wording first, then what each side selected
    with pytest.raises(
        ValueError,
        match=r"^Every node being shared together must have the same pytree "
        r"structure.*\(4, 3\).*\(3, 4\)",
    ):
        nn.Shared((a, b), lambda t: t[0].weight, lambda t: t[1].weight)
    with pytest.raises(ValueError, match="same pytree structure"):
        nn.Shared((a, b), lambda t: t[0].weight, lambda t: (t[1].weight, t[1].bias))
    with pytest.raises(TypeError, match="where must be a function"):
        nn.Shared((a, b), "weight", lambda t: t[1].weight)
    with pytest.raises(ValueError, match="`where` leaves in place"):
        nn.Shared((a, a), lambda t: t[0].weight, lambda t: t[0].weight)
