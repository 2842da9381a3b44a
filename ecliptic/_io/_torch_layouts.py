"""PyTorch parameter names and layouts for the ecliptic.nn layers that differ.

Each converter maps one layer to the entries PyTorch's equivalent module has in its
``state_dict`` (names relative to the layer) and back:

- `Conv*`: the bias is ``(out,)`` in PyTorch, ``(out, 1, ..., 1)`` here.
- `ConvTranspose*`: PyTorch's weight is ``(in, out // groups, *k)``; ours is the
  per-group in/out-swapped, spatially flipped ``(out, in // groups, *k)``.
- `GRUCell`: PyTorch's ``bias_ih``/``bias_hh``; here ``bias = bias_ih + [b_hr, b_hz, 0]``
  and ``bias_n = b_hn``. Exported as ``bias_ih = bias``, ``bias_hh = [0, 0, bias_n]``.
- `LSTMCell`: ``bias = bias_ih + bias_hh``; exported as ``bias_ih = bias``, ``bias_hh = 0``.
- `MultiheadAttention`: PyTorch packs ``in_proj_weight`` (when key and value sizes equal
  the query size; else ``q/k/v_proj_weight``) and ``in_proj_bias``; ``out_proj`` is
  our ``output_proj``. PyTorch has all biases or none: missing ones export as zeros,
  and import only if zero.
- `PReLU`: ``weight`` is our ``negative_slope``.
- `BatchNorm`: ``running_mean``/``running_var``/``num_batches_tracked`` come from the
  `State`, in ``mode="torch"`` only: that mode keeps exactly PyTorch's statistics. The
  ``"ema"`` and ``"batch"`` modes keep other ones (a biased running variance; a
  first-batch start, or averages that inference debiases), which no PyTorch
  ``BatchNorm`` reproduces: their running statistics are refused, both ways.

Every other layer has PyTorch's names already (``weight``, ``bias``): Linear, Embedding,
LayerNorm, GroupNorm, RMSNorm (no bias in PyTorch). Containers and wrappers
(`Sequential`, `Stacked`, `WeightNorm`, `SpectralNorm`) are in `_torch_containers`; `MLP`
has no PyTorch counterpart (its layers export as ``layers.0``, ...).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..nn import (
    BatchNorm,
    Conv,
    ConvTranspose,
    GRUCell,
    LSTMCell,
    MultiheadAttention,
    PReLU,
)
from ..nn import conv_transpose_weight_from_torch as weight_from_torch
from ..nn import conv_transpose_weight_to_torch as weight_to_torch
from ._errors import CheckpointError
from ._state_dict_reader import LayerEntries
from ._torch_registry import register_torch_layout


def _np(x: Any) -> np.ndarray:
    return np.asarray(x)


def _merge_bias(ih: np.ndarray, hh: np.ndarray) -> np.ndarray:
    # ih + hh, but exactly ih where hh is zero (so -0.0 survives a round trip).
    return np.where(hh == 0, ih, ih + hh).astype(ih.dtype)


# --------------------------------------------------------------------------------- Conv


def _conv_export(layer: Any, state: Any) -> dict[str, Any]:
    out = {"weight": _np(layer.weight)}
    if layer.bias is not None:
        out["bias"] = _np(layer.bias).reshape(-1)
    return out


def _load_conv(layer: Any, io: LayerEntries, weight_shape: tuple[int, ...], from_torch: Any) -> Any:
    """`layer` with the weight (PyTorch's `weight_shape`, converted by `from_torch`) and
    the bias (PyTorch's ``(out,)``) read from `io`."""
    fields = {}
    w = io.get("weight", weight_shape, layer.weight.dtype)
    if w is not None:
        fields["weight"] = from_torch(w)
    if layer.bias is not None:
        b = io.get("bias", (layer.bias.shape[0],), layer.bias.dtype)
        if b is not None:
            fields["bias"] = b.reshape(layer.bias.shape)
    return io.replace(layer, **fields)


def _conv_import(layer: Any, io: LayerEntries, state: Any) -> tuple[Any, Any]:
    return _load_conv(layer, io, tuple(layer.weight.shape), lambda w: w), state


def _conv_t_export(layer: Any, state: Any) -> dict[str, Any]:
    out = _conv_export(layer, state)
    out["weight"] = weight_to_torch(out["weight"], layer.groups)
    return out


def _conv_t_import(layer: Any, io: LayerEntries, state: Any) -> tuple[Any, Any]:
    shape = (layer.in_channels, layer.out_channels // layer.groups) + tuple(layer.kernel_size)

    def from_torch(w: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(weight_from_torch(w, layer.groups))

    return _load_conv(layer, io, shape, from_torch), state


# ---------------------------------------------------------------------------- recurrent


def _gru_export(layer: Any, state: Any) -> dict[str, Any]:
    out = {"weight_ih": _np(layer.weight_ih), "weight_hh": _np(layer.weight_hh)}
    if layer.bias is not None:
        bias_n = _np(layer.bias_n)
        out["bias_ih"] = _np(layer.bias)
        out["bias_hh"] = np.concatenate([np.zeros(2 * bias_n.shape[0], bias_n.dtype), bias_n])
    return out


def _gru_import(layer: Any, io: LayerEntries, state: Any) -> tuple[Any, Any]:
    fields = _as_they_are(layer, io, ("weight_ih", "weight_hh"))
    if layer.bias is not None:
        h = layer.hidden_size
        ih = io.get("bias_ih", (3 * h,), layer.bias.dtype)
        hh = io.get("bias_hh", (3 * h,), layer.bias.dtype)
        if ih is not None and hh is not None:
            rz = np.concatenate([hh[: 2 * h], np.zeros(h, hh.dtype)])
            fields["bias"] = _merge_bias(ih, rz)
            fields["bias_n"] = hh[2 * h :]
    return io.replace(layer, **fields), state


def _as_they_are(layer: Any, io: LayerEntries, names: tuple[str, ...]) -> dict[str, Any]:
    """The fields `names` of `layer`, read from entries of the same names and shapes."""
    fields = {}
    for name in names:
        value = io.get(name, tuple(getattr(layer, name).shape), getattr(layer, name).dtype)
        if value is not None:
            fields[name] = value
    return fields


def _lstm_export(layer: Any, state: Any) -> dict[str, Any]:
    out = {"weight_ih": _np(layer.weight_ih), "weight_hh": _np(layer.weight_hh)}
    if layer.bias is not None:
        out["bias_ih"] = _np(layer.bias)
        out["bias_hh"] = np.zeros_like(out["bias_ih"])
    return out


def _lstm_import(layer: Any, io: LayerEntries, state: Any) -> tuple[Any, Any]:
    fields = _as_they_are(layer, io, ("weight_ih", "weight_hh"))
    if layer.bias is not None:
        shape = tuple(layer.bias.shape)
        ih = io.get("bias_ih", shape, layer.bias.dtype)
        hh = io.get("bias_hh", shape, layer.bias.dtype)
        if ih is not None and hh is not None:
            fields["bias"] = _merge_bias(ih, hh)
    return io.replace(layer, **fields), state


# ---------------------------------------------------------------------------- attention


def _projections(layer: Any) -> list[Any]:
    return [layer.query_proj, layer.key_proj, layer.value_proj]


def _packed(layer: Any) -> bool:
    shapes = {tuple(p.weight.shape) for p in _projections(layer)}
    return layer.key_size == layer.query_size == layer.value_size and len(shapes) == 1


def _has_bias(layer: Any) -> bool:
    return any(p.bias is not None for p in _projections(layer) + [layer.output_proj])


def _mha_export(layer: Any, state: Any) -> dict[str, Any]:
    projections = _projections(layer)
    out: dict[str, Any] = {}
    if _packed(layer):
        out["in_proj_weight"] = np.concatenate([_np(p.weight) for p in projections])
    else:
        for p, name in zip(projections, "qkv"):
            out[f"{name}_proj_weight"] = _np(p.weight)
    out["out_proj.weight"] = _np(layer.output_proj.weight)
    if _has_bias(layer):

        def bias(p: Any) -> np.ndarray:
            dtype = p.weight.dtype
            return _np(p.bias) if p.bias is not None else np.zeros(p.weight.shape[0], dtype)

        out["in_proj_bias"] = np.concatenate([bias(p) for p in projections])
        out["out_proj.bias"] = bias(layer.output_proj)
    return out


def _mha_import(layer: Any, io: LayerEntries, state: Any) -> tuple[Any, Any]:
    projections = _projections(layer)
    rows = [p.weight.shape[0] for p in projections]
    split_at = np.cumsum(rows)[:-1]
    dtype = layer.query_proj.weight.dtype
    weights: list[Any] = [None, None, None]
    if _packed(layer):
        packed = io.get("in_proj_weight", (sum(rows), layer.query_size), dtype)
        if packed is not None:
            weights = np.split(packed, split_at)
    else:
        for i, (p, name) in enumerate(zip(projections, "qkv")):
            weights[i] = io.get(f"{name}_proj_weight", tuple(p.weight.shape), dtype)
    # PyTorch has all four biases or none; ours may lack some: those must be zero.
    optional = not _has_bias(layer)
    in_bias = io.get("in_proj_bias", (sum(rows),), dtype, optional=optional)
    biases: list[np.ndarray | None] = (
        [None] * 3 if in_bias is None else list(np.split(in_bias, split_at))
    )
    o = layer.output_proj
    weights.append(io.get("out_proj.weight", tuple(o.weight.shape), dtype))
    biases.append(io.get("out_proj.bias", (o.weight.shape[0],), dtype, optional=optional))
    new = []
    names = ("in_proj_bias", "in_proj_bias", "in_proj_bias", "out_proj.bias")
    fields_ = ("use_query_bias", "use_key_bias", "use_value_bias", "use_output_bias")
    for p, w, b, name, flag in zip(projections + [o], weights, biases, names, fields_):
        fields: dict[str, Any] = {} if w is None else {"weight": w}
        if b is not None:
            if p.bias is not None:
                fields["bias"] = b
            elif np.any(b != 0):
                io.problem(name, f"nonzero bias for a projection built with {flag}=False")
        new.append(io.replace(p, **fields))
    layer = io.replace(
        layer, query_proj=new[0], key_proj=new[1], value_proj=new[2], output_proj=new[3]
    )
    return layer, state


# --------------------------------------------------------------------- PReLU, BatchNorm


def _prelu_export(layer: Any, state: Any) -> dict[str, Any]:
    # PyTorch's weight is always a vector (num_parameters,); one shared slope is () here.
    return {"weight": _np(layer.negative_slope).reshape(-1)}


def _prelu_import(layer: Any, io: LayerEntries, state: Any) -> tuple[Any, Any]:
    slope = layer.negative_slope
    w = io.get("weight", (slope.size,), slope.dtype)
    if w is None:
        return layer, state
    return io.replace(layer, negative_slope=w.reshape(slope.shape)), state


def _bn_statistics(layer: Any) -> tuple[Any, Any]:
    """The state indices of a BatchNorm's running statistics and batch count; only
    `mode="torch"` keeps the statistics PyTorch's BatchNorm has."""
    if layer.mode != "torch":
        raise CheckpointError(
            f'a BatchNorm with mode="{layer.mode}" keeps running statistics that differ '
            "from PyTorch's running_mean/running_var/num_batches_tracked (a biased "
            'variance, and another start or debiasing): build it with mode="torch" for '
            'PyTorch interop, or use format="native"'
        )
    return layer.batch_state_index, layer.batch_counter


def _bn_export(layer: Any, state: Any) -> dict[str, Any]:
    out = {}
    if layer.weight is not None:
        out["weight"] = _np(layer.weight)
        out["bias"] = _np(layer.bias)
    stats_index, count_index = _bn_statistics(layer)
    if state is None:
        raise CheckpointError(
            "a BatchNorm keeps running_mean/running_var in a State: pass the model's "
            "state, as in state_dict(model, state=state, format='torch')"
        )
    mean, var = state.get(stats_index)
    out["running_mean"], out["running_var"] = _np(mean), _np(var)
    out["num_batches_tracked"] = _np(state.get(count_index)).astype(np.int64)
    return out


def _bn_import(layer: Any, io: LayerEntries, state: Any) -> tuple[Any, Any]:
    affine = () if layer.weight is None else ("weight", "bias")
    layer = io.replace(layer, **_as_they_are(layer, io, affine))
    if state is None:
        return layer, state
    stats_index, count_index = _bn_statistics(layer)
    old_mean, old_var = state.get(stats_index)
    mean = io.get("running_mean", tuple(old_mean.shape), old_mean.dtype)
    var = io.get("running_var", tuple(old_var.shape), old_var.dtype)
    old_count = state.get(count_index)
    # Read straight into the state's dtype, so that a count too large for it (int32
    # without x64) is reported instead of wrapping around.
    count = io.get("num_batches_tracked", (), old_count.dtype)
    if mean is not None and var is not None:
        state = io.set_state(state, stats_index, (mean, var))
    if count is not None:
        state = io.set_state(state, count_index, count)
    return layer, state


for _layer_type, _export, _load in (
    (ConvTranspose, _conv_t_export, _conv_t_import),
    (Conv, _conv_export, _conv_import),
    (GRUCell, _gru_export, _gru_import),
    (LSTMCell, _lstm_export, _lstm_import),
    (MultiheadAttention, _mha_export, _mha_import),
    (PReLU, _prelu_export, _prelu_import),
    (BatchNorm, _bn_export, _bn_import),
):
    register_torch_layout(_layer_type, export=_export, load=_load)
