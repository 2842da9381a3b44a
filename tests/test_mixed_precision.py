"""Mixed precision: matmuls/convolutions in the compute dtype (read from the lowered HLO),
float32 gradients, bfloat16 training close to float32 training, float32 layers, and float16
with dynamic loss scaling surviving an injected overflow."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ecliptic as ec
import ecliptic.nn as enn

_OP = re.compile(
    r"stablehlo\.(dot_general|convolution)[^\n]*?:\s*\((tensor<[^>]*>), (tensor<[^>]*>)\)"
)


def _product_operand_types(fn, *args):
    text = ec.filter_jit(fn).lower(*args).as_text()  # pyright: ignore[reportFunctionMemberAccess]
    found = _OP.findall(text)
    assert found, "no matrix product or convolution in the lowered program"
    return [(op, a.rsplit("x", 1)[-1], b.rsplit("x", 1)[-1]) for op, a, b in found]


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_products_run_in_the_compute_dtype(getkey, dtype):
    short = {"bfloat16": "bf16>", "float16": "f16>"}[jnp.dtype(dtype).name]
    cases = [
        (enn.Linear(8, 4, key=getkey()), (jnp.ones(8),)),
        (enn.Conv2d(3, 5, 3, key=getkey()), (jnp.ones((3, 6, 6)),)),
        (enn.MultiheadAttention(2, 8, key=getkey()), (jnp.ones((3, 8)),) * 3),
    ]
    for layer, args in cases:
        wrapped = ec.mixed_precision(layer, dtype)
        with jax.numpy_dtype_promotion("strict"):
            ops = _product_operand_types(lambda m, *a: m(*a), wrapped, *args)
            out = wrapped(*args)
        assert all(a == short and b == short for _, a, b in ops), (type(layer).__name__, ops)
        assert out.dtype == jnp.float32
        # Without the policy the same layer computes in float32: the check can fail.
        plain = _product_operand_types(lambda m, *a: m(*a), layer, *args)
        assert all(a == "f32>" for _, a, _ in plain)
    kinds = {
        op
        for op, _, _ in _product_operand_types(
            lambda m, x: m(x), ec.mixed_precision(cases[1][0], dtype), jnp.ones((3, 6, 6))
        )
    }
    assert kinds == {"convolution"}


def test_gradients_reach_float32_parameters(getkey):
    mlp = enn.MLP(6, 2, 16, 2, key=getkey())
    x = jax.random.normal(getkey(), (6,))
    wrapped = ec.mixed_precision(mlp, jnp.bfloat16)

    def loss(m):
        return jnp.sum(m(x) ** 2)

    grads = ec.filter_grad(loss)(wrapped)
    reference = ec.filter_grad(loss)(mlp)
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(reference)):
        assert g.dtype == jnp.float32
        assert np.abs(g).max() > 0
        np.testing.assert_allclose(g, r, rtol=0.1, atol=0.05 * np.abs(r).max())
    params = jax.tree.leaves(ec.filter(wrapped.model, ec.is_array))
    assert params and all(leaf.dtype == jnp.float32 for leaf in params)


class _DtypeProbe(ec.Module):
    """Returns its input unchanged, failing at trace time unless it is `expected`."""

    expected: str = ec.field(static=True)

    def __call__(self, x, *, key=None):
        assert x.dtype == jnp.dtype(self.expected), x.dtype
        return x


def test_float32_layers_see_float32(getkey):
    kept = enn.Sequential([enn.Linear(4, 4, key=getkey()), _DtypeProbe("float32")])
    out = ec.mixed_precision(kept, jnp.bfloat16, keep_float32=(_DtypeProbe,))(jnp.ones(4))
    assert out.dtype == jnp.float32
    cast = enn.Sequential([enn.Linear(4, 4, key=getkey()), _DtypeProbe("bfloat16")])
    ec.mixed_precision(cast, jnp.bfloat16, keep_float32=())(jnp.ones(4))
    with pytest.raises(AssertionError):
        ec.mixed_precision(kept, jnp.bfloat16, keep_float32=())(jnp.ones(4))
    # The default keeps normalisation layers in float32, parameters included.
    norm = enn.Sequential([enn.Linear(4, 4, key=getkey()), enn.LayerNorm(4)])
    wrapped = ec.mixed_precision(norm, jnp.bfloat16, output_dtype=jnp.bfloat16)
    text = ec.filter_jit(lambda m, x: m(x)).lower(wrapped, jnp.ones(4)).as_text()  # pyright: ignore[reportFunctionMemberAccess]
    assert "rsqrt" in text and re.search(r"rsqrt[^\n]*f32>", text)
    assert wrapped(jnp.ones(4)).dtype == jnp.bfloat16


def test_state_is_never_cast(getkey):
    # Inside a Sequential: the float32 wrapper must still be handed the state.
    model, state = enn.make_with_state(enn.Sequential)(
        [enn.Linear(4, 4, key=getkey()), enn.BatchNorm(4, axis_name="batch")]
    )
    wrapped = ec.mixed_precision(model, jnp.bfloat16)
    fn = ec.filter_vmap(
        lambda m, x, s: m(x, s), in_axes=(None, 0, None), out_axes=(0, None), axis_name="batch"
    )
    y, new_state = fn(wrapped, jax.random.normal(getkey(), (8, 4)), state)
    assert y.dtype == jnp.float32
    assert all(
        leaf.dtype in (jnp.float32, jnp.bool_, jnp.int32) for leaf in jax.tree.leaves(new_state)
    )


def _data(key):
    kx, kw = jax.random.split(key)
    xs = jax.random.normal(kx, (256, 8))
    w = jax.random.normal(kw, (8, 3))
    ys = jnp.argmax(xs @ w, axis=-1)
    return xs, ys


def _train(model, xs, ys, steps, make_model=lambda m: m):
    opt = optax.adam(1e-2)
    opt_state = opt.init(ec.filter(model, ec.is_inexact_array))

    def loss_fn(m):
        logits = jax.vmap(make_model(m))(xs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, ys).mean()

    @ec.filter_jit
    def step(m, s):
        value, grads = ec.filter_value_and_grad(loss_fn)(m)
        updates, s = opt.update(grads, s)
        return ec.apply_updates(m, updates), s, value

    for _ in range(steps):
        model, opt_state, value = step(model, opt_state)
    return model, float(loss_fn(model))


def test_bfloat16_training_reaches_float32_loss(getkey):
    xs, ys = _data(getkey())
    mlp = enn.MLP(8, 3, 32, 2, key=getkey())
    _, loss32 = _train(mlp, xs, ys, 150)
    trained, loss16 = _train(mlp, xs, ys, 150, lambda m: ec.mixed_precision(m, jnp.bfloat16))
    assert loss32 < 0.3  # it learned
    # Stated tolerance: within 0.05 nats (or 25%) of the float32 run's final loss.
    assert abs(loss16 - loss32) < max(0.05, 0.25 * loss32), (loss16, loss32)
    assert all(
        leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(ec.filter(trained, ec.is_array))
    )


def test_float16_loss_scaling_skips_an_injected_overflow(getkey):
    xs, ys = _data(getkey())
    model = enn.MLP(8, 3, 32, 2, key=getkey())
    opt = optax.sgd(0.2)
    opt_state = opt.init(ec.filter(model, ec.is_inexact_array))
    scale = ec.DynamicLossScale(2.0**10, growth_interval=5)

    @ec.filter_jit
    def step(model, opt_state, scale, blow_up):
        def loss_fn(m):
            logits = jax.vmap(ec.mixed_precision(m, jnp.float16, output_dtype=jnp.float16))(xs)
            logits = logits * jnp.where(blow_up, jnp.float16(6e4), jnp.float16(1))
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, ys).mean()
            return scale.scale(loss)

        grads = scale.unscale(ec.filter_grad(loss_fn)(model))
        finite = ec.all_finite(grads)
        updates, new_opt_state = opt.update(grads, opt_state)
        new_model = ec.apply_updates(model, updates)
        model = ec.select_tree(finite, new_model, model)
        opt_state = ec.select_tree(finite, new_opt_state, opt_state)
        return model, opt_state, scale.adjust(finite), finite

    def loss(m):
        logits = jax.vmap(m)(xs)
        return float(optax.softmax_cross_entropy_with_integer_labels(logits, ys).mean())

    first = loss(model)
    for i in range(30):
        before, scale_before = model, scale
        model, opt_state, scale, finite = step(model, opt_state, scale, jnp.asarray(i == 10))
        if i == 10:
            assert not bool(finite)
            assert float(scale.scale_value) == float(scale_before.scale_value) / 2
            params = ec.filter(model, ec.is_array), ec.filter(before, ec.is_array)
            for a, b in zip(*map(jax.tree.leaves, params)):
                np.testing.assert_array_equal(a, b)  # the step was skipped
        else:
            assert bool(finite)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(ec.filter(model, ec.is_array)))
    assert loss(model) < 0.7 * first
    assert float(scale.scale_value) > 2.0**9  # grew again after the overflow


def test_loss_scale_adjust_rules():
    ls = ec.DynamicLossScale(8.0, growth_interval=2, min_scale=2.0)
    ok, bad = jnp.asarray(True), jnp.asarray(False)
    assert float(ls.adjust(ok).scale_value) == 8.0
    assert float(ls.adjust(ok).adjust(ok).scale_value) == 16.0
    assert int(ls.adjust(ok).adjust(bad).finite_steps) == 0
    assert float(ls.adjust(bad).adjust(bad).adjust(bad).scale_value) == 2.0  # min_scale
    assert float(ls.adjust(ok).adjust(ok).adjust(ok).scale_value) == 16.0  # count restarted
    grads = {"w": jnp.asarray([8.0, 16.0])}
    np.testing.assert_array_equal(ls.unscale(grads)["w"], [1.0, 2.0])
    assert not bool(ec.all_finite({"a": jnp.ones(2), "b": jnp.asarray([1.0, jnp.inf])}))
    with pytest.raises(TypeError, match="grads_finite must be a boolean scalar"):
        ls.adjust(jnp.ones(3))


def test_bad_arguments(getkey):
    layer = enn.Linear(2, 2, key=getkey())
    with pytest.raises(TypeError, match="compute_dtype must be a floating dtype"):
        ec.mixed_precision(layer, jnp.int32)
    with pytest.raises(TypeError, match="keep_float32 must be a tuple of layer types"):
        ec.mixed_precision(layer, keep_float32=("LayerNorm",))  # pyright: ignore[reportArgumentType]
    with pytest.raises(TypeError, match="model must be a callable model"):
        ec.mixed_precision(jnp.ones(3))
    with pytest.raises(ValueError, match="growth_interval must be an int >= 1"):
        ec.DynamicLossScale(growth_interval=0)
