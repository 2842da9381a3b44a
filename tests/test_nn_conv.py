"""Conv and ConvTranspose: PyTorch parity (outputs and gradients), adjointness, padding
specs and modes, init, dtypes, transforms, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from goldens_linear_conv_pool import (
    abstract,
    case,
    case_names,
    check_against_golden,
    check_init_uniform,
    materialise,
    set_params,
)
from jax.test_util import check_grads

import ecliptic.nn as enn
from ecliptic.nn import conv_transpose_weight_from_torch as weight_from_torch
from ecliptic.nn import conv_transpose_weight_to_torch as weight_to_torch

KEY = jax.random.key(0)


def _padding(p):
    # JSON turns tuples into lists; ecliptic accepts either, pairs must stay pairs.
    return [tuple(pair) for pair in p] if isinstance(p, list) and isinstance(p[0], list) else p


@pytest.mark.parametrize("name", case_names("conv1d") + case_names("conv2d") + case_names("conv3d"))
def test_conv_matches_torch(name):
    cfg, arrays = case(name)
    n = cfg["n"]
    layer = abstract(
        lambda: enn.Conv(
            n,
            cfg["in"],
            cfg["out"],
            cfg["kernel_size"],
            cfg["stride"],
            _padding(cfg["padding"]),
            cfg["dilation"],
            cfg["groups"],
            padding_mode=cfg["padding_mode"],
            key=KEY,
        )
    )
    assert layer.weight.shape == arrays["weight"].shape  # PyTorch's layout, unchanged
    assert layer.bias.shape == (cfg["out"],) + (1,) * n

    def fn(w, b, x):
        return set_params(layer, weight=w, bias=b.reshape((-1,) + (1,) * n))(x)

    check_against_golden(fn, arrays, ("weight", "bias", "x"))


@pytest.mark.parametrize("name", case_names("convt"))
def test_conv_transpose_matches_torch(name):
    cfg, arrays = case(name)
    n, groups = cfg["n"], cfg["groups"]
    layer = abstract(
        lambda: enn.ConvTranspose(
            n,
            cfg["in"],
            cfg["out"],
            cfg["kernel_size"],
            cfg["stride"],
            cfg["padding"],
            cfg["output_padding"],
            cfg["dilation"],
            groups,
            key=KEY,
        )
    )
    assert layer.weight.shape == weight_from_torch(arrays["weight"], groups).shape

    def fn(w, b, x):
        weight = weight_from_torch(w, groups)
        return set_params(layer, weight=weight, bias=b.reshape((-1,) + (1,) * n))(x)

    check_against_golden(fn, arrays, ("weight", "bias", "x"))


def test_fixed_dimension_classes():
    for n, conv, convt in [
        (1, enn.Conv1d, enn.ConvTranspose1d),
        (2, enn.Conv2d, enn.ConvTranspose2d),
        (3, enn.Conv3d, enn.ConvTranspose3d),
    ]:
        c = abstract(lambda conv=conv: conv(4, 6, 3, stride=2, padding=1, groups=2, key=KEY))
        assert isinstance(c, enn.Conv) and c.num_spatial_dims == n
        assert c.weight.shape == (6, 2) + (3,) * n and c.stride == (2,) * n
        assert c.padding == ((1, 1),) * n
        t = abstract(lambda convt=convt: convt(4, 6, 3, 2, 1, 1, groups=2, key=KEY))
        assert isinstance(t, enn.ConvTranspose) and t.weight.shape == (6, 2) + (3,) * n
        assert t.output_padding == (1,) * n
        y = jax.eval_shape(lambda t, x: t(x), t, jax.ShapeDtypeStruct((4,) + (5,) * n, jnp.float32))
        assert y.shape == (6,) + (10,) * n


def test_transpose_weight_conversion_round_trips():
    w = np.random.default_rng(0).normal(size=(6, 2, 3, 2)).astype(np.float32)  # torch
    for groups in (1, 2, 3):
        e = weight_from_torch(w, groups)
        assert isinstance(e, np.ndarray) and e.shape == (groups * 2, 6 // groups, 3, 2)
        np.testing.assert_array_equal(weight_to_torch(e, groups), w)
        np.testing.assert_array_equal(weight_to_torch(jnp.asarray(e), groups), w)
    # Group g's block: in/out swapped and spatially flipped.
    e = weight_from_torch(w, 3)
    np.testing.assert_array_equal(e[2:4, :, ::-1, ::-1], w[2:4].swapaxes(0, 1))


# Transposed convolutions are the adjoints of the matching forward convolutions, for
# every padding spelling and for circular padding.
ADJOINT_CASES = [
    # n, stride, padding, output_padding, dilation, groups, mode, size of forward input
    (1, 2, 1, 1, 1, 1, "ZEROS", (10,)),
    (1, 3, "SAME", 0, 1, 1, "ZEROS", (9,)),
    (1, 2, "SAME_LOWER", 0, 2, 1, "ZEROS", (8,)),
    (1, 1, "VALID", 0, 1, 2, "ZEROS", (7,)),
    (2, (2, 1), ((2, 0), (1, 2)), 0, 1, 1, "ZEROS", (9, 6)),
    (1, 1, "SAME", 0, 1, 1, "CIRCULAR", (6,)),
    (1, 2, "SAME", 0, 1, 1, "CIRCULAR", (8,)),
    (1, 2, [(3, 1)], 1, 1, 1, "CIRCULAR", (8,)),
    (2, 2, "SAME_LOWER", 0, (1, 2), 2, "CIRCULAR", (6, 8)),
    (1, 1, 5, 0, 1, 1, "CIRCULAR", (3,)),  # padding wider than the input: wraps twice
    # "SAME" with output_padding: the output has size stride * size - output_padding (as
    # in Equinox), the adjoint of the "SAME" convolution of an input that long.
    (1, 2, "SAME", 1, 1, 1, "ZEROS", (7,)),
    (1, 3, "SAME_LOWER", 2, 2, 1, "ZEROS", (7,)),
    (2, 2, "SAME", 1, (2, 1), 1, "ZEROS", (5, 9)),
    (1, 2, "SAME", 1, 1, 1, "CIRCULAR", (9,)),
]


@pytest.mark.parametrize("n, stride, padding, op, dil, groups, mode, size", ADJOINT_CASES)
def test_conv_transpose_is_adjoint_of_conv(n, stride, padding, op, dil, groups, mode, size):
    c_small, c_big, k = 4, 2, 3
    fwd = materialise(
        lambda: enn.Conv(
            n,
            c_big,
            c_small,
            k,
            stride,
            padding,
            dil,
            groups,
            use_bias=False,
            padding_mode=mode,
            key=KEY,
        )
    )
    bwd = abstract(
        lambda: enn.ConvTranspose(
            n,
            c_small,
            c_big,
            k,
            stride,
            padding,
            op,
            dil,
            groups,
            use_bias=False,
            padding_mode=mode,
            key=KEY,
        )
    )
    bwd = set_params(bwd, weight=weight_from_torch(fwd.weight, groups))
    x = jnp.zeros((c_big,) + size)
    y_shape = jax.eval_shape(fwd, x).shape
    y = np.random.default_rng(0).standard_normal(y_shape).astype(np.float32)

    @jax.jit
    def both(fwd, bwd, y):
        (expected,) = jax.linear_transpose(fwd, x)(y)
        return bwd(y), expected

    got, expected = both(fwd, bwd, y)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_same_padding_shapes_and_sides():
    x = jnp.arange(2 * 7, dtype=jnp.float32).reshape(1, 2, 7)[0]
    for stride in (1, 2, 3):
        conv = enn.Conv1d(2, 1, 4, stride, "SAME", key=KEY)
        assert conv(x).shape == (1, -(-7 // stride))
    # Kernel 4, stride 1: total padding 3, the extra element at the end for "SAME" and at
    # the start for "SAME_LOWER".
    same = enn.Conv1d(2, 1, 4, padding="same", key=KEY)
    lower = set_params(
        enn.Conv1d(2, 1, 4, padding="SAME_LOWER", key=KEY), weight=same.weight, bias=same.bias
    )
    explicit = enn.Conv1d(2, 1, 4, padding=[(1, 2)], key=KEY)
    explicit = set_params(explicit, weight=same.weight, bias=same.bias)
    np.testing.assert_allclose(same(x), explicit(x), rtol=1e-6)
    np.testing.assert_allclose(
        lower(x),
        set_params(
            enn.Conv1d(2, 1, 4, padding=[(2, 1)], key=KEY), weight=same.weight, bias=same.bias
        )(x),
        rtol=1e-6,
    )
    valid = enn.Conv1d(2, 1, 4, padding="valid", key=KEY)
    assert valid.padding == "VALID" and valid(x).shape == (1, 4)


def test_conv_init_matches_torch_distribution():
    conv = enn.Conv2d(6, 400, (3, 2), groups=2, key=KEY)
    check_init_uniform(conv.weight, 1 / np.sqrt(3 * 3 * 2))  # fan_in = in/groups * k
    check_init_uniform(conv.bias, 1 / np.sqrt(3 * 3 * 2))
    # PyTorch's ConvTranspose fan_in is out_channels / groups * prod(kernel).
    convt = enn.ConvTranspose1d(8, 600, 3, groups=2, key=KEY)
    check_init_uniform(convt.weight, 1 / np.sqrt(300 * 3))
    assert convt.weight.shape == (600, 4, 3)
    assert enn.Conv1d(2, 2, 1, use_bias=False, key=KEY).bias is None


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_conv_low_precision(dtype):
    # Initialisation traced in this dtype (materialise: without compiling it), then
    # forward and gradient in one program.
    conv = materialise(lambda: enn.Conv2d(2, 3, 3, padding=1, dtype=dtype, key=KEY))
    convt = materialise(
        lambda: enn.ConvTranspose2d(3, 2, 3, 2, 1, 1, padding_mode="CIRCULAR", dtype=dtype, key=KEY)
    )
    assert conv.weight.dtype == dtype and convt.bias.dtype == dtype
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 5, 5)), dtype)

    @jax.jit
    def run(conv, convt, x):
        f = lambda c, x: convt(c(x))
        g = jax.grad(lambda c: f(c, x).astype(jnp.float32).sum())(conv)
        return f(conv, x), g

    y, g = run(conv, convt, x)
    assert y.dtype == dtype and y.shape == (2, 10, 10)
    assert g.weight.dtype == dtype and bool(jnp.all(jnp.isfinite(g.weight)))
    # Close to the same maths in float32 (to low-precision accuracy).
    conv32, convt32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), (conv, convt))
    y32 = convt32(conv32(x.astype(jnp.float32)))
    scale = float(jnp.abs(y32).max())
    np.testing.assert_allclose(y.astype(jnp.float32), y32, atol=0.05 * scale)


def test_conv_jit_vmap_grad():
    layers = [
        materialise(
            lambda: enn.Conv2d(2, 3, 3, stride=2, padding=1, padding_mode="REFLECT", key=KEY)
        ),
        materialise(lambda: enn.Conv1d(2, 4, 2, padding="SAME", groups=2, key=KEY)),
        materialise(lambda: enn.Conv3d(2, 2, 2, use_bias=False, key=KEY)),
        materialise(lambda: enn.ConvTranspose1d(2, 3, 3, 2, 1, key=KEY)),
        materialise(
            lambda: enn.ConvTranspose3d(2, 2, 2, padding_mode="CIRCULAR", padding="SAME", key=KEY)
        ),
    ]
    rng = np.random.default_rng(1)
    inputs = [
        jnp.asarray(rng.standard_normal((4, 2) + (6, 5, 4)[: layer.num_spatial_dims]), jnp.float32)
        for layer in layers
    ]

    @jax.jit
    def run(layers, inputs):
        out = []
        for layer, xs in zip(layers, inputs):
            loss = lambda c, xs=xs: jnp.sum(jax.vmap(c)(xs) ** 2)
            out.append((jax.vmap(layer)(xs), layer(xs[1]), jax.grad(loss)(layer)))
        return out

    results = run(layers, inputs)
    shapes = [(4, 3, 3, 3), (4, 4, 6), (4, 2, 5, 4, 3), (4, 3, 14), (4, 2, 6, 5, 4)]
    for layer, (batched, single, grads), shape in zip(layers, results, shapes):
        assert batched.shape == shape
        np.testing.assert_allclose(batched[1], single, rtol=1e-5, atol=1e-6)
        assert grads.weight.shape == layer.weight.shape
        assert (grads.bias is None) == (layer.bias is None)


FD_CASES = [
    lambda: enn.Conv2d(
        2,
        4,
        (3, 2),
        (2, 1),
        ((1, 0), (2, 1)),
        (1, 2),
        2,
        padding_mode="REFLECT",
        dtype=jnp.float64,
        key=KEY,
    ),
    lambda: enn.Conv1d(2, 2, 3, 2, 2, padding_mode="CIRCULAR", dtype=jnp.float64, key=KEY),
    lambda: enn.ConvTranspose2d(2, 4, 3, 2, 1, 1, groups=2, dtype=jnp.float64, key=KEY),
    lambda: enn.ConvTranspose1d(
        2, 3, 3, 2, padding="SAME", padding_mode="CIRCULAR", dtype=jnp.float64, key=KEY
    ),
]


@pytest.mark.parametrize("i", range(len(FD_CASES)))
def test_conv_finite_differences(i):
    with jax.enable_x64(True):
        layer = materialise(FD_CASES[i])
        x = jax.random.normal(
            jax.random.key(1), (2, 5, 4)[: layer.num_spatial_dims + 1], jnp.float64
        )
        f = jax.jit(lambda w, b, x: set_params(layer, weight=w, bias=b)(x))
        check_grads(f, (layer.weight, layer.bias, x), order=1, modes=("rev",))


def test_conv_errors():
    conv = abstract(lambda: enn.Conv2d(3, 4, 3, key=KEY))
    with pytest.raises(ValueError, match=r"rank 3.*\(2, 3, 8, 8\).*vmap"):
        conv(jnp.ones((2, 3, 8, 8)))
    with pytest.raises(ValueError, match=r"expects 3 input channels.*\(4, 8, 8\)"):
        conv(jnp.ones((4, 8, 8)))
    with pytest.raises(ValueError, match="larger|spans"):
        conv(jnp.ones((3, 2, 8)))
    dil = abstract(lambda: enn.Conv1d(1, 1, 3, padding=1, dilation=3, key=KEY))
    with pytest.raises(ValueError, match="spans"):
        dil(jnp.ones((1, 4)))
    with pytest.raises(ValueError, match="groups=2 must divide in_channels=3"):
        enn.Conv2d(3, 4, 3, groups=2, key=KEY)
    with pytest.raises(ValueError, match="out_channels=3"):
        enn.ConvTranspose1d(4, 3, 3, groups=2, key=KEY)
    with pytest.raises(ValueError, match="in_channels must be an int >= 1"):
        enn.Conv1d(0, 3, 3, key=KEY)
    with pytest.raises(ValueError, match="kernel_size must be >= 1"):
        enn.Conv1d(1, 3, 0, key=KEY)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        enn.Conv2d(1, 3, 2, stride=(1, -1), key=KEY)
    with pytest.raises(ValueError, match="kernel_size must be an int or a sequence of 2"):
        enn.Conv2d(1, 3, (2, 2, 2), key=KEY)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        enn.Conv1d(1, 1, 3, padding=-1, key=KEY)
    with pytest.raises(ValueError, match="padding string must be one of"):
        enn.Conv1d(1, 1, 3, padding="FULL", key=KEY)
    with pytest.raises(ValueError, match=r"\(low, high\) pairs"):
        enn.Conv2d(1, 1, 3, padding=((1, 2, 3), (1, 1)), key=KEY)
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        enn.Conv1d(1, 1, 3, padding_mode="mirror", key=KEY)
    with pytest.raises(ValueError, match="num_spatial_dims"):
        enn.Conv(0, 1, 1, 3, key=KEY)
    with pytest.raises(ValueError, match="output_padding"):
        enn.ConvTranspose1d(1, 1, 3, stride=2, output_padding=2, key=KEY)
    with pytest.raises(NotImplementedError, match="REFLECT"):
        enn.ConvTranspose1d(1, 1, 3, padding_mode="REFLECT", key=KEY)
    with pytest.raises(ValueError, match="empty output"):
        abstract(lambda: enn.ConvTranspose1d(1, 1, 2, padding=2, key=KEY))(jnp.ones((1, 1)))
    convt = abstract(lambda: enn.ConvTranspose1d(2, 1, 3, key=KEY))
    with pytest.raises(ValueError, match=r"expects 2 input channels"):
        convt(jnp.ones((1, 5)))
    with pytest.raises(TypeError, match="PRNG key"):
        enn.Conv1d(1, 1, 3, key=None)
