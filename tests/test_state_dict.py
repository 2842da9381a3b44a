"""named_parameters, state_dict, load_state_dict: dotted names, and PyTorch's layouts."""

from __future__ import annotations

import importlib.util
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given
from persistence_helpers import (
    DTYPES,
    abstract,
    abstract_zoo,
    bits_equal,
    fill,
    layer_zoo,
    random_trees,
    raw_bytes,
)

import ecliptic
import ecliptic.nn as enn
from ecliptic import StateDictError

GOLDENS = os.path.join(os.path.dirname(__file__), "torch_goldens")


def build(make, *args, **kwargs):
    """A layer with random values, built abstractly (no initialiser compilation)."""
    return fill(ecliptic.filter_eval_shape(make, *args, **kwargs), seed=5)


def key():
    return jax.random.key(0)


# ----------------------------------------------------------------------------- naming


def test_dotted_names_and_duplicates():
    w = jnp.ones(2)
    tree = {"enc": build(enn.MLP, 2, 3, 4, 1, key=key()), "list": [w, (w, 3)], "none": None}
    names = [name for name, _ in ecliptic.named_parameters(tree)]
    assert names == [
        "enc.layers.0.weight",
        "enc.layers.0.bias",
        "enc.layers.1.weight",
        "enc.layers.1.bias",
        "list.0",
    ]
    everything = dict(ecliptic.named_parameters(tree, remove_duplicate=False))
    assert "list.1.0" in everything and everything["list.1.0"] is w
    sd = ecliptic.state_dict(tree)
    assert set(sd) == set(everything) and all(isinstance(v, np.ndarray) for v in sd.values())
    sd["list.0"][0] = 5.0  # copies: the model is untouched
    assert float(w[0]) == 1.0


def test_state_entries_are_named_by_their_index():
    model, state = fill(abstract_zoo()["batchnorm"])
    sd = ecliptic.state_dict({"bn": model}, state=state)
    assert set(sd) == {
        "bn.weight",
        "bn.bias",
        "bn.batch_counter",
        "bn.batch_state_index.0",
        "bn.batch_state_index.1",
    }
    torch_sd = ecliptic.state_dict({"bn": model}, state=state, format="torch")
    assert set(torch_sd) == {
        "bn.weight",
        "bn.bias",
        "bn.running_mean",
        "bn.running_var",
        "bn.num_batches_tracked",
    }
    assert torch_sd["bn.num_batches_tracked"].dtype == np.int64
    message = "bn: a BatchNorm keeps .* pass the model's state"
    with pytest.raises(ecliptic.CheckpointError, match=message):
        ecliptic.state_dict({"bn": model}, format="torch")


# ------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("format", ["native", "torch"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
def test_every_layer_roundtrips_bit_exactly(dtype, format):
    skeletons = abstract_zoo(dtype)
    for name, (model, state) in layer_zoo(dtype, seed=7).items():
        if format == "torch" and name == "batchnorm_ema":
            continue  # no PyTorch layout (test_torch_layout_refuses_other_batchnorm_modes)
        sd = ecliptic.state_dict(model, state=state, format=format)
        target, target_state = fill(skeletons[name], seed=8)
        out = ecliptic.load_state_dict(target, sd, state=target_state, format=format)
        if state is None:
            assert bits_equal(out, model), name
        else:
            assert bits_equal(out, (model, state)), name
        # Into an abstract skeleton too.
        skeleton, skeleton_state = skeletons[name]
        out = ecliptic.load_state_dict(skeleton, sd, state=skeleton_state, format=format)
        assert bits_equal(out, model if state is None else (model, state)), name


def test_accepts_numpy_jax_and_array_likes():
    class FakeTensor:  # e.g. a torch tensor: has __array__, detach and cpu
        def __init__(self, value):
            self.value = value

        def detach(self):
            return self

        def cpu(self):
            return self

        def __array__(self, dtype=None, copy=None):
            return np.asarray(self.value, dtype)

    layer = build(enn.Linear, 3, 2, key=key())
    for wrap in (np.asarray, jnp.asarray, FakeTensor):
        sd = {"weight": wrap(np.full((2, 3), 2.0)), "bias": wrap(np.zeros(2, np.float32))}
        out = ecliptic.load_state_dict(layer, sd)
        assert out.weight.dtype == jnp.float32 and float(out.weight[0, 0]) == 2.0


# ----------------------------------------------------------------------------- errors


def test_strict_reports_everything_at_once():
    model = build(enn.MLP, 2, 3, 4, 1, key=key())
    sd = ecliptic.state_dict(model)
    del sd["layers.0.bias"]
    sd["layers.1.weight"] = np.ones((4, 3), np.float32)
    sd["layers.1.bias"] = np.ones(3, np.complex64)
    sd["layers.9.weight"] = np.ones(1)
    with pytest.raises(StateDictError) as info:
        ecliptic.load_state_dict(model, sd)
    report = info.value.report
    assert report.missing == ("layers.0.bias",)
    assert report.unexpected == ("layers.9.weight",)
    assert report.mismatched == (
        "layers.1.weight: expected f32[3,4], got f32[4,3]",
        "layers.1.bias: expected f32[3], got c64[3] (cannot cast complex64 to float32)",
    )
    message = str(info.value)
    assert "missing keys (1)" in message and "layers.9.weight" in message
    assert isinstance(info.value, ecliptic.CheckpointError)
    assert ecliptic.check_state_dict(model, sd) == report


def test_non_strict_loads_what_fits():
    model = build(enn.MLP, 2, 3, 4, 1, key=key())
    sd = {
        "layers.0.weight": np.full((4, 2), 7.0),  # float64: cast
        "layers.1.weight": np.ones((9, 9)),  # wrong shape: skipped
        "extra": np.ones(1),
    }
    out = ecliptic.load_state_dict(model, sd, strict=False)
    assert np.all(np.asarray(out.layers[0].weight) == 7.0)
    assert bits_equal(out.layers[1], model.layers[1])
    assert bits_equal(out.layers[0].bias, model.layers[0].bias)
    assert not ecliptic.check_state_dict(model, sd).ok


def test_bad_arguments():
    model = build(enn.Linear, 2, 2, key=key())
    with pytest.raises(ValueError, match="format"):
        ecliptic.state_dict(model, format="pytorch")
    with pytest.raises(TypeError, match="State"):
        ecliptic.state_dict(model, state={"not": "a state"})
    with pytest.raises(TypeError, match="keys must be strings"):
        ecliptic.load_state_dict(model, {0: np.ones(2)})
    with pytest.raises(TypeError, match="mapping"):
        ecliptic.load_state_dict(model, [np.ones(2)])
    with pytest.raises(StateDictError, match="weight: a object is not a numeric array"):
        ecliptic.load_state_dict(model, {"weight": object(), "bias": np.ones(2)})
    with pytest.raises(ecliptic.CheckpointError, match="both named"):
        ecliptic.state_dict({"a.b": jnp.ones(1), "a": {"b": jnp.ones(1)}})


# ----------------------------------------------------------------------- torch layouts


def test_torch_layout_conv_and_transpose():
    conv = build(enn.Conv2d, 4, 6, 3, groups=2, key=key())
    sd = ecliptic.state_dict(conv, format="torch")
    assert sd["weight"].shape == (6, 2, 3, 3) and sd["bias"].shape == (6,)
    convt = build(enn.ConvTranspose2d, 4, 6, (2, 3), groups=2, key=key())
    sd = ecliptic.state_dict(convt, format="torch")
    assert sd["weight"].shape == (4, 3, 2, 3) and sd["bias"].shape == (6,)
    # Channel swap per group and a spatial flip: weight[o, i] == torch[g*in_g + i, o % out_g]
    w, t = np.asarray(convt.weight), sd["weight"]
    assert np.array_equal(w[4, 1], t[2 + 1, 4 - 3][::-1, ::-1], equal_nan=True)


def test_torch_layout_recurrent_biases():
    gru = build(enn.GRUCell, 3, 2, key=key())
    sd = ecliptic.state_dict(gru, format="torch")
    assert np.array_equal(sd["bias_ih"], np.asarray(gru.bias), equal_nan=True)
    np.testing.assert_array_equal(sd["bias_hh"][:4], 0)
    # Importing PyTorch's two biases: r and z fold together, n stays apart.
    sd["bias_ih"], sd["bias_hh"] = np.arange(6.0), np.arange(6.0) * 10
    out = ecliptic.load_state_dict(gru, sd, format="torch")
    np.testing.assert_array_equal(out.bias, [0, 11, 22, 33, 4, 5])
    np.testing.assert_array_equal(out.bias_n, [40, 50])
    lstm = build(enn.LSTMCell, 3, 2, key=key())
    sd = ecliptic.state_dict(lstm, format="torch")
    np.testing.assert_array_equal(sd["bias_hh"], 0)
    sd["bias_ih"], sd["bias_hh"] = np.ones(8), np.full(8, 2.0)
    np.testing.assert_array_equal(ecliptic.load_state_dict(lstm, sd, format="torch").bias, 3.0)


def test_torch_layout_attention():
    mha = build(enn.MultiheadAttention, 2, 4, use_value_bias=True, key=key())
    sd = ecliptic.state_dict(mha, format="torch")
    assert set(sd) == {"in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"}
    np.testing.assert_array_equal(sd["in_proj_bias"][:8], 0)  # absent q/k biases: zeros
    np.testing.assert_array_equal(sd["out_proj.bias"], 0)
    sd["in_proj_bias"][0] = 1.0  # a query bias this layer cannot hold
    with pytest.raises(StateDictError, match="in_proj_bias: nonzero bias .*use_query_bias=False"):
        ecliptic.load_state_dict(mha, sd, format="torch")
    kv = build(enn.MultiheadAttention, 2, 4, key_size=3, value_size=5, key=key())
    sd = ecliptic.state_dict(kv, format="torch")
    assert set(sd) == {"q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj.weight"}
    assert sd["k_proj_weight"].shape == (4, 3) and sd["v_proj_weight"].shape == (4, 5)


def test_torch_layout_sequential_and_prelu():
    seq = build(lambda: enn.Sequential([enn.Linear(2, 2, key=key()), jax.nn.relu, enn.PReLU()]))
    assert set(ecliptic.state_dict(seq, format="torch")) == {"0.weight", "0.bias", "2.weight"}


@pytest.mark.parametrize("mode", ["ema", "batch"])
def test_torch_layout_refuses_other_batchnorm_modes(mode):
    # Only mode="torch" keeps PyTorch's running statistics (an unbiased running
    # variance used as it is); "ema" and "batch" keep others, which no PyTorch BatchNorm
    # reproduces: exporting or importing them would silently change the model.
    bn, state = enn.make_with_state(enn.BatchNorm)(4, "batch", mode=mode)
    model = enn.Sequential([bn])
    with pytest.raises(ecliptic.CheckpointError, match=f'^0: .*mode="{mode}".*mode="torch"'):
        ecliptic.state_dict(model, state=state, format="torch")
    torch_bn, torch_state = enn.make_with_state(enn.BatchNorm)(4, "batch", mode="torch")
    sd = ecliptic.state_dict(enn.Sequential([torch_bn]), state=torch_state, format="torch")
    with pytest.raises(ecliptic.CheckpointError, match=f'^0: .*mode="{mode}".*mode="torch"'):
        ecliptic.load_state_dict(model, sd, state=state, format="torch")
    # Without a state only the affine parameters are involved: those load as before.
    weights = {k: v for k, v in sd.items() if k in ("0.weight", "0.bias")}
    weights["0.weight"] = np.arange(4.0, dtype=np.float32)
    out = ecliptic.load_state_dict(model, weights, format="torch")
    np.testing.assert_array_equal(out.layers[0].weight, np.arange(4.0))
    report = ecliptic.check_state_dict(model, sd, format="torch")
    assert set(report.unexpected) == {"0.running_mean", "0.running_var", "0.num_batches_tracked"}
    assert "pass the model's State" in str(report)


def test_stacked_is_a_module_list_in_torch_format():
    model, _ = layer_zoo(seed=3)["stacked"]
    as_list = enn.Sequential(model.unstack())  # Sequential's torch names are golden-tested
    sd = ecliptic.state_dict(model, format="torch")
    expected = ecliptic.state_dict(as_list, format="torch")
    assert list(sd) == [f"{i}.{p}" for i in range(3) for p in ("weight", "bias")]
    assert set(sd) == set(expected)
    assert all(raw_bytes(sd[k]) == raw_bytes(expected[k]) for k in sd)
    assert sd["1.bias"].shape == (2,)  # PyTorch's conv bias, not ecliptic's (2, 1)
    assert ecliptic.state_dict(model)["layers.weight"].shape == (3, 2, 2, 3)  # native: stacked

    # Per-layer weights load into a stacked skeleton, layer i from entries "i.*".
    other = fill(abstract(model), seed=9)
    new_sd = ecliptic.state_dict(other, format="torch")
    skeleton = abstract_zoo()["stacked"][0]
    loaded = ecliptic.load_state_dict(skeleton, new_sd, format="torch")
    assert isinstance(loaded, enn.Stacked) and loaded.n == 3
    assert bits_equal(loaded, other)

    class Net(ecliptic.Module):
        blocks: enn.Stacked

    names = ecliptic.state_dict(Net(model), format="torch")
    assert "blocks.2.weight" in names and "blocks.layers.weight" not in names
    del new_sd["1.bias"]
    with pytest.raises(StateDictError) as info:
        ecliptic.load_state_dict(model, new_sd, format="torch")
    assert info.value.report.missing == ("1.bias",)
    partial = ecliptic.load_state_dict(model, new_sd, format="torch", strict=False)
    assert bits_equal(partial[1].bias, model[1].bias)  # the missing entry is kept
    assert bits_equal(partial[0].bias, other[0].bias)


def test_stacked_stateful_layers_export_and_load_per_layer_state():
    model, state = layer_zoo(seed=4)["stacked_batchnorm"]
    means, variances = state.get(model.layers.batch_state_index)
    sd = ecliptic.state_dict(model, state=state, format="torch")
    assert {"0.running_mean", "1.running_var", "1.num_batches_tracked"} <= set(sd)
    assert raw_bytes(sd["1.running_mean"]) == raw_bytes(np.asarray(means[1]))
    assert raw_bytes(sd["0.running_var"]) == raw_bytes(np.asarray(variances[0]))

    sd["0.running_mean"] = np.full(4, 3.0, np.float32)
    sd["1.num_batches_tracked"] = np.array(7)
    _, new_state = ecliptic.load_state_dict(model, sd, state=state, format="torch")
    new_means, new_variances = new_state.get(model.layers.batch_state_index)
    assert new_means.shape == (2, 4)
    np.testing.assert_array_equal(new_means[0], 3.0)
    assert raw_bytes(np.asarray(new_means[1])) == raw_bytes(np.asarray(means[1]))
    assert raw_bytes(np.asarray(new_variances)) == raw_bytes(np.asarray(variances))
    assert new_state.get(model.layers.batch_counter).tolist() == [
        int(state.get(model.layers.batch_counter)[0]),
        7,
    ]


# ---------------------------------------------------------------------- torch goldens


def _load_golden_script(filename):
    path = os.path.join(GOLDENS, filename)
    spec = importlib.util.spec_from_file_location(filename.removesuffix(".py"), path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _golden_module():
    return _load_golden_script("gen_interop.py")


@pytest.fixture(scope="module")
def interop():
    gi = _golden_module()
    skeleton = ecliptic.filter_eval_shape(gi.make_ecliptic_net, jax.random.key(0))
    return gi, skeleton, np.load(gi.IO)


def _run(model, state, x):
    return np.asarray(jax.jit(jax.vmap(lambda xi: model(xi, state)[0]))(x))


def test_torch_state_dict_loads_and_matches_torch_outputs(interop):
    gi, (model, state), io = interop
    sd = safetensors.numpy.load_file(gi.TORCH)
    model, state = ecliptic.load_state_dict(model, sd, state=state, format="torch")
    assert int(state.get(model.bn.batch_counter)) == 5
    np.testing.assert_allclose(_run(model, state, io["x"]), io["y_torch"], rtol=0, atol=1e-5)


def test_exported_state_dict_runs_the_same_in_torch(interop):
    gi, skeleton, io = interop
    model, state = ecliptic.load(gi.NATIVE, skeleton)
    exported = ecliptic.state_dict(model, state=state, format="torch")
    committed = safetensors.numpy.load_file(gi.ECLIPTIC_TORCH)
    assert set(exported) == set(committed)
    for name, value in exported.items():
        assert value.shape == committed[name].shape
        assert raw_bytes(value) == raw_bytes(committed[name]), name
    y = _run(model, state, io["x"])
    np.testing.assert_allclose(y, io["y_from_ecliptic"], rtol=0, atol=1e-5)


def test_torch_weight_norm_and_spectral_norm_parametrisations():
    gp = _load_golden_script("gen_parametrised.py")
    sd = safetensors.numpy.load_file(gp.TORCH)
    model, state = ecliptic.filter_eval_shape(gp.make_ecliptic_net, jax.random.key(0))
    model, state = ecliptic.load_state_dict(model, sd, state=state, format="torch")
    io = np.load(gp.IO)
    y = jax.vmap(model.apply, in_axes=(0, None))(io["x"], state)
    np.testing.assert_allclose(np.asarray(y), io["y"], rtol=0, atol=1e-5)
    # Exported back, every entry is where PyTorch keeps it, bit for bit.
    exported = ecliptic.state_dict(model, state=state, format="torch")
    assert set(exported) == set(sd)
    assert all(raw_bytes(exported[k]) == raw_bytes(sd[k]) for k in sd)
    without_state = ecliptic.state_dict(model, format="torch")
    assert "sn.parametrizations.weight.0._u" not in without_state
    report = ecliptic.check_state_dict(model, sd, format="torch")
    vectors = {"sn.parametrizations.weight.0._u", "sn.parametrizations.weight.0._v"}
    assert set(report.unexpected) == vectors
    assert "SpectralNorm vectors pass the model's State" in str(report)


def test_parametrisation_of_a_layer_with_another_torch_layout_is_refused():
    layer = build(lambda: enn.WeightNorm(enn.ConvTranspose1d(2, 2, 3, key=key())))
    with pytest.raises(ecliptic.CheckpointError, match="WeightNorm around a ConvTranspose1d"):
        ecliptic.state_dict(layer, format="torch")
    with pytest.raises(ecliptic.CheckpointError, match='use format="native"'):
        ecliptic.load_state_dict(layer, {}, format="torch")
    assert set(ecliptic.state_dict(layer)) == {"layer.weight", "layer.bias", "g"}


def test_goldens_are_small():
    total = sum(
        os.path.getsize(os.path.join(GOLDENS, f))
        for f in os.listdir(GOLDENS)
        if f.startswith(("interop", "parametrised"))
    )
    assert total < 1_000_000


@given(random_trees)
def test_random_trees_roundtrip(tree):
    sd = ecliptic.state_dict(tree)
    assert bits_equal(ecliptic.load_state_dict(tree, sd), tree)
    assert bits_equal(ecliptic.load_state_dict(abstract(tree), sd), tree)


def test_prng_keys():
    tree = {"k": jax.random.split(jax.random.key(3), 2)}
    sd = ecliptic.state_dict(tree)
    assert sd["k"].dtype == np.uint32 and sd["k"].shape == (2, 2)
    assert bits_equal(ecliptic.load_state_dict(abstract(tree), sd), tree)


def test_torch_bfloat16_tensors_without_torch_installed(monkeypatch):
    # numpy cannot convert a bfloat16 torch tensor; the loader reinterprets its bits
    # through torch's int16 view, using the torch module the caller already imported.
    import types

    fake_torch = types.SimpleNamespace(bfloat16="bf16", int16="i16")
    bits = np.asarray(jnp.array([1.5, -2.0], jnp.bfloat16)).view(np.int16)

    class Int16Tensor:
        def __array__(self, dtype=None, copy=None):
            return bits

    class BF16Tensor:
        dtype = "bf16"

        def detach(self):
            return self

        def cpu(self):
            return self

        def view(self, dtype):
            assert dtype == "i16"
            return Int16Tensor()

        def __array__(self, dtype=None, copy=None):
            raise TypeError("Got unsupported ScalarType BFloat16")

    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    like = {"w": jax.ShapeDtypeStruct((2,), jnp.bfloat16)}
    out = ecliptic.load_state_dict(like, {"w": BF16Tensor()})
    assert out["w"].dtype == jnp.bfloat16 and out["w"].tolist() == [1.5, -2.0]


def test_prelu_shared_slope_converts_between_scalar_and_torch_vector():
    import ecliptic as ec

    layer = ec.nn.PReLU()
    assert ec.state_dict(layer, format="torch")["weight"].shape == (1,)
    loaded = ec.load_state_dict(layer, {"weight": np.array([0.3], np.float32)}, format="torch")
    assert loaded.negative_slope.shape == () and float(loaded.negative_slope) == np.float32(0.3)


def test_integer_entry_for_a_float_weight_is_a_mismatch():
    import ecliptic as ec

    layer = ec.nn.Linear(2, 2, key=jax.random.key(0))
    entries = {"weight": np.ones((2, 2), np.int32), "bias": np.zeros(2, np.float64)}
    with pytest.raises(ec.StateDictError, match=r"weight.*cannot cast int32"):
        ec.load_state_dict(layer, entries)
    entries["weight"] = np.ones((2, 2), np.float64)  # float64 -> float32: same kind, fine
    assert ec.load_state_dict(layer, entries).weight.dtype == np.float32
