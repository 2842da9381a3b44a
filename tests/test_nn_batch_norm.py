"""BatchNorm: PyTorch goldens (training, running statistics, inference), modes, errors."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ecliptic
from ecliptic import nn

GOLDENS = np.load(pathlib.Path(__file__).parent / "torch_goldens" / "stateful.npz")
TOL: dict[str, Any] = dict(rtol=1e-5, atol=1e-5)


def g(name: str) -> np.ndarray:
    return GOLDENS[name]


def make_from_golden(case: str) -> tuple[nn.BatchNorm, nn.State]:
    cfg = json.loads(str(g(f"{case}.cfg")))
    bn, state = nn.make_with_state(nn.BatchNorm)(
        cfg["channels"],
        "batch",
        eps=cfg["eps"],
        channelwise_affine=cfg["affine"],
        momentum=cfg["momentum"],
        mode="torch",
    )
    if cfg["affine"]:
        bn = ecliptic.tree_at(
            lambda m: (m.weight, m.bias),
            bn,
            (jnp.asarray(g(f"{case}.weight")), jnp.asarray(g(f"{case}.bias"))),
        )
    return bn, state


def batched(bn: nn.BatchNorm) -> Callable[..., Any]:
    """``bn`` over a batch (axis name "batch"), compiled: one compilation per test keeps
    the suite fast, where eager mode would compile every primitive separately."""
    return jax.jit(jax.vmap(bn, axis_name="batch", in_axes=(0, None), out_axes=(0, None)))


@pytest.mark.parametrize("case", ["bn1d", "bn1d_flat", "bn2d"])
def test_matches_pytorch(case: str) -> None:
    bn, state = make_from_golden(case)
    step = ecliptic.filter_jit(lambda m, x, s: batched(m)(x, s))
    for i in range(3):
        y, state = step(bn, jnp.asarray(g(f"{case}.x{i}")), state)
        np.testing.assert_allclose(y, g(f"{case}.out{i}"), **TOL)
        mean, var = state.get(bn.batch_state_index)
        np.testing.assert_allclose(mean, g(f"{case}.mean{i}"), **TOL)
        np.testing.assert_allclose(var, g(f"{case}.var{i}"), **TOL)
        assert int(state.get(bn.batch_counter)) == i + 1
    eval_bn = nn.inference_mode(bn)
    y, new_state = batched(eval_bn)(jnp.asarray(g(f"{case}.xeval")), state)
    np.testing.assert_allclose(y, g(f"{case}.outeval"), **TOL)
    assert ecliptic.tree_equal(new_state, state)  # inference leaves the state alone
    # inference also works per example, outside any vmap
    y0, _ = ecliptic.filter_jit(eval_bn)(jnp.asarray(g(f"{case}.xeval"))[0], state)
    np.testing.assert_allclose(y0, g(f"{case}.outeval")[0], **TOL)


@pytest.mark.parametrize("case", ["bn1d", "bn2d"])
def test_gradients_match_pytorch(case: str) -> None:
    bn, state = make_from_golden(case)
    x, ct = jnp.asarray(g(f"{case}.x0")), jnp.asarray(g(f"{case}.ct"))

    def f(x, w, b):
        m = ecliptic.tree_at(lambda m: (m.weight, m.bias), bn, (w, b))
        return jnp.sum(batched(m)(x, state)[0] * ct)

    gx, gw, gb = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(x, bn.weight, bn.bias)
    np.testing.assert_allclose(gx, g(f"{case}.grad.x"), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gw, g(f"{case}.grad.weight"), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gb, g(f"{case}.grad.bias"), rtol=1e-4, atol=1e-5)


def test_defaults_and_fields() -> None:
    bn = nn.BatchNorm(4, "batch", mode="torch")
    assert bn.momentum == 0.99 and bn.eps == 1e-5 and bn.mode == "torch"
    assert bn.weight.shape == (4,) and bn.bias.shape == (4,)
    assert not bn.inference and bn.is_stateful()
    state = nn.State(bn)
    mean, var = state.get(bn.batch_state_index)
    np.testing.assert_array_equal(mean, np.zeros(4))
    np.testing.assert_array_equal(var, np.ones(4))
    plain = nn.BatchNorm(4, "batch", channelwise_affine=False, mode="torch")
    assert plain.weight is None and plain.bias is None
    assert nn.BatchNorm(2, "b", dtype=jnp.float16, mode="torch").weight.dtype == jnp.float16


def test_filter_vmap_inside_filter_jit() -> None:
    bn, state = nn.make_with_state(nn.BatchNorm)(3, "batch", momentum=0.9, mode="torch")
    x = np.random.default_rng(3).normal(size=(8, 3, 4)).astype(np.float32)

    @ecliptic.filter_jit
    def step(model, x, state):
        fn = ecliptic.filter_vmap(model, in_axes=(0, None), out_axes=(0, None), axis_name="batch")
        return fn(x, state)

    y, state2 = step(bn, x, state)
    ref, ref_state = batched(bn)(x, state)
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)
    assert ecliptic.tree_equal(state2, ref_state, rtol=1e-6, atol=1e-6)


def test_tuple_of_axis_names() -> None:
    bn, state = nn.make_with_state(nn.BatchNorm)(3, ("outer", "inner"), momentum=0.5, mode="torch")
    x = np.random.default_rng(2).normal(size=(2, 4, 3)).astype(np.float32)
    inner = jax.vmap(bn, axis_name="inner", in_axes=(0, None), out_axes=(0, None))
    outer = jax.vmap(inner, axis_name="outer", in_axes=(0, None), out_axes=(0, None))
    y, state2 = jax.jit(outer)(x, state)
    flat_bn, flat_state = nn.make_with_state(nn.BatchNorm)(3, "batch", momentum=0.5, mode="torch")
    y_flat, flat_state2 = batched(flat_bn)(x.reshape(8, 3), flat_state)
    np.testing.assert_allclose(y.reshape(8, 3), y_flat, rtol=1e-5, atol=1e-6)
    for a, b in zip(state2.get(bn.batch_state_index), flat_state2.get(flat_bn.batch_state_index)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_ema_mode() -> None:
    bn, state = nn.make_with_state(nn.BatchNorm)(2, "batch", momentum=0.75, mode="ema")
    assert bn.batch_state_index is None and bn.ema_state_index is not None
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(6, 2)).astype(np.float32) * 3 + 1
    x2 = rng.normal(size=(6, 2)).astype(np.float32)
    y1, state = batched(bn)(x1, state)
    m1, v1 = x1.mean(0), x1.var(0)  # first call: running = batch statistics (biased)
    np.testing.assert_allclose(y1, (x1 - m1) / np.sqrt(v1 + 1e-5), rtol=1e-5, atol=1e-5)
    y2, state = batched(bn)(x2, state)
    m2 = 0.75 * m1 + 0.25 * x2.mean(0)
    v2 = 0.75 * v1 + 0.25 * x2.var(0)
    np.testing.assert_allclose(y2, (x2 - m2) / np.sqrt(v2 + 1e-5), rtol=1e-5, atol=1e-5)
    mean, var = state.get(bn.ema_state_index)
    np.testing.assert_allclose(mean, m2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, v2, rtol=1e-5, atol=1e-6)
    y3, _ = jax.jit(lambda x, s: bn(x, s, inference=True))(x2[0], state)
    np.testing.assert_allclose(y3, y2[0], rtol=1e-5, atol=1e-5)


def test_half_precision_input() -> None:
    bn, state = nn.make_with_state(nn.BatchNorm)(3, "batch", dtype=jnp.bfloat16, mode="torch")
    x = np.random.default_rng(1).normal(size=(16, 3, 2)).astype(jnp.bfloat16)
    y, state = batched(bn)(x, state)
    assert y.dtype == jnp.bfloat16
    assert state.get(bn.batch_state_index)[0].dtype == jnp.bfloat16
    x32 = x.astype(np.float32)
    ref = (x32 - x32.mean((0, 2), keepdims=True)) / np.sqrt(x32.var((0, 2), keepdims=True) + 1e-5)
    np.testing.assert_allclose(np.asarray(y, np.float32), ref, atol=3e-2)


def test_error_outside_vmap_names_axis() -> None:
    bn, state = nn.make_with_state(nn.BatchNorm)(3, "my_batch", mode="torch")
    with pytest.raises(NameError, match="axis_name='my_batch'"):
        bn(jnp.ones((3, 4)), state)
    wrong = jax.vmap(bn, axis_name="other", in_axes=(0, None), out_axes=(0, None))
    with pytest.raises(NameError, match="my_batch"):
        wrong(jnp.ones((2, 3, 4)), state)


def test_error_without_state() -> None:
    bn, _ = nn.make_with_state(nn.BatchNorm)(3, "batch", mode="torch")
    with pytest.raises(TypeError, match="stateful layer"):
        jax.vmap(bn, axis_name="batch")(jnp.ones((2, 3)))
    with pytest.raises(TypeError, match="must be an ecliptic.nn.State"):
        bn(jnp.ones(3), jax.random.key(0))


def test_error_state_from_other_model() -> None:
    bn, _ = nn.make_with_state(nn.BatchNorm)(3, "batch", mode="torch")
    other = nn.State(nn.SpectralNorm(nn.Linear(2, 2, key=jax.random.key(0)), key=jax.random.key(1)))
    with pytest.raises(ValueError, match="belongs to another model"):
        batched(bn)(jnp.ones((2, 3)), other)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="momentum"):
        nn.BatchNorm(3, "batch", momentum=1.5, mode="torch")
    with pytest.raises(ValueError, match="mode"):
        nn.BatchNorm(3, "batch", mode="running")
    with pytest.raises(TypeError, match="axis_name"):
        nn.BatchNorm(3, None, mode="torch")
    with pytest.raises(ValueError, match="input_size"):
        nn.BatchNorm(0, "batch", mode="torch")
    bn, state = nn.make_with_state(nn.BatchNorm)(3, "batch", mode="torch")
    with pytest.raises(ValueError, match=r"\(3, \.\.\.\)"):
        batched(bn)(jnp.ones((2, 4)), state)
    with pytest.raises(ValueError, match="more than one value"):
        batched(bn)(jnp.ones((1, 3)), state)


def test_stateful_example_learns() -> None:
    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / "stateful.py"
    spec = importlib.util.spec_from_file_location("example_stateful", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through it
    spec.loader.exec_module(module)
    assert module.main(steps=40) > 0.8
