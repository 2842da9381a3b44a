"""Shared helpers for the persistence tests: a zoo of every nn layer, bitwise tree
comparison, and random parameter values (with the awkward ones: -0.0, inf, nan)."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

import ecliptic
import ecliptic.nn as enn

DTYPES = (jnp.float32, jnp.float16, jnp.bfloat16)


def _build_zoo(dtype: Any) -> dict[str, tuple[Any, Any]]:
    ks = iter(jax.random.split(jax.random.key(0), 64))
    d = {"dtype": dtype}
    zoo: dict[str, Any] = {
        "linear": enn.Linear(3, 4, **d, key=next(ks)),
        "linear_scalar": enn.Linear("scalar", "scalar", use_bias=False, **d, key=next(ks)),
        "identity": enn.Identity(),
        "lambda": enn.Lambda(jax.nn.relu),
        "sequential": enn.Sequential(
            [enn.Linear(2, 3, **d, key=next(ks)), jax.nn.tanh, enn.Linear(3, 1, **d, key=next(ks))]
        ),
        "mlp": enn.MLP(2, 3, 4, 2, **d, key=next(ks)),
        "conv1d": enn.Conv1d(2, 4, 3, **d, key=next(ks)),
        "conv2d_groups": enn.Conv2d(4, 6, (2, 3), groups=2, **d, key=next(ks)),
        "conv3d_nobias": enn.Conv3d(1, 2, 2, use_bias=False, **d, key=next(ks)),
        "conv_t1d": enn.ConvTranspose1d(2, 3, 3, stride=2, **d, key=next(ks)),
        "conv_t2d_groups": enn.ConvTranspose2d(4, 6, (2, 3), groups=2, **d, key=next(ks)),
        "conv_t3d": enn.ConvTranspose3d(1, 2, 2, **d, key=next(ks)),
        "maxpool": enn.MaxPool2d(2),
        "avgpool": enn.AvgPool1d(2),
        "adaptive": enn.AdaptiveAvgPool2d((2, 2)),
        "dropout": enn.Dropout(0.3),
        "embedding": enn.Embedding(5, 3, **d, key=next(ks)),
        "rope": enn.RotaryPositionalEmbedding(4),
        "mha": enn.MultiheadAttention(2, 4, **d, key=next(ks)),
        "mha_bias": enn.MultiheadAttention(
            2, 4, key_size=3, use_query_bias=True, use_output_bias=True, **d, key=next(ks)
        ),
        "layernorm": enn.LayerNorm(4, **d),
        "groupnorm": enn.GroupNorm(2, 4, **d),
        "rmsnorm": enn.RMSNorm(4, **d),
        "prelu": enn.PReLU(**d),
        "gru": enn.GRUCell(3, 4, **d, key=next(ks)),
        "lstm": enn.LSTMCell(3, 4, **d, key=next(ks)),
        "weightnorm": enn.WeightNorm(enn.Linear(3, 2, **d, key=next(ks))),
        # Layers whose PyTorch layout differs (a conv's bias), stacked: a ModuleList.
        "stacked": enn.Stacked(
            lambda k: enn.Conv1d(2, 2, 3, padding=1, **d, key=k), 3, key=next(ks)
        ),
        "shared": enn.Shared(
            (enn.Embedding(5, 3, **d, key=next(ks)), enn.Linear(3, 5, False, **d, key=next(ks))),
            lambda p: p[1].weight,
            lambda p: p[0].weight,
        ),
    }
    out: dict[str, tuple[Any, Any]] = {name: (m, None) for name, m in zoo.items()}
    out["batchnorm"] = enn.make_with_state(enn.BatchNorm)(4, "batch", dtype=dtype, mode="torch")
    out["batchnorm_ema"] = enn.make_with_state(enn.BatchNorm)(4, "batch", mode="ema", dtype=dtype)
    out["stacked_batchnorm"] = enn.make_with_state(enn.Stacked)(
        lambda k: enn.BatchNorm(4, "batch", dtype=dtype, mode="torch"), 2, key=next(ks)
    )
    out["spectralnorm"] = enn.make_with_state(enn.SpectralNorm)(
        enn.Linear(3, 2, **d, key=next(ks)), key=next(ks)
    )
    return out


@functools.cache
def abstract_zoo(dtype: Any = jnp.float32) -> dict[str, tuple[Any, Any]]:
    """Every nn layer as an abstract skeleton (ShapeDtypeStruct leaves): building the
    layers for real would compile every initialiser, which takes seconds each."""
    return ecliptic.filter_eval_shape(_build_zoo, dtype)


def layer_zoo(dtype: Any = jnp.float32, seed: int = 0) -> dict[str, tuple[Any, Any]]:
    """Every nn layer (several configurations), as ``name -> (model, state or None)``,
    with random parameters (see `fill`)."""
    return fill(abstract_zoo(dtype), seed)


def fill(tree: Any, seed: int = 0) -> Any:
    """Concrete random arrays in place of ShapeDtypeStructs (and of arrays): floating
    ones include -0.0, inf and nan, so that round trips must copy bits exactly."""
    rng = np.random.default_rng(seed)

    def one(x: Any) -> Any:
        if not isinstance(x, (jax.ShapeDtypeStruct, jax.Array)):
            return x
        dtype = np.dtype(x.dtype)
        if jnp.issubdtype(dtype, jnp.floating):
            values = rng.standard_normal(x.shape).astype(np.float32)
            flat = values.reshape(-1)
            for i, special in enumerate((-0.0, np.inf, np.nan)):
                if flat.size > i:
                    flat[i] = special
            return jax.device_put(values.astype(dtype))
        if dtype == np.bool_:
            return jax.device_put(rng.integers(0, 2, x.shape).astype(bool))
        return jax.device_put(rng.integers(-100, 100, x.shape).astype(dtype))

    return jax.tree_util.tree_map(one, tree)


def is_real_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic))


def raw_bytes(x: Any) -> bytes:
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    return np.ascontiguousarray(np.asarray(x)).reshape(-1).view(np.uint8).tobytes()


def bits_equal(a: Any, b: Any) -> bool:
    """Same structure; arrays of the same kind, shape, dtype and bytes; other leaves equal."""
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    if ta != tb:
        return False
    for x, y in zip(la, lb):
        if is_real_array(x) or is_real_array(y):
            both_jax = isinstance(x, jax.Array) and isinstance(y, jax.Array)
            if type(x) is not type(y) and not both_jax:
                return False
            if x.shape != y.shape or x.dtype != y.dtype or raw_bytes(x) != raw_bytes(y):
                return False
        elif x is not y and x != y:
            return False
    return True


def abstract(tree: Any) -> Any:
    """The tree with its JAX arrays replaced by ShapeDtypeStructs (as filter_eval_shape)."""
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype) if isinstance(x, jax.Array) else x, tree
    )


# ------------------------------------------------------------------ random pytrees

#: Every dtype safetensors can hold; the JAX ones also as JAX arrays (64-bit ones only
#: as NumPy, since JAX runs without x64 here).
ALL_DTYPES = [
    np.bool_,
    np.uint8,
    np.int8,
    np.uint16,
    np.int16,
    np.uint32,
    np.int32,
    np.uint64,
    np.int64,
    np.float16,
    jnp.bfloat16,
    np.float32,
    np.float64,
    np.complex64,
    jnp.float8_e4m3fn,
    jnp.float8_e5m2,
]
_JAX_OK = {np.dtype(d) for d in ALL_DTYPES if np.dtype(d).itemsize <= 4 and d is not np.complex64}


class Node(ecliptic.Module):
    """A Module with two children and a static field, for random trees."""

    left: Any
    right: Any
    tag: str = ecliptic.field(static=True)


@st.composite
def random_arrays(draw: Any) -> Any:
    """An array of any dtype and a small shape, holding random bit patterns (NaN
    payloads, subnormals, ...), as NumPy or (when JAX supports the dtype) JAX."""
    dtype = np.dtype(draw(st.sampled_from(ALL_DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 3), max_size=3)))
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = draw(st.binary(min_size=n, max_size=n))
    array = np.frombuffer(raw, np.uint8).view(dtype).reshape(shape).copy()
    if dtype == np.bool_:
        array = array.view(np.uint8) % 2 == 1
    if dtype in _JAX_OK and draw(st.booleans()):
        return jax.device_put(array)
    return array


_leaves = st.one_of(
    random_arrays(),
    random_arrays(),
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.just(jax.nn.relu),
)
_names = st.text("abcxyz_", min_size=1, max_size=3)

random_trees = st.recursive(
    _leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.tuples(children, children),
        st.dictionaries(_names, children, max_size=3),
        st.builds(Node, children, children, st.sampled_from(["p", "q"])),
    ),
    max_leaves=8,
)

__all__ = [
    "ALL_DTYPES",
    "DTYPES",
    "Node",
    "abstract",
    "abstract_zoo",
    "bits_equal",
    "fill",
    "layer_zoo",
    "random_arrays",
    "random_trees",
    "raw_bytes",
]
