"""Small Modules, a namedtuple and a Hypothesis strategy of pytrees shared by the tree
utility tests (test_tree_at.py, test_tree_equal_check.py)."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

import ecliptic as ec


class Linear(ec.Module):
    weight: jax.Array
    bias: object
    name: str = ec.field(static=True, default="linear")

    def __call__(self, x):
        out = self.weight @ x
        return out if self.bias is None else out + self.bias


class MLP(ec.Module):
    layers: tuple
    activation: object = ec.field(static=True, default=jax.nn.relu)
    depth: int = ec.field(static=True, default=2)


class Empty(ec.Module):
    tag: str = ec.field(static=True, default="empty")


def make_mlp():
    return MLP(
        (
            Linear(jnp.ones((3, 2)), jnp.zeros(3), "first"),
            Linear(jnp.ones((1, 3)), None, "second"),
        )
    )


Pair = collections.namedtuple("Pair", "left right")

_leaves = st.one_of(
    st.integers(-5, 5),
    st.floats(-1e3, 1e3, allow_nan=False),
    st.text(max_size=3),
    st.none(),
    st.builds(lambda n: np.arange(n, dtype=np.float32), st.integers(0, 3)),
)
pytrees = st.recursive(
    _leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(st.sampled_from("abcd"), children, max_size=3),
        st.builds(Pair, children, children),
        st.builds(lambda w, b: Linear(w, b, "p"), children, children),
    ),
    max_leaves=10,
)
