"""Pools and adaptive pools: PyTorch parity (outputs and input gradients), ceil mode,
divisors, generic operations, dtypes, transforms, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from goldens_linear_conv_pool import case, case_names, check_against_golden
from jax import lax
from jax.test_util import check_grads

import ecliptic.nn as enn

WINDOW = {
    ("max", 1): enn.MaxPool1d,
    ("max", 2): enn.MaxPool2d,
    ("max", 3): enn.MaxPool3d,
    ("avg", 1): enn.AvgPool1d,
    ("avg", 2): enn.AvgPool2d,
    ("avg", 3): enn.AvgPool3d,
}
ADAPTIVE = {
    ("max", 1): enn.AdaptiveMaxPool1d,
    ("max", 2): enn.AdaptiveMaxPool2d,
    ("max", 3): enn.AdaptiveMaxPool3d,
    ("avg", 1): enn.AdaptiveAvgPool1d,
    ("avg", 2): enn.AdaptiveAvgPool2d,
    ("avg", 3): enn.AdaptiveAvgPool3d,
}


@pytest.mark.parametrize("name", case_names("maxpool") + case_names("avgpool"))
def test_pool_matches_torch(name):
    cfg, arrays = case(name)
    # Ecliptic's default stride is 1; the goldens pass PyTorch's explicitly.
    pool = WINDOW[cfg["kind"], cfg["n"]](
        cfg["kernel_size"], cfg["stride"], cfg["padding"], cfg["use_ceil"]
    )
    check_against_golden(pool, arrays, ("x",))


@pytest.mark.parametrize("name", case_names("adaptive"))
def test_adaptive_pool_matches_torch(name):
    cfg, arrays = case(name)
    pool = ADAPTIVE[cfg["kind"], cfg["n"]](cfg["target"], bins="torch")
    check_against_golden(pool, arrays, ("x",))


def test_ceil_mode_rule():
    # PyTorch: the last window must start inside the input or its left padding.
    x = jnp.arange(5.0)[None]
    assert enn.MaxPool1d(2, 2, use_ceil=True)(x).shape == (1, 3)  # windows at 0, 2, 4
    assert enn.MaxPool1d(2, 2)(x).shape == (1, 2)
    # ceil((5 + 2 - 2) / 4) + 1 = 3 windows, but the third would start at 8 - 1 = 7 >= 5
    # + 1: dropped.
    assert enn.MaxPool1d(2, 4, padding=1, use_ceil=True)(x).shape == (1, 2)
    np.testing.assert_allclose(enn.MaxPool1d(2, 2, use_ceil=True)(x), [[1.0, 3.0, 4.0]])
    # Average of a clipped ceil-mode window: divided by its size within the padded input.
    np.testing.assert_allclose(enn.AvgPool1d(2, 2, use_ceil=True)(x), [[0.5, 2.5, 4.0]])
    # Padding counts as zeros (count_include_pad=True).
    np.testing.assert_allclose(enn.AvgPool1d(3, 3, padding=1)(x), [[1 / 3, 3.0]])


def test_default_stride_is_one():
    pool = enn.MaxPool2d(2)
    assert pool.stride == (1, 1) and pool(jnp.ones((1, 4, 5))).shape == (1, 3, 4)


def test_asymmetric_padding_and_generic_pool():
    x = jnp.arange(12.0).reshape(1, 3, 4)
    pool = enn.Pool(0.0, lax.add, 2, (2, 2), 1, ((1, 0), (0, 1)))
    y = pool(x)
    padded = np.pad(np.asarray(x[0]), ((1, 0), (0, 1)))
    expected = padded[:-1, :-1] + padded[1:, :-1] + padded[:-1, 1:] + padded[1:, 1:]
    np.testing.assert_allclose(y[0], expected)
    # Asymmetric padding for AvgPool: zeros counted, full kernel divisor.
    avg = enn.AvgPool2d(2, 1, ((1, 0), (0, 1)))
    np.testing.assert_allclose(avg(x)[0], expected / 4)
    # A generic Pool with a learnable-looking init still works under plain jax.jit.
    mx = enn.Pool(-jnp.inf, lax.max, 1, 2, 2)
    np.testing.assert_allclose(jax.jit(lambda p, x: p(x))(mx, jnp.arange(4.0)[None]), [[1.0, 3.0]])


def test_adaptive_generic_operation_matches_fast_path():  # PyTorch's bins
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 5, 7)), jnp.float32)
    r5, r8 = jnp.arange(5.0)[None], jnp.arange(8.0)[None]

    @jax.jit  # one program for all the cases: cheap to compile
    def run(x):
        return dict(
            fast=enn.AdaptivePool((3, 4), 2, jnp.max, bins="torch")(x),
            generic=enn.AdaptivePool((3, 4), 2, lambda v: jnp.sort(v)[-1], bins="torch")(x),
            mean=enn.AdaptiveAvgPool2d((3, 4), bins="torch")(x),
            mean_generic=enn.AdaptivePool((3, 4), 2, lambda v: v.sum() / v.size, bins="torch")(x),
            # A non-separable operation sees each bin's values together.
            median=enn.AdaptivePool(3, 1, jnp.median, bins="torch")(r5),
            # Dividing sizes take the reshape path, for both kinds of operation.
            max_div=enn.AdaptiveMaxPool1d(4, bins="torch")(r8),
            median_div=enn.AdaptivePool(2, 1, jnp.median, bins="torch")(r8),
            min=enn.AdaptivePool(3, 1, jnp.min, bins="torch")(r5),
            sum=enn.AdaptivePool(3, 1, jnp.sum, bins="torch")(r5),
        )

    out = run(x)
    np.testing.assert_allclose(out["generic"], out["fast"], rtol=1e-6)
    np.testing.assert_allclose(out["mean_generic"], out["mean"], rtol=1e-5)
    # Bins [0, 2), [1, 4), [3, 5) of 0..4.
    np.testing.assert_allclose(out["median"], [[0.5, 2.0, 3.5]])
    np.testing.assert_allclose(out["max_div"], [[1.0, 3.0, 5.0, 7.0]])
    np.testing.assert_allclose(out["median_div"], [[1.5, 5.5]])
    np.testing.assert_allclose(out["min"], [[0.0, 1.0, 3.0]])
    np.testing.assert_allclose(out["sum"], [[1.0, 6.0, 7.0]])


def equinox_bins_reference(x: np.ndarray, target: int, reduce) -> np.ndarray:
    """Contiguous bins, the first ``L % target`` one longer: Equinox's adaptive pooling,
    computed with a NumPy loop over the last axis."""
    short, extra = divmod(x.shape[-1], target)
    out, start = [], 0
    for i in range(target):
        length = short + (i < extra)
        out.append(reduce(x[..., start : start + length], axis=-1))
        start += length
    return np.stack(out, axis=-1)


@pytest.mark.parametrize("size, target", [(14, 4), (7, 3), (9, 5), (8, 4), (5, 5)])
def test_adaptive_pool_equinox_bins_by_default(size, target):
    x = np.random.default_rng(size).standard_normal((2, 3, size))
    ref_max = equinox_bins_reference(x, target, np.max)
    ref_mean = equinox_bins_reference(x, target, np.mean)
    x32 = jnp.asarray(x, jnp.float32)
    np.testing.assert_allclose(enn.AdaptiveMaxPool1d(target)(x32[0]), ref_max[0], rtol=1e-6)
    np.testing.assert_allclose(enn.AdaptiveAvgPool1d(target)(x32[0]), ref_mean[0], rtol=1e-5)
    # 2-D: separable bins, the same rule along each axis.
    ref2 = equinox_bins_reference(np.swapaxes(ref_mean, -1, -2), 2, np.mean)
    got2 = enn.AdaptiveAvgPool2d((2, target))(x32)
    np.testing.assert_allclose(got2, np.swapaxes(ref2, -1, -2), rtol=1e-5, atol=1e-6)
    generic = enn.AdaptivePool(target, 1, lambda v: jnp.sort(v)[-1])(x32[0])
    np.testing.assert_allclose(generic, ref_max[0], rtol=1e-6)
    with pytest.raises(ValueError, match="bins='torch'"):
        enn.AdaptiveAvgPool1d(size + 1)(x32[0])
    assert enn.AdaptiveAvgPool1d(size + 1, bins="torch")(x32[0]).shape == (3, size + 1)


ALL_POOLS = [
    enn.MaxPool2d(3, 2, 1, use_ceil=True),
    enn.AvgPool2d(3, 2, 1, use_ceil=True),
    enn.AdaptiveMaxPool2d((2, 3)),
    enn.AdaptiveAvgPool2d((4, 3)),
]


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_pool_dtypes_jit_vmap_grad(dtype):
    xs = jnp.asarray(np.random.default_rng(2).standard_normal((3, 2, 7, 5)), dtype)

    @jax.jit
    def run(xs):
        outs = tuple(jax.vmap(p)(xs) for p in ALL_POOLS)
        singles = tuple(p(xs[1]) for p in ALL_POOLS)
        grads = tuple(
            jax.grad(lambda x, p=p: jnp.sum(p(x).astype(jnp.float32) ** 2))(xs[0])
            for p in ALL_POOLS
        )
        return outs, singles, grads

    outs, singles, grads = run(xs)
    for out, single, g in zip(outs, singles, grads):
        assert out.dtype == dtype and g.dtype == dtype and out.shape[:2] == (3, 2)
        np.testing.assert_array_equal(out[1], single)
    assert [o.shape[2:] for o in outs] == [(4, 3), (4, 3), (2, 3), (4, 3)]


def test_pool_finite_differences():
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 6, 5)))
        for pool in (
            enn.AvgPool2d(3, 2, 1, use_ceil=True),
            enn.AdaptiveAvgPool2d((4, 3)),
            enn.MaxPool2d(2, 2, use_ceil=True),
            enn.AdaptiveMaxPool2d((4, 2)),
        ):
            check_grads(jax.jit(pool), (x,), order=1, modes=("rev",), eps=1e-4)


def test_integer_inputs():
    x = jnp.arange(10, dtype=jnp.int32).reshape(1, 2, 5)
    out = jax.jit(
        lambda x: (
            enn.MaxPool2d(2, 1)(x),
            enn.AdaptiveMaxPool2d((1, 3))(x),
            enn.AvgPool2d(2)(x),
            enn.AdaptiveAvgPool1d(2)(x[0]),
        )
    )(x)
    assert out[0].dtype == jnp.int32
    assert out[1].tolist() == [[[6, 8, 9]]]
    assert jnp.issubdtype(out[2].dtype, jnp.floating)
    assert jnp.issubdtype(out[3].dtype, jnp.floating)


def test_pool_errors():
    with pytest.raises(ValueError, match=r"rank 3.*\(4, 1, 6, 6\).*vmap"):
        enn.MaxPool2d(2)(jnp.ones((4, 1, 6, 6)))
    with pytest.raises(ValueError, match="rank 2"):
        enn.AvgPool1d(2)(jnp.ones(6))
    with pytest.raises(ValueError, match="larger than the padded input"):
        enn.MaxPool2d(4, padding=1)(jnp.ones((1, 1, 6)))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        enn.MaxPool1d(2, padding=2)
    with pytest.raises(ValueError, match="kernel_size must be >= 1"):
        enn.AvgPool2d(0)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        enn.MaxPool1d(2, stride=-1)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        enn.MaxPool1d(2, padding=-1)
    with pytest.raises(ValueError, match="padding must be an int"):
        enn.MaxPool2d(2, padding=(1, 1, 1))
    with pytest.raises(ValueError, match="string must be one of no strings"):
        enn.MaxPool2d(2, padding="SAME")
    with pytest.raises(TypeError, match="operation must be callable"):
        enn.Pool(0, "add", 1, 2)
    with pytest.raises(ValueError, match=r"rank 3.*\(2, 3, 4, 5\).*vmap"):
        enn.AdaptiveAvgPool2d(2)(jnp.ones((2, 3, 4, 5)))
    with pytest.raises(ValueError, match="target_shape must be >= 1"):
        enn.AdaptiveMaxPool1d(0)
    with pytest.raises(ValueError, match="target_shape must be an int or a sequence of 2"):
        enn.AdaptiveMaxPool2d((1, 2, 3))
    with pytest.raises(ValueError, match="empty spatial"):
        enn.AdaptiveMaxPool1d(2)(jnp.ones((1, 0)))
