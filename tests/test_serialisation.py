"""tree_serialise_leaves / tree_deserialise_leaves: Equinox's leaf-by-leaf .npy format."""

from __future__ import annotations

import io
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from persistence_helpers import (
    DTYPES,
    abstract,
    abstract_zoo,
    bits_equal,
    fill,
    layer_zoo,
    random_trees,
)

import ecliptic
from ecliptic import CheckpointError


def roundtrip(tree, like=None, **kw):
    f = io.BytesIO()
    ecliptic.tree_serialise_leaves(f, tree, **kw.pop("save", {}))
    f.seek(0)
    return ecliptic.tree_deserialise_leaves(f, tree if like is None else like, **kw)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
def test_every_layer_roundtrips_bit_exactly(dtype):
    skeletons = abstract_zoo(dtype)
    for name, tree in layer_zoo(dtype, seed=1).items():
        # Into a concrete model with other values, and into an abstract skeleton.
        assert bits_equal(roundtrip(tree, like=fill(skeletons[name], seed=2)), tree), name
        assert bits_equal(roundtrip(tree, like=skeletons[name]), tree), name


def test_filter_eval_shape_skeleton():
    make = lambda: ecliptic.nn.MLP(2, 3, 4, 2, key=jax.random.key(0))
    like = ecliptic.filter_eval_shape(make)
    model = fill(like)
    assert bits_equal(roundtrip(model, like=like), model)


def test_scalars_numpy_and_keys():
    tree = {
        "py": [True, 3, -2.5, 1 - 2j],
        "np": [np.arange(6, dtype=np.int16).reshape(2, 3), np.float32(1.5), np.bool_(True)],
        "bf16": jnp.array([1.5, -0.0], jnp.bfloat16),
        "key": jax.random.split(jax.random.key(3), 2),
        "skipped": ("a string", jax.nn.relu, None),
    }
    out = roundtrip(tree)
    assert out["py"] == tree["py"] and [type(x) for x in out["py"]] == [bool, int, float, complex]
    assert isinstance(out["np"][0], np.ndarray) and isinstance(out["np"][1], np.float32)  # pyright: ignore[reportArgumentType]
    assert bits_equal(out, tree)


def _same_layers(nn, key):
    """The same layers (and states), built with Equinox's `nn` or ours."""
    stateful = nn.make_with_state
    return {
        "mlp_scan": nn.MLP(2, 2, 3, 3, scan=True, key=key),
        "mha": nn.MultiheadAttention(2, 4, use_output_bias=True, key=key),
        "lstm": nn.LSTMCell(2, 3, key=key),
        "conv_t": nn.ConvTranspose1d(2, 3, 3, key=key),
        "norms": (nn.LayerNorm(3), nn.GroupNorm(1, 3), nn.RMSNorm(3), nn.PReLU()),
        "embedding": nn.Embedding(3, 2, key=key),
        "weight_norm": nn.WeightNorm(nn.Linear(2, 2, key=key)),
        "bn_ema": stateful(nn.BatchNorm)(2, "b", mode="ema"),
        "bn_batch": stateful(nn.BatchNorm)(2, "b", mode="batch"),
        "spectral": stateful(nn.SpectralNorm)(nn.Linear(2, 2, key=key), "weight", key=key),
    }


def _zeros(x):
    return jnp.zeros(x.shape, x.dtype) if isinstance(x, jax.ShapeDtypeStruct) else x


def _distinct(x):
    """Different values in every floating leaf, so that a misplaced leaf shows."""
    if isinstance(x, jax.ShapeDtypeStruct) and jnp.issubdtype(x.dtype, jnp.inexact):
        return (0.5 + jnp.arange(x.size).reshape(x.shape)).astype(x.dtype)
    return _zeros(x)


def test_equinox_model_files_load_into_the_same_ecliptic_layers(tmp_path):
    eqx = pytest.importorskip("equinox")
    if not hasattr(eqx, "StrictConfig"):
        pytest.skip("needs Equinox >= 0.13 (MLP(scan=True))")
    key = jax.random.key(0)
    theirs = jax.tree.map(_distinct, eqx.filter_eval_shape(_same_layers, eqx.nn, key))
    ours = jax.tree.map(_zeros, ecliptic.filter_eval_shape(_same_layers, ecliptic.nn, key))
    eqx.tree_serialise_leaves(tmp_path / "theirs.eqx", theirs)
    loaded = ecliptic.tree_deserialise_leaves(tmp_path / "theirs.eqx", ours)
    for name in theirs:
        expected = [x for x in jax.tree.leaves(theirs[name]) if eqx.is_array(x)]
        got = [x for x in jax.tree.leaves(loaded[name]) if ecliptic.is_array(x)]
        assert len(got) == len(expected), name
        assert all(np.array_equal(a, b) for a, b in zip(expected, got)), name
    ecliptic.tree_serialise_leaves(tmp_path / "ours.eqx", loaded)
    back = eqx.tree_deserialise_leaves(str(tmp_path / "ours.eqx"), theirs)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(theirs))
        if eqx.is_array(a)
    )


def test_paths_follow_equinox_suffix_rule_and_files_interchange(tmp_path):
    eqx = pytest.importorskip("equinox")
    tree = {"w": jnp.arange(4.0), "n": 7, "b": jnp.ones(2, jnp.bfloat16)}
    # No suffix: ".eqx" is appended by both libraries, on saving and on loading.
    ecliptic.tree_serialise_leaves(tmp_path / "model", tree)
    assert (tmp_path / "model.eqx").exists() and not (tmp_path / "model").exists()
    assert bits_equal(eqx.tree_deserialise_leaves(tmp_path / "model", tree), tree)
    eqx.tree_serialise_leaves(str(tmp_path / "theirs"), tree)
    assert bits_equal(ecliptic.tree_deserialise_leaves(str(tmp_path / "theirs"), tree), tree)
    ecliptic.tree_serialise_leaves(tmp_path / "m.eqx", tree)
    assert bits_equal(eqx.tree_deserialise_leaves(str(tmp_path / "m.eqx"), tree), tree)
    eqx.tree_serialise_leaves(tmp_path / "e.eqx", tree)
    assert bits_equal(ecliptic.tree_deserialise_leaves(str(tmp_path / "e.eqx"), tree), tree)


def test_custom_filter_specs():
    tree = {"a": jnp.ones(2), "b": (jnp.zeros(3), 5)}
    # Skip the ints on save and on load.
    save = lambda f, x: None if isinstance(x, int) else ecliptic.default_serialise_filter_spec(f, x)
    load = lambda f, x: x if isinstance(x, int) else ecliptic.default_deserialise_filter_spec(f, x)
    like = {"a": jnp.full(2, 9.0), "b": (jnp.full(3, 9.0), 11)}
    out = roundtrip(tree, like=like, save={"filter_spec": save}, filter_spec=load)
    assert out["b"][1] == 11 and bits_equal(out["a"], tree["a"])
    # A pytree prefix of specs: load "a" from the file, keep like's "b" without reading it.
    never = lambda f, x: x
    f = io.BytesIO()
    save_spec = {"a": ecliptic.default_serialise_filter_spec, "b": lambda f, x: None}
    ecliptic.tree_serialise_leaves(f, tree, filter_spec=save_spec)
    f.seek(0)
    spec = {"a": ecliptic.default_deserialise_filter_spec, "b": never}
    out = ecliptic.tree_deserialise_leaves(f, like, filter_spec=spec)
    assert bits_equal(out["a"], tree["a"])
    assert all(x is y for x, y in zip(jax.tree.leaves(out["b"]), jax.tree.leaves(like["b"])))
    with pytest.raises(ValueError, match="prefix"):
        ecliptic.tree_deserialise_leaves(io.BytesIO(), like, filter_spec={"zzz": never})


def test_is_leaf():
    tree = {"a": (jnp.ones(2), jnp.zeros(1))}
    spec = lambda f, x: [ecliptic.default_serialise_filter_spec(f, y) for y in x]
    out = roundtrip(
        tree,
        save={"filter_spec": spec, "is_leaf": lambda x: isinstance(x, tuple)},
    )
    assert bits_equal(out, tree)


def test_shape_and_dtype_mismatch_name_the_leaf():
    tree = {"layers": [jnp.ones((2, 3)), jnp.ones(4)]}
    message = r"layers\.0: expected f32\[3,2\], file has f32\[2,3\]"
    with pytest.raises(CheckpointError, match=message):
        roundtrip(tree, like={"layers": [jnp.ones((3, 2)), jnp.ones(4)]})
    with pytest.raises(CheckpointError, match=r"layers\.1: expected i32\[4\], file has f32\[4\]"):
        roundtrip(tree, like={"layers": [jnp.ones((2, 3)), jnp.ones(4, jnp.int32)]})
    with pytest.raises(CheckpointError, match=r"<root>: expected a Python int"):
        roundtrip(2.5, like=3)


def test_non_array_like_where_file_has_array():
    # The function leaf reads nothing, so the next record (an f32[2]) meets like's i32[].
    tree = [jnp.ones(2), np.int32(1)]
    with pytest.raises(CheckpointError, match=r"expected i32\[\], file has f32\[2\]"):
        roundtrip(tree, like=[jax.nn.relu, np.int32(1)])


def test_truncated_file_and_leftover_bytes(tmp_path):
    tree = [jnp.arange(10.0), jnp.ones(3)]
    path = tmp_path / "t.eqx"
    ecliptic.tree_serialise_leaves(path, tree)
    data = path.read_bytes()
    path.write_bytes(data[:-5])
    with pytest.raises(CheckpointError, match=r"1: file ends early"):
        ecliptic.tree_deserialise_leaves(path, tree)
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="left after the last leaf"):
        ecliptic.tree_deserialise_leaves(path, tree[:1])
    with pytest.raises(CheckpointError, match="cannot open"):
        ecliptic.tree_deserialise_leaves(tmp_path / "missing.eqx", tree)


def test_never_unpickles_and_never_allocates_from_the_header():
    f = io.BytesIO()
    np.save(f, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    f.seek(0)
    with pytest.raises(CheckpointError, match="only plain numeric"):
        ecliptic.tree_deserialise_leaves(f, np.zeros(1))
    # A header claiming an enormous shape is rejected before any data is read.
    f = io.BytesIO()
    header = {"descr": "<f4", "fortran_order": False, "shape": (10**12,)}
    np.lib.format.write_array_header_2_0(f, header)
    f.write(bytes(12))
    f.seek(0)
    with pytest.raises(CheckpointError, match=r"expected f32\[3\], file has f32\[1000000000000\]"):
        ecliptic.tree_deserialise_leaves(f, np.zeros(3, np.float32))
    # Even when `like` asks for that much, a short file costs only what it holds.
    f.seek(0)
    with pytest.raises(CheckpointError, match="file ends early"):
        ecliptic.tree_deserialise_leaves(f, jax.ShapeDtypeStruct((10**12,), jnp.float32))
    with pytest.raises(CheckpointError, match="not an .npy record"):
        ecliptic.tree_deserialise_leaves(io.BytesIO(b"PK\x03\x04" + bytes(60)), np.zeros(3))


def test_reads_foreign_byte_orders_and_fortran_order():
    f = io.BytesIO()
    np.save(f, np.arange(6, dtype=">f8").reshape(2, 3))
    np.save(f, np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)))
    f.seek(0)
    like = [np.zeros((2, 3)), np.zeros((2, 3), np.int32)]
    out = ecliptic.tree_deserialise_leaves(f, like)
    np.testing.assert_array_equal(out[0], np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(out[1], np.arange(6).reshape(2, 3))
    assert out[0].dtype == np.float64 and out[0].flags.writeable


def test_bad_arguments():
    with pytest.raises(TypeError, match="path_or_file"):
        ecliptic.tree_serialise_leaves(123, [jnp.ones(1)])
    with pytest.raises(CheckpointError, match="64 bits"):
        ecliptic.tree_serialise_leaves(io.BytesIO(), {"big": 2**70})


def test_user_errors_keep_their_type_with_the_leaf_noted():
    def broken(f, x):
        raise KeyError("mine")

    with pytest.raises(KeyError) as info:
        ecliptic.tree_serialise_leaves(io.BytesIO(), {"a": 1}, filter_spec=broken)
    notes = getattr(info.value, "__notes__", ["(at the leaf a)"])
    assert any("a" in n for n in notes)


def test_pathlib_and_str_paths(tmp_path):
    tree = (jnp.ones(2),)
    for p in (tmp_path / "x.bin", str(tmp_path / "y.bin")):
        ecliptic.tree_serialise_leaves(p, tree)
        assert bits_equal(ecliptic.tree_deserialise_leaves(pathlib.Path(p), tree), tree)


@given(random_trees)
def test_random_trees_roundtrip(tree):
    assert bits_equal(roundtrip(tree), tree)
    assert bits_equal(roundtrip(tree, like=abstract(tree)), tree)
