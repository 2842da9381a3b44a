"""BatchNorm's Equinox modes: the default ("ema", with Equinox's warning), Equinox's
"batch" mode (Adam-style debiased running averages), checked against float64 NumPy."""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest

from ecliptic import nn


def batched(bn: nn.BatchNorm, inference: bool = False):
    if inference:
        bn = nn.inference_mode(bn)
    return jax.vmap(bn, axis_name="batch", in_axes=(0, None), out_axes=(0, None))


def normalise(x: np.ndarray, mean: np.ndarray | float, var: np.ndarray | float) -> np.ndarray:
    return (x - mean) / np.sqrt(var + 1e-5)


def test_default_mode_is_ema_with_equinox_warning() -> None:
    with pytest.warns(
        UserWarning,
        match=r"^When `eqx\.nn\.BatchNorm\(\.\.\., mode=\.\.\.\)` is "
        r"unspecified it defaults to 'ema', for backward compatibility\.",
    ):
        bn, state = nn.make_with_state(nn.BatchNorm)(3, "batch")
    assert bn.mode == "ema" and bn.batch_state_index is None
    # Equinox's ema layout: a first-time flag, and statistics that start at zero.
    assert bool(state.get(bn.ema_first_time_index))
    for stat in state.get(bn.ema_state_index):
        np.testing.assert_array_equal(stat, np.zeros(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for mode in ("ema", "batch", "torch"):
            assert nn.BatchNorm(3, "batch", mode=mode).mode == mode


def test_equinox_batch_mode_debiases_running_averages() -> None:
    m = 0.8
    bn, state = nn.make_with_state(nn.BatchNorm)(
        2, "batch", momentum=m, mode="batch", channelwise_affine=False
    )
    rng = np.random.default_rng(0)
    probe = rng.normal(size=(3, 2, 4)).astype(np.float32)
    # Before any batch: the raw starting values 0 and 1.
    y0, _ = batched(bn, inference=True)(probe, state)  # pyright: ignore[reportArgumentType]
    np.testing.assert_allclose(y0, normalise(probe.astype(np.float64), 0.0, 1.0), rtol=1e-5)
    mean, var = np.zeros(2), np.ones(2)
    for step in range(1, 4):
        x = rng.normal(size=(5, 2, 4)) * step + step
        y, state = batched(bn)(x.astype(np.float32), state)  # pyright: ignore[reportArgumentType]
        bmean, bvar = x.mean(axis=(0, 2)), x.var(axis=(0, 2))  # biased variance
        np.testing.assert_allclose(
            y, normalise(x, bmean[:, None], bvar[:, None]), rtol=1e-4, atol=1e-4
        )
        mean, var = m * mean + (1 - m) * bmean, m * var + (1 - m) * bvar
        stored = state.get(bn.batch_state_index)
        np.testing.assert_allclose(stored[0], mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stored[1], var, rtol=1e-5, atol=1e-6)
        assert int(state.get(bn.batch_counter)) == step
        debias = 1 - m**step
        yi, _ = batched(bn, inference=True)(probe, state)  # pyright: ignore[reportArgumentType]
        expected = normalise(probe, (mean / debias)[:, None], (var / debias)[:, None])
        np.testing.assert_allclose(yi, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["ema", "batch"])
def test_equinox_modes_train_on_a_batch_of_one(mode: str) -> None:
    bn, state = nn.make_with_state(nn.BatchNorm)(3, "batch", mode=mode)
    x = np.arange(3.0, dtype=np.float32)[None]
    y, _ = batched(bn)(x, state)  # one value per channel: zero variance, output zero  # pyright: ignore[reportArgumentType]
    np.testing.assert_allclose(y, np.zeros((1, 3)), atol=1e-6)
    torch_bn, torch_state = nn.make_with_state(nn.BatchNorm)(3, "batch", mode="torch")
    with pytest.raises(ValueError, match="more than one value per channel"):
        batched(torch_bn)(x, torch_state)  # pyright: ignore[reportArgumentType]
