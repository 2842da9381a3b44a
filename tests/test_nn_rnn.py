"""GRUCell and LSTMCell: PyTorch goldens (with the bias conversion), init statistics,
finite differences, dtypes, transformations, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from goldens_norm_attention_rnn import (
    check_golden,
    check_grads_f64,
    golden,
    init_stat,
    jcall,
    many_inits,
    randn,
    replace,
    roundtrip,
)

from ecliptic.nn import GRUCell, LSTMCell


def gru_from_torch(cell, p):
    """Our GRUCell from PyTorch's parameters (the documented conversion)."""
    h = cell.hidden_size
    fields = {"weight_ih": p["weight_ih"], "weight_hh": p["weight_hh"]}
    if "bias_ih" in p:
        fields["bias"] = p["bias_ih"] + jnp.concatenate([p["bias_hh"][: 2 * h], jnp.zeros(h)])
        fields["bias_n"] = p["bias_hh"][2 * h :]
    return replace(cell, **fields)


def lstm_from_torch(cell, p):
    fields = {"weight_ih": p["weight_ih"], "weight_hh": p["weight_hh"]}
    if "bias_ih" in p:
        fields["bias"] = p["bias_ih"] + p["bias_hh"]
    return replace(cell, **fields)


@pytest.mark.parametrize("case", ["gru_a", "gru_b"])
def test_gru_matches_torch(case, getkey):
    g = golden(case)
    cell = GRUCell(5, 4, use_bias=g.cfg["bias"], key=getkey())
    assert (cell.bias is None) == (not g.cfg["bias"])
    check_golden(g, lambda p, i: gru_from_torch(cell, p)(i["x"], i["h"]))


@pytest.mark.parametrize("case", ["lstm_a", "lstm_b"])
def test_lstm_matches_torch(case, getkey):
    g = golden(case)
    cell = LSTMCell(5, 4, use_bias=g.cfg["bias"], key=getkey())
    check_golden(g, lambda p, i: lstm_from_torch(cell, p)(i["x"], (i["h"], i["c"])))


def test_parameter_shapes(getkey):
    gru = GRUCell(5, 4, key=getkey())
    assert gru.weight_ih.shape == (12, 5) and gru.weight_hh.shape == (12, 4)
    assert gru.bias.shape == (12,) and gru.bias_n.shape == (4,)
    assert gru.weight_ih.dtype == jnp.float32
    lstm = LSTMCell(5, 4, key=getkey())
    assert lstm.weight_ih.shape == (16, 5) and lstm.weight_hh.shape == (16, 4)
    assert lstm.bias.shape == (16,)
    assert LSTMCell(5, 4, use_bias=False, key=getkey()).bias is None


def _check_stat(values, name, *, bound=None, tol=0.06):
    want = init_stat(name)
    values = np.asarray(values, np.float64).ravel()
    assert abs(values.std() - want.std) < tol * want.std, (name, values.std(), want.std)
    assert abs(values.mean()) < 4 * want.std / math.sqrt(values.size) + 1e-3, name
    if bound is not None:
        assert np.abs(values).max() <= bound * (1 + 1e-6), name
        assert np.abs(values).max() > 0.97 * want.absmax, name


def test_init_distribution_matches_torch():
    bound = 1 / math.sqrt(8)
    gru = many_inits(lambda k: GRUCell(3, 8, key=k))
    _check_stat(gru.weight_ih, "gru.weight_ih", bound=bound)
    _check_stat(gru.weight_hh, "gru.weight_hh", bound=bound)
    # PyTorch's bias_ih + bias_hh: a sum of two uniforms for r and z, one for n.
    _check_stat(gru.bias[:, :16], "gru.bias_rz", bound=2 * bound)
    _check_stat(gru.bias[:, 16:], "gru.bias_in", bound=bound)
    _check_stat(gru.bias_n, "gru.bias_n", bound=bound)
    assert abs(np.std(gru.bias[:, :16]) - bound * math.sqrt(2 / 3)) < 0.06 * bound
    lstm = many_inits(lambda k: LSTMCell(3, 8, key=k))
    _check_stat(lstm.weight_ih, "lstm.weight_ih", bound=bound)
    _check_stat(lstm.weight_hh, "lstm.weight_hh", bound=bound)
    _check_stat(lstm.bias, "lstm.bias", bound=2 * bound)


def test_finite_differences_float64(getkey):
    keys = [getkey() for _ in range(2)]
    x, h, c = (a.astype(np.float64) for a in (randn(3), randn(4), randn(4)))
    with jax.enable_x64(True):
        gru = GRUCell(3, 4, key=keys[0])
        lstm = LSTMCell(3, 4, key=keys[1])
        assert gru.weight_ih.dtype == jnp.float64
        check_grads_f64(
            lambda x, h, b, bn: replace(gru, bias=b, bias_n=bn)(x, h),
            (x, h, gru.bias, gru.bias_n),
        )
        check_grads_f64(
            lambda x, h, c, w: replace(lstm, weight_hh=w)(x, (h, c)), (x, h, c, lstm.weight_hh)
        )


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision(dtype, getkey):
    x = randn(5)
    h = randn(4)
    gru = GRUCell(5, 4, dtype=dtype, key=getkey())
    lstm = LSTMCell(5, 4, dtype=dtype, key=getkey())
    assert gru.weight_ih.dtype == dtype and lstm.bias.dtype == dtype
    x, h = x.astype(dtype), h.astype(dtype)
    assert jcall(gru, x, h).dtype == dtype
    h2, c2 = jcall(lstm, x, (h, h))
    assert h2.dtype == c2.dtype == dtype


def test_jit_vmap_grad_roundtrip_and_scan(getkey):
    x = randn(3, 5)
    h = randn(3, 4)
    gru = GRUCell(5, 4, key=getkey())
    lstm = LSTMCell(5, 4, key=getkey())
    roundtrip(gru, (x, h))
    roundtrip(lstm, (x, h, h), call=lambda m, x, h, c: m(x, (h, c)))

    # Over time with lax.scan: the final state equals stepping by hand.
    def run(cell, xs, h0):
        return jax.lax.scan(lambda h, x: (cell(x, h), None), h0, xs)[0]

    final = jax.jit(run)(gru, x, h[0])
    step = jax.jit(lambda cell, x, h: cell(x, h))
    manual = h[0]
    for t in range(3):
        manual = step(gru, x[t], manual)
    np.testing.assert_allclose(final, manual, rtol=1e-6, atol=1e-6)


def test_errors(getkey):
    gru = GRUCell(5, 4, key=getkey())
    with pytest.raises(ValueError, match=r"expects an input of shape \(5,\)"):
        gru(jnp.ones(3), jnp.ones(4))
    with pytest.raises(ValueError, match="jax.vmap"):
        gru(jnp.ones((2, 5)), jnp.ones(4))
    with pytest.raises(ValueError, match=r"hidden state of shape \(4,\)"):
        gru(jnp.ones(5), jnp.ones(3))
    lstm = LSTMCell(5, 4, key=getkey())
    with pytest.raises(TypeError, match=r"pair \(h, c\)"):
        lstm(jnp.ones(5), jnp.ones(4))
    with pytest.raises(ValueError, match=r"expects c of shape"):
        lstm(jnp.ones(5), (jnp.ones(4), jnp.ones(2)))
    with pytest.raises(TypeError, match="PRNG key"):
        GRUCell(5, 4)
    with pytest.raises(ValueError, match="hidden_size must be >= 1"):
        LSTMCell(5, 0, key=getkey())
