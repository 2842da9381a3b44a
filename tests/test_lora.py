"""LoRA: zero-initialised adapters, a float64 NumPy reference, training only the adapters,
merging, and PEFT's state-dict layout (golden made by tests/torch_goldens/gen_lora.py)."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ecliptic as ec
import ecliptic.nn as enn

GOLDEN = pathlib.Path(__file__).parent / "torch_goldens" / "lora.npz"


def _mlp(key):
    return enn.MLP(5, 3, 6, 2, key=key)


def test_zero_initialised_adapters_change_nothing(getkey):
    mlp = _mlp(getkey())
    x = jax.random.normal(getkey(), (5,))
    adapted = ec.lora(mlp, rank=2, key=getkey())
    assert all(isinstance(layer, ec.LoRALinear) for layer in adapted.layers)
    np.testing.assert_array_equal(adapted(x), mlp(x))

    mha = enn.MultiheadAttention(2, 8, use_query_bias=True, key=getkey())
    seq = jax.random.normal(getkey(), (3, 8))
    adapted_mha = ec.lora(mha, rank=3, key=getkey())
    assert isinstance(adapted_mha.value_proj, ec.LoRALinear)
    np.testing.assert_array_equal(adapted_mha(seq, seq, seq), mha(seq, seq, seq))


def test_matches_float64_numpy_reference(getkey):
    base = enn.Linear(7, 4, key=getkey())
    layer = ec.LoRALinear(base, rank=3, alpha=6.0, key=getkey())
    lora_b = jax.random.normal(getkey(), (4, 3))
    layer = ec.tree_at(lambda m: m.lora_B, layer, lora_b)
    x = jax.random.normal(getkey(), (7,))
    w, b, a, bb, x64 = (
        np.asarray(v, np.float64) for v in (base.weight, base.bias, layer.lora_A, lora_b, x)
    )
    expected = w @ x64 + b + (6.0 / 3) * bb @ (a @ x64)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-5)
    assert layer.scaling == 2.0
    # PEFT's initialisation: A ~ U(+-1/sqrt(in)), B = 0.
    bound = 1 / np.sqrt(7)
    assert np.all(np.abs(layer.lora_A) <= bound) and np.abs(layer.lora_A).max() > bound / 2
    fresh = ec.LoRALinear(base, rank=3, key=getkey())
    np.testing.assert_array_equal(fresh.lora_B, np.zeros((4, 3)))


def test_scalar_sizes(getkey):
    base = enn.Linear("scalar", "scalar", key=getkey())
    layer = ec.LoRALinear(base, rank=2, key=getkey())
    layer = ec.tree_at(lambda m: m.lora_B, layer, jnp.ones((1, 2)))
    x = jnp.asarray(0.7)
    expected = base(x) + jnp.sum(layer.lora_A[:, 0]) * 0.7
    np.testing.assert_allclose(layer(x), expected, rtol=1e-6)
    assert layer(x).shape == ()


def test_where_selects_layers(getkey):
    mlp = _mlp(getkey())
    adapted = ec.lora(mlp, rank=2, where=lambda m: m.layers[1], key=getkey())
    assert isinstance(adapted.layers[1], ec.LoRALinear)
    assert isinstance(adapted.layers[0], enn.Linear)
    both = ec.lora(mlp, rank=2, where=lambda m: (m.layers[0], m.layers[2]), key=getkey())
    assert [type(layer).__name__ for layer in both.layers] == ["LoRALinear", "Linear", "LoRALinear"]
    with pytest.raises(TypeError, match="must select ecliptic.nn.Linear layers; it selected"):
        ec.lora(enn.Sequential([enn.LayerNorm(3)]), 2, where=lambda m: m.layers[0], key=getkey())
    with pytest.raises(ValueError, match="rank must be an int >= 1; got 0"):
        ec.lora(mlp, rank=0, key=getkey())


def test_train_only_adapters_then_merge(getkey):
    mlp = _mlp(getkey())
    model = ec.lora(mlp, rank=2, key=getkey())
    xs = jax.random.normal(getkey(), (16, 5))
    ys = jax.vmap(mlp)(xs) + jnp.asarray([0.5, -0.5, 0.25])  # reachable by the adapters
    spec = ec.lora_filter(model)
    trainable, frozen = ec.partition(model, spec)

    def loss(trainable, frozen):
        m = ec.combine(trainable, frozen)
        return jnp.mean((jax.vmap(m)(xs) - ys) ** 2)

    step = ec.filter_jit(ec.filter_value_and_grad(loss))
    first, _ = step(trainable, frozen)
    for _ in range(40):
        value, grads = step(trainable, frozen)
        trainable = jax.tree.map(lambda p, g: p - 0.2 * g, trainable, grads)
    assert value < 0.3 * first  # pyright: ignore[reportPossiblyUnboundVariable]
    model = ec.combine(trainable, frozen)
    for before, after in zip(mlp.layers, model.layers):  # base layers untouched
        np.testing.assert_array_equal(after.base.weight, before.weight)
        assert np.abs(after.lora_B).max() > 0
    merged = ec.merge_lora(model)
    assert all(type(layer) is enn.Linear for layer in merged.layers)
    np.testing.assert_allclose(jax.vmap(merged)(xs), jax.vmap(model)(xs), rtol=1e-5, atol=1e-6)


def test_stacked_layers_get_stacked_adapters(getkey):
    stack = enn.Stacked(lambda k: enn.Linear(4, 4, key=k), 3, key=getkey())
    adapted = ec.lora(stack, rank=2, key=getkey())
    assert adapted.layers.lora_A.shape == (3, 2, 4)
    assert not np.allclose(adapted.layers.lora_A[0], adapted.layers.lora_A[1])
    x = jax.random.normal(getkey(), (4,))
    np.testing.assert_array_equal(adapted(x), stack(x))
    adapted = ec.tree_at(lambda s: s.layers.lora_B, adapted, jnp.ones((3, 4, 2)))
    np.testing.assert_allclose(ec.merge_lora(adapted)(x), adapted(x), rtol=1e-5)


def test_peft_golden_round_trip():
    golden = dict(np.load(GOLDEN))
    rank, alpha = int(golden["rank"]), float(golden["alpha"])
    base_sd = {k[len("base/") :]: v for k, v in golden.items() if k.startswith("base/")}
    adapters = {k[len("adapter/") :]: v for k, v in golden.items() if k.startswith("adapter/")}
    mlp = ec.load_state_dict(_mlp(jax.random.key(0)), base_sd, format="torch")
    model = ec.lora(mlp, rank=rank, alpha=alpha, key=jax.random.key(1))
    model = ec.load_lora_state_dict(model, adapters)
    expected = golden["expected"]
    np.testing.assert_allclose(jax.vmap(model)(golden["x"]), expected, rtol=1e-5, atol=1e-5)
    merged = ec.merge_lora(model)
    np.testing.assert_allclose(jax.vmap(merged)(golden["x"]), expected, rtol=1e-5, atol=1e-5)
    # Export: the same keys and values as PEFT's adapter file.
    exported = ec.lora_state_dict(model)
    assert sorted(exported) == sorted(adapters)
    for k, v in adapters.items():
        np.testing.assert_array_equal(exported[k], v)
    # The full torch-format state dict uses PEFT's base_layer naming.
    full = ec.state_dict(model, format="torch")
    expected_base = {f"layers.{i}.base_layer.{p}" for i in range(3) for p in ("weight", "bias")}
    prefix = "base_model.model."
    assert set(full) == expected_base | {k[len(prefix) :] for k in adapters}
    back = ec.load_state_dict(
        ec.lora(mlp, rank=rank, alpha=alpha, key=jax.random.key(2)), full, format="torch"
    )
    np.testing.assert_array_equal(jax.vmap(back)(golden["x"]), jax.vmap(model)(golden["x"]))


def test_load_lora_state_dict_reports_problems(getkey):
    model = ec.lora(_mlp(getkey()), rank=2, key=getkey())
    adapters = ec.lora_state_dict(model)
    missing = dict(adapters)
    del missing["base_model.model.layers.1.lora_B.weight"]
    with pytest.raises(ec.StateDictError, match="layers.1.lora_B.weight"):
        ec.load_lora_state_dict(model, missing)
    wrong_rank = ec.lora_state_dict(ec.lora(_mlp(getkey()), rank=3, key=getkey()))
    with pytest.raises(ec.StateDictError, match="mismatched"):
        ec.load_lora_state_dict(model, wrong_rank)
    with pytest.raises(ec.StateDictError, match="unexpected"):
        ec.load_lora_state_dict(
            model, {**adapters, "base_model.model.extra.lora_A.weight": np.zeros((2, 5))}
        )


def test_attention_with_adapters_has_no_torch_layout(getkey):
    mha = ec.lora(enn.MultiheadAttention(2, 8, key=getkey()), rank=2, key=getkey())
    with pytest.raises(AttributeError, match=r"merge_lora\(model\)"):
        ec.state_dict(mha, format="torch")
    merged = ec.state_dict(ec.merge_lora(mha), format="torch")
    assert "in_proj_weight" in merged
    assert len(ec.state_dict(mha)) == 4 * 3  # native format: every array


def test_composes_with_mixed_precision_and_intermediates(getkey):
    mlp = _mlp(getkey())
    adapted = ec.lora(mlp, rank=2, key=getkey())
    adapted = ec.tree_at(lambda m: m.layers[0].lora_B, adapted, jnp.ones((6, 2)))
    x = jax.random.normal(getkey(), (5,))
    with jax.numpy_dtype_promotion("strict"):
        out, hidden = ec.intermediates(
            ec.mixed_precision(adapted, jnp.bfloat16), where=lambda m: m.model.layers[0]
        )(x)
    assert out.dtype == jnp.float32 and hidden.dtype == jnp.bfloat16
    np.testing.assert_allclose(hidden, adapted.layers[0](x), rtol=0.05, atol=0.05)
    np.testing.assert_allclose(out, adapted(x), rtol=0.05, atol=0.05)
