"""filter_eval_shape."""

import jax
import jax.numpy as jnp

import ecliptic as ec


class Linear(ec.Module):
    weight: jax.Array
    name: str = ec.field(static=True)

    def __init__(self, n_in, n_out, *, key, name="lin"):
        self.weight = jax.random.normal(key, (n_out, n_in))
        self.name = name


def test_arrays_become_structs_and_non_arrays_pass_through():
    out = ec.filter_eval_shape(
        lambda x, n, tag: (x * n, n, tag, x.astype(jnp.int32)),
        jax.ShapeDtypeStruct((3, 2), jnp.float32),
        2,
        "tag",
    )
    assert out[0] == jax.ShapeDtypeStruct((3, 2), jnp.float32)
    assert out[1] == 2 and out[2] == "tag"
    assert out[3] == jax.ShapeDtypeStruct((3, 2), jnp.int32)


def test_module_initialisation_without_allocating():
    model = ec.filter_eval_shape(Linear, 4, 3, key=jax.random.key(0), name="abstract")
    assert isinstance(model, Linear) and model.name == "abstract"
    assert model.weight == jax.ShapeDtypeStruct((3, 4), jnp.float32)
    # nothing is computed: a huge shape is fine
    big = ec.filter_eval_shape(lambda: jnp.zeros((100_000, 100_000)))
    assert big.shape == (100_000, 100_000)


def test_traced_once_per_structure_and_unhashable_static():
    calls = []

    def f(x):
        calls.append(1)
        return x + 1

    for _ in range(3):
        ec.filter_eval_shape(f, jnp.ones(2))
    assert len(calls) == 1  # cached trace

    class Unhashable:
        __hash__ = None  # pyright: ignore[reportAssignmentType]

    out = ec.filter_eval_shape(lambda x, u: (x * 2, u), jnp.ones(2), u := Unhashable())
    assert out[0].shape == (2,) and out[1] is u
